#!/usr/bin/env bash
# `make soak DURATION=10m`: build what the soak needs (the daemon and
# tools, QEMU, the guest image), then run `udc-vm soak` for DURATION under
# seeded random latency, NAKs and faults (its default injection; a fresh
# seed, printed, unless SOAK_ARGS gives --seed), with QEMU and the daemon
# as the unprivileged udc-runner. Logs and the report (soak.txt) in
# target/vm/soak-DURATION/.
#   scripts/soak.sh DURATION [udc-vm options...]
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=soak
. scripts/common.sh
duration=${1:?usage: scripts/soak.sh DURATION [udc-vm options]}
shift
echo "soak: building the daemon and tools (cargo build --release)"
cargo build --release -q --workspace --bins
qemu=$(qemu/build.sh | tail -1)
image=$(images/build.sh | tail -1)
out=$(run_dir_for udc-runner "target/vm/soak-$duration")
exec target/release/udc-vm soak --qemu "$qemu" --image "$image" --duration "$duration" \
    --user udc-runner --out "$out" "$@"
