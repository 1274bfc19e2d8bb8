#!/usr/bin/env bash
# Runs the kernel's own style checks on the guest driver, as a maintainer
# would before taking it as drivers/usb/gadget/udc/virtio/, and on the
# f_fs fix series in patches/linux:
# scripts/checkpatch.pl --strict (inside a kernel tree, so it knows the
# kernel's identifiers) and scripts/kernel-doc -Wall. The kernel scripts come
# from Debian's linux-source-6.12 package, unpacked once into the cache.
# Exit status 0 only when both report nothing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${VIRTIO_UDC_CACHE:-/var/cache/virtio-udc}
TAG=checkpatch
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"

tree="$cache/checkpatch/linux-6.12"
if [ ! -f "$tree/.done" ]; then
    say "fetching linux-source-6.12 for scripts/checkpatch.pl (once)"
    command -v perl >/dev/null || die "perl is missing"
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/udc-ksrc.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download linux-source-6.12 >&2) ||
        die "cannot download linux-source-6.12 (apt-get update first?)"
    dpkg -x "$tmp"/linux-source-6.12_*.deb "$tmp/x"
    rm -rf "$tree"
    mkdir -p "$tree"
    say "unpacking scripts/ and include/"
    tar -C "$tree" --strip-components=1 -xaf "$tmp"/x/usr/src/linux-source-6.12.tar.xz \
        --wildcards 'linux-source-6.12/scripts/*' 'linux-source-6.12/include/*' \
        'linux-source-6.12/arch/x86/include/*' 'linux-source-6.12/MAINTAINERS' \
        'linux-source-6.12/COPYING' 'linux-source-6.12/CREDITS' 'linux-source-6.12/Kbuild' \
        'linux-source-6.12/Makefile' 'linux-source-6.12/README'
    # checkpatch.pl recognises a kernel tree by these top-level entries.
    mkdir -p "$tree"/{Documentation,drivers/usb/gadget/udc,fs,init,ipc,kernel,lib}
    touch "$tree/.done"
fi

# The files where a submission puts them: the driver, its uapi header and its
# Kconfig entry (kept apart from the tree's own Kconfig, which it would join).
src="$here/virtio-udc"
drv=drivers/usb/gadget/udc/virtio
mkdir -p "$tree/include/uapi/linux" "$tree/$drv"
rm -f "$tree/drivers/usb/gadget/udc/virtio_udc.c"
cp "$src"/vudc_core.c "$src"/vudc_udc.c "$src"/vudc.h "$src"/vudc_trace.h "$tree/$drv/"
cp "$src/include/uapi/linux/virtio_udc.h" "$tree/include/uapi/linux/virtio_udc.h"
cp "$src/Kconfig" "$tree/drivers/usb/gadget/udc/Kconfig.virtio_udc"
status=0
(cd "$tree" && perl scripts/checkpatch.pl --strict --quiet -f \
    $drv/vudc_core.c $drv/vudc_udc.c $drv/vudc.h $drv/vudc_trace.h include/uapi/linux/virtio_udc.h \
    drivers/usb/gadget/udc/Kconfig.virtio_udc) || status=1
# What is not submitted: the out-of-tree compat headers.
(cd "$tree" && perl scripts/checkpatch.pl --strict --quiet --no-tree -f "$src"/compat/*.h) || status=1
# The driver has no kernel-version conditionals: those live in compat/.
if grep -nE '^#[[:space:]]*if.*(LINUX_VERSION_CODE|KERNEL_VERSION)' "$src"/vudc_core.c "$src"/vudc_udc.c "$src"/vudc.h; then
    say "the driver tests the kernel version: move that to compat/"
    status=1
fi
# The f_fs fix series, as a maintainer runs checkpatch on a patch. The
# tree here is not a git repository, so the Fixes: commit ids cannot be
# looked up (they were checked against the kernel's history by hand).
for p in "$here"/../patches/linux/*.patch; do
    [ -f "$p" ] || continue
    (cd "$tree" && perl scripts/checkpatch.pl --strict --quiet --ignore UNKNOWN_COMMIT_ID "$p") || status=1
done
doc=$(cd "$tree" && perl scripts/kernel-doc -none -Wall $drv/vudc_core.c $drv/vudc_udc.c $drv/vudc.h \
    include/uapi/linux/virtio_udc.h 2>&1) || status=1
[ -z "$doc" ] || { printf '%s\n' "$doc"; status=1; }
if [ $status = 0 ]; then
    say "the driver (vudc_core.c, vudc_udc.c, vudc.h, vudc_trace.h), uapi virtio_udc.h, Kconfig: checkpatch --strict and kernel-doc -Wall clean"
    say "patches/linux: checkpatch --strict clean"
fi
exit $status
