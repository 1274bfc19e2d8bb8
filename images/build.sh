#!/usr/bin/env bash
# Builds the virtio-udc guest image (docs/vm-tier.md, "Image"): a Debian 6.12
# kernel fetched without installing it, virtio_udc.ko built against its
# headers, and an initramfs with busybox, the modules, the guest tool and the
# guest test binaries. Progress goes to stderr; the image directory is the
# last line on stdout. Everything is cached by content under
# ${VIRTIO_UDC_CACHE:-/var/cache/virtio-udc}: a second run with nothing
# changed only hashes. Of the images, the $VIRTIO_UDC_KEEP_IMAGES (6) most
# recently used are kept.
#
#   images/build.sh                          newest linux-image-6.12.*+deb12-amd64
#   images/build.sh --kernel-version 6.12.48+deb12
#   images/build.sh --kdir ~/linux           a built kernel tree: its bzImage
#                                            and modules, never installed
#   images/build.sh --kernel BZIMAGE --modules /lib/modules/REL [--kdir KDIR]
#   images/build.sh --list-kernels           the Debian 6.12 versions served
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cache=${VIRTIO_UDC_CACHE:-/var/cache/virtio-udc}
kver=${VIRTIO_UDC_KERNEL_VERSION:-}
byo_kernel=""
byo_modules=""
byo_kdir=""
list_kernels=""

TAG=image
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"

usage() {
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --kernel-version) kver=${2:?--kernel-version needs a value}; shift 2 ;;
        --kernel) byo_kernel=${2:?--kernel needs a bzImage}; shift 2 ;;
        --modules) byo_modules=${2:?--modules needs a directory}; shift 2 ;;
        --kdir) byo_kdir=${2:?--kdir needs a kernel build tree}; shift 2 ;;
        --list-kernels) list_kernels=1; shift ;;
        -h|--help) usage 0 ;;
        *) printf 'image: unknown argument %s\n' "$1" >&2; usage ;;
    esac
done

if [ -n "$byo_kernel$byo_modules" ]; then
    [ -n "$byo_kernel" ] && [ -n "$byo_modules" ] || die "--kernel and --modules go together (--kdir is optional)"
    [ -f "$byo_kernel" ] || die "--kernel $byo_kernel: no such file"
    [ -d "$byo_modules/kernel" ] || die "--modules $byo_modules: not a module tree (no kernel/ inside; give /lib/modules/<release>)"
fi
[ -z "$kver" ] || [ -z "$byo_kernel$byo_kdir" ] || die "--kernel-version does not go with --kernel or --kdir"

# The Debian 6.12 kernels the archive serves, one version per line.
debian_kernels() {
    apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$' |
        awk '{print $1}' | sed 's/^linux-image-//; s/-amd64-unsigned$//' | sort -V
}

# bookworm-backports serves one more 6.12 kernel (6.12.95 as of this
# writing), older than bookworm-security's. A deb entry for it; the archive
# pins backports low, so nothing is installed from there unless asked for.
backports_list=/etc/apt/sources.list.d/virtio-udc-bookworm-backports.sources
ensure_backports_deb() {
    [ -f "$backports_list" ] && return 0
    if [ "$(id -u)" != 0 ]; then
        say "note: no deb entry for bookworm-backports (run as root to add one): its 6.12 kernel is not listed"
        return 0
    fi
    say "adding a deb entry for bookworm-backports ($backports_list) and updating the package lists"
    cat > "$backports_list" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -q >&2
}

if [ -n "$list_kernels" ]; then
    ensure_backports_deb
    debian_kernels
    exit 0
fi

need_tools() {
    local missing=()
    command -v busybox >/dev/null && file -L "$(command -v busybox)" | grep -q 'statically linked' || missing+=(busybox-static)
    command -v pahole >/dev/null || missing+=(dwarves)
    command -v modprobe >/dev/null || missing+=(kmod)
    command -v cpio >/dev/null || missing+=(cpio)
    command -v xz >/dev/null || missing+=(xz-utils)
    command -v zstd >/dev/null || missing+=(zstd)
    command -v file >/dev/null || missing+=(file)
    command -v gcc-12 >/dev/null || missing+=(gcc-12)
    command -v bc >/dev/null || missing+=(bc)
    install_packages "${missing[@]}"
}
need_tools

# ---------------------------------------------------------------- kernel --

fetch_debian_kernel() {
    if [ -z "$kver" ]; then
        kver=$(debian_kernels | tail -1)
        if [ -z "$kver" ]; then
            say "no linux-image-6.12 in the package lists yet: apt-get update"
            apt-get update -q >&2
            kver=$(debian_kernels | tail -1)
        fi
        [ -n "$kver" ] || die "no linux-image-6.12.*+deb12-amd64 in Debian's archive (is bookworm-security in the apt sources?)"
    fi
    case "$kver" in
        6.12.*+deb12) ;;
        *) die "--kernel-version $kver: expected a Debian 6.12 version such as 6.12.48+deb12" ;;
    esac
    if ! debian_kernels | grep -qxF "$kver"; then
        ensure_backports_deb
        debian_kernels | grep -qxF "$kver" ||
            die "--kernel-version $kver: Debian serves no such kernel; it has: $(debian_kernels | tr '\n' ' ')"
    fi
    release="$kver-amd64"
    kroot="$cache/kernel/$kver"
    if [ -f "$kroot/.done" ]; then
        say "kernel $release: cached"
    else
        say "kernel $release: downloading"
        rm -rf "$kroot"
        mkdir -p "$kroot/debs"
        local pkgs=("linux-image-$kver-amd64-unsigned" "linux-headers-$kver-amd64"
            "linux-headers-$kver-common" "linux-kbuild-$kver")
        (cd "$kroot/debs" && apt-get download "${pkgs[@]}" >&2) ||
            die "cannot download ${pkgs[*]}: is $kver still in the archive? (apt-cache policy linux-image-$kver-amd64-unsigned)"
        say "kernel $release: unpacking"
        for deb in "$kroot"/debs/*.deb; do dpkg -x "$deb" "$kroot/root"; done
        rm -rf "$kroot/debs"
        # The -amd64 headers include their -common half by absolute path.
        sed -i "s|^include /usr/src/|include ../|" "$kroot/root/usr/src/linux-headers-$release/Makefile"
        depmod -b "$kroot/root" "$release"
        touch "$kroot/.done"
    fi
    bzimage="$kroot/root/boot/vmlinuz-$release"
    moddir="$kroot/root/lib/modules/$release"
    kdir="$kroot/root/usr/src/linux-headers-$release"
    kernel_id="debian-$kver"
    kernel_desc="Debian $kver"
}

# The options of images/udc.config's "required" and "wanted" parts that
# $1/.config lacks, one per line as "required CONFIG_X=y" or "wanted ...".
missing_options() {
    local config=$1/.config part="" line opt want have
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in
            '# --- '*) part=${line#'# --- '}; continue ;;
            CONFIG_*=*) ;;
            *) continue ;;
        esac
        [ "$part" = required ] || [ "$part" = wanted ] || continue
        opt=${line%%=*}
        want=${line#*=}
        have=$(sed -n "s/^$opt=//p" "$config" 2>/dev/null)
        # "m" is met by a module or built in; any other value must be exact.
        case "$want:$have" in
            m:y|m:m) ;;
            *) [ "$want" = "$have" ] || echo "$part $opt=$want${have:+ (it has $have)}" ;;
        esac
    done < "$here/udc.config"
}

check_config() {
    local kd=$1 missing
    [ -f "$kd/.config" ] || die "$kd has no .config: give the tree the kernel was built in"
    missing=$(missing_options "$kd")
    # (a here-string: with pipefail, grep -q ending first could fail a pipe)
    if grep -q '^required ' <<< "$missing"; then
        die "$kd/.config lacks what the guest needs (images/udc.config; merge it with scripts/kconfig/merge_config.sh):
$(printf '%s\n' "$missing" | sed -n 's/^required /  /p')"
    fi
    if [ -n "$missing" ]; then
        say "note: $kd/.config lacks options some cases want (images/udc.config):"
        printf '%s\n' "$missing" | sed -n 's/^wanted /  /p' >&2
    fi
}

# A kernel tree the user built (make bzImage modules): its bzImage and
# its modules, copied into the cache, never installed on this host.
use_kernel_tree() {
    [ -d "$byo_kdir" ] || die "--kdir $byo_kdir: no such directory"
    kdir=$(cd "$byo_kdir" && pwd)
    bzimage="$kdir/arch/x86/boot/bzImage"
    [ -f "$bzimage" ] || die "--kdir $kdir: no arch/x86/boot/bzImage: build the kernel first (make bzImage modules)"
    [ -f "$kdir/modules.order" ] || die "--kdir $kdir: no modules.order: build the modules first (make modules)"
    release=$(cat "$kdir/include/config/kernel.release" 2>/dev/null) ||
        die "--kdir $kdir: no include/config/kernel.release"
    check_config "$kdir"
    # modules.order names each module's .o (Linux 6.2 and later) or .ko.
    local modules
    modules=$(sed -n 's/\.k\{0,1\}o$/.ko/p' "$kdir/modules.order")
    kernel_id="tree-$( (echo "$release"; sha256sum < "$bzimage"; printf '%s\n' "$modules" | while read -r ko; do
        [ -z "$ko" ] || [ ! -f "$kdir/$ko" ] || sha256sum < "$kdir/$ko"; done) | sha256sum | cut -c1-16)"
    local root="$cache/kernel/$kernel_id/root"
    moddir="$root/lib/modules/$release"
    if [ ! -f "$moddir/.done" ]; then
        say "kernel $release (tree $kdir): collecting modules"
        rm -rf "$root"
        mkdir -p "$moddir/kernel"
        local ko n=0 stale=()
        while read -r ko; do
            [ -n "$ko" ] || continue
            [ -f "$kdir/$ko" ] || die "$kdir/$ko is in modules.order but not built: make modules"
            # A module of an earlier build (make bzImage after a config
            # change, without make modules) would not load in the guest.
            case "$(modinfo -F vermagic "$kdir/$ko" 2>/dev/null)" in
                "$release "*) ;;
                *) stale+=("$ko") ;;
            esac
            mkdir -p "$moddir/kernel/$(dirname "$ko")"
            cp "$kdir/$ko" "$moddir/kernel/$ko"
            n=$((n + 1))
        done <<< "$modules"
        if [ ${#stale[@]} -gt 0 ]; then
            rm -rf "$cache/kernel/$kernel_id"
            die "--kdir $kdir: modules not built for $release (make modules again): ${stale[*]:0:5}$([ ${#stale[@]} -le 5 ] || echo " and $((${#stale[@]} - 5)) more")"
        fi
        printf '%s\n' "$modules" | sed '/^$/d; s|^|kernel/|' > "$moddir/modules.order"
        [ -f "$kdir/modules.builtin" ] && cp "$kdir/modules.builtin" "$moddir/"
        [ -f "$kdir/modules.builtin.modinfo" ] && cp "$kdir/modules.builtin.modinfo" "$moddir/"
        depmod -b "$root" "$release"
        touch "$moddir/.done"
        say "kernel $release (tree $kdir): $n modules"
    fi
    kernel_desc="the kernel tree $kdir ($release)"
}

use_own_kernel() {
    bzimage=$(readlink -f "$byo_kernel")
    moddir=$(readlink -f "$byo_modules")
    release=$(basename "$moddir")
    kdir=${byo_kdir:-$moddir/build}
    [ -f "$kdir/Makefile" ] || die "no kernel build tree at $kdir: give --kdir (the tree the kernel was built in, or its headers)"
    local krel
    krel=$(cat "$kdir/include/config/kernel.release" 2>/dev/null || true)
    [ -z "$krel" ] || [ "$krel" = "$release" ] ||
        die "--kdir is for kernel $krel but --modules is for $release: they must match"
    grep -q '^CONFIG_USB_GADGET=[ym]' "$kdir/.config" 2>/dev/null ||
        die "$kdir/.config has no CONFIG_USB_GADGET: the kernel needs USB gadget support"
    kernel_id="own-$(cat "$bzimage" | sha256sum | cut -c1-16)"
    kernel_desc="your kernel $release ($bzimage)"
    # The module tree may lack modules.dep: make one in a private copy.
    local copy="$cache/kernel/$kernel_id/root/lib/modules/$release"
    if [ ! -f "$copy/.done" ]; then
        say "kernel $release (own): indexing modules"
        rm -rf "$copy"
        mkdir -p "$(dirname "$copy")"
        cp -a "$moddir" "$copy"
        rm -f "$copy/build" "$copy/source"
        depmod -b "$cache/kernel/$kernel_id/root" "$release"
        touch "$copy/.done"
    fi
    moddir=$copy
}

if [ -n "$byo_kernel" ]; then
    use_own_kernel
elif [ -n "$byo_kdir" ]; then
    use_kernel_tree
else
    fetch_debian_kernel
fi

# ---------------------------------------------------------------- module --

# Every file the module's build reads: the driver, its uapi header, Kbuild and
# the compat headers (as paths relative to images/virtio-udc).
mapfile -t modsrc < <(cd "$here/virtio-udc" && find . -type f \( -name '*.c' -o -name '*.h' \
    -o -name Kbuild -o -name Makefile -o -name Kconfig \) ! -name '*.mod.c' | LC_ALL=C sort)
mod_key=$( (echo "$kernel_id"; for f in "${modsrc[@]}"; do (cd "$here/virtio-udc" && sha256sum "$f"); done) |
    sha256sum | cut -c1-16)
modbuild="$cache/module/$mod_key"
if [ -f "$modbuild/virtio_udc.ko" ]; then
    say "virtio_udc.ko: cached"
else
    say "virtio_udc.ko: building against $release"
    rm -rf "$modbuild"
    mkdir -p "$modbuild"
    (cd "$here/virtio-udc" && cp --parents "${modsrc[@]}" "$modbuild/")
    make -s -C "$modbuild" KDIR="$kdir" modules >&2 || die "virtio_udc.ko did not build against $kdir"
fi
modinfo -F vermagic "$modbuild/virtio_udc.ko" | grep -q "^$release " ||
    die "virtio_udc.ko was built for $(modinfo -F vermagic "$modbuild/virtio_udc.ko"), not $release"

# ------------------------------------------------------------ guest tools --

say "guest tool and guest tests: cargo build (static)"
target=x86_64-unknown-linux-gnu
export RUSTFLAGS="-C target-feature=+crt-static"
(cd "$root" && cargo build -q --release --target "$target" -p udc-gadget >&2) ||
    die "the guest tool udc-gadget did not build"
gadget_bin="$root/target/$target/release/udc-gadget"
# json-render-diagnostics: the executables' names on stdout, a compile
# error rendered on stderr where the user sees it.
udmabuf_tests=$(cd "$root" && cargo test -q --release --target "$target" -p udmabuf --test device --no-run \
    --message-format=json-render-diagnostics | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$udmabuf_tests" ] || die "the udmabuf device tests did not build"
# The daemon and its zero-copy tests, which need /dev/udmabuf: the guest's
# kernel has it, the build machines' does not.
(cd "$root" && cargo build -q --release --target "$target" -p vhost-device-udc --bin vhost-device-udc >&2) ||
    die "vhost-device-udc did not build for the guest"
daemon_bin="$root/target/$target/release/vhost-device-udc"
zerocopy_tests=$(cd "$root" && cargo test -q --release --target "$target" -p vhost-device-udc --test zerocopy_udmabuf \
    --no-run --message-format=json-render-diagnostics | grep '"name":"zerocopy_udmabuf"' |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$zerocopy_tests" ] || die "the zero-copy udmabuf tests did not build"
unset RUSTFLAGS

# The kernel's own test tools (tools/usb/ffs-test.c and testusb.c,
# unmodified, static) from the linux-source-6.12 of the booted kernel's
# version when Debian serves it (images/kernel-tools.sh).
ktools=$("$here/kernel-tools.sh" ${kver:+--version "${kver%%+*}"} | tail -1) && [ -x "$ktools/ffs-test" ] ||
    die "the kernel's tools/usb programs did not build (images/kernel-tools.sh)"

# ------------------------------------------------------------- initramfs --

# The gadget stack the suite needs (FunctionFS), and what only some of it
# uses (virtio-iommu for --coherency viommu=virtio, first: the PCI devices
# behind it wait for it before they probe; sourcesink and loopback for tests
# without user space, dummy_hcd the bench compares with, 9p over virtio for
# udc-vm's --rodir/--rwdir, vhci_hcd, usbtest and virtio_net for the guest
# as its own USB/IP host), with what they depend on. A kernel of your own
# may lack the latter: the image then goes without, and says so.
modroot=$(dirname "$(dirname "$moddir")")
modroot=$(dirname "$modroot")
wanted=(udc_core libcomposite usb_f_fs)
declare -A optional_for=(
    [virtio_iommu]="--coherency viommu=virtio"
    [usb_f_ss_lb]="sourcesink"
    [dummy_hcd]="the bench's dummy_hcd comparison"
    [9pnet_virtio]="--rodir/--rwdir"
    [9p]="--rodir/--rwdir"
    [vhci_hcd]="the guest as its own USB/IP host (--usbip)"
    [usbtest]="the usbtest suite"
    [virtio_net]="--usbip (QEMU user networking to the daemon's USB/IP server)"
)
for m in virtio_iommu usb_f_ss_lb dummy_hcd 9pnet_virtio 9p vhci_hcd usbtest virtio_net; do
    if modprobe -d "$modroot" -S "$release" --show-depends "$m" >/dev/null 2>&1; then
        wanted+=("$m")
    else
        say "note: $release has no $m (${optional_for[$m]} needs it)"
    fi
done

image_key=$( (echo "$kernel_id $release"; sha256sum "$modbuild/virtio_udc.ko" "$here/init" "$gadget_bin" \
    "$udmabuf_tests" "$daemon_bin" "$zerocopy_tests" "$ktools/ffs-test" "$ktools/testusb" "$here/build.sh" \
    "$(command -v busybox)" | cut -d' ' -f1; echo "${wanted[*]}") |
    sha256sum | cut -c1-16)
out="$cache/images/$image_key"

# Every change to the guest's sources makes a new image (about 20 MB): keep
# the most recently used few. An image's directory time is its last use.
prune_images() {
    local keep=${VIRTIO_UDC_KEEP_IMAGES:-6}
    find "$cache/images" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %p\n' 2>/dev/null |
        sort -rn | tail -n +$((keep + 1)) | cut -d' ' -f2- |
        while read -r old; do
            [ "$old" != "$out" ] && rm -rf "$old"
        done
}

if [ -f "$out/.done" ]; then
    touch "$out"
    say "image $image_key: cached"
    echo "$out"
    exit 0
fi

say "initramfs: collecting modules"
stage=$(mktemp -d "${TMPDIR:-/tmp}/udc-image.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,usr/libexec/udc,etc/udc,proc,sys,dev,tmp,run,lib/modules/"$release"/extra}
cp "$(command -v busybox)" "$stage/bin/busybox"
cp "$here/init" "$stage/init"
chmod 755 "$stage/init"

: > "$stage/etc/udc/modules"
for m in "${wanted[@]}"; do
    modprobe -d "$modroot" -S "$release" --show-depends "$m" ||
        die "cannot resolve module $m in $moddir"
done | awk '$1 == "insmod" {print $2}' | awk '!seen[$0]++' > "$stage/modlist"
while read -r ko; do
    rel=${ko#"$moddir"/}
    dest="$stage/lib/modules/$release/${rel%.xz}"
    dest=${dest%.zst}
    dest=${dest%.gz}
    mkdir -p "$(dirname "$dest")"
    case "$ko" in
        *.xz) xz -dc "$ko" > "$dest" ;;
        *.zst) zstd -qdc "$ko" > "$dest" ;;
        *.gz) gzip -dc "$ko" > "$dest" ;;
        *) cp "$ko" "$dest" ;;
    esac
    echo "/lib/modules/$release/${dest#"$stage/lib/modules/$release/"}" >> "$stage/etc/udc/modules"
done < "$stage/modlist"
rm "$stage/modlist"
for m in "${wanted[@]}"; do
    grep -q "/${m//_/[-_]}\.ko$" "$stage/etc/udc/modules" ||
        grep -q "/${m//_/[-_]}\.ko$" "$moddir/modules.builtin" 2>/dev/null ||
        die "module $m is neither in $moddir nor built in: the kernel lacks it"
done
cp "$modbuild/virtio_udc.ko" "$stage/lib/modules/$release/extra/virtio_udc.ko"
echo "/lib/modules/$release/extra/virtio_udc.ko" >> "$stage/etc/udc/modules"
# dummy_hcd binds a UDC of its own as soon as it loads; the image keeps it
# loadable but leaves it out of the boot list, so virtio_udc is the only UDC.
grep -v '/dummy_hcd\.ko$' "$stage/etc/udc/modules" > "$stage/etc/udc/modules.new"
mv "$stage/etc/udc/modules.new" "$stage/etc/udc/modules"
echo "$release" > "$stage/etc/udc/kernel.release"
# Which FunctionFS the guest loads: init prints /etc/udc/ffs with the
# module's srcversion, and udc-vm replaces both when it loads an f_fs of
# its own build (--ffs-patch, docs/ffs.md).
ffs_module=$(grep '/usb_f_fs\.ko$' "$stage/etc/udc/modules" || true)
if [ -n "$ffs_module" ]; then
    ffs_stock="stock usb_f_fs.ko of $kernel_desc (sha256 $(sha256sum < "$stage$ffs_module" | cut -c1-16))"
else
    ffs_module=builtin
    ffs_stock="f_fs built into $kernel_desc"
fi
echo "$ffs_stock" > "$stage/etc/udc/ffs"

# Without debug info: the release profile keeps it, the initramfs need not.
strip -o "$stage/usr/bin/udc-gadget" "$gadget_bin"
strip -o "$stage/usr/libexec/udc/udmabuf-device-tests" "$udmabuf_tests"
strip -o "$stage/usr/bin/vhost-device-udc" "$daemon_bin"
strip -o "$stage/usr/libexec/udc/zerocopy-udmabuf-tests" "$zerocopy_tests"
# Not test suites (udc-vm runs /usr/libexec/udc/*-tests): the kernel's
# tools, which cases run (ffs-test) or other suites use (testusb).
cp "$ktools/ffs-test" "$ktools/testusb" "$stage/usr/libexec/udc/"

say "initramfs: packing"
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
(cd "$stage" && find . -print0 | sort -z | cpio --null -o -H newc --quiet --owner 0:0) |
    gzip -1 > "$out.tmp/initramfs.cpio.gz"
cp "$bzimage" "$out.tmp/bzImage"
cp "$modbuild/virtio_udc.ko" "$out.tmp/virtio_udc.ko"
echo "$release" > "$out.tmp/kernel.release"
cp "$stage/etc/udc/modules" "$out.tmp/modules.list"
# What udc-vm needs to build modules for this image (docs/vm-tier.md).
{
    echo "kernel: $kernel_desc"
    echo "kernel-id: $kernel_id"
    echo "release: $release"
    echo "kdir: $kdir"
    echo "ffs-module: $ffs_module"
    echo "ffs-stock: $ffs_stock"
} > "$out.tmp/build.info"
touch "$out.tmp/.done"
rm -rf "$out"
mv "$out.tmp" "$out"
touch "$out"
prune_images
say "image $image_key: $(du -sh "$out" | cut -f1) ($release)"
echo "$out"
