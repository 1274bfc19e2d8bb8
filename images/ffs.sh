#!/usr/bin/env bash
# Builds FunctionFS (usb_f_fs.ko) out of tree for one kernel, from the f_fs
# sources of a Debian 6.12 version or of a kernel tree, with patches applied
# in order (docs/ffs.md). Progress and any compiler output go to stderr;
# the build directory (usb_f_fs.ko and ffs.info) is the last line on stdout.
# Cached by content under ${VIRTIO_UDC_CACHE:-/var/cache/virtio-udc}/ffs:
# the same sources, patches and kernel build nothing the second time.
#
#   images/ffs.sh --kdir KDIR --debian 6.12.118 [--patch FILE]...
#   images/ffs.sh --kdir KDIR --source ~/linux [--patch FILE]...
#
#   --kdir KDIR       the booted kernel's build tree or headers (its
#                     Module.symvers and include/config/kernel.release)
#   --debian VERSION  f_fs of Debian's linux 6.12 VERSION (6.12.43 or later:
#                     linux-source-6.12 where the archive serves that
#                     binary, bookworm-backports' source package otherwise)
#   --source DIR      f_fs of the kernel tree DIR
#   --patch FILE      a patch (git format-patch or diff -p1) against that
#                     source; only drivers/usb/gadget/function/f_fs.c and the
#                     gadget's private headers may change
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${VIRTIO_UDC_CACHE:-/var/cache/virtio-udc}
# Bump when the steps below change what gets built.
recipe=1
kdir=""
debian=""
srcdir=""
patches=()

TAG=f_fs
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"

usage() {
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --kdir) kdir=${2:?--kdir needs a directory}; shift 2 ;;
        --debian) debian=${2:?--debian needs a version}; shift 2 ;;
        --source) srcdir=${2:?--source needs a kernel tree}; shift 2 ;;
        --patch) patches+=("${2:?--patch needs a file}"); shift 2 ;;
        -h|--help) usage 0 ;;
        *) printf 'f_fs: unknown argument %s\n' "$1" >&2; usage ;;
    esac
done

[ -n "$kdir" ] || die "--kdir is required (the booted kernel's build tree or headers)"
[ -f "$kdir/Makefile" ] || die "--kdir $kdir: no kernel build tree there (no Makefile)"
release=$(cat "$kdir/include/config/kernel.release" 2>/dev/null) ||
    die "--kdir $kdir: no include/config/kernel.release: is the tree configured and built?"
[ -n "$debian$srcdir" ] || die "say where f_fs comes from: --debian VERSION or --source DIR"
[ -z "$debian" ] || [ -z "$srcdir" ] || die "--debian and --source do not go together"
for p in "${patches[@]}"; do
    [ -f "$p" ] || die "--patch $p: no such file"
done

# What an out-of-tree f_fs is made of: f_fs.c, its own header and the
# gadget's private headers it includes ("u_os_desc.h", "configfs.h").
# Everything else comes from the kernel's headers.
ffs_members=(drivers/usb/gadget/function/f_fs.c drivers/usb/gadget/function/u_fs.h
    'drivers/usb/gadget/*.h')
# The files of a source tree that make f_fs, as paths relative to its top.
ffs_files_in() {
    (cd "$1" && ls drivers/usb/gadget/function/f_fs.c drivers/usb/gadget/function/u_fs.h \
        drivers/usb/gadget/*.h 2>/dev/null)
}

# ---------------------------------------------------------------- source --

# Debian: the version's tree, of which only the f_fs files are kept,
# unpacked once into $cache/ffs-source/debian-VERSION.
debian_source() {
    local v=${debian%%+*}
    case "$v" in
        6.12.[0-9]*) ;;
        *) die "--debian $debian: expected a Debian 6.12 version such as 6.12.118" ;;
    esac
    local dest="$cache/ffs-source/debian-$v"
    if [ -f "$dest/.done" ]; then
        say "source: Debian $v (cached)"
        src=$dest
        src_desc=$(cat "$dest/.done")
        return
    fi
    rm -rf "$dest"
    mkdir -p "$dest"
    local tmp
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/udc-ffs-src.XXXXXX")
    # The binary linux-source-6.12 is the patched tree as one tarball;
    # bookworm-security serves it for its versions.
    local pkgver
    pkgver=$(apt-cache madison linux-source-6.12 2>/dev/null |
        awk -F' *[|] *' -v v="$v" '$2 ~ "^"v"-" && $3 ~ /Packages$/ {print $2; exit}')
    if [ -n "$pkgver" ]; then
        say "source: Debian $v: downloading linux-source-6.12 $pkgver (about 150 MB)"
        (cd "$tmp" && apt-get download "linux-source-6.12=$pkgver" >&2) ||
            { rm -rf "$tmp"; die "cannot download linux-source-6.12=$pkgver"; }
        dpkg -x "$tmp"/linux-source-6.12_*.deb "$tmp/x"
        rm -f "$tmp"/linux-source-6.12_*.deb
        say "source: Debian $v: unpacking the f_fs files"
        tar -C "$tmp" -xJf "$tmp/x/usr/src/linux-source-6.12.tar.xz" --wildcards --no-wildcards-match-slash \
            "${ffs_members[@]/#/linux-source-6.12/}" ||
            { rm -rf "$tmp" "$dest"; die "linux-source-6.12 $pkgver: the f_fs files are not in its tarball"; }
        cp -a "$tmp/linux-source-6.12/." "$dest/"
        src_desc="Debian linux-source-6.12 $pkgver"
    else
        # Older versions: bookworm-backports' source package (the orig
        # tarball and Debian's patches, of which those touching f_fs apply).
        pkgver=$(apt-cache showsrc linux 2>/dev/null | awk -v v="$v" '$1 == "Version:" && $2 ~ "^"v"-" {print $2}' |
            sort -V | tail -1)
        [ -n "$pkgver" ] || {
            rm -rf "$tmp" "$dest"
            die "Debian $v: neither linux-source-6.12 nor a linux source package of that version in the apt lists (known: $(
                apt-cache madison linux-source-6.12 2>/dev/null | awk -F' *[|] *' '$3 ~ /Packages$/ {print $2}' | sed 's/-.*//' | sort -uV | tr '\n' ' ')$(
                apt-cache showsrc linux 2>/dev/null | awk '$1 == "Version:" {print $2}' | grep '^6\.12\.' | sed 's/-.*//' | sort -uV | tr '\n' ' '))"
        }
        say "source: Debian $v: downloading the linux $pkgver source package (about 150 MB)"
        (cd "$tmp" && apt-get source --download-only "linux=$pkgver" >&2) ||
            { rm -rf "$tmp"; die "cannot download the linux $pkgver source package"; }
        say "source: Debian $v: unpacking the f_fs files"
        local orig
        orig=$(ls "$tmp"/linux_*.orig.tar.xz)
        tar -C "$tmp" -xJf "$orig" --wildcards --no-wildcards-match-slash "${ffs_members[@]/#/linux-$v/}" ||
            { rm -rf "$tmp" "$dest"; die "$(basename "$orig"): the f_fs files are not in it"; }
        mkdir -p "$tmp/deb"
        tar -C "$tmp/deb" -xJf "$tmp"/linux_*.debian.tar.xz debian/patches
        # Debian's own patches that touch these files, in series order.
        local p
        while read -r p; do
            case "$p" in ''|'#'*) continue ;; esac
            p=${p%% *}
            if grep -qE '^\+\+\+ [^ ]*/drivers/usb/gadget/(function/(f_fs\.c|u_fs\.h)|[^/]*\.h)' \
                "$tmp/deb/debian/patches/$p"; then
                say "source: Debian $v: applying Debian's $p"
                patch -d "$tmp/linux-$v" -p1 -s < "$tmp/deb/debian/patches/$p" >&2 ||
                    { rm -rf "$tmp" "$dest"; die "Debian's own patch $p does not apply"; }
            fi
        done < "$tmp/deb/debian/patches/series"
        cp -a "$tmp/linux-$v/." "$dest/"
        src_desc="Debian linux $pkgver (bookworm-backports source)"
    fi
    rm -rf "$tmp"
    [ -f "$dest/drivers/usb/gadget/function/f_fs.c" ] ||
        { rm -rf "$dest"; die "Debian $v: f_fs.c is not in the source"; }
    printf '%s\n' "$src_desc" > "$dest/.done"
    src=$dest
}

tree_source() {
    [ -f "$srcdir/drivers/usb/gadget/function/f_fs.c" ] ||
        die "--source $srcdir: no drivers/usb/gadget/function/f_fs.c there (give the top of a kernel tree)"
    src=$(cd "$srcdir" && pwd)
    local rev=""
    rev=$(git -C "$src" describe --always --dirty 2>/dev/null || true)
    src_desc="tree $src${rev:+ (git $rev)}"
}

if [ -n "$debian" ]; then debian_source; else tree_source; fi

# --------------------------------------------------------------- the key --

compiler=$(grep -o 'CONFIG_CC_VERSION_TEXT="[^"]*"' "$kdir/include/config/auto.conf" 2>/dev/null || true)
key=$( (echo "recipe $recipe"; echo "$release $compiler"
    sha256sum "$kdir/Module.symvers" 2>/dev/null | cut -d' ' -f1
    sha256sum "$kdir/.config" 2>/dev/null | cut -d' ' -f1
    for f in $(ffs_files_in "$src"); do echo "$f $(sha256sum < "$src/$f")"; done
    for p in "${patches[@]}"; do sha256sum < "$p"; done
    sha256sum < "$0") | sha256sum | cut -c1-16)
out="$cache/ffs/$key"
if [ -f "$out/.done" ]; then
    touch "$out"
    say "usb_f_fs.ko $key: cached ($(sed -n 's/^srcversion: //p' "$out/ffs.info"))"
    echo "$out"
    exit 0
fi

# -------------------------------------------------------- patch and build --

stage=$(mktemp -d "${TMPDIR:-/tmp}/udc-ffs.XXXXXX")
trap 'rm -rf "$stage"' EXIT
for f in $(ffs_files_in "$src"); do
    mkdir -p "$stage/$(dirname "$f")"
    cp "$src/$f" "$stage/$f"
done

# The files a patch changes, from its +++ and --- lines.
patch_targets() {
    sed -n 's/^\(+++\|---\) \([^[:space:]]*\).*/\2/p' "$1" | grep -v '^/dev/null$' |
        sed 's|^[^/]*/||' | sort -u
}

for p in "${patches[@]}"; do
    name=$(basename "$p")
    targets=$(patch_targets "$p")
    [ -n "$targets" ] || die "patch $name: no file changes in it (not a unified diff?)"
    outside=$(printf '%s\n' "$targets" | grep -vxE 'drivers/usb/gadget/(function/(f_fs\.c|u_fs\.h)|[^/]*\.h)' || true)
    if [ -n "$outside" ]; then
        die "patch $name changes $(echo "$outside" | tr '\n' ' ')which an out-of-tree usb_f_fs.ko cannot carry: build a kernel with it and boot that (udc-vm --kdir)"
    fi
    if ! result=$(cd "$stage" && patch -p1 --dry-run -N < "$p" 2>&1); then
        die "patch $name does not apply to f_fs of $src_desc:
$result"
    fi
    (cd "$stage" && patch -p1 -s -N < "$p" >&2)
    say "applied $name"
done

moddir="$stage/drivers/usb/gadget/function"
cat > "$moddir/Kbuild" <<'EOF'
# usb_f_fs.ko alone, as drivers/usb/gadget/function/Makefile builds it.
obj-m := usb_f_fs.o
usb_f_fs-y := f_fs.o
ccflags-y := -I$(src)/..
EOF
say "building usb_f_fs.ko against $release ($kdir)"
# CONFIG_MODULE_SRCVERSION_ALL=y gives the module a srcversion (a digest
# of its sources) even where the kernel's config leaves it out: the guest
# shows it in /sys/module/usb_f_fs/srcversion, which names what was loaded.
if ! make -s -C "$kdir" M="$moddir" CONFIG_MODULE_SRCVERSION_ALL=y modules > "$stage/build.log" 2>&1; then
    cat "$stage/build.log" >&2
    die "usb_f_fs.ko did not build from $src_desc${patches:+ with the patches} against $release (compiler output above)"
fi
# modpost names symbols the module needs and the kernel does not export:
# such a module would not load.
if grep -q 'undefined!' "$stage/build.log"; then
    cat "$stage/build.log" >&2
    die "usb_f_fs.ko needs symbols $release does not export (see above): this f_fs does not fit this kernel"
fi
[ -s "$stage/build.log" ] && cat "$stage/build.log" >&2
ko="$moddir/usb_f_fs.ko"

# --------------------------------------------------------------- checks --

vermagic=$(modinfo -F vermagic "$ko")
case "$vermagic" in
    "$release "*) ;;
    *) die "usb_f_fs.ko has vermagic '$vermagic', not for $release" ;;
esac
# Every symbol version the module was built with must be the kernel's, or
# the kernel refuses it ("disagrees about version of symbol").
if grep -q '^CONFIG_MODVERSIONS=y' "$kdir/.config" 2>/dev/null; then
    [ -f "$kdir/Module.symvers" ] || die "$kdir has CONFIG_MODVERSIONS but no Module.symvers"
    bad=$(modprobe --dump-modversions "$ko" | awk '
        NR == FNR { crc[$2] = $1; next }
        !($2 in crc) || crc[$2] != $1 { printf "%s (module %s, kernel %s)\n", $2, $1, ($2 in crc) ? crc[$2] : "none" }' \
        "$kdir/Module.symvers" -)
    [ -z "$bad" ] || die "usb_f_fs.ko's symbol versions do not match $release's Module.symvers: $bad"
fi
srcversion=$(modinfo -F srcversion "$ko")
[ -n "$srcversion" ] || die "usb_f_fs.ko has no srcversion"

rm -rf "$out.tmp"
mkdir -p "$out.tmp"
cp "$ko" "$out.tmp/usb_f_fs.ko"
{
    echo "source: $src_desc"
    for p in "${patches[@]}"; do
        echo "patch: $(basename "$p") sha256:$(sha256sum < "$p" | cut -d' ' -f1)"
    done
    echo "srcversion: $srcversion"
    echo "vermagic: $vermagic"
} > "$out.tmp/ffs.info"
touch "$out.tmp/.done"
rm -rf "$out"
mv "$out.tmp" "$out"
say "usb_f_fs.ko $key: srcversion $srcversion"
echo "$out"
