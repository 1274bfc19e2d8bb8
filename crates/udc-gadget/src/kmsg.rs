// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Watches the kernel log for the lines that mean a kernel bug, so every
//! case fails when the driver or the gadget stack warned, oopsed or leaked.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::AsRawFd;

/// Writes `line` into the kernel log (at KERN_INFO), where it lands on the
/// console in order with the kernel's own messages. Best effort: a guest
/// without /dev/kmsg just has no marks.
pub fn mark(line: &str) {
    use std::io::Write;
    if let Ok(mut f) = File::options().write(true).open("/dev/kmsg") {
        let _ = f.write_all(format!("<6>{line}\n").as_bytes());
    }
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
            Ok(text) => udc_patterns::kernel_log::problem_lines(&text),
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
