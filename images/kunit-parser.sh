#!/usr/bin/env bash
# The kernel's own KTAP parser, tools/testing/kunit/kunit.py, from Debian's
# linux-source-6.12 (the tarball images/kernel-tools.sh keeps; only that
# directory is unpacked), to check that what `udc-vm test --ktap` writes is
# what kselftest and KUnit tooling read.
# Cached under ${VIRTIO_UDC_CACHE:-/var/cache/virtio-udc}/kunit-parser/VERSION;
# the path of kunit.py is the last line on stdout.
#
#   images/kunit-parser.sh && python3 "$(images/kunit-parser.sh | tail -1)" parse FILE
set -euo pipefail

cache=${VIRTIO_UDC_CACHE:-/var/cache/virtio-udc}
TAG=kunit
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"

# The newest version the archive serves as a binary package.
pkgver=$(apt-cache madison linux-source-6.12 2>/dev/null | awk -F' *[|] *' '$3 ~ /Packages$/ {print $2}' |
    sort -V | tail -1)
[ -n "$pkgver" ] || die "no linux-source-6.12 in the package lists (apt-get update?)"
dest="$cache/kunit-parser/$pkgver"
if [ ! -f "$dest/tools/testing/kunit/kunit.py" ]; then
    tarball=$("$(dirname "$0")/kernel-tools.sh" tarball --version "${pkgver%%-*}" | tail -1) ||
        die "no linux-source-6.12 tarball (images/kernel-tools.sh)"
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/udc-kunit.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    say "unpacking tools/testing/kunit"
    tar -C "$tmp" -xJf "$tarball" "linux-source-6.12/tools/testing/kunit" ||
        die "linux-source-6.12 $pkgver has no tools/testing/kunit"
    mkdir -p "$dest"
    cp -a "$tmp/linux-source-6.12/tools" "$dest/"
fi
echo "$dest/tools/testing/kunit/kunit.py"
