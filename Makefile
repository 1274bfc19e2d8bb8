# virtio-udc: `make demo` and `make test` work on a fresh Debian 12 machine
# as root; each sets up what it needs first.

CARGO ?= cargo

.PHONY: all setup build test soak demo bench fuzz debug-kernel clean

all: build

setup:
	@scripts/setup-host.sh

build: setup
	$(CARGO) build --release --workspace

test: setup
	@scripts/run-tests.sh

demo: setup
	@scripts/demo.sh

# The soak: read/write and DMABUF transfers both ways under seeded random
# delays and faults for DURATION (60s, 10m, 2h), every byte checked, with
# QEMU and the daemon as the unprivileged udc-runner (scripts/setup-host.sh
# creates it). SOAK_ARGS adds udc-vm options, e.g. SOAK_ARGS="--seed 7".
DURATION ?= 10m
soak: setup
	@scripts/soak.sh $(DURATION) $(SOAK_ARGS)

bench: setup
	$(CARGO) run --release -q -p udc-harness --bin udc-proto-bench -- $(BENCH_ARGS)

# The fuzz targets (fuzz/) under AFL++, each for FUZZ_SECONDS (default 60)
# or FUZZ_EXECS executions; FUZZ_TARGET=NAME runs one. Installs cargo-afl and AFL++ the first time.
fuzz:
	@scripts/fuzz.sh

# A small KASAN/lockdep kernel tree for `udc-vm test --kdir TREE`, built from
# Debian's linux-source-6.12 (images/debug-kernel.sh; cached, not part of
# `make test`): the tree is the last line. DEBUG_KERNEL_ARGS="--version 6.12.111".
debug-kernel: setup
	@images/debug-kernel.sh $(DEBUG_KERNEL_ARGS)

clean:
	$(CARGO) clean
