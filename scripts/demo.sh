#!/usr/bin/env bash
# `make demo`: build everything (QEMU with vhost-user-udc-pci, the guest
# image with virtio_udc.ko and the guest tool, the daemon), boot the guest,
# let the USB host enumerate a FunctionFS gadget, and move data both ways
# with read()/write(), verified byte for byte, printing MiB/s.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "demo: building the daemon and tools (cargo build --release)"
cargo build --release -q --workspace --bins
qemu=$(qemu/build.sh | tail -1)
image=$(images/build.sh | tail -1)
out=target/vm/demo
mkdir -p "$out"
echo "demo: booting the guest (QEMU TCG); the USB host model enumerates the gadget at SuperSpeed"
exec target/release/udc-vm run --qemu "$qemu" --image "$image" --speed super --out "$out" \
    -- udc-gadget demo --size "${DEMO_SIZE:-268435456}"
