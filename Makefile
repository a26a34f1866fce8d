# allot: make demo runs the demonstration, make test runs the checks CI runs.
GO ?= go
PKGS := ./...

.PHONY: all test vet fmt-check demo bench bench-engine clean

all: test

## test: gofmt, go vet, and every test with the race detector.
test: fmt-check vet
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## demo: goroutines race for a quota: a naive map against the engine.
demo:
	$(GO) run ./cmd/demo

## bench-engine: the engine's benchmarks beside the CAS and lookup+CAS floors.
bench-engine:
	$(GO) test -run='^$$' -bench=Consume -benchmem -cpu=1,2,8 -count=5 ./engine

clean:
	$(GO) clean -testcache
