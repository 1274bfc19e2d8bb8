// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! A capture of the bus as the host saw it, in the format of Linux's usbmon
//! (pcap, link type USB_LINUX_MMAPPED: a 64-byte header per event), so
//! Wireshark and tshark dissect it as they dissect a capture of a real
//! host's `usbmonN`.
//!
//! Each transfer is two events, as usbmon writes them: its submission ('S',
//! status -EINPROGRESS, OUT data and a control transfer's setup packet) and
//! its completion ('C', the status as the host's USB core reports it, IN
//! data). Data beyond the snap length is counted but not kept.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::device::UrbStatus;

/// pcap's link type for usbmon with the 64-byte header.
pub const LINKTYPE_USB_LINUX_MMAPPED: u32 = 220;
/// The usbmon header's size.
pub const HEADER_LEN: usize = 64;
/// Data kept per event unless told otherwise: a whole 1 MiB transfer is
/// rarely what one reads in Wireshark, and the capture stays small.
pub const DEFAULT_SNAPLEN: u32 = 4096;

/// usbmon's transfer types (not USB's bmAttributes numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum XferType {
    Isochronous = 0,
    Interrupt = 1,
    Control = 2,
    Bulk = 3,
}

impl XferType {
    /// From an endpoint descriptor's bmAttributes transfer type (USB 2.0,
    /// table 9-13).
    pub fn from_usb(attributes: u8) -> Self {
        match attributes & 3 {
            0 => XferType::Control,
            1 => XferType::Isochronous,
            2 => XferType::Bulk,
            _ => XferType::Interrupt,
        }
    }
}

/// Submission or completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Submit,
    Complete,
}

/// What the two events of one transfer share.
#[derive(Clone, Copy, Debug)]
pub struct Transfer {
    /// The transfer's identity ([`Capture::next_id`]).
    pub id: u64,
    pub xfer_type: XferType,
    /// Endpoint address, direction bit included (0x80 for a control
    /// transfer whose data stage is IN).
    pub ep: u8,
    /// The device's USB address.
    pub devnum: u8,
}

/// One event of one transfer.
#[derive(Debug)]
struct Record<'a> {
    t: Transfer,
    event: Event,
    /// A control transfer's setup packet, in its submission.
    setup: Option<[u8; 8]>,
    /// Completion status (None for a submission: -EINPROGRESS).
    status: Option<UrbStatus>,
    /// Submission: the bytes asked for; completion: the bytes moved.
    length: u32,
    /// The data this event carries (OUT data at submission, IN data at
    /// completion; empty otherwise).
    data: &'a [u8],
}

/// The errno Linux's USB core puts in `urb->status` for each way a
/// transfer ends (Documentation/driver-api/usb/error-codes.rst).
pub fn errno(status: UrbStatus) -> i32 {
    match status {
        UrbStatus::Ok => 0,
        UrbStatus::Stall => -libc::EPIPE,
        UrbStatus::Overflow => -libc::EOVERFLOW,
        UrbStatus::Shutdown => -libc::ESHUTDOWN,
        UrbStatus::Cancelled => -libc::ECONNRESET,
        UrbStatus::Timeout => -libc::ETIMEDOUT,
        UrbStatus::DmaFault => -libc::EIO,
        UrbStatus::Proto => -libc::EPROTO,
    }
}

/// An open capture file.
#[derive(Debug)]
pub struct Capture {
    path: PathBuf,
    file: Mutex<File>,
    snaplen: u32,
    next_id: AtomicU64,
    events: AtomicU64,
    failed: AtomicBool,
}

/// What a capture wrote, for `status` and the stop answer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CaptureInfo {
    pub path: PathBuf,
    pub snaplen: u32,
    pub events: u64,
}

impl Capture {
    /// Creates `path` (never over an existing file: a capture does not
    /// destroy what is there) and writes the pcap file header.
    pub fn create(path: &Path, snaplen: u32) -> io::Result<Capture> {
        let mut file = File::options().write(true).create_new(true).open(path)?;
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&(HEADER_LEN as u32 + snaplen).to_le_bytes());
        h.extend_from_slice(&LINKTYPE_USB_LINUX_MMAPPED.to_le_bytes());
        file.write_all(&h)?;
        Ok(Capture {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            snaplen,
            next_id: AtomicU64::new(1),
            events: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        })
    }

    /// A new transfer's identity.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn info(&self) -> CaptureInfo {
        CaptureInfo {
            path: self.path.clone(),
            snaplen: self.snaplen,
            events: self.events.load(Ordering::Relaxed),
        }
    }

    /// A transfer's submission: `length` bytes asked for, OUT `data`, a
    /// control transfer's `setup`.
    pub fn submitted(&self, t: Transfer, setup: Option<[u8; 8]>, length: u32, data: &[u8]) {
        self.write(&Record {
            t,
            event: Event::Submit,
            setup,
            status: None,
            length,
            data,
        });
    }

    /// A transfer's completion: `length` bytes moved, IN `data`.
    pub fn completed(&self, t: Transfer, status: UrbStatus, length: u32, data: &[u8]) {
        self.write(&Record {
            t,
            event: Event::Complete,
            setup: None,
            status: Some(status),
            length,
            data,
        });
    }

    /// Appends one event: one write, so a daemon that dies leaves whole
    /// records behind. A write error is logged (once per capture) and the
    /// capture goes on without that event: the bus never waits on it.
    fn write(&self, r: &Record<'_>) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let cap = r.data.len().min(self.snaplen as usize);
        let mut b = Vec::with_capacity(16 + HEADER_LEN + cap);
        // The pcap record header.
        b.extend_from_slice(&(now.as_secs() as u32).to_le_bytes());
        b.extend_from_slice(&now.subsec_micros().to_le_bytes());
        b.extend_from_slice(&((HEADER_LEN + cap) as u32).to_le_bytes());
        b.extend_from_slice(&((HEADER_LEN + r.data.len()) as u32).to_le_bytes());
        b.extend_from_slice(&usbmon_header(
            r,
            cap,
            now.as_secs() as i64,
            now.subsec_micros() as i32,
        ));
        b.extend_from_slice(&r.data[..cap]);
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        match f.write_all(&b) {
            Ok(()) => {
                self.events.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                if !self.failed.swap(true, Ordering::Relaxed) {
                    log::warn!("capture {}: {e}; events are lost", self.path.display());
                }
            }
        }
    }
}

/// struct mon_bin_hdr of drivers/usb/mon/mon_bin.c, as Wireshark reads it.
fn usbmon_header(r: &Record<'_>, cap: usize, sec: i64, usec: i32) -> [u8; HEADER_LEN] {
    let is_in = r.t.ep & 0x80 != 0;
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&r.t.id.to_le_bytes());
    h[8] = match r.event {
        Event::Submit => b'S',
        Event::Complete => b'C',
    };
    h[9] = r.t.xfer_type as u8;
    h[10] = r.t.ep;
    h[11] = r.t.devnum;
    h[12..14].copy_from_slice(&1u16.to_le_bytes());
    // flag_setup: 0 when the setup packet is there, '-' when not.
    h[14] = if r.setup.is_some() { 0 } else { b'-' };
    // flag_data: 0 when data follows; else '<' (an IN submission) or '>'
    // (an OUT completion), as usbmon marks data that is not there.
    h[15] = if cap > 0 {
        0
    } else if is_in {
        b'<'
    } else {
        b'>'
    };
    h[16..24].copy_from_slice(&sec.to_le_bytes());
    h[24..28].copy_from_slice(&usec.to_le_bytes());
    let status = match r.event {
        Event::Submit => -libc::EINPROGRESS,
        Event::Complete => r.status.map_or(0, errno),
    };
    h[28..32].copy_from_slice(&status.to_le_bytes());
    h[32..36].copy_from_slice(&r.length.to_le_bytes());
    h[36..40].copy_from_slice(&(cap as u32).to_le_bytes());
    if let Some(s) = r.setup {
        h[40..48].copy_from_slice(&s);
    }
    // interval, start_frame, xfer_flags, ndesc: 0 (no isochronous
    // descriptors; URB_SHORT_NOT_OK and the like are the host's business).
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_a_pcap_record_with_usbmon_s_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.pcap");
        let c = Capture::create(&path, 4).unwrap();
        let setup = [0x80, 6, 0, 1, 0, 0, 18, 0];
        let t = Transfer {
            id: 7,
            xfer_type: XferType::Control,
            ep: 0x80,
            devnum: 5,
        };
        c.submitted(t, Some(setup), 18, &[]);
        c.completed(t, UrbStatus::Stall, 18, &[18, 1, 0, 2, 0, 0]);
        assert_eq!(c.info().events, 2);
        let b = std::fs::read(&path).unwrap();
        assert_eq!(b[0..4], 0xa1b2_c3d4u32.to_le_bytes());
        assert_eq!(b[20..24], 220u32.to_le_bytes(), "link type");
        let s = &b[24 + 16..24 + 16 + 64];
        assert_eq!(s[8], b'S');
        assert_eq!((s[9], s[10], s[11], s[14], s[15]), (2, 0x80, 5, 0, b'<'));
        assert_eq!(
            i32::from_le_bytes(s[28..32].try_into().unwrap()),
            -libc::EINPROGRESS
        );
        assert_eq!(s[40..48], setup);
        let r = &b[24 + 16 + 64..];
        assert_eq!(
            u32::from_le_bytes(r[8..12].try_into().unwrap()),
            64 + 4,
            "incl_len: the snap length"
        );
        assert_eq!(
            u32::from_le_bytes(r[12..16].try_into().unwrap()),
            64 + 6,
            "orig_len"
        );
        let c_hdr = &r[16..16 + 64];
        assert_eq!((c_hdr[8], c_hdr[14], c_hdr[15]), (b'C', b'-', 0));
        assert_eq!(
            i32::from_le_bytes(c_hdr[28..32].try_into().unwrap()),
            -libc::EPIPE
        );
        assert_eq!(
            u32::from_le_bytes(c_hdr[36..40].try_into().unwrap()),
            4,
            "len_cap"
        );
        assert_eq!(r[16 + 64..], [18, 1, 0, 2]);
        assert!(
            Capture::create(&path, 4).is_err(),
            "an existing file is never overwritten"
        );
    }
}
