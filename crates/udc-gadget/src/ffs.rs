// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! FunctionFS ep0: the descriptors and strings blobs written to it, and the
//! thread that reads its events for as long as the function lives.
//!
//! The layouts are those of the kernel's include/uapi/linux/usb/functionfs.h
//! and of USB 3.2 chapter 9, all little-endian. We build the blobs here
//! rather than through usb-gadget's `Custom` function because that writes
//! full-speed endpoint descriptors with wMaxPacketSize 0, which a host
//! rightly refuses to enumerate (a full-speed bulk endpoint takes 8, 16, 32
//! or 64 bytes).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use udc_ch9::{
    Speed, DIR_IN, DT_ENDPOINT, DT_INTERFACE, DT_SS_ENDPOINT_COMP, ENDPOINT_DESC_SIZE, INTERFACE_DESC_SIZE,
    SS_EP_COMP_DESC_SIZE, TRANSFER_BULK,
};

use crate::error::Error;

const FUNCTIONFS_DESCRIPTORS_MAGIC_V2: u32 = 3;
const FUNCTIONFS_STRINGS_MAGIC: u32 = 2;
const FUNCTIONFS_HAS_FS_DESC: u32 = 1;
const FUNCTIONFS_HAS_HS_DESC: u32 = 2;
const FUNCTIONFS_HAS_SS_DESC: u32 = 4;

/// US English, the one language of our strings.
const LANG_EN_US: u16 = 0x0409;

/// `struct usb_functionfs_event`: an 8-byte setup packet, the type, 3 bytes
/// of padding.
pub const EVENT_SIZE: usize = 12;

/// An interface descriptor's fields (USB 3.2 table 9-21).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceDesc {
    pub number: u8,
    pub num_endpoints: u8,
    pub class: u8,
    pub subclass: u8,
    pub protocol: u8,
    /// Index of the interface's name in the strings blob (1-based).
    pub string_index: u8,
}

impl InterfaceDesc {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[
            INTERFACE_DESC_SIZE as u8,
            DT_INTERFACE,
            self.number,
            0, // bAlternateSetting
            self.num_endpoints,
            self.class,
            self.subclass,
            self.protocol,
            self.string_index,
        ]);
    }
}

/// An endpoint descriptor's fields (USB 3.2 table 9-26). The address is
/// FunctionFS's: the UDC gives the endpoint its real number when it binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointDesc {
    pub address: u8,
    pub attributes: u8,
    pub max_packet_size: u16,
    pub interval: u8,
}

impl EndpointDesc {
    pub fn is_in(&self) -> bool {
        self.address & DIR_IN != 0
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[
            ENDPOINT_DESC_SIZE as u8,
            DT_ENDPOINT,
            self.address,
            self.attributes,
        ]);
        out.extend_from_slice(&self.max_packet_size.to_le_bytes());
        out.push(self.interval);
    }
}

/// A SuperSpeed endpoint companion's fields (USB 3.2 table 9-27).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SsCompanion {
    pub max_burst: u8,
    pub attributes: u8,
    pub bytes_per_interval: u16,
}

impl SsCompanion {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[
            SS_EP_COMP_DESC_SIZE as u8,
            DT_SS_ENDPOINT_COMP,
            self.max_burst,
            self.attributes,
        ]);
        out.extend_from_slice(&self.bytes_per_interval.to_le_bytes());
    }
}

/// One bulk endpoint of a [`BulkFunction`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkEndpoint {
    /// FunctionFS numbers endpoints 1, 2, ... in descriptor order; bit 7
    /// set for IN. Endpoint file `epN` is the one numbered N.
    pub address: u8,
    /// Bulk OUT at high speed: the largest NAK rate (USB 2.0 9.6.6);
    /// ignored otherwise.
    pub interval: u8,
}

/// A FunctionFS function of one vendor-style interface with bulk
/// endpoints, at full, high and SuperSpeed: the one kind this tool sets up.
#[derive(Clone, Copy, Debug)]
pub struct BulkFunction {
    pub class: u8,
    pub subclass: u8,
    pub protocol: u8,
    /// The interface string.
    pub name: &'static str,
    pub endpoints: &'static [BulkEndpoint],
}

impl BulkFunction {
    pub fn interface(&self) -> InterfaceDesc {
        InterfaceDesc {
            number: 0,
            num_endpoints: self.endpoints.len() as u8,
            class: self.class,
            subclass: self.subclass,
            protocol: self.protocol,
            string_index: 1,
        }
    }

    /// The endpoint descriptors at `speed`, each with the companion that
    /// follows it at SuperSpeed.
    pub fn endpoints(&self, speed: Speed) -> Vec<(EndpointDesc, Option<SsCompanion>)> {
        self.endpoints
            .iter()
            .map(|ep| {
                let desc = EndpointDesc {
                    address: ep.address,
                    attributes: TRANSFER_BULK,
                    max_packet_size: speed
                        .bulk_max_packet()
                        .expect("FunctionFS descriptors are for full speed and faster"),
                    interval: ep.interval,
                };
                // No bursts and no streams: one packet at a time.
                let companion = speed.is_superspeed().then(SsCompanion::default);
                (desc, companion)
            })
            .collect()
    }

    /// The descriptors of one speed, concatenated, and how many there are.
    fn speed_descriptors(&self, speed: Speed) -> (u32, Vec<u8>) {
        let mut out = Vec::new();
        self.interface().write(&mut out);
        let mut count = 1;
        for (ep, companion) in self.endpoints(speed) {
            ep.write(&mut out);
            count += 1;
            if let Some(c) = companion {
                c.write(&mut out);
                count += 1;
            }
        }
        (count, out)
    }

    /// The descriptors blob for ep0: `usb_functionfs_descs_head_v2`, the
    /// full-, high- and SuperSpeed counts, then each speed's descriptors.
    pub fn descriptors_blob(&self) -> Vec<u8> {
        let speeds = [Speed::Full, Speed::High, Speed::Super].map(|s| self.speed_descriptors(s));
        let mut out = Vec::new();
        out.extend_from_slice(&FUNCTIONFS_DESCRIPTORS_MAGIC_V2.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // length, set below
        let flags = FUNCTIONFS_HAS_FS_DESC | FUNCTIONFS_HAS_HS_DESC | FUNCTIONFS_HAS_SS_DESC;
        out.extend_from_slice(&flags.to_le_bytes());
        for (count, _) in &speeds {
            out.extend_from_slice(&count.to_le_bytes());
        }
        for (_, descs) in &speeds {
            out.extend_from_slice(descs);
        }
        set_length(&mut out);
        out
    }

    /// The strings blob for ep0: `usb_functionfs_strings_head`, then for
    /// the one language its code and the NUL-terminated interface name.
    pub fn strings_blob(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&FUNCTIONFS_STRINGS_MAGIC.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // length, set below
        out.extend_from_slice(&1u32.to_le_bytes()); // str_count
        out.extend_from_slice(&1u32.to_le_bytes()); // lang_count
        out.extend_from_slice(&LANG_EN_US.to_le_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.push(0);
        set_length(&mut out);
        out
    }
}

/// Both blobs carry their whole length at offset 4.
fn set_length(blob: &mut [u8]) {
    let len = blob.len() as u32;
    blob[4..8].copy_from_slice(&len.to_le_bytes());
}

/// A control request's setup packet (USB 3.2 table 9-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtrlRequest {
    pub request_type: u8,
    pub request: u8,
    pub value: u16,
    pub index: u16,
    pub length: u16,
}

impl CtrlRequest {
    pub fn is_in(&self) -> bool {
        self.request_type & DIR_IN != 0
    }
}

/// One `struct usb_functionfs_event`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Bind,
    Unbind,
    Enable,
    Disable,
    Setup(CtrlRequest),
    Suspend,
    Resume,
    /// A type this code does not know (a newer kernel).
    Unknown(u8),
}

impl Event {
    pub fn parse(raw: &[u8; EVENT_SIZE]) -> Event {
        let le16 = |i: usize| u16::from_le_bytes([raw[i], raw[i + 1]]);
        match raw[8] {
            0 => Event::Bind,
            1 => Event::Unbind,
            2 => Event::Enable,
            3 => Event::Disable,
            4 => Event::Setup(CtrlRequest {
                request_type: raw[0],
                request: raw[1],
                value: le16(2),
                index: le16(4),
                length: le16(6),
            }),
            5 => Event::Suspend,
            6 => Event::Resume,
            t => Event::Unknown(t),
        }
    }

    /// The name the cases look for in [`Ep0Log`].
    pub fn name(&self) -> &'static str {
        match self {
            Event::Bind => "bind",
            Event::Unbind => "unbind",
            Event::Enable => "enable",
            Event::Disable => "disable",
            Event::Setup(r) if r.is_in() => "setup-in",
            Event::Setup(_) => "setup-out",
            Event::Suspend => "suspend",
            Event::Resume => "resume",
            Event::Unknown(_) => "unknown",
        }
    }
}

/// FunctionFS events seen by the ep0 thread, for cases that check them.
#[derive(Default, Debug)]
pub struct Ep0Log {
    pub events: Vec<String>,
}

/// How long the ep0 thread waits for an event before it looks whether it
/// should stop: the longest a drop of [`Ep0`] waits for it.
const EP0_POLL: Duration = Duration::from_millis(100);

/// ep0 of a FunctionFS instance with its descriptors and strings written,
/// and the thread that reads its events. FunctionFS needs ep0 read: a
/// control request to the interface waits for us until the host gives up.
/// Dropping it stops the thread and closes ep0.
pub struct Ep0 {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ep0 {
    /// Writes `function`'s descriptors and strings to `ffs_dir`/ep0, which
    /// makes the endpoint files appear, and starts the event thread.
    pub fn start(ffs_dir: &Path, function: &BulkFunction, log: Arc<Mutex<Ep0Log>>) -> Result<Ep0, Error> {
        let path = ffs_dir.join("ep0");
        // Non-blocking, so that the thread can never sleep in read() while
        // a drop waits for it.
        let mut ep0 = File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| Error::Setup(format!("{}: {e}", path.display())))?;
        for (what, blob) in [
            ("descriptors", function.descriptors_blob()),
            ("strings", function.strings_blob()),
        ] {
            let n = ep0.write(&blob).map_err(|e| {
                Error::Setup(format!(
                    "writing the FunctionFS {what} to {}: {e}",
                    path.display()
                ))
            })?;
            if n != blob.len() {
                return Err(Error::Setup(format!(
                    "FunctionFS took {n} of the {} bytes of {what}",
                    blob.len()
                )));
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ffs-ep0".into())
            .spawn(move || serve_ep0(ep0, &thread_stop, &log))
            .map_err(|e| Error::Setup(format!("starting the ep0 thread: {e}")))?;
        Ok(Ep0 {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Ep0 {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The ep0 thread: logs every event and stalls every control request, as
/// the function has none of its own (class and vendor requests to its
/// interface or endpoints reach us; standard ones the composite driver
/// answers). ep0 closes when the thread ends.
fn serve_ep0(mut ep0: File, stop: &AtomicBool, log: &Mutex<Ep0Log>) {
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: ep0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd that lives across the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, EP0_POLL.as_millis() as i32) };
        if ready <= 0 {
            continue;
        }
        let mut raw = [0u8; EVENT_SIZE];
        match ep0.read(&mut raw) {
            Ok(EVENT_SIZE) => {}
            // Nothing after all, a setup the host cancelled (EIDRM), or
            // the function going away: look again a little later.
            Ok(_) | Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        }
        let event = Event::parse(&raw);
        log.lock().unwrap().events.push(event.name().to_string());
        if let Event::Setup(req) = event {
            stall(&mut ep0, &req);
        }
    }
}

/// Stalls the control request FunctionFS is holding: an I/O on ep0 in the
/// direction opposite to the request's data stage makes FunctionFS halt
/// ep0 and return EL2HLT.
fn stall(ep0: &mut File, req: &CtrlRequest) {
    let mut byte = [0u8; 1];
    // The non-blocking ep0 fails with EAGAIN while another path holds
    // FunctionFS's mutex for a moment.
    for _ in 0..20 {
        let r = if req.is_in() {
            ep0.read(&mut byte)
        } else {
            ep0.write(&byte)
        };
        match r.map_err(|e| e.raw_os_error()) {
            Err(Some(libc::EAGAIN)) => std::thread::sleep(Duration::from_millis(5)),
            // EL2HLT: stalled. Anything else (EIDRM: the host cancelled
            // the request; the function went away) leaves nothing to stall.
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test gadget's function (gadget::FUNCTION, written out here so
    /// the layouts below, worked out by hand from functionfs.h for it, do
    /// not change with it).
    const PAIR: BulkFunction = BulkFunction {
        class: 0xff,
        subclass: 0,
        protocol: 0,
        name: "udc-gadget bulk pair",
        endpoints: &[
            BulkEndpoint {
                address: 0x81,
                interval: 0,
            },
            BulkEndpoint {
                address: 0x02,
                interval: 1,
            },
        ],
    };

    #[test]
    fn descriptors_blob_layout() {
        let intf = [9, 4, 0, 0, 2, 0xff, 0, 0, 1];
        let mut want = vec![];
        want.extend_from_slice(&3u32.to_le_bytes());
        want.extend_from_slice(&105u32.to_le_bytes());
        want.extend_from_slice(&7u32.to_le_bytes());
        want.extend_from_slice(&3u32.to_le_bytes()); // fs_count
        want.extend_from_slice(&3u32.to_le_bytes()); // hs_count
        want.extend_from_slice(&5u32.to_le_bytes()); // ss_count
        want.extend_from_slice(&intf);
        want.extend_from_slice(&[7, 5, 0x81, 2, 64, 0, 0, 7, 5, 0x02, 2, 64, 0, 1]);
        want.extend_from_slice(&intf);
        want.extend_from_slice(&[7, 5, 0x81, 2, 0x00, 2, 0, 7, 5, 0x02, 2, 0x00, 2, 1]);
        want.extend_from_slice(&intf);
        want.extend_from_slice(&[7, 5, 0x81, 2, 0x00, 4, 0, 6, 0x30, 0, 0, 0, 0]);
        want.extend_from_slice(&[7, 5, 0x02, 2, 0x00, 4, 1, 6, 0x30, 0, 0, 0, 0]);
        assert_eq!(want.len(), 105);
        assert_eq!(PAIR.descriptors_blob(), want);
    }

    #[test]
    fn strings_blob_layout() {
        let mut want = vec![];
        want.extend_from_slice(&2u32.to_le_bytes());
        want.extend_from_slice(&39u32.to_le_bytes());
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&[0x09, 0x04]);
        want.extend_from_slice(b"udc-gadget bulk pair\0");
        assert_eq!(PAIR.strings_blob(), want);
    }

    #[test]
    fn bulk_packet_sizes_are_the_largest_each_speed_allows() {
        for (speed, mps, companion) in [
            (Speed::Full, 64, false),
            (Speed::High, 512, false),
            (Speed::Super, 1024, true),
        ] {
            for (ep, c) in PAIR.endpoints(speed) {
                assert_eq!(ep.max_packet_size, mps, "{speed:?}");
                assert_eq!(ep.attributes, 2);
                assert_eq!(c.is_some(), companion, "{speed:?}");
            }
        }
    }

    #[test]
    fn events_parse() {
        let mut raw = [0u8; EVENT_SIZE];
        for (t, name) in [
            (0, "bind"),
            (1, "unbind"),
            (2, "enable"),
            (3, "disable"),
            (5, "suspend"),
            (6, "resume"),
            (9, "unknown"),
        ] {
            raw[8] = t;
            assert_eq!(Event::parse(&raw).name(), name);
        }
        raw = [0xc1, 0x42, 0x34, 0x12, 0x01, 0x00, 0x40, 0x00, 4, 0, 0, 0];
        let ev = Event::parse(&raw);
        assert_eq!(
            ev,
            Event::Setup(CtrlRequest {
                request_type: 0xc1,
                request: 0x42,
                value: 0x1234,
                index: 1,
                length: 64,
            })
        );
        assert_eq!(ev.name(), "setup-in");
        raw[0] = 0x41;
        assert_eq!(Event::parse(&raw).name(), "setup-out");
    }
}
