# virtio-udc: `make demo` and `make test` work on a fresh Debian 12 machine
# as root; each sets up what it needs first.

CARGO ?= cargo

.PHONY: all setup build test demo bench clean

all: build

setup:
	@scripts/setup-host.sh

build: setup
	$(CARGO) build --release --workspace

test: setup
	@scripts/run-tests.sh

demo: setup
	@scripts/demo.sh

bench: setup
	$(CARGO) run --release -q -p udc-harness --bin udc-proto-bench -- $(BENCH_ARGS)

clean:
	$(CARGO) clean
