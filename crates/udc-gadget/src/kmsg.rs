//! Watches the kernel log for the lines that mean a kernel bug, so every
//! case fails when the driver or the gadget stack warned, oopsed or leaked.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::AsRawFd;

/// Markers of a kernel problem in a log line.
pub const BAD_MARKERS: &[&str] = &[
    "WARNING:",
    "BUG:",
    "Oops",
    "general protection fault",
    "Kernel panic",
    "lockdep",
    "possible circular locking",
    "KASAN",
    "refcount_t",
    "list_add corruption",
    "list_del corruption",
    "UBSAN",
    "blocked for more than",
    "Call Trace",
];

/// The problem lines in `text`, one per line that carries a marker.
pub fn bad_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| BAD_MARKERS.iter().any(|m| l.contains(m)))
        .map(|l| l.trim().to_string())
        .collect()
}

/// The kernel log from the moment it was created on.
pub struct KmsgWatch {
    file: Option<File>,
}

impl KmsgWatch {
    /// Starts at the end of the log. Without /dev/kmsg the watch sees
    /// nothing and says so in [`KmsgWatch::problems`].
    pub fn start() -> KmsgWatch {
        let file = File::options()
            .read(true)
            .custom_flags_nonblock()
            .open("/dev/kmsg")
            .ok();
        if let Some(f) = &file {
            // SAFETY: seeking our own descriptor; SEEK_END on /dev/kmsg
            // skips the records already logged.
            unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_END) };
        }
        KmsgWatch { file }
    }

    /// Everything logged since the start, one message per line.
    pub fn read_new(&mut self) -> Result<String, String> {
        let Some(f) = self.file.as_mut() else {
            return Err("/dev/kmsg cannot be read: the kernel log was not checked".into());
        };
        let mut out = String::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    // "prio,seq,time,flags;message" then continuation lines.
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    let msg = rec.split_once(';').map(|(_, m)| m).unwrap_or(&rec);
                    out.push_str(msg.trim_end());
                    out.push('\n');
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // A record overwritten before we read it: carry on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) => return Err(format!("reading /dev/kmsg: {e}")),
            }
        }
        Ok(out)
    }

    /// Problem lines logged since the start.
    pub fn problems(&mut self) -> Vec<String> {
        match self.read_new() {
            Ok(text) => bad_lines(&text),
            Err(e) => vec![e],
        }
    }
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_warnings_and_oopses_but_not_ordinary_lines() {
        let log = "virtio_udc virtio0: UDC 0000:00:01.0: 30 endpoints\n\
                   WARNING: CPU: 0 PID: 1 at drivers/usb/gadget/udc/core.c:123 usb_ep_queue\n\
                   usb 1-1: new high-speed USB device\n\
                   BUG: KASAN: use-after-free in ffs_epfile_io\n\
                   refcount_t: underflow; use-after-free.\n";
        let bad = bad_lines(log);
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert!(bad[0].starts_with("WARNING:"));
        assert!(bad[2].starts_with("refcount_t"));
    }

    #[test]
    fn a_clean_log_has_no_problems() {
        assert!(bad_lines("udc-init: loaded virtio_udc\nconfigfs-gadget: bound\n").is_empty());
    }
}
