#!/usr/bin/env bash
# The kernel's own user-space test tools for the guest, built static from
# Debian's linux-source-6.12, unmodified: tools/usb/ffs-test.c (a
# FunctionFS gadget with a source/sink bulk pair) and tools/usb/testusb.c
# (the host side of the usbtest driver). Also the one place that downloads
# linux-source-6.12: its tarball is kept once per version under
# ${VIRTIO_UDC_CACHE:-/var/cache/virtio-udc}/linux-source/VERSION/, and
# other scripts (images/kunit-parser.sh) take members from it.
# Progress goes to stderr; the result is the last line on stdout.
#
#   images/kernel-tools.sh [--version 6.12.118]          build; prints the
#                                    directory holding ffs-test and testusb
#   images/kernel-tools.sh tarball [--version 6.12.118]  prints the path of
#                                    linux-source-6.12.tar.xz
#
#   --version V   the linux-source-6.12 of Debian's 6.12.V (the image's
#                 kernel version); without it, or when the archive no
#                 longer serves that one, the newest it serves
set -euo pipefail

cache=${VIRTIO_UDC_CACHE:-/var/cache/virtio-udc}
# Bump when the build steps below change what gets built.
recipe=1
want=""
cmd=build

TAG=kernel-tools
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"

usage() {
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

while [ $# -gt 0 ]; do
    case "$1" in
        tarball|build) cmd=$1; shift ;;
        --version) want=${2:?--version needs a value such as 6.12.118}; shift 2 ;;
        -h|--help) usage 0 ;;
        *) printf 'kernel-tools: unknown argument %s\n' "$1" >&2; usage ;;
    esac
done
want=${want%%+*}
want=${want%%-*}

# ------------------------------------------------------------ the source --

# The binary packages' versions of linux-source-6.12, newest first.
served() {
    apt-cache madison linux-source-6.12 2>/dev/null | awk -F' *[|] *' '$3 ~ /Packages$/ {print $2}' | sort -rV
}
pkgver=""
if [ -n "$want" ]; then
    pkgver=$(served | awk -v v="$want" 'index($0, v "-") == 1 {print; exit}')
    [ -n "$pkgver" ] || say "note: the archive serves no linux-source-6.12 of $want: taking the newest"
fi
[ -n "$pkgver" ] || pkgver=$(served | head -1)
if [ -z "$pkgver" ]; then
    say "no linux-source-6.12 in the package lists yet: apt-get update"
    apt-get update -q >&2 || true
    pkgver=$(served | head -1)
fi
# Without the package lists, the newest tarball already cached will do.
if [ -z "$pkgver" ]; then
    pkgver=$(find "$cache/linux-source" -mindepth 2 -maxdepth 2 -name linux-source-6.12.tar.xz 2>/dev/null |
        awk -F/ '{print $(NF-1)}' | sort -rV | head -1)
    [ -n "$pkgver" ] || die "no linux-source-6.12 in the package lists and none cached (is bookworm-security in the apt sources?)"
    say "note: no package lists: using the cached linux-source-6.12 $pkgver"
fi

srcdir="$cache/linux-source/$pkgver"
tarball="$srcdir/linux-source-6.12.tar.xz"
if [ -f "$srcdir/.done" ]; then
    say "linux-source-6.12 $pkgver: cached"
else
    say "linux-source-6.12 $pkgver: downloading (about 150 MB, once)"
    mkdir -p "$cache/linux-source"
    tmp=$(mktemp -d "$cache/linux-source/.download.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download "linux-source-6.12=$pkgver" >&2) ||
        die "cannot download linux-source-6.12=$pkgver (apt-get update first?)"
    dpkg-deb --fsys-tarfile "$tmp"/linux-source-6.12_*.deb |
        tar -C "$tmp" -x ./usr/src/linux-source-6.12.tar.xz ||
        die "linux-source-6.12 $pkgver: no usr/src/linux-source-6.12.tar.xz in the package"
    rm -rf "$srcdir"
    mkdir -p "$srcdir"
    mv "$tmp/usr/src/linux-source-6.12.tar.xz" "$tarball"
    echo "$pkgver" > "$srcdir/.done"
    rm -rf "$tmp"
    trap - EXIT
fi

if [ "$cmd" = tarball ]; then
    echo "$tarball"
    exit 0
fi

# ------------------------------------------------------------- the tools --

missing=()
command -v gcc >/dev/null || missing+=(gcc)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || missing+=(libc6-dev)
command -v file >/dev/null || missing+=(file)
install_packages "${missing[@]}"

# What the tools are built from, inside the tarball. ffs-test includes
# <tools/le_byteshift.h> (tools/include) and the uapi <linux/usb/functionfs.h>
# of this very version, not the build host's.
members=(tools/usb/ffs-test.c tools/usb/testusb.c tools/include/tools
    include/uapi/linux/usb)
key=$( (echo "recipe $recipe $pkgver"; gcc --version | head -1; sha256sum < "$0") | sha256sum | cut -c1-16)
out="$cache/kernel-tools/$key"
if [ -f "$out/.done" ]; then
    say "ffs-test, testusb $key: cached"
    echo "$out"
    exit 0
fi
stage=$(mktemp -d "${TMPDIR:-/tmp}/udc-ktools.XXXXXX")
trap 'rm -rf "$stage"' EXIT
say "unpacking ${members[*]}"
tar -C "$stage" --strip-components=1 -xJf "$tarball" "${members[@]/#/linux-source-6.12/}" ||
    die "linux-source-6.12 $pkgver: ${members[*]} not all in its tarball"
# The uapi headers as the kernel installs them: <linux/usb/functionfs.h>
# from include/uapi first, everything else (<linux/types.h> ...) from the
# build host's linux-libc-dev.
inc=(-I"$stage/tools/include" -I"$stage/include/uapi")
cflags=(-O2 -Wall -static -pthread)
say "building tools/usb/ffs-test.c and tools/usb/testusb.c (static)"
mkdir -p "$stage/out"
gcc "${cflags[@]}" "${inc[@]}" -o "$stage/out/ffs-test" "$stage/tools/usb/ffs-test.c" >&2 ||
    die "tools/usb/ffs-test.c did not build"
gcc "${cflags[@]}" -o "$stage/out/testusb" "$stage/tools/usb/testusb.c" >&2 ||
    die "tools/usb/testusb.c did not build"
for b in ffs-test testusb; do
    file -L "$stage/out/$b" | grep -q 'statically linked' || die "$b is not statically linked"
done
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
strip -o "$out.tmp/ffs-test" "$stage/out/ffs-test"
strip -o "$out.tmp/testusb" "$stage/out/testusb"
cp "$stage/tools/usb/ffs-test.c" "$stage/tools/usb/testusb.c" "$out.tmp/"
echo "linux-source-6.12 $pkgver, tools/usb, unmodified; gcc ${cflags[*]}" > "$out.tmp/source"
touch "$out.tmp/.done"
rm -rf "$out"
mv "$out.tmp" "$out"
say "ffs-test, testusb $key: built from linux-source-6.12 $pkgver"
echo "$out"
