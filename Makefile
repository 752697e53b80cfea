# edge-agent — `make help` lists the targets.
#
# The TFLite runtime comes from scripts/provision-runtime.sh into
# .runtime/$(ARCH) (git-ignored). To use your own libtensorflowlite_c instead
# (a distribution package, or a build with extra delegates), set both:
#   TFLITE_LIB_DIR=/dir/with/libtensorflowlite_c.so
#   TFLITE_INCLUDE_DIR=/dir/above/tensorflow/lite/c/c_api.h
# e.g. `make test TFLITE_LIB_DIR=/usr/local/lib TFLITE_INCLUDE_DIR=/usr/local/include`.

SHELL := /bin/bash
GO ?= go
ARCH ?= amd64
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
RUNTIME_DIR ?= $(CURDIR)/.runtime/$(ARCH)
BIN := bin/edge-agent
PKG := github.com/edge-agent/edge-agent
LDFLAGS = $(LINKMODE) -X $(PKG)/agent.Version=$(VERSION)

triplet_amd64 := x86_64-linux-gnu
loader_amd64 := ld-linux-x86-64.so.2
TRIPLET := $(triplet_$(ARCH))
LOADER := $(loader_$(ARCH))

ifeq ($(TFLITE_LIB_DIR),)
RUNTIME_STAMP := $(RUNTIME_DIR)/MANIFEST
RUNTIME_LIB := $(RUNTIME_DIR)/usr/lib/$(TRIPLET)
# The prefix carries its own glibc (sid's TFLite needs >= 2.38): link so the
# binary uses the prefix's loader, and --disable-new-dtags so the rpath also
# serves the library's own dependencies.
export CGO_CFLAGS := -I$(RUNTIME_DIR)/usr/include
export CGO_LDFLAGS := -L$(RUNTIME_DIR)/link -Wl,--disable-new-dtags -Wl,-rpath,$(RUNTIME_LIB) \
	-Wl,--dynamic-linker=$(RUNTIME_LIB)/$(LOADER) -Wl,--allow-shlib-undefined
# Go's internal linker (used for binaries whose only cgo is the race
# runtime) takes --dynamic-linker from CGO_LDFLAGS but not the rpath: the
# prefix's loader would then load the system's older libc. Link externally.
LINKMODE := -linkmode=external
else
RUNTIME_STAMP :=
export CGO_CFLAGS := -I$(TFLITE_INCLUDE_DIR)
export CGO_LDFLAGS := -L$(TFLITE_LIB_DIR) -Wl,-rpath,$(TFLITE_LIB_DIR)
endif
export CGO_ENABLED := 1

# Shared models live beside the checkout; tests skip loudly without them.
export EDGE_AGENT_MODELS ?= $(abspath $(CURDIR)/../shared/models)

CROSS_ARCHES := arm64 armv7
CROSS_DEPS := gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross qemu-user-static
# prometheus: its promtool lints /metrics in the tests
TEST_DEPS := mosquitto systemd prometheus

.PHONY: help deps runtime build run test test-long bench gobench fuzz fmt lint vet clean env bundle cross cross-check systemd-check

help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

deps: ## install the Debian packages the build and tests need (only missing ones)
	@scripts/deps.sh $(TEST_DEPS)

runtime: $(RUNTIME_STAMP) ## provision the TFLite runtime prefix for ARCH

$(RUNTIME_DIR)/MANIFEST: scripts/provision-runtime.sh
	@scripts/deps.sh
	scripts/provision-runtime.sh $(ARCH) $(RUNTIME_DIR)
	@touch $@

build: $(RUNTIME_STAMP) ## build bin/edge-agent against the runtime
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./agent/cmd/edge-agent

run: build ## run the agent on its embedded defaults, with its own MQTT broker on 127.0.0.1:1883
	./$(BIN) run

test: deps $(RUNTIME_STAMP) lint ## make lint, then every test with -race but the long ones (provisions first)
	$(GO) test -race -count=1 -timeout 30m -ldflags='$(LINKMODE)' ./...

# The soak, scale and load tests `make test` skips (tflitetest.Long) or
# cannot build under -race (//go:build !race): run without the detector,
# which would set their rates and figures. .ci/run runs them after make
# test. Every tflitetest.Long caller must be named here (scripts checks).
LONG_TESTS := UnderLoad|^TestSoakRSSHoldsTheBudget$$|^TestFleetTwinsStartWarm$$|^TestMemoryLimitBombs$$|^TestDefaultPolicyBeatsLRUOnBothAxes$$

test-long: deps $(RUNTIME_STAMP) ## the soak, scale and load tests make test leaves out (.ci/run runs both)
	EDGE_AGENT_LONG=1 $(GO) test -count=1 -timeout 30m -ldflags='$(LINKMODE)' -run '$(LONG_TESTS)' ./...

BENCH_BIN := bin/edge-agent-bench

bench: deps $(RUNTIME_STAMP) build ## the benchmark report: naive vs agent, side by side (bench-report/, and docs/benchmarks.md)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BENCH_BIN) ./agent/cmd/edge-agent-bench
	./$(BENCH_BIN) --out bench-report --models $(EDGE_AGENT_MODELS) --doc docs/benchmarks.md

# Each fuzz target runs for FUZZTIME; what a target finds is written to the
# package's testdata/fuzz and then runs as a regression seed in `make test`.
FUZZTIME ?= 60s
FUZZ_TARGETS := FuzzFlatbufferScan:./tflite FuzzDecodeImage:./agent/infer FuzzCommandDecoding:./agent \
	FuzzParseByteSize:./agent FuzzParseCommandTopic:./mqtt FuzzViewOffer:./agent/fleet

fuzz: $(RUNTIME_STAMP) ## run every fuzz target for FUZZTIME each (default 60s; not part of make test)
	@for t in $(FUZZ_TARGETS); do name=$${t%%:*}; pkg=$${t#*:}; \
		echo "fuzz $$name ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run "^$$name\$$" -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -ldflags='$(LINKMODE)' $$pkg || exit 1; \
	done

gobench: $(RUNTIME_STAMP) ## the Go micro-benchmarks with allocation counts
	$(GO) test -run '^$$' -bench . -benchmem -count 1 -timeout 30m -ldflags='$(LINKMODE)' ./...

fmt: ## gofmt the tree
	gofmt -w $$(git ls-files '*.go')

# Lint tools, pinned, built without cgo into .tools/ (git-ignored).
STATICCHECK_VERSION := v0.8.2
ERRCHECK_VERSION := v1.30.0
TOOLS := $(CURDIR)/.tools
STATICCHECK := $(TOOLS)/staticcheck-$(STATICCHECK_VERSION)
ERRCHECK := $(TOOLS)/errcheck-$(ERRCHECK_VERSION)

$(STATICCHECK) $(ERRCHECK) &:
	@mkdir -p $(TOOLS)
	env -u CGO_CFLAGS -u CGO_LDFLAGS CGO_ENABLED=0 GOFLAGS= GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	env -u CGO_CFLAGS -u CGO_LDFLAGS CGO_ENABLED=0 GOFLAGS= GOBIN=$(TOOLS) $(GO) install github.com/kisielk/errcheck@$(ERRCHECK_VERSION)
	mv $(TOOLS)/staticcheck $(STATICCHECK)
	mv $(TOOLS)/errcheck $(ERRCHECK)

lint: vet $(STATICCHECK) $(ERRCHECK) ## gofmt check, go vet, go mod tidy check, staticcheck and errcheck (pinned tools, installed on first use)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) mod tidy -diff
	$(STATICCHECK) ./...
	$(ERRCHECK) -ignoretests -exclude .errcheck-excludes ./...

vet: $(RUNTIME_STAMP)
	$(GO) vet ./...

env: ## print the cgo environment (eval "$$(make -s env)" to use go directly)
	@echo "export CGO_ENABLED=1 CGO_CFLAGS='$(CGO_CFLAGS)' CGO_LDFLAGS='$(CGO_LDFLAGS)' EDGE_AGENT_MODELS='$(EDGE_AGENT_MODELS)' GOFLAGS='-ldflags=$(LINKMODE)'"

bundle: $(RUNTIME_STAMP) ## device bundle for this machine's architecture in dist/
	VERSION=$(VERSION) cross/bundle.sh $(ARCH)

# Root only; the bookworm rootfs is made once (debootstrap) in .systemd-check/.
systemd-check: bundle ## install the bundle under a real systemd (nspawn container) and check the unit live
	scripts/systemd-check.sh dist/edge-agent-$(VERSION)-linux-$(ARCH)

cross: ## arm64 and armv7 device bundles in dist/ (cgo, Debian cross compilers)
	@scripts/deps.sh $(CROSS_DEPS)
	@for a in $(CROSS_ARCHES); do cross/bundle.sh $$a || exit 1; done

cross-check: cross ## run both ARM bundles under qemu-user: version, infer cat.bmp
	@for a in $(CROSS_ARCHES); do cross/check.sh $$a || exit 1; done

clean: ## remove build outputs (keeps the runtime prefix)
	rm -rf bin dist
