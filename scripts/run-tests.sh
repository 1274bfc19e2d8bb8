#!/usr/bin/env bash
# The whole suite, every tier, as `make test` runs it.
#   gates: cargo fmt --check, cargo clippy -D warnings (the workspace and
#           the fuzz crate), no import cycle
#   tier 1: unit tests beside the code (device model, parsing, USB, config);
#           the fuzz targets' corpus and regressions replayed
#   tier 2: protocol tests: the real daemon over a real vhost-user socket,
#           driven by a Rust frontend with memfd guest memory (no QEMU)
#   tier 3: the VM: the guest driver's style check, QEMU's build and smoke
#           test, then udc-vm boots Debian's 6.12 kernel with virtio_udc.ko
#           under our QEMU and the daemon and runs the scenario suite at
#           SuperSpeed (controllers with and without scatter-gather),
#           high speed and full speed, again under seeded random latency,
#           the udmabuf device tests and the zero-copy tests, which need
#           the guest kernel's /dev/udmabuf; the kernel's own
#           tools/usb/ffs-test.c at high and full speed; a 60 s soak under random
#           faults with QEMU and the daemon unprivileged; the reproducers of f_fs's bugs
#           on the stock module (expected failures) and with the fix series
#           of patches/linux (clean, with the whole catalogue under
#           swiotlb=force and the DMABUF lifecycle matrix); a short bench.
# A test that cannot run fails; none is counted as passed without running.
set -uo pipefail
cd "$(dirname "$0")/.."

failed=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT
run() {
    local name=$1; shift
    echo "=== $name: $*"
    if ! "$@" 2>&1 | tee -a "$log"; then
        failed+=("$name")
    fi
}

export RUST_BACKTRACE=1
run build cargo build --workspace --all-targets --release
# Gates: the tree as rustfmt writes it (rustfmt.toml), no clippy warning,
# and no import cycle between modules (tests/module_graph.rs, in the tier
# below).
run "format (cargo fmt --check)" cargo fmt --all -- --check
run "lint (cargo clippy -D warnings)" cargo clippy --release --workspace --all-targets -- -D warnings
# The fuzz crate (fuzz/) is a workspace of its own: the same gates for it.
run "format (fuzz crate)" cargo fmt --manifest-path fuzz/Cargo.toml -- --check
run "lint (fuzz crate)" cargo clippy --release --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings
# The zero-copy tests need /dev/udmabuf; without it they run in the guest
# (the VM suite's zerocopy-udmabuf-tests), and here they are named as not run.
if [ -c /dev/udmabuf ]; then
    run "unit+protocol" cargo test --workspace --exclude udmabuf --release
else
    echo "NOT RUN on this host (no /dev/udmabuf): tests/zerocopy_udmabuf.rs, udmabuf_zerocopy_*; the VM suite runs them in the guest"
    run "unit+protocol" cargo test --workspace --exclude udmabuf --release -- --skip udmabuf_zerocopy_
fi
# Every committed input of the fuzz targets (fuzz/corpus/, and
# fuzz/regressions/ for the crashes found and fixed) through its target
# again, without AFL: a crash fixed once stays fixed. `make fuzz` runs AFL.
run "fuzz corpus replay" cargo test --release --manifest-path fuzz/Cargo.toml
run "udmabuf (validation)" cargo test -p udmabuf --release --lib

if [ -c /dev/udmabuf ]; then
    run "udmabuf (device, host)" cargo test -p udmabuf --release --test device
fi

# ---- tier 3: the VM ----
run "guest driver style (checkpatch --strict, kernel-doc)" images/checkpatch.sh
echo "=== QEMU build: qemu/build.sh"
if qemu=$(qemu/build.sh | tail -1) && [ -x "$qemu" ]; then
    echo "QEMU: $qemu"
    run "QEMU smoke test" python3 qemu/tests/smoke.py "$qemu"
else
    failed+=("QEMU build")
    qemu=""
fi
echo "=== guest image: images/build.sh"
if image=$(images/build.sh | tail -1) && [ -d "$image" ]; then
    echo "image: $image"
else
    failed+=("guest image")
    image=""
fi
vm() {
    local name=$1; shift
    if [ -z "$qemu" ] || [ -z "$image" ]; then
        echo "=== $name: cannot run: QEMU or the guest image did not build (see above)"
        failed+=("$name")
        echo "udc-vm: 0 passed, 1 failed, 0 skipped" >> "$log"
        return
    fi
    run "$name" target/release/udc-vm test --qemu "$qemu" --image "$image" "$@"
}
mkdir -p target/vm
rm -f target/vm/super.ktap
vm "VM suite, SuperSpeed" --speed super --out target/vm/super --junit target/vm/super.xml --ktap target/vm/super.ktap
# Its KTAP document, read by the kernel's own parser (kunit.py parse): every
# case the document counts, no parse error.
ktap_check() {
    local kunit
    kunit=$(images/kunit-parser.sh | tail -1) && [ -f "$kunit" ] || return 1
    [ -s target/vm/super.ktap ] || { echo "ktap: no document at target/vm/super.ktap"; return 1; }
    python3 scripts/ktap-check.py "$kunit" target/vm/super.ktap
}
run "KTAP of the SuperSpeed run, read by kunit.py parse" ktap_check
# The high-speed run captures the bus (docs/capture.md); tshark must find
# the guest gadget's device descriptor and bulk data in it, nothing malformed.
rm -f target/vm/high.pcap target/vm/high-[0-9]*.pcap
vm "VM suite, high speed" --speed high --controller sg --filter enumeration,bulk,short --out target/vm/high \
    --junit target/vm/high.xml --pcap target/vm/high.pcap
pcap_check() {
    local f=target/vm/high.pcap vendor bulk bad
    [ -s "$f" ] || { echo "capture: nothing at $f"; return 1; }
    vendor=$(tshark -r "$f" -Y usb.idVendor -T fields -e usb.idVendor 2>/dev/null | head -1)
    bulk=$(tshark -r "$f" -Y "usb.transfer_type == 0x03 && usb.urb_type == 'C'" -T fields -e usb.urb_len 2>/dev/null |
        awk '{ s += $1 } END { print s + 0 }')
    bad=$(tshark -r "$f" -Y "_ws.malformed || _ws.expert.severity >= error" 2>/dev/null | wc -l)
    echo "capture: $f: device 0x1d6b? idVendor $vendor; $bulk bulk bytes completed; $bad malformed or error events"
    [ "$vendor" = 0x1d6b ] && [ "$bulk" -gt 0 ] && [ "$bad" = 0 ]
}
if command -v tshark >/dev/null; then
    run "bus capture of the high-speed run, read by tshark" pcap_check
else
    echo "=== bus capture: cannot run: no tshark (scripts/setup-host.sh installs it)"
    failed+=("bus capture")
fi
# udc-vm run as a developer uses it: --dry-run's command lines, and a
# program of one's own from a host folder (--rodir/--rwdir, 9p) whose exit
# status comes back (scripts/vm-run-test.sh).
if [ -n "$qemu" ] && [ -n "$image" ]; then
    run "udc-vm run: --dry-run, a program from a host folder, its exit status" \
        scripts/vm-run-test.sh "$qemu" "$image" target/vm/run
else
    echo "=== udc-vm run: cannot run: QEMU or the guest image did not build (see above)"
    failed+=("udc-vm run")
fi
# At full speed also the kernel's own tools/usb/ffs-test.c, unmodified, at
# high and at full speed: on the stock f_fs the full-speed run must fail
# for its bug (f_fs gives ffs-test's wMaxPacketSize 0 back to the host and
# SET_CONFIGURATION fails; patches/linux/0007, docs/kernel-bugs.md).
vm "VM suite, full speed; ffs-test (stock f_fs: wMaxPacketSize 0 at full speed)" --speed full --controller sg \
    --filter enumeration,bulk,short,ffs-test --expect-fail 'ffs-test-full-speed:wMaxPacketSize 0' \
    --out target/vm/full --junit target/vm/full.xml
# The kernel's own gadget test suite (docs/usbtest.md): usbtest with the
# unmodified tools/usb/testusb.c against sourcesink through USB/IP (the
# daemon's server, the guest's own vhci_hcd) and on dummy_hcd in the same
# guest, and against a FunctionFS gadget whose data moves only by DMABUF
# transfers; one KTAP case per test number.
# dummy_hcd has no isochronous endpoints, so usbtest cannot take
# sourcesink's alternate setting 1 there: asserted, as the comparison
# with virtio-udc in docs/usbtest.md says.
dummy_iso=()
for t in 15-iso-out 16-iso-in 22-iso-out-odd-address 23-iso-in-odd-address; do
    dummy_iso+=(--expect-fail "usbtest-dummy-sourcesink-$t:probe with driver usbtest failed")
done
vm "usbtest/testusb through USB/IP, on dummy_hcd, and a FunctionFS DMABUF gadget" --speed super --usbtest \
    "${dummy_iso[@]}" --out target/vm/usbtest --junit target/vm/usbtest.xml
# Injection and coherency (docs/injection.md, docs/recipes.md): the whole
# scatter-gather catalogue under seeded random latency and NAKs, and the
# DMABUF-next-to-read/write case with every mapping bounced.
vm "VM suite, random latency (seed 1)" --speed super --controller sg --inject latency=0..2ms \
    --inject nak=5% --inject nak_time=1ms --seed 1 --out target/vm/latency --junit target/vm/latency.xml
# The soak, short: read/write and DMABUF transfers both ways for 60 s under
# seeded random latency, NAKs, stalls, babble, protocol and I/O errors and
# short packets, every byte checked at both ends, no corruption, no kernel
# warning; with QEMU and the daemon as the unprivileged udc-runner (created
# by scripts/setup-host.sh), which the run shows from /proc and the sockets
# (its `unprivileged` case). `make soak DURATION=2h` runs it longer.
if [ -n "$qemu" ] && [ -n "$image" ]; then
    soak_out=$(TAG=soak; . scripts/common.sh; run_dir_for udc-runner target/vm/soak)
    run "soak, 60 s under random faults, as the unprivileged udc-runner (seed 1)" target/release/udc-vm soak \
        --qemu "$qemu" --image "$image" --duration 60s --seed 1 --user udc-runner --out "$soak_out"
else
    echo "=== soak: cannot run: QEMU or the guest image did not build (see above)"
    failed+=("soak")
    echo "udc-vm: 0 passed, 1 failed, 0 skipped" >> "$log"
fi
# FunctionFS: the bugs the suite found in Debian's f_fs (docs/kernel-bugs.md)
# and the fix series (patches/linux/, loaded with --ffs-patch). First each
# reproducer on the stock module, where it must fail for its bug (an
# expected failure, asserted: a kernel that fixes one makes its case say
# so); then the same with the series, where everything passes: the whole
# scatter-gather catalogue under swiotlb=force, the reproducers and the
# DMABUF lifecycle matrix (docs/dmabuf-lifecycle.md).
series=()
for p in patches/linux/*.patch; do series+=(--ffs-patch "$p"); done
# udmabuf's own DMA_BUF_IOCTL_SYNC under swiotlb=force is a kernel bug outside
# f_fs, with no fix here (docs/kernel-bugs.md): it fails in every swiotlb boot.
udmabuf_sync=(--expect-fail 'udmabuf-sync-keeps-other-writes:reverted another writer')
vm "stock f_fs, swiotlb=force: DMABUFs never synced, segments above swiotlb's limit" --speed super --controller sg \
    --coherency swiotlb --filter coherency,udmabuf-sync,ffs-rw-large \
    --expect-fail 'coherency-dmabuf-next-to-read-write:never syncs the DMABUF' \
    --expect-fail 'ffs-rw-large-under-swiotlb:swiotlb buffer is full' "${udmabuf_sync[@]}" \
    --out target/vm/stock-swiotlb --junit target/vm/stock-swiotlb.xml
vm "stock f_fs, poisoned frees: the fence lock used after free" --speed super --controller sg --debug-kernel-options \
    --filter ffs-fence-outlives-detach --expect-fail 'ffs-fence-outlives-detach:dma_fence_get_status' \
    --out target/vm/stock-fence --junit target/vm/stock-fence.xml
vm "stock f_fs, no scatter-gather: an 8 MiB read/write warns and fails" --speed super --controller no-sg \
    --filter ffs-rw-above-4mib --expect-fail 'ffs-rw-above-4mib-without-sg:Cannot allocate memory' \
    --out target/vm/stock-nosg --junit target/vm/stock-nosg.xml
null_deref=()
for c in transfer-not-bound transfer-udc-unbound transfer-driver-removed detach-not-bound detach-udc-unbound \
    detach-driver-removed; do
    null_deref+=(--expect-fail "lifecycle-$c:kernel NULL pointer dereference")
done
vm "stock f_fs: the DMABUF lifecycle matrix (6 orderings oops)" --speed super --controller sg --filter lifecycle \
    "${null_deref[@]}" --out target/vm/stock-lifecycle --junit target/vm/stock-lifecycle.xml
vm "f_fs with the fix series, swiotlb=force: the scatter-gather catalogue" --speed super --controller sg \
    --coherency swiotlb "${series[@]}" "${udmabuf_sync[@]}" --out target/vm/fixed-swiotlb --junit target/vm/fixed-swiotlb.xml
# 0006's reproducer is not run without 0006 here: whether DETACH beats the
# completion's work item is up to the guest's scheduler (docs/kernel-bugs.md).
vm "f_fs with the fix series, swiotlb=force: large read/write, DETACH unmaps" --speed super --controller sg --coherency swiotlb \
    "${series[@]}" --filter ffs-rw-large,ffs-detach-leaves-mapping --out target/vm/fixed-swiotlb-rw --junit target/vm/fixed-swiotlb-rw.xml
vm "f_fs with the fix series, poisoned frees: the fence and the lifecycle matrix" --speed super --controller sg \
    --debug-kernel-options "${series[@]}" --filter ffs-fence-outlives-detach,lifecycle \
    --out target/vm/fixed-lifecycle --junit target/vm/fixed-lifecycle.xml
vm "f_fs with the fix series, no scatter-gather: 8 MiB read/write, ffs-test at full and high speed" --speed super \
    --controller no-sg "${series[@]}" --filter ffs-rw-above-4mib,ffs-test \
    --out target/vm/fixed-nosg --junit target/vm/fixed-nosg.xml
# The IOMMU mode (docs/iommu.md): the scatter-gather catalogue behind a
# strict intel-iommu, every access of the device translated by the daemon's
# IOTLB, and the mode's own case, on the stock f_fs, where it passes; then
# an f_fs that maps OUT DMABUFs DMA_TO_DEVICE (patches/faults/0001, a bug put
# in on purpose), whose OUT transfer must fail with the daemon's IOMMU fault
# report; and virtio-iommu, shorter.
vm "vIOMMU (intel-iommu, strict): the scatter-gather catalogue" --speed super --controller sg \
    --coherency viommu --filter catalogue,iommu-direction --out target/vm/viommu --junit target/vm/viommu.xml
vm "vIOMMU: f_fs mapping OUT DMABUFs DMA_TO_DEVICE faults in the IOMMU" --speed super --controller sg \
    --coherency viommu --ffs-patch patches/faults/0001-usb-gadget-f_fs-map-OUT-DMABUFs-for-the-wrong-direction.patch \
    --filter iommu-direction \
    --expect-fail 'iommu-direction:permission: write to a mapping the device may only read (DMA_TO_DEVICE)' \
    --out target/vm/viommu-fault --junit target/vm/viommu-fault.xml
# A real one: Debian's 6.12.95 f_fs maps an IN DMABUF attached before the
# host's first configuration DMA_FROM_DEVICE (docs/kernel-bugs.md, fixed
# upstream by 82cfd4739011); virtio-iommu refuses the device's read of it.
# (intel-iommu cannot tell: Linux sets the Read bit of every VT-d entry.)
vm "vIOMMU (virtio-iommu): Debian 6.12.95's f_fs maps an early IN DMABUF for the wrong direction" --speed super \
    --controller sg --coherency viommu=virtio --ffs-version 6.12.95 --filter dmabuf-in-attached-before-enumeration \
    --expect-fail 'dmabuf-in-attached-before-enumeration:read from a mapping the device may only write (DMA_FROM_DEVICE)' \
    --out target/vm/viommu-6.12.95 --junit target/vm/viommu-6.12.95.xml
vm "vIOMMU (virtio-iommu, strict): enumeration, read/write and DMABUFs" --speed super --controller sg \
    --coherency viommu=virtio --filter enumeration,bulk,dmabuf-sizes,dmabuf-fifo,iommu-direction \
    --out target/vm/viommu-virtio --junit target/vm/viommu-virtio.xml
# The kernel matrix, small: the newest kernel with stock f_fs and with the
# fix series; the table must show the stock module's NULL dereference and
# the series' fix of it.
matrix_check() {
    local csv=target/vm/matrix/matrix.csv
    target/release/udc-vm matrix --qemu "$qemu" --kernels newest --ffs stock,series \
        --filter enumeration,lifecycle-detach-udc-unbound --out target/vm/matrix || return 1
    grep -Eq '^"lifecycle-detach-udc-unbound","[0-9.]+ stock f_fs",not ok,"BUG: kernel NULL pointer dereference' "$csv" ||
        { echo "matrix: the stock column does not show the NULL dereference"; return 1; }
    grep -Eq '^"lifecycle-detach-udc-unbound","[0-9.]+ fix series",ok,' "$csv" ||
        { echo "matrix: the fix series column is not ok"; return 1; }
    grep -Eq '^"enumeration","[0-9.]+ (stock f_fs|fix series)",ok,' "$csv" ||
        { echo "matrix: enumeration is not ok"; return 1; }
    echo "matrix: the table shows what it must ($csv)"
}
if [ -n "$qemu" ]; then
    run "kernel matrix (newest kernel, stock f_fs and the fix series)" matrix_check
else
    echo "=== kernel matrix: cannot run: QEMU did not build (see above)"
    failed+=("kernel matrix")
fi

# The benchmark runs too, short, so it cannot rot: every series must report
# (it fails when a measurement fails or the guest does not report).
if [ -n "$qemu" ] && [ -n "$image" ]; then
    run "VM benchmark (short: 64 KiB and 1 MiB)" target/release/udc-vm bench --qemu "$qemu" --image "$image" \
        --sizes 64K,1M --seconds 0.2 --out target/vm/bench
    # Under the vIOMMU, next to dma-direct in the same run (two boots).
    run "VM benchmark behind the vIOMMU, next to dma-direct (short: 1 MiB)" target/release/udc-vm bench \
        --qemu "$qemu" --image "$image" --coherency viommu --sizes 1M --seconds 0.2 --out target/vm/bench-viommu
else
    echo "=== VM benchmark: cannot run: QEMU or the guest image did not build (see above)"
    failed+=("VM benchmark")
fi

echo
echo "=== summary"
echo "VM logs and JUnit XML: target/vm/"
read -r passed nfailed < <(awk '
    /^test result: / { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
    /^udc-vm: [0-9]+ passed, [0-9]+ failed/ { p += $2; f += $4 }
    /^[0-9]+ passed, [0-9]+ failed$/ { p += $1; f += $3 }
    END { print p + 0, f + 0 }' "$log")
if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    echo "tests: ${passed} passed, ${nfailed} failed"
    exit 1
fi
echo "all tiers passed"
echo "tests: ${passed} passed, ${nfailed} failed"
