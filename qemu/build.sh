#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Build qemu-system-x86_64 with the vhost-user-udc device (qemu/patches/)
# from Debian's QEMU 10.0 source (bookworm-backports), and cache it.
#
#   qemu/build.sh            # prints the path of the binary as its last line
#
# Only the path goes to stdout; progress, apt, configure and ninja output go
# to stderr, so QEMU=$(qemu/build.sh) works.
#
# Environment:
#   VIRTIO_UDC_CACHE      cache root (default /var/cache/virtio-udc); the
#                         binary lands in $VIRTIO_UDC_CACHE/qemu/<key>/bin/
#   VIRTIO_UDC_QEMU_ORIG  upstream version of the orig tarball to build
#                         (default below); a different one may need the
#                         patches refreshed
#   VIRTIO_UDC_KEEP_BUILD=1  keep the source and build tree after success
#   JOBS                  ninja -j (default: nproc)
#
# Needs root on a fresh Debian 12 (apt); a later run whose cache entry
# exists needs neither root nor apt and returns at once.

set -Eeuo pipefail

# ---- what is built (everything here feeds the cache key) -----------------

# Recipe revision: bump when the steps below change what gets built.
RECIPE_REV=1
QEMU_ORIG_DEFAULT="10.0.2+ds"
# sha256 of qemu_${QEMU_ORIG_DEFAULT}.orig.tar.xz from bookworm-backports
QEMU_ORIG_DEFAULT_SHA256="0901da33844a331bf8b3602b9c1fbd178e60b737c8e3ade678255bd090c9b9f1"
QEMU_ORIG="${VIRTIO_UDC_QEMU_ORIG:-$QEMU_ORIG_DEFAULT}"
SUITE="bookworm-backports"

CONFIGURE_FLAGS=(
    --target-list=x86_64-softmmu
    --without-default-features
    --enable-tcg
    --enable-kvm
    --enable-vhost-user
    --enable-fdt=system
    # virtio-9p for udc-vm's --rodir/--rwdir (host folders in the guest);
    # glibc's sys/xattr.h is all it needs.
    --enable-attr
    --enable-virtfs
    # User-mode networking (-netdev user): the guest reaches the host's
    # loopback at 10.0.2.2, where the daemon's USB/IP server listens
    # (udc-vm's USB/IP cases attach the gadget to the guest's vhci_hcd).
    --enable-slirp
    --disable-docs
    --disable-install-blobs
    # Look for firmware where Debian's seabios / qemu-system-data /
    # ipxe-qemu put it, so -L is optional.
    --firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu
)

BUILD_DEPS=(
    build-essential ninja-build pkg-config libglib2.0-dev libfdt-dev
    zlib1g-dev flex bison patch python3 python3-venv xz-utils ca-certificates
    libslirp-dev
)
# Firmware the binary uses at run time (bios-256k.bin, vgabios, kvmvapic).
RUN_DEPS=(seabios qemu-system-data libslirp0)

PIP_PACKAGES=(meson==1.5.0 pycotap==1.3.1)

# ---- helpers ---------------------------------------------------------------

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PATCH_DIR="$HERE/patches"
CACHE_ROOT="${VIRTIO_UDC_CACHE:-/var/cache/virtio-udc}"
QCACHE="$CACHE_ROOT/qemu"

STEP="starting"
TAG=qemu
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
on_err() {
    local rc=$?
    printf 'qemu: error: step "%s" failed (exit %d)\n' "$STEP" "$rc" >&2
    exit "$rc"
}
trap on_err ERR

# Print the tail of a log file to stderr (used when a quiet step fails).
show_log() {
    local log="$1"
    if [[ -s "$log" ]]; then
        printf 'qemu: ---- last lines of %s ----\n' "$log" >&2
        tail -n 40 "$log" >&2
        printf 'qemu: ----\n' >&2
    fi
}

sha256_of_file() { sha256sum "$1" | cut -d' ' -f1; }

# ---- cache key and fast path (no apt, no root) ----------------------------

STEP="computing cache key"
shopt -s nullglob
PATCHES=("$PATCH_DIR"/*.patch)
shopt -u nullglob
[[ ${#PATCHES[@]} -gt 0 ]] || die "no patches in $PATCH_DIR"

KEY="$(
    {
        printf 'recipe %s\n' "$RECIPE_REV"
        printf 'orig qemu_%s.orig.tar.xz\n' "$QEMU_ORIG"
        for p in "${PATCHES[@]}"; do
            printf 'patch %s %s\n' "$(basename "$p")" "$(sha256_of_file "$p")"
        done
        printf 'configure'
        printf ' %s' "${CONFIGURE_FLAGS[@]}"
        printf '\n'
    } | sha256sum | cut -c1-16
)"
OUT="$QCACHE/$KEY"
QEMU_BIN="$OUT/bin/qemu-system-x86_64"

cached() { [[ -x "$QEMU_BIN" && -f "$OUT/.complete" ]]; }

if cached; then
    say "cached at $QEMU_BIN"
    printf '%s\n' "$QEMU_BIN"
    exit 0
fi

# ---- from here on we build ------------------------------------------------

STEP="creating cache directory"
mkdir -p "$QCACHE" 2>/dev/null ||
    die "cannot create $QCACHE (run as root, or set VIRTIO_UDC_CACHE)"
[[ -w "$QCACHE" ]] ||
    die "$QCACHE is not writable (run as root, or set VIRTIO_UDC_CACHE)"

# One build at a time per cache: wait for a concurrent run to finish.
exec 9>"$QCACHE/.lock"
if ! flock -n 9; then
    say "waiting for another build.sh run (lock $QCACHE/.lock)"
    flock 9
fi
if cached; then
    say "cached at $QEMU_BIN"
    printf '%s\n' "$QEMU_BIN"
    exit 0
fi

START=$SECONDS
LOGDIR="$QCACHE/logs"
mkdir -p "$LOGDIR"

# ---- apt ------------------------------------------------------------------

APT_UPDATED=0
need_root() {
    [[ $EUID -eq 0 ]] || die "$1 needs root; run build.sh as root"
}

apt_update_once() {
    [[ $APT_UPDATED -eq 0 ]] || return 0
    need_root "apt-get update"
    STEP="apt-get update"
    say "apt-get update"
    if ! apt-get update >"$LOGDIR/apt-update.log" 2>&1; then
        show_log "$LOGDIR/apt-update.log"
        die "apt-get update failed"
    fi
    APT_UPDATED=1
}

pkg_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

STEP="checking packages"
MISSING=()
for p in "${BUILD_DEPS[@]}" "${RUN_DEPS[@]}"; do
    pkg_installed "$p" || MISSING+=("$p")
done
if [[ ${#MISSING[@]} -gt 0 ]]; then
    need_root "installing ${MISSING[*]}"
    apt_update_once
    STEP="apt-get install"
    say "installing packages: ${MISSING[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        "${MISSING[@]}" >"$LOGDIR/apt-install.log" 2>&1; then
        show_log "$LOGDIR/apt-install.log"
        die "apt-get install ${MISSING[*]} failed"
    fi
fi

# A deb-src entry for bookworm-backports, for apt-get source.
SRC_LIST=/etc/apt/sources.list.d/virtio-udc-bookworm-backports-src.sources
# shellcheck disable=SC2016 # $(...) is apt's format syntax, not shell
deb_src_configured() {
    apt-get indextargets --no-release-info --format '$(RELEASE)' \
        'Identifier: Sources' 2>/dev/null | grep -qx "$SUITE"
}
# apt lists a target with release info only once its index is downloaded.
# shellcheck disable=SC2016 # $(...) is apt's format syntax, not shell
sources_downloaded() {
    local f
    f="$(apt-get indextargets --format '$(RELEASE) $(FILENAME)' \
        'Identifier: Sources' 2>/dev/null | awk -v s="$SUITE" '$1 == s { print $2; exit }')"
    [[ -n "$f" && -e "$f" ]]
}

ensure_deb_src() {
    STEP="checking deb-src $SUITE"
    if ! deb_src_configured; then
        need_root "adding a deb-src entry for $SUITE"
        say "adding deb-src $SUITE ($SRC_LIST)"
        cat >"$SRC_LIST" <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        APT_UPDATED=0
        deb_src_configured || die "apt does not see the deb-src entry in $SRC_LIST"
    fi
    if ! sources_downloaded; then
        apt_update_once
        sources_downloaded || die "apt-get update did not fetch the $SUITE Sources index"
    fi
}

# ---- python venv with meson -----------------------------------------------

VENV="$QCACHE/venv"
venv_ok() {
    [[ -x "$VENV/bin/python3" ]] &&
        "$VENV/bin/python3" -c 'import mesonbuild, pycotap' 2>/dev/null &&
        [[ "$("$VENV/bin/meson" --version 2>/dev/null)" == "1.5.0" ]]
}
if ! venv_ok; then
    STEP="creating python venv"
    say "creating python venv with ${PIP_PACKAGES[*]} ($VENV)"
    rm -rf "$VENV"
    # Debian's python (python3-venv), not whatever python3 is first on PATH.
    if ! /usr/bin/python3 -m venv "$VENV" >"$LOGDIR/venv.log" 2>&1 ||
        ! "$VENV/bin/pip" install --quiet "${PIP_PACKAGES[@]}" >>"$LOGDIR/venv.log" 2>&1; then
        show_log "$LOGDIR/venv.log"
        rm -rf "$VENV"
        die "could not create the python venv with ${PIP_PACKAGES[*]}"
    fi
    venv_ok || die "the venv at $VENV does not provide meson 1.5.0 and pycotap"
fi

# ---- source ---------------------------------------------------------------

DL="$QCACHE/dl"
TARBALL="$DL/qemu_${QEMU_ORIG}.orig.tar.xz"
mkdir -p "$DL"

fetch_source() {
    ensure_deb_src
    STEP="fetching source"
    say "fetching source (apt-get source --download-only qemu/$SUITE)"
    # The .dsc and .debian.tar.xz may 404 on the mirror while the orig
    # tarball downloads fine; only the orig tarball is used, so apt's exit
    # status is not what decides.
    (cd "$DL" && apt-get source --download-only "qemu/$SUITE") \
        >"$LOGDIR/apt-source.log" 2>&1 || true
}

if [[ ! -f "$TARBALL" ]]; then
    fetch_source
    if [[ ! -f "$TARBALL" && $APT_UPDATED -eq 0 ]]; then
        apt_update_once
        fetch_source
    fi
    if [[ ! -f "$TARBALL" ]]; then
        show_log "$LOGDIR/apt-source.log"
        got=("$DL"/qemu_*.orig.tar.*)
        if [[ -e "${got[0]}" ]]; then
            got=("${got[@]##*/}")
            die "apt brought ${got[*]} but build.sh wants qemu_${QEMU_ORIG}.orig.tar.xz;" \
                "$SUITE moved on: set VIRTIO_UDC_QEMU_ORIG (the patches may need a refresh)"
        fi
        die "could not download qemu_${QEMU_ORIG}.orig.tar.xz from $SUITE"
    fi
else
    say "source tarball already downloaded ($TARBALL)"
fi

if [[ "$QEMU_ORIG" == "$QEMU_ORIG_DEFAULT" ]]; then
    STEP="verifying source tarball"
    sum="$(sha256_of_file "$TARBALL")"
    if [[ "$sum" != "$QEMU_ORIG_DEFAULT_SHA256" ]]; then
        rm -f "$TARBALL"
        die "sha256 of $(basename "$TARBALL") is $sum, expected $QEMU_ORIG_DEFAULT_SHA256 (removed it; run again)"
    fi
fi

# ---- unpack, patch, configure, build ---------------------------------------

WORK="$OUT/work"
SRC="$WORK/src"
BUILD="$WORK/build"

STEP="unpacking source"
say "unpacking $(basename "$TARBALL")"
rm -rf "$OUT"
mkdir -p "$SRC"
tar -xf "$TARBALL" -C "$SRC" --strip-components=1 --no-same-owner ||
    die "cannot unpack $TARBALL"
[[ -f "$SRC/meson.build" && -f "$SRC/configure" ]] ||
    die "$TARBALL does not look like a QEMU source tree"

STEP="applying patches"
for p in "${PATCHES[@]}"; do
    say "applying $(basename "$p")"
    if ! patch -d "$SRC" -p1 --forward --batch --quiet <"$p" >"$LOGDIR/patch.log" 2>&1; then
        show_log "$LOGDIR/patch.log"
        die "$(basename "$p") does not apply to qemu_${QEMU_ORIG}"
    fi
done

# The +ds tarball has no edk2 firmware blobs: do not try to unpack them.
STEP="disabling edk2 blob unpacking"
sed -i 's/^\([[:space:]]*unpack_edk2_blobs = \)bzip2\.found()/\1false/' "$SRC/meson.build"
if grep -q 'unpack_edk2_blobs = bzip2' "$SRC/meson.build" ||
    ! grep -q '^[[:space:]]*unpack_edk2_blobs = false$' "$SRC/meson.build"; then
    die "could not disable the edk2 blob unpacking in meson.build"
fi

STEP="configuring"
say "configuring (${CONFIGURE_FLAGS[*]})"
mkdir -p "$BUILD"
if ! (cd "$BUILD" && "$SRC/configure" --python="$VENV/bin/python3" \
    "${CONFIGURE_FLAGS[@]}") >"$LOGDIR/configure.log" 2>&1; then
    show_log "$LOGDIR/configure.log"
    die "configure failed (full log: $LOGDIR/configure.log)"
fi

STEP="building"
JOBS="${JOBS:-$(nproc)}"
say "building with ninja -j$JOBS (log: $LOGDIR/ninja.log)"
if ! ninja -C "$BUILD" -j"$JOBS" qemu-system-x86_64 2>&1 | tee "$LOGDIR/ninja.log" >&2; then
    die "ninja failed (full log: $LOGDIR/ninja.log)"
fi

STEP="installing"
install -D -m 0755 "$BUILD/qemu-system-x86_64" "$QEMU_BIN"
"$QEMU_BIN" -device help 2>/dev/null | grep -q '"vhost-user-udc-pci"' ||
    die "the built $QEMU_BIN has no vhost-user-udc-pci device"
{
    printf 'key %s\n' "$KEY"
    printf 'orig qemu_%s.orig.tar.xz\n' "$QEMU_ORIG"
    for p in "${PATCHES[@]}"; do
        printf 'patch %s\n' "$(basename "$p")"
    done
    printf 'configure %s\n' "${CONFIGURE_FLAGS[*]}"
    printf 'built %s in %ds\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$((SECONDS - START))"
} >"$OUT/BUILDINFO"
if [[ "${VIRTIO_UDC_KEEP_BUILD:-0}" != 1 ]]; then
    rm -rf "$WORK"
fi
touch "$OUT/.complete"

say "built in $((SECONDS - START))s"
say "cached at $QEMU_BIN"
printf '%s\n' "$QEMU_BIN"
