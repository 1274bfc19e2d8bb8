# virtio-udc: `make demo` and `make test` work on a fresh Debian 12 machine
# as root; each sets up what it needs first.

CARGO ?= cargo

.PHONY: all setup build test demo bench fuzz debug-kernel clean

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

# The fuzz targets (fuzz/) under AFL++, each for FUZZ_SECONDS (default 60);
# FUZZ_TARGET=NAME runs one. Installs cargo-afl and AFL++ the first time.
fuzz:
	@scripts/fuzz.sh

# A small KASAN/lockdep kernel tree for `udc-vm test --kdir TREE`, built from
# Debian's linux-source-6.12 (images/debug-kernel.sh; cached, not part of
# `make test`): the tree is the last line. DEBUG_KERNEL_ARGS="--version 6.12.111".
debug-kernel: setup
	@images/debug-kernel.sh $(DEBUG_KERNEL_ARGS)

clean:
	$(CARGO) clean
