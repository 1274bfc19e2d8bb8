#!/usr/bin/env bash
# `udc-vm run` as a developer uses it (make test's "udc-vm run" step):
#   1. --dry-run prints the daemon's and QEMU's command lines, with the
#      host folders, the gdb stub and the extra QEMU options, and starts
#      nothing;
#   2. a program of the developer's own, in a read-write host folder, runs
#      in the guest against the gadget stack (it finds the virtio UDC),
#      reads a file from a read-only host folder, cannot write there,
#      leaves a file for the host, moves 1 MiB each way through the
#      gadget, and exits 7: udc-vm must exit 7;
#   3. the same run's --trace: the driver's and the gadget core's trace
#      events of those transfers are in OUT/trace.txt.
#
#   scripts/vm-run-test.sh QEMU IMAGE OUT
set -euo pipefail
qemu=$1 image=$2 out=$3
cd "$(dirname "$0")/.."
# udc-vm names host folders by their absolute paths: so does this script.
out=$(realpath -m "$out")
udc_vm=target/release/udc-vm
rm -rf "$out"
mkdir -p "$out/rw" "$out/ro"

fail() { echo "vm-run-test: FAILED: $*"; exit 1; }

# ---- 1. --dry-run
dry=$("$udc_vm" run --qemu "$qemu" --image "$image" --out "$out/dry" --dry-run --gdb 4321 \
    --qemu-opt=-d --qemu-opt=guest_errors --rodir "$out/ro:/mnt/ro" --rwdir "$out/rw:/mnt/my work" \
    --trace virtio_udc --trace gadget:usb_gadget_giveback_request -- true)
echo "$dry"
grep -q -- "vhost-device-udc .*--socket-path" <<<"$dry" || fail "--dry-run: no daemon command line"
grep -q -- "-fsdev local,id=fs0,path=$out/ro,security_model=none,readonly=on" <<<"$dry" ||
    fail "--dry-run: the read-only folder is not a read-only fsdev"
grep -q -- "-device virtio-9p-pci,fsdev=fs1,mount_tag=udc-share1" <<<"$dry" || fail "--dry-run: no 9p device for --rwdir"
grep -q -- "-gdb tcp::4321 .*-d guest_errors" <<<"$dry" || fail "--dry-run: no gdb stub or --qemu-opt"
grep -q -- "udc.trace=virtio_udc:\*,gadget:usb_gadget_giveback_request " <<<"$dry" ||
    fail "--dry-run: the trace events are not on the kernel command line"
grep -q -- "-chardev file,id=trace,path=$out/dry/trace.txt -device virtserialport,chardev=trace,name=udc-trace" <<<"$dry" ||
    fail "--dry-run: no trace port"
[ ! -e "$out/dry/console.log" ] || fail "--dry-run booted a guest"
echo "vm-run-test: --dry-run prints both command lines and starts nothing"
bad=0
err=$("$udc_vm" run --qemu "$qemu" --image "$image" --out "$out/bad" --trace 'gadget:usb ep' -- true 2>&1) || bad=$?
[ "$bad" != 0 ] && grep -q -- "--trace gadget:usb ep: an event is SYSTEM" <<<"$err" ||
    fail "a malformed --trace event was not refused with the form (exit $bad: $err)"
[ ! -e "$out/bad/console.log" ] || fail "a malformed --trace booted a guest"
echo "vm-run-test: a malformed --trace is refused before anything starts"

# ---- 2. a program from a host folder
head -c 65536 /dev/urandom > "$out/ro/input.bin"
want=$(sha256sum < "$out/ro/input.bin" | cut -d' ' -f1)
cat > "$out/rw/my-test.sh" <<'EOF'
#!/bin/sh
# A developer's own gadget test, run from a host folder.
here=$(dirname "$0")
udc=$(ls /sys/class/udc)
echo "my-test: UDC $udc"
[ -n "$udc" ] && grep -q '^virtio_udc ' /proc/modules || exit 1
sha256sum /mnt/ro/input.bin | cut -d' ' -f1 > "$here/input.sha256"
if (echo x > /mnt/ro/written) 2>/dev/null; then echo "my-test: wrote to a read-only folder"; exit 1; fi
echo "virtio_udc $udc" > "$here/udc-name"
udc-gadget demo --size 1048576 > "$here/demo.txt" 2>&1 || exit 1
exit 7
EOF
chmod +x "$out/rw/my-test.sh"
status=0
"$udc_vm" run --qemu "$qemu" --image "$image" --out "$out/boot" --timeout 300 \
    --rodir "$out/ro:/mnt/ro" --rwdir "$out/rw:/mnt/my work" --trace virtio_udc,gadget:usb_gadget_giveback_request \
    -- "/mnt/my work/my-test.sh" || status=$?
[ "$status" = 7 ] || fail "udc-vm run exited $status, the guest program 7 (console: $out/boot/console.log)"
[ "$(cat "$out/rw/input.sha256" 2>/dev/null)" = "$want" ] ||
    fail "the guest read other bytes from the read-only folder than the host put there"
grep -q '^virtio_udc .' "$out/rw/udc-name" 2>/dev/null || fail "the guest program found no virtio UDC (udc-name: $(cat "$out/rw/udc-name" 2>/dev/null))"
[ ! -e "$out/ro/written" ] || fail "the guest wrote into the read-only folder"
echo "vm-run-test: the guest ran /mnt/my work/my-test.sh from a host folder: exit 7 passed through," \
    "64 KiB read from the read-only folder byte for byte, its files back on the host"

# ---- 3. its trace events
trace=$out/boot/trace.txt
for ev in virtio_udc_ep_queue virtio_udc_giveback usb_gadget_giveback_request virtio_udc_event; do
    n=$(grep -c ": $ev: " "$trace" 2>/dev/null || true)
    [ "${n:-0}" -gt 0 ] || fail "no $ev events in $trace"
    echo "vm-run-test: trace: $n $ev events"
done
grep -q "udc-init: trace event virtio_udc:\* on" "$out/boot/console.log" || fail "the guest did not say it turned the driver's events on"
