// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The lines of a Linux kernel log that mean a kernel bug. The runner scans
//! the guest's console with them and the guest tool scans /dev/kmsg after
//! each case, so both must use the same list.

/// Markers of a kernel problem in a log line, as kselftest and syzbot look
/// for them, plus the stall detectors: a CPU spinning on a lock with
/// interrupts off shows only as an RCU stall or a soft lockup.
pub const MARKERS: &[&str] = &[
    "WARNING:",
    "BUG:",
    "Oops",
    "general protection fault",
    "Kernel panic",
    // Lockdep's reports (each also starts with "WARNING:"); not the bare
    // word, which a PROVE_LOCKING kernel prints at boot ("RCU lockdep
    // checking is enabled") and in backtrace frames.
    "possible circular locking",
    "possible recursive locking",
    "inconsistent lock state",
    "lock order detected",
    "suspicious RCU usage",
    "KASAN",
    "UBSAN",
    "refcount_t:",
    "list_add corruption",
    "list_del corruption",
    "blocked for more than",
    "detected stalls on CPUs",
    "soft lockup",
    "hard LOCKUP",
    "Call Trace:",
    // SLUB's own checks (slub_debug=FZPU, udc-vm --debug-kernel-options):
    // "BUG kmalloc-96 (Tainted: G B): Poison overwritten".
    "Poison overwritten",
    "Redzone overwritten",
    "padding overwritten",
    "Freepointer corrupt",
];

/// The lines of `log` that carry a marker, trimmed.
pub fn problem_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| MARKERS.iter().any(|m| l.contains(m)))
        .map(|l| l.trim().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_warnings_oopses_and_their_traces() {
        let log = "[    3.1] virtio_udc virtio0: UDC 0000:00:01.0: 30 endpoints\n\
                   [    4.2] WARNING: CPU: 0 PID: 1 at drivers/usb/gadget/udc/core.c:123 usb_ep_queue\n\
                   [    4.2] Call Trace:\n\
                   [    4.3] usb 1-1: new high-speed USB device\n\
                   [    4.4] BUG: KASAN: use-after-free in ffs_epfile_io\n\
                   [    4.5] refcount_t: underflow; use-after-free.\n";
        let bad = problem_lines(log);
        assert_eq!(bad.len(), 4, "{bad:?}");
        assert!(bad[0].contains("WARNING:"));
        assert!(bad[3].contains("refcount_t:"));
    }

    #[test]
    fn a_lockdep_kernel_booting_is_not_a_problem() {
        let log = "[    0.12] rcu: RCU lockdep checking is enabled.\n\
                   [    9.10]  ? lockdep_hardirqs_on_prepare+0xd5/0x1a0\n";
        assert!(problem_lines(log).is_empty(), "{:?}", problem_lines(log));
        let report = "[   42.0] WARNING: HARDIRQ-safe -> HARDIRQ-unsafe lock order detected\n";
        assert_eq!(problem_lines(report).len(), 1);
    }

    #[test]
    fn finds_slub_debug_reports() {
        let log = "[ 40.1] BUG kmalloc-96 (Tainted: G    B      ): Poison overwritten\n\
                   [ 40.2] INFO: 0xffff888004a1e234-0xffff888004a1e237 @offset=564. First byte 0x0 instead of 0x6b\n";
        assert_eq!(problem_lines(log).len(), 1);
    }

    #[test]
    fn finds_a_cpu_stuck_on_a_lock() {
        let log = "[   32.6] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n\
                   [   56.9] watchdog: BUG: soft lockup - CPU#1 stuck for 41s! [khugepaged:41]\n";
        assert_eq!(problem_lines(log).len(), 2);
    }

    #[test]
    fn an_ordinary_boot_is_clean() {
        let log = "[    0.0] Linux version 6.12\n[    3.0] udc-init: loaded virtio_udc\n\
                   [    1.2] PCI: Using host bridge windows from ACPI; if necessary, use \"pci=nocrs\" and report a bug\n\
                   configfs-gadget: bound\n";
        assert!(problem_lines(log).is_empty(), "{:?}", problem_lines(log));
    }
}
