#!/usr/bin/env bash
# `make demo`: build, then run the demo of every tier that exists.
# Today that is the protocol tier (the guest side is in progress): the real
# daemon and a fake guest over vhost-user enumerate a gadget at each speed
# and move verified data both ways.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "demo: building (cargo build --release)"
cargo build --release -q --workspace --bins
exec target/release/udc-proto-demo
