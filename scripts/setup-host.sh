#!/usr/bin/env bash
# Installs what building and testing virtio-udc needs on a Debian 12 host.
# Idempotent and quiet when everything is already there.
set -euo pipefail

say() { printf 'setup: %s\n' "$*"; }

need_apt=()
# The VM tier's tools too: the runner's tests unpack cpio archives, the
# image build needs busybox-static, kmod, dwarves (pahole, for the module's
# BTF), xz/zstd for modules, perl for checkpatch; python3 runs QEMU's smoke
# test; tshark dissects the bus captures (docs/capture.md); usb.ids names
# vendors for `ctl lsusb`. qemu/build.sh
# installs QEMU's own build dependencies.
for pkg in build-essential pkg-config ca-certificates cpio busybox-static kmod dwarves \
    xz-utils zstd file bc perl python3 tshark usb.ids; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: missing packages ${need_apt[*]}; run as root or install them" >&2
        exit 1
    fi
    say "installing ${need_apt[*]}"
    apt-get update -q
    # tshark asks whether non-root users may capture: they need not.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
fi

# The Rust toolchain: rustup's if present; otherwise Debian's rustc-web
# (bookworm ships 1.63 as "rustc", too old for the rust-vmm crates).
if ! command -v cargo >/dev/null 2>&1; then
    say "no cargo on PATH: installing Debian's cargo-web/rustc-web"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q cargo-web rustc-web || {
        echo "setup: no Rust toolchain (need >= 1.80); install one with rustup" >&2
        exit 1
    }
fi
ver=$(rustc --version | awk '{print $2}')
case "$ver" in
    1.[0-7][0-9].*) echo "setup: rustc $ver is too old; need >= 1.80" >&2; exit 1 ;;
esac
# make test's gates need rustfmt and clippy beside cargo.
for tool in fmt clippy; do
    if ! cargo "$tool" --version >/dev/null 2>&1; then
        echo "setup: 'cargo $tool' is missing; install it (rustup component add ${tool/fmt/rustfmt})" >&2
        exit 1
    fi
done
say "rustc $ver, cargo $(cargo --version | awk '{print $2}'), rustfmt and clippy present"

# The VM tier's unprivileged runs (`udc-vm --user udc-runner`, the soak in
# make test): a system user with no login shell and no home, whose own
# group is its only group. udc-vm (root) starts QEMU and the daemon as it.
if [ "$(id -u)" = 0 ]; then
    if ! getent passwd udc-runner >/dev/null; then
        say "creating the system user udc-runner (QEMU and the daemon run as it in the VM tier)"
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin --comment "virtio-udc VM runs" udc-runner
    fi
    # The daemon's one extra: /dev/udmabuf (host DMABUFs of guest memory)
    # through group udmabuf, which udc-vm keeps as the daemon's only
    # supplementary group. Only where the device exists.
    if [ -c /dev/udmabuf ]; then
        getent group udmabuf >/dev/null || groupadd --system udmabuf
        rule=/etc/udev/rules.d/60-udmabuf.rules
        want='KERNEL=="udmabuf", GROUP="udmabuf", MODE="0660"'
        if [ "$(cat "$rule" 2>/dev/null)" != "$want" ]; then
            say "/dev/udmabuf: group udmabuf, mode 0660 ($rule)"
            echo "$want" > "$rule"
        fi
        chgrp udmabuf /dev/udmabuf && chmod 0660 /dev/udmabuf
    fi
fi
