#!/usr/bin/env bash
# bench-redis.sh: start a throwaway redis-server on 127.0.0.1 (a free port,
# no persistence), run the Redis sub-benchmarks of BenchmarkContention
# against it with 64 requests in flight, write results/raw-redis.txt,
# re-render RESULTS.md, and stop the server whatever happens.
#
#   make bench-redis                 # from the repository root
#   BENCH_COUNT=1 BENCHTIME=1s scripts/bench-redis.sh   # from bench/
#
# Without redis-server, it tries apt-get (as root); if that fails it says so
# and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
BENCH_COUNT=${BENCH_COUNT:-5}
BENCHTIME=${BENCHTIME:-1s}
# 64 goroutines: -cpu=64 with b.SetParallelism(64/GOMAXPROCS) = 1, the same
# goroutine count as allot's -cpu=64 column.
REDIS_CPU=${REDIS_CPU:-64}

if ! command -v redis-server >/dev/null 2>&1; then
	if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
		echo "bench-redis: redis-server is not installed; installing the Debian package" >&2
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; } >&2 || true
	fi
fi
if ! command -v redis-server >/dev/null 2>&1; then
	echo "bench-redis: SKIPPED: redis-server is not installed and could not be installed (apt-get install redis-server)" >&2
	exit 0
fi

port=$("$GO" run ./cmd/report -freeport)
dir=$(mktemp -d)
redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
	--dir "$dir" --logfile "$dir/redis.log" --daemonize no &
pid=$!
cleanup() {
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Wait for it to answer.
for _ in $(seq 1 100); do
	if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
		printf 'PING\r\n' >&3
		if read -r -t 1 reply <&3 && [ "${reply%$'\r'}" = "+PONG" ]; then
			exec 3>&-
			break
		fi
		exec 3>&-
	fi
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "bench-redis: redis-server exited:" >&2
		cat "$dir/redis.log" >&2
		exit 1
	fi
	sleep 0.1
done

cmd=("$GO" test -run='^$' -bench='^BenchmarkContention$/^impl=redis-' -cpu="$REDIS_CPU"
	-count="$BENCH_COUNT" -benchtime="$BENCHTIME" -timeout=0 .)
mkdir -p results
{
	echo "redis: $(redis-server --version)"
	printf 'command: ALLOT_REDIS_ADDR=127.0.0.1:PORT'
	for a in "${cmd[@]}"; do
		case $a in *[\^\$\|\*\ ]*) printf " '%s'" "$a" ;; *) printf ' %s' "$a" ;; esac
	done
	echo
} >results/meta-redis.txt
echo "bench-redis: redis-server on 127.0.0.1:$port; running ${cmd[*]}" >&2
ALLOT_REDIS_ADDR="127.0.0.1:$port" "${cmd[@]}" | tee results/raw-redis.txt
"$GO" run ./cmd/report -render
echo "bench-redis: wrote results/raw-redis.txt and RESULTS.md" >&2
