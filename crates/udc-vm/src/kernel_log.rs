//! Finds the lines of a guest console log that mean a kernel bug.

/// Markers of a kernel problem, as kselftest and syzbot look for them.
pub const MARKERS: &[&str] = &[
    "WARNING:",
    "BUG:",
    "Oops",
    "general protection fault",
    "Kernel panic",
    "possible circular locking",
    "lockdep",
    "KASAN",
    "UBSAN",
    "refcount_t:",
    "list_add corruption",
    "list_del corruption",
    "blocked for more than",
    "Call Trace:",
];

/// The problem lines in `log`.
pub fn problems(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| MARKERS.iter().any(|m| l.contains(m)))
        .map(|l| l.trim_end().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_warning_and_its_trace() {
        let log = "[    3.1] virtio_udc virtio0: UDC 0000:00:01.0\n\
                   [    4.2] WARNING: CPU: 1 PID: 9 at drivers/usb/gadget/udc/core.c:100\n\
                   [    4.2] Call Trace:\n\
                   [    4.3] udc-init: run.sh exit 0\n";
        assert_eq!(problems(log).len(), 2);
    }

    #[test]
    fn an_ordinary_boot_is_clean() {
        let log = "[    0.0] Linux version 6.12\n[    3.0] udc-init: loaded virtio_udc\n\
                   [    1.2] PCI: Using host bridge windows from ACPI; if necessary, use \"pci=nocrs\" and report a bug\n";
        assert!(problems(log).is_empty(), "{:?}", problems(log));
    }
}
