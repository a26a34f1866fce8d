#!/usr/bin/env bash
# bench-redis.sh: start a throwaway redis-server on 127.0.0.1 (a free port,
# no persistence), run against it the Redis peers of BenchmarkContention
# (64 requests in flight), allot on Redis beside memory-only allot, and
# cmd/procs (one and four processes), write results/raw-redis.txt and
# results/raw-procs.txt, re-render RESULTS.md, and stop the server whatever
# happens.
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

# The Redis peers with 64 requests in flight (-cpu=64); allot on Redis beside
# memory-only allot, for every -cpu of ALLOT_CPU; both on one key and on 1M
# Zipf keys (REDIS_DISTS). Then four processes against one (cmd/procs).
REDIS_DISTS=${REDIS_DISTS:-hot|zipf1m}
ALLOT_CPU=${ALLOT_CPU:-1,2,8,64}
PROCS_FOR=${PROCS_FOR:-3s}
peers=("$GO" test -run='^$' -bench="^BenchmarkContention\$/^impl=redis-/^dist=($REDIS_DISTS)\$" -cpu="$REDIS_CPU"
	-count="$BENCH_COUNT" -benchtime="$BENCHTIME" -timeout=0 .)
allot=("$GO" test -run='^$' -bench="^BenchmarkContention\$/^impl=allot(-redis)?(-rate|-window)?\$/^dist=($REDIS_DISTS)\$"
	-cpu="$ALLOT_CPU" -count="$BENCH_COUNT" -benchtime="$BENCHTIME" -timeout=0 .)
procs=("$GO" run ./cmd/procs -procs=1,4 -count="$BENCH_COUNT" -for="$PROCS_FOR")
mkdir -p results
quote() {
	for a in "$@"; do
		case $a in *[\^\$\|\*\ \(]*) printf " '%s'" "$a" ;; *) printf ' %s' "$a" ;; esac
	done
}
{
	echo "redis: $(redis-server --version)"
	echo "command: ALLOT_REDIS_ADDR=127.0.0.1:PORT$(quote "${peers[@]}")"
	echo "command: ALLOT_REDIS_ADDR=127.0.0.1:PORT$(quote "${allot[@]}")"
	echo "command: ALLOT_REDIS_ADDR=127.0.0.1:PORT$(quote "${procs[@]}")"
} >results/meta-redis.txt
export ALLOT_REDIS_ADDR="127.0.0.1:$port"
echo "bench-redis: redis-server on $ALLOT_REDIS_ADDR; running ${peers[*]}" >&2
"${peers[@]}" | tee results/raw-redis.txt
echo "bench-redis: running ${allot[*]}" >&2
"${allot[@]}" | tee -a results/raw-redis.txt
echo "bench-redis: running ${procs[*]}" >&2
"${procs[@]}" | tee results/raw-procs.txt
"$GO" run ./cmd/report -render
echo "bench-redis: wrote results/raw-redis.txt, results/raw-procs.txt and RESULTS.md" >&2
