#!/usr/bin/env bash
# Builds a small x86_64 debug kernel for the VM suite from Debian's 6.12
# sources: `make tinyconfig`, then images/udc-base.config (what the q35
# guest and its busybox initramfs need) and images/udc.config (the gadget
# stack, udmabuf, dma-heap and the debug options: KASAN, lockdep,
# DEBUG_ATOMIC_SLEEP, DMA_API_DEBUG, SLUB_DEBUG...) merged with
# scripts/kconfig/merge_config.sh, checked option by option, then
# `make bzImage modules` at the lowest priority. Progress goes to stderr;
# the kernel tree is the last line on stdout, for
#
#   udc-vm test --kdir "$(images/debug-kernel.sh | tail -1)"
#
# Cached by content under ${VIRTIO_UDC_CACHE:-/var/cache/virtio-udc}/debug-kernel:
# the same source package, fragments, script and compiler build nothing the
# second time; an interrupted build goes on where it stopped. Of the trees
# (about 2 GB each), the $VIRTIO_UDC_KEEP_DEBUG_KERNELS (2) most recently
# used are kept.
#
#   images/debug-kernel.sh                   the newest linux-source-6.12
#   images/debug-kernel.sh --version 6.12.111
#   images/debug-kernel.sh -j 1              one compiler at a time
#
#   --version 6.12.N  the Debian 6.12 version (apt-cache madison linux-source-6.12)
#   -j N              parallel jobs (default: nproc)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${VIRTIO_UDC_CACHE:-/var/cache/virtio-udc}
# Bump when the steps below change what gets built.
recipe=1
version=""
jobs=$(nproc)
base_fragment="$here/udc-base.config"
udc_fragment="$here/udc.config"

TAG=debug-kernel
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"

usage() {
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --version) version=${2:?--version needs a value such as 6.12.118}; shift 2 ;;
        -j) jobs=${2:?-j needs a number}; shift 2 ;;
        -j[0-9]*) jobs=${1#-j}; shift ;;
        -h|--help) usage 0 ;;
        *) printf 'debug-kernel: unknown argument %s\n' "$1" >&2; usage ;;
    esac
done
case "$jobs" in
    ''|*[!0-9]*|0) die "-j $jobs: expected a positive number of jobs" ;;
esac
case "$version" in
    ''|6.12.[0-9]|6.12.[0-9][0-9]|6.12.[0-9][0-9][0-9]) ;;
    *) die "--version $version: expected a Debian 6.12 version such as 6.12.118" ;;
esac
for f in "$base_fragment" "$udc_fragment"; do
    [ -f "$f" ] || die "$f is missing"
done

need_tools() {
    local missing=()
    command -v gcc >/dev/null || missing+=(gcc)
    command -v make >/dev/null || missing+=(make)
    command -v flex >/dev/null || missing+=(flex)
    command -v bison >/dev/null || missing+=(bison)
    command -v bc >/dev/null || missing+=(bc)
    command -v xz >/dev/null || missing+=(xz-utils)
    command -v flock >/dev/null || missing+=(util-linux)
    # objtool (ORC unwinder, lockdep's and KASAN's backtraces) needs libelf.
    [ -f /usr/include/gelf.h ] || missing+=(libelf-dev)
    [ -f /usr/include/openssl/evp.h ] || missing+=(libssl-dev)
    install_packages "${missing[@]}"
}
need_tools

# ---------------------------------------------------------------- version --

# The linux-source-6.12 package versions the archive serves, newest first
# (madison also lists the source package's versions: not those).
source_versions() {
    apt-cache madison linux-source-6.12 2>/dev/null |
        awk -F'|' '{gsub(/ /, "", $1); gsub(/ /, "", $2)} $1 == "linux-source-6.12" && $3 ~ /Packages *$/ {print $2}' |
        sort -rVu
}
pick_version() {
    if [ -z "$version" ]; then
        source_versions | sed -n 1p
    else
        source_versions | awk -v v="$version-" 'index($0, v) == 1' | sed -n 1p
    fi
}
pkgver=$(pick_version)
if [ -z "$pkgver" ]; then
    say "linux-source-6.12${version:+ $version} is not in the package lists: apt-get update"
    apt-get update -q >&2 || true
    pkgver=$(pick_version)
fi
if [ -z "$pkgver" ]; then
    known=$(source_versions | sed 's/-.*//' | sort -uV | tr '\n' ' ')
    if [ -z "$known" ]; then
        die "Debian's archive lists no linux-source-6.12 (is bookworm-security in the apt sources?)"
    fi
    die "--version $version: Debian serves no linux-source-6.12 of that version; it has: $known"
fi

# ------------------------------------------------------------------ key --

compiler=$(gcc --version | sed -n 1p)
linker=$(ld --version | sed -n 1p)
key=$( (echo "recipe $recipe"; echo "linux-source-6.12 $pkgver"; echo "$compiler"; echo "$linker"
    sha256sum < "$base_fragment"; sha256sum < "$udc_fragment"; sha256sum < "$here/$(basename "$0")") | sha256sum | cut -c1-16)
top="$cache/debug-kernel"
tree="$top/$key"
log="$tree/debug-kernel.log"
done_mark="$tree/.debug-kernel-done"
mkdir -p "$top"

if [ -f "$done_mark" ]; then
    touch "$tree"
    say "$(sed -n 's/^kernel: //p' "$done_mark"): cached"
    echo "$tree"
    exit 0
fi

# One build of a tree at a time; a second run waits for the first.
exec 9> "$tree.lock"
if ! flock -n 9; then
    say "another run is building $tree: waiting for it"
    flock 9
fi
if [ -f "$done_mark" ]; then
    touch "$tree"
    say "$(sed -n 's/^kernel: //p' "$done_mark"): built by the other run"
    echo "$tree"
    exit 0
fi

# ----------------------------------------------------------------- source --

start=$(date +%s)
if [ -f "$tree/.debug-kernel-source" ]; then
    say "source: linux-source-6.12 $pkgver (unpacked before; going on with its build)"
else
    rm -rf "$tree"
    dl=$(mktemp -d "${TMPDIR:-/tmp}/udc-debug-kernel.XXXXXX")
    trap 'rm -rf "$dl"' EXIT
    # apt downloads as the user _apt where that user can write.
    if id _apt >/dev/null 2>&1; then chown _apt "$dl"; fi
    say "source: downloading linux-source-6.12 $pkgver (about 150 MB)"
    (cd "$dl" && apt-get download -q "linux-source-6.12=$pkgver" >&2) ||
        die "cannot download linux-source-6.12=$pkgver (apt-cache policy linux-source-6.12)"
    say "source: unpacking the tree into $tree"
    rm -rf "$tree.tmp"
    mkdir -p "$tree.tmp"
    if ! dpkg --fsys-tarfile "$dl"/linux-source-6.12_*.deb |
        tar -xO ./usr/src/linux-source-6.12.tar.xz | tar -xJ --strip-components=1 -C "$tree.tmp"; then
        rm -rf "$tree.tmp"
        die "linux-source-6.12 $pkgver: /usr/src/linux-source-6.12.tar.xz is not in it or does not unpack"
    fi
    rm -rf "$dl"
    trap - EXIT
    [ -f "$tree.tmp/Makefile" ] && [ -f "$tree.tmp/scripts/kconfig/merge_config.sh" ] ||
        { rm -rf "$tree.tmp"; die "linux-source-6.12 $pkgver did not unpack to a kernel tree"; }
    echo "$pkgver" > "$tree.tmp/.debug-kernel-source"
    mv "$tree.tmp" "$tree"
fi

# ----------------------------------------------------------------- config --

# The options of the fragments ($@), later ones winning, as "CONFIG_X value"
# lines (value n for "# CONFIG_X is not set"); with the part of
# images/udc.config ("# --- required" ...) each comes from.
fragment_options() {
    local f line part
    for f in "$@"; do
        part=$(basename "$f")
        while IFS= read -r line || [ -n "$line" ]; do
            case "$line" in
                '# --- '*) part="$(basename "$f") ${line#'# --- '}" ;;
                CONFIG_*=*) printf '%s %s\t%s\n' "${line%%=*}" "${line#*=}" "$part" ;;
                '# CONFIG_'*' is not set') line=${line#'# '}; printf '%s n\t%s\n' "${line%% *}" "$part" ;;
            esac
        done < "$f"
    done | awk -F'[ \t]' '{ last[$1] = $0; if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } }
        END { for (i = 1; i <= n; i++) print last[order[i]] }'
}

# What merge_config and olddefconfig dropped or changed: one line per
# option of the fragments whose value in $1 is not the one asked for ("m"
# is met by "y", as in images/build.sh's check).
dropped_options() {
    local config=$1 opt want part have
    while IFS=$'\t' read -r opt part; do
        want=${opt#* }
        opt=${opt%% *}
        have=$(sed -n "s/^$opt=//p" "$config")
        [ -n "$have" ] || have=n
        case "$want:$have" in
            m:y) continue ;;
        esac
        [ "$want" = "$have" ] && continue
        if [ "$have" = n ]; then
            echo "  $opt=$want ($part): not set; a dependency is missing or the option does not exist"
        else
            echo "  $opt=$want ($part): became $have"
        fi
    done < <(fragment_options "$base_fragment" "$udc_fragment")
}

if [ -f "$tree/.debug-kernel-configured" ]; then
    say "config: done before"
else
    say "config: tinyconfig + $(basename "$base_fragment") + $(basename "$udc_fragment")"
    : > "$log"
    for step in tinyconfig merge olddefconfig; do
        echo "== $step" >> "$log"
        case "$step" in
            merge) (cd "$tree" && scripts/kconfig/merge_config.sh -m -O . .config "$base_fragment" "$udc_fragment") ;;
            *) make -C "$tree" "$step" ;;
        esac >> "$log" 2>&1 || {
            tail -30 "$log" >&2
            die "configuring the kernel failed at $step (log: $log)"
        }
    done
    dropped=$(dropped_options "$tree/.config")
    if [ -n "$dropped" ]; then
        die "the kernel's .config lost options the fragments ask for (fix images/udc-base.config or images/udc.config):
$dropped"
    fi
    touch "$tree/.debug-kernel-configured"
fi

# ------------------------------------------------------------------ build --

say "build: linux-source-6.12 $pkgver, $jobs jobs at nice 19 (log: $log)"
low=(nice -n 19)
command -v ionice >/dev/null && low+=(ionice -c 3)
build_start=$(date +%s)
"${low[@]}" make -C "$tree" -j"$jobs" bzImage modules >> "$log" 2>&1 9>&- &
make_pid=$!
stop_make() { kill "$make_pid" 2>/dev/null || true; wait "$make_pid" 2>/dev/null || true; }
trap 'stop_make; exit 130' INT TERM
# A line every minute: how far, and the file being built.
last=$build_start
while kill -0 "$make_pid" 2>/dev/null; do
    sleep 2
    now=$(date +%s)
    if [ $((now - last)) -ge 60 ]; then
        last=$now
        compiled=$(grep -c '^  CC ' "$log" || true)
        current=$(grep -E '^  (CC|LD|AR|AS) ' "$log" | tail -1 | awk '{print $2}')
        say "build: $(((now - build_start) / 60)) min, $compiled files compiled${current:+, at $current}"
    fi
done
status=0
wait "$make_pid" || status=$?
trap - INT TERM
if [ "$status" != 0 ]; then
    printf '%s\n' "----- last lines of $log:" >&2
    grep -v '^  [A-Z]' "$log" | tail -40 >&2
    die "the kernel did not build (make exit $status; the whole log: $log; run again to go on)"
fi
bzimage="$tree/arch/x86/boot/bzImage"
[ -f "$bzimage" ] || die "make succeeded but $bzimage is missing"
[ -f "$tree/modules.order" ] || die "make succeeded but $tree/modules.order is missing"
release=$(cat "$tree/include/config/kernel.release")
end=$(date +%s)
nmod=$(grep -c . "$tree/modules.order" || true)
size=$(du -h "$bzimage" | cut -f1)
{
    echo "kernel: $release (linux-source-6.12 $pkgver)"
    echo "key: $key"
    echo "compiler: $compiler"
    echo "linker: $linker"
    echo "bzImage: $(stat -c %s "$bzimage") bytes"
    echo "modules: $nmod"
    echo "build: $((end - build_start)) s with $jobs jobs; $((end - start)) s in this run"
} > "$done_mark.tmp"
mv "$done_mark.tmp" "$done_mark"
touch "$tree"
say "$release: bzImage $size, $nmod modules, built in $(((end - start) / 60)) min $(((end - start) % 60)) s"

# Each tree takes about 2 GB. Kept: this one and the most recently used
# other finished ones (a tree's directory time is its last use), and any
# tree a run is building (it holds the tree's lock). Removed: older trees,
# and unfinished ones no run is building (a build interrupted before its
# fragments or this script changed).
keep=${VIRTIO_UDC_KEEP_DEBUG_KERNELS:-2}
find "$top" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %p\n' | sort -rn | cut -d' ' -f2- |
    while read -r old; do
        [ "$old" != "$tree" ] || continue
        if [ -f "$old/.debug-kernel-done" ] && [ "$keep" -gt 1 ]; then
            keep=$((keep - 1))
            continue
        fi
        base=${old%.tmp}
        what="the unfinished tree"
        [ ! -f "$old/.debug-kernel-done" ] || what="the older tree"
        if (flock -n 8 || exit 1; rm -rf "$old"; [ -d "$base" ] || rm -f "$base.lock") 8>> "$base.lock"; then
            say "removed $what $old"
        fi
    done

echo "$tree"
