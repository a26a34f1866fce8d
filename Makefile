# allot: make demo runs the demonstration, make test runs the checks CI runs.
GO ?= go
PKGS := ./...

.PHONY: all test vet fmt-check lint demo bench bench-engine bench-persist crash stress fuzz clean

FUZZTIME ?= 30s
FUZZ_TARGETS := engine:FuzzLimits engine:FuzzAmounts engine:FuzzKeys engine:FuzzCheckKey persist/internal/codec:FuzzDecode persist/internal/codec:FuzzDecodeBody httpadapter/internal/core:FuzzKeyExtraction

all: test

## test: gofmt, go vet, and every test with the race detector.
test: fmt-check vet
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

vet:
	$(GO) vet $(PKGS)

## lint: staticcheck with every check (staticcheck.conf selects them and
## says why any is disabled) in the root module and in bench/. Not part of
## test yet. Install it with
##   go install honnef.co/go/tools/cmd/staticcheck@latest   (needs Go 1.26)
## which puts it in $(go env GOBIN), else the first $(go env GOPATH)/bin; the
## target looks there first, then on PATH. STATICCHECK=path overrides both.
STATICCHECK ?=
lint:
	@sc="$(STATICCHECK)"; \
	if [ -z "$$sc" ]; then \
		bin=$$($(GO) env GOBIN); [ -n "$$bin" ] || bin=$$($(GO) env GOPATH | cut -d: -f1)/bin; \
		sc=$$bin/staticcheck; [ -x "$$sc" ] || sc=$$(command -v staticcheck) || sc=; \
	fi; \
	if [ -z "$$sc" ] || [ ! -x "$$sc" ]; then \
		echo "staticcheck not found; install it with: $(GO) install honnef.co/go/tools/cmd/staticcheck@latest"; exit 1; \
	fi; \
	echo "$$sc ./..."; "$$sc" ./...; rc=$$?; \
	echo "cd bench && $$sc ./..."; (cd bench && "$$sc" ./...) || rc=1; \
	exit $$rc

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## demo: over HTTP on 127.0.0.1 and a Badger store: a naive map against the
## engine for a quota and a revocation, then a restart of the store, and a 429.
demo:
	$(GO) run ./cmd/demo

## bench-engine: the engine's benchmarks beside the CAS and lookup+CAS floors.
bench-engine:
	$(GO) test -run='^$$' -bench=Consume -benchmem -cpu=1,2,8 -count=5 ./engine

## crash: kill -9 loops (CRASH_CYCLES each, default 200): a child consuming
## from a Badger store, then a child mixing consumes and refunds with
## register, revoke, rotate, top up, delete, reset and the store's Compact;
## each kill is aimed at the child's opening, its running or its closing,
## every limit kind is used, every store must open at the first try, every
## invariant is checked after every restart. Then kills the instant a
## Revoke or a Delete returns.
CRASH_CYCLES ?= 200
crash:
	ALLOT_CRASH_CYCLES=$(CRASH_CYCLES) $(GO) test -count=1 -v -timeout 60m -run 'TestCrashLoop|TestCrashMix$$|TestRevokeSurvivesKill|TestDeleteSurvivesKill' ./persist

## stress: 500 linearizability histories checked with porcupine, and a flood
## of 1,000,000 requests with unknown keys through the middleware.
stress:
	ALLOT_LIN_HISTORIES=500 $(GO) test -count=1 -v -timeout 60m -run TestLinearizable ./engine
	ALLOT_FLOOD_N=1000000 $(GO) test -count=1 -v -run TestUnknownKeyFlood ./httpadapter

## fuzz: each fuzz target for FUZZTIME (default 30s); seeds in */testdata/fuzz.
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; echo "== $$pkg $$fn"; \
		$(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) ./$$pkg || exit 1; \
	done

## bench-persist: persisted Consume beside memory-only; exact mode; reopen.
bench-persist:
	$(GO) test -run='^$$' -bench=. -benchmem -count=5 -timeout 30m ./persist

clean:
	$(GO) clean -testcache

## bench: allot beside the floors (CAS; map lookup + CAS, with and without a
## clock read; xsync.MapOf lookup + CAS), the naive map and its peers
## (x/time/rate, go-limiter, ulule, throttled), with a key of each limit kind
## (Credits, Rate, PerWindow, two limits) beside the peers of that kind, in
## the nested module bench/: -cpu=1,2,8,64, raw output in
## bench/results/raw.txt, report in bench/RESULTS.md, charts in
## bench/results/. Over an hour on 2 cores; a reduced run:
##   make bench BENCH_CPU=1,2,8 BENCH_COUNT=3 BENCHTIME=500ms
## Override with BENCH_COUNT, BENCHTIME, BENCH_CPU.
BENCH_COUNT ?= 5
BENCHTIME ?= 1s
BENCH_CPU ?= 1,2,8,64

bench:
	cd bench && $(GO) run ./cmd/report -count=$(BENCH_COUNT) -benchtime=$(BENCHTIME) -cpu=$(BENCH_CPU)

## bench-redis: on a throwaway local redis-server: Redis DECR, redis_rate and
## ulule's Redis store (64 requests in flight), allot on Redis
## (persist/redisstore) beside memory-only allot, and one against four
## processes (bench/cmd/procs); adds them to bench/RESULTS.md.
.PHONY: bench-redis
bench-redis:
	cd bench && GO="$(GO)" BENCH_COUNT=$(BENCH_COUNT) BENCHTIME=$(BENCHTIME) ./scripts/bench-redis.sh
