# herald's two commands: `make run` (or `go run ./cmd/herald serve`) and `make test`.
.PHONY: run test deps vet unit bench fuzz

run:
	go run ./cmd/herald serve

# test runs every test: vet, the Go suite with the race detector (it drives
# the browser end-to-end test too), herald.js's unit tests, a short fuzz
# run of each parser, and every benchmark once so none can rot.
test: deps vet
	node --test clients/js/test/*.test.mjs
	go test -race -count=1 ./...
	cd examples && go test -race -count=1 ./...
	$(MAKE) fuzz FUZZTIME=30000x
	go test -run=NONE -bench=. -benchtime=1x ./...

deps:
	@test -d e2e/node_modules/playwright-core -a -d e2e/node_modules/esbuild || npm ci --prefix e2e --no-audit --no-fund

vet:
	go vet ./...
	cd examples && go vet ./...

# FUZZTIME is a duration (30s) or a count of runs (30000x). make test gives
# a count: with a duration, Go 1.26's fuzzing coordinator can fail a target
# with "context deadline exceeded" when the time runs out on a loaded
# machine (go.dev/issue/75804, fixed in Go 1.27); a count has no deadline.
# FUZZMINIMIZE bounds the time Go spends shrinking each new input the
# fuzzer finds: 60s per input by default, during which a run makes no
# progress (in one CI run FuzzMessages sat at 0 execs/s for 80 s).
FUZZTIME ?= 30s
FUZZMINIMIZE ?= 10s
fuzz:
	go test -run=NONE -fuzz=FuzzDecodeCommand -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./internal/protocol
	go test -run=NONE -fuzz=FuzzValidChannel -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./internal/protocol
	go test -run=NONE -fuzz=FuzzSSECursor -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./internal/protocol
	go test -run=NONE -fuzz=FuzzParseOffset -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./broker
	go test -run=NONE -fuzz=FuzzDecodePublish -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./internal/api
	go test -run=NONE -fuzz=FuzzVerify -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./internal/auth
	go test -run=NONE -fuzz=FuzzFrames -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./internal/transport/ws
	go test -run=NONE -fuzz=FuzzMessages -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./internal/transport/ws
	go test -run=NONE -fuzz=FuzzParse -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./internal/filter
