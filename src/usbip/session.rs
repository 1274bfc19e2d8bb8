// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! One imported device: the URB stream after OP_REP_IMPORT. The client's
//! CMD_SUBMITs become host transfers on the device model (control
//! transfers one at a time, in order, as ep0 takes them; the others queued
//! on their endpoints), their ends become RET_SUBMITs, and CMD_UNLINK
//! cancels, as vhci_hcd expects of the stub driver.
//!
//! Threads: the caller's reads commands; one runs control transfers; one
//! writes the other transfers' results; one watches the bus and ends the
//! session when the gadget goes away, so the client sees the unplug.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use log::{debug, info, warn};

use super::wire::{self, errno, Cmd, CmdSubmit, CmdUnlink, IsoPacket, HEADER_LEN, ISO_DESC_LEN};
use super::Stream;
use crate::device::{BusState, UrbKind, UrbResult, UrbStatus};
use crate::host::Host;
use crate::usb::SetupPacket;

/// The largest transfer a client may submit: usbfs's default limit is
/// 16 MiB for all of a program's transfers together; one URB this big is
/// already far beyond what any gadget test asks for.
pub const MAX_TRANSFER: usize = 16 << 20;
/// ISO packets in one URB (usbfs allows 128).
pub const MAX_ISO_PACKETS: usize = 128;
/// What one client may have in flight at once, in transfers and bytes;
/// beyond it a submission fails with -ENOMEM instead of growing the
/// daemon without bound.
pub const MAX_IN_FLIGHT: usize = 4096;
pub const MAX_IN_FLIGHT_BYTES: usize = 256 << 20;

/// How a transfer's end maps to the errno a Linux HCD gives back.
pub fn status_errno(s: UrbStatus) -> i32 {
    -match s {
        UrbStatus::Ok => 0,
        UrbStatus::Stall => errno::EPIPE,
        UrbStatus::Overflow => errno::EOVERFLOW,
        UrbStatus::Shutdown => errno::ESHUTDOWN,
        UrbStatus::Cancelled => errno::ECONNRESET,
        UrbStatus::Timeout => errno::ETIMEDOUT,
        UrbStatus::DmaFault => errno::EIO,
        UrbStatus::Proto => errno::EPROTO,
    }
}

/// A submitted transfer the client has not had the result of.
struct Pending {
    /// The CMD_UNLINK that asked to cancel it, by its seqnum.
    unlinked_by: Option<u32>,
    /// transfer_buffer_length.
    bytes: usize,
    is_in: bool,
    /// URB_SHORT_NOT_OK: an IN transfer shorter than asked fails.
    short_not_ok: bool,
    kind: PendingKind,
}

impl Pending {
    fn new(s: &CmdSubmit, kind: PendingKind) -> Self {
        Pending {
            unlinked_by: None,
            bytes: s.length,
            is_in: s.is_in(),
            short_not_ok: s.transfer_flags & wire::URB_SHORT_NOT_OK != 0,
            kind,
        }
    }
}

enum PendingKind {
    /// Waiting for the control thread, or running on ep0.
    Control,
    /// Queued on an endpoint as the device model's transfer `id`.
    Urb { ep: u8, id: u64 },
    /// Isochronous: each packet a transfer of its own, in order.
    Iso(Box<IsoUrb>),
}

/// An isochronous URB in flight: its packets' transfers and their ends.
struct IsoUrb {
    ep: u8,
    packets: Vec<IsoPacket>,
    ids: Vec<u64>,
    ends: Vec<Option<UrbResult>>,
}

impl IsoUrb {
    /// The RET_SUBMIT of a finished URB: the header, IN data packed as
    /// the stub driver sends it (each packet's bytes back to back), and
    /// every packet's descriptor.
    fn reply(&self, seqnum: u32, is_in: bool) -> Vec<u8> {
        let mut data = Vec::new();
        let mut descs = Vec::with_capacity(self.packets.len() * ISO_DESC_LEN);
        let (mut actual, mut errors) = (0u32, 0u32);
        for (p, end) in self.packets.iter().zip(&self.ends) {
            let end = end.as_ref().expect("every packet ended");
            let status = status_errno(end.status);
            if status != 0 {
                errors += 1;
            }
            actual += end.actual as u32;
            if is_in {
                data.extend_from_slice(&end.data[..end.actual.min(end.data.len())]);
            }
            IsoPacket {
                actual_length: end.actual as u32,
                status,
                ..*p
            }
            .encode(&mut descs);
        }
        let mut b = wire::ret_submit(seqnum, 0, actual, 0, self.packets.len() as u32, errors).to_vec();
        b.extend_from_slice(&data);
        b.extend_from_slice(&descs);
        b
    }
}

#[derive(Default)]
struct InFlight {
    by_seqnum: HashMap<u32, Pending>,
    /// Device-model transfer id to seqnum.
    by_id: HashMap<u64, u32>,
    /// The seqnum of the control transfer on ep0 now, if one runs.
    control_running: Option<u32>,
    bytes: usize,
}

struct ControlJob {
    seqnum: u32,
    setup: SetupPacket,
    data_out: Vec<u8>,
    in_len: usize,
}

/// What a session counted; logged at its end.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionCounts {
    pub submitted: u64,
    pub unlinked: u64,
    pub refused: u64,
}

struct Shared {
    host: Arc<Host>,
    writer: Mutex<Box<dyn Stream>>,
    inflight: Mutex<InFlight>,
    /// The client's name, for log lines.
    peer: String,
}

impl Shared {
    /// Sends one whole message; a failed write ends the session (the reader
    /// sees the shut-down socket).
    fn send(&self, parts: &[&[u8]]) {
        let mut w = self.writer.lock().unwrap();
        let r = parts
            .iter()
            .try_for_each(|p| w.write_all(p))
            .and_then(|_| w.flush());
        if let Err(e) = r {
            debug!("usbip {}: write failed ({e}); ending the session", self.peer);
            w.shutdown();
        }
    }

    fn send_ret_submit(&self, seqnum: u32, status: i32, data_in: &[u8], actual: usize) {
        let h = wire::ret_submit(seqnum, status, actual as u32, 0, 0, 0);
        self.send(&[&h, data_in]);
    }

    /// A transfer ended (`data` is what an IN transfer read): its
    /// RET_SUBMIT, or the RET_UNLINK of the CMD_UNLINK that cancelled it.
    /// One that ended on its own although an unlink came gets both (the
    /// unlink with status 0), so no data is lost.
    fn finished(&self, seqnum: u32, status: UrbStatus, data: &[u8], actual: usize) {
        let mut f = self.inflight.lock().unwrap();
        let Some(p) = f.by_seqnum.remove(&seqnum) else {
            return;
        };
        f.bytes -= p.bytes;
        if let (Some(u), UrbStatus::Cancelled) = (p.unlinked_by, status) {
            self.send(&[&wire::ret_unlink(u, -errno::ECONNRESET)]);
            return;
        }
        let mut st = status_errno(status);
        if st == 0 && p.is_in && p.short_not_ok && actual < p.bytes {
            st = -errno::EREMOTEIO;
        }
        let data_in = if p.is_in {
            &data[..actual.min(data.len())]
        } else {
            &[]
        };
        self.send_ret_submit(seqnum, st, data_in, actual);
        if let Some(u) = p.unlinked_by {
            self.send(&[&wire::ret_unlink(u, 0)]);
        }
    }
}

/// Runs an imported session on `stream` until the client closes it, sends
/// something this server does not take, or the gadget goes away.
pub fn run(host: Arc<Host>, stream: Box<dyn Stream>, peer: String) -> io::Result<SessionCounts> {
    let writer = stream.try_clone_box()?;
    let shared = Arc::new(Shared {
        host: host.clone(),
        writer: Mutex::new(writer),
        inflight: Mutex::new(InFlight::default()),
        peer,
    });
    let (urb_tx, urb_rx) = channel::<UrbResult>();
    let (ctl_tx, ctl_rx) = channel::<ControlJob>();
    let completer = {
        let s = shared.clone();
        thread::Builder::new()
            .name("usbip-complete".into())
            .spawn(move || complete_urbs(&s, urb_rx))?
    };
    let controller = {
        let s = shared.clone();
        thread::Builder::new()
            .name("usbip-control".into())
            .spawn(move || run_controls(&s, ctl_rx))?
    };
    let watcher_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let s = shared.clone();
        let stop = watcher_stop.clone();
        let closer = stream.try_clone_box()?;
        thread::Builder::new()
            .name("usbip-watch".into())
            .spawn(move || watch_bus(&s, &stop, closer))?
    };
    let mut reader = Reader {
        shared: &shared,
        stream,
        urb_tx,
        ctl_tx: Some(ctl_tx),
        counts: SessionCounts::default(),
        last_submitted: None,
        early_unlinks: HashMap::new(),
    };
    let result = reader.serve();
    let counts = reader.counts;
    // Let the threads go: no more submissions; whatever is queued is
    // cancelled so that its results come back now.
    drop(reader.ctl_tx.take());
    watcher_stop.store(true, std::sync::atomic::Ordering::SeqCst);
    cancel_everything(&shared);
    drop(reader);
    let _ = controller.join();
    let _ = completer.join();
    let _ = watcher.join();
    result.map(|_| counts)
}

struct Reader<'a> {
    shared: &'a Arc<Shared>,
    stream: Box<dyn Stream>,
    urb_tx: Sender<UrbResult>,
    ctl_tx: Option<Sender<ControlJob>>,
    counts: SessionCounts,
    /// The highest seqnum submitted so far.
    last_submitted: Option<u32>,
    /// Unlinks that came before the submission they cancel, by the
    /// victim's seqnum: vhci_hcd's transmit thread sends its pending
    /// unlinks after its pending submissions in each round, so an unlink
    /// queued just after its URB can overtake it on the wire.
    early_unlinks: HashMap<u32, u32>,
}

/// Early unlinks kept at most (a client that names seqnums it never
/// submits must not grow the daemon).
const MAX_EARLY_UNLINKS: usize = 1024;

impl Reader<'_> {
    fn serve(&mut self) -> io::Result<()> {
        let mut h = [0u8; HEADER_LEN];
        loop {
            if !read_exact_or_eof(&mut self.stream, &mut h)? {
                return Ok(());
            }
            let cmd = wire::parse_cmd(&h, MAX_TRANSFER, MAX_ISO_PACKETS).map_err(|e| {
                warn!("usbip {}: {e}; closing the connection", self.shared.peer);
                io::Error::new(io::ErrorKind::InvalidData, e)
            })?;
            match cmd {
                Cmd::Submit(s) => self.submit(s)?,
                Cmd::Unlink(u) => self.unlink(u),
            }
        }
    }

    fn submit(&mut self, s: CmdSubmit) -> io::Result<()> {
        let mut data = vec![0u8; s.out_len()];
        self.stream.read_exact(&mut data)?;
        let mut iso = vec![0u8; s.packets * ISO_DESC_LEN];
        self.stream.read_exact(&mut iso)?;
        self.counts.submitted += 1;
        self.last_submitted = Some(self.last_submitted.map_or(s.seqnum, |l| l.max(s.seqnum)));
        if let Some(u) = self.early_unlinks.remove(&s.seqnum) {
            // Cancelled before it started: answered as an unlink that
            // caught it, and never run.
            debug!(
                "usbip {}: seqnum {} was unlinked before it came",
                self.shared.peer, s.seqnum
            );
            self.shared.send(&[&wire::ret_unlink(u, -errno::ECONNRESET)]);
            return Ok(());
        }
        {
            let f = self.shared.inflight.lock().unwrap();
            if f.by_seqnum.len() >= MAX_IN_FLIGHT || f.bytes + s.length > MAX_IN_FLIGHT_BYTES {
                drop(f);
                warn!(
                    "usbip {}: more than {MAX_IN_FLIGHT} transfers or {} MiB in flight: seqnum {} fails with -ENOMEM",
                    self.shared.peer,
                    MAX_IN_FLIGHT_BYTES >> 20,
                    s.seqnum
                );
                self.refuse(s.seqnum, errno::ENOMEM);
                return Ok(());
            }
            if f.by_seqnum.contains_key(&s.seqnum) {
                drop(f);
                warn!(
                    "usbip {}: seqnum {} is already in flight",
                    self.shared.peer, s.seqnum
                );
                self.refuse(s.seqnum, errno::EINVAL);
                return Ok(());
            }
        }
        if s.ep & 0x0f == 0 {
            if s.packets > 0 {
                self.refuse(s.seqnum, errno::EINVAL);
                return Ok(());
            }
            self.submit_control(s, data);
            return Ok(());
        }
        if s.packets > 0 {
            let packets: Vec<IsoPacket> = iso.chunks(ISO_DESC_LEN).map(IsoPacket::parse).collect();
            self.submit_iso(s, data, packets);
            return Ok(());
        }
        let kind = if s.is_in() {
            UrbKind::In { len: s.length }
        } else {
            UrbKind::Out {
                data,
                zlp: s.transfer_flags & wire::URB_ZERO_PACKET != 0,
            }
        };
        // Held across the submission: a transfer can end before
        // submit_to returns, and its result must find its seqnum.
        let mut f = self.shared.inflight.lock().unwrap();
        let id = self
            .shared
            .host
            .submit_to(s.ep, kind, Vec::new(), self.urb_tx.clone());
        f.by_seqnum
            .insert(s.seqnum, Pending::new(&s, PendingKind::Urb { ep: s.ep, id }));
        f.by_id.insert(id, s.seqnum);
        f.bytes += s.length;
        Ok(())
    }

    /// An isochronous URB: each packet queued as a transfer of its own (the
    /// device model has no frame clock; a packet ends when the gadget's
    /// request for it does), the URB answered when the last one ends.
    fn submit_iso(&mut self, s: CmdSubmit, data: Vec<u8>, packets: Vec<IsoPacket>) {
        let fits = packets.iter().all(|p| {
            (p.offset as usize)
                .checked_add(p.length as usize)
                .is_some_and(|end| end <= s.length)
        });
        if !fits {
            warn!(
                "usbip {}: seqnum {}: an ISO packet lies outside the transfer buffer",
                self.shared.peer, s.seqnum
            );
            self.refuse(s.seqnum, errno::EINVAL);
            return;
        }
        let mut f = self.shared.inflight.lock().unwrap();
        let mut ids = Vec::with_capacity(packets.len());
        for p in &packets {
            let (o, n) = (p.offset as usize, p.length as usize);
            let kind = if s.is_in() {
                UrbKind::In { len: n }
            } else {
                UrbKind::Out {
                    data: data[o..o + n].to_vec(),
                    zlp: false,
                }
            };
            let id = self
                .shared
                .host
                .submit_to(s.ep, kind, Vec::new(), self.urb_tx.clone());
            f.by_id.insert(id, s.seqnum);
            ids.push(id);
        }
        let ends = (0..packets.len()).map(|_| None).collect();
        let iso = IsoUrb {
            ep: s.ep,
            packets,
            ids,
            ends,
        };
        f.by_seqnum
            .insert(s.seqnum, Pending::new(&s, PendingKind::Iso(Box::new(iso))));
        f.bytes += s.length;
    }

    fn submit_control(&mut self, s: CmdSubmit, data: Vec<u8>) {
        let setup = SetupPacket::from_bytes(&s.setup);
        if (setup.request_type & 0x80 != 0) != s.is_in() {
            warn!(
                "usbip {}: {setup} with direction {} in its header",
                self.shared.peer,
                if s.is_in() { "in" } else { "out" }
            );
            return self.refuse(s.seqnum, errno::EINVAL);
        }
        let in_len = if s.is_in() {
            s.length.min(usize::from(setup.length))
        } else {
            0
        };
        let mut f = self.shared.inflight.lock().unwrap();
        f.by_seqnum
            .insert(s.seqnum, Pending::new(&s, PendingKind::Control));
        f.bytes += s.length;
        drop(f);
        let job = ControlJob {
            seqnum: s.seqnum,
            setup,
            data_out: data,
            in_len,
        };
        if let Some(tx) = &self.ctl_tx {
            let _ = tx.send(job);
        }
    }

    /// Answers a submission the server does not run.
    fn refuse(&mut self, seqnum: u32, err: i32) {
        self.counts.refused += 1;
        self.shared.send_ret_submit(seqnum, -err, &[], 0);
    }

    fn unlink(&mut self, u: CmdUnlink) {
        self.counts.unlinked += 1;
        let mut f = self.shared.inflight.lock().unwrap();
        let running_control = f.control_running;
        let Some(p) = f.by_seqnum.get_mut(&u.victim) else {
            drop(f);
            let future = self.last_submitted.map_or(true, |l| u.victim > l);
            if future && self.early_unlinks.len() < MAX_EARLY_UNLINKS {
                // Its submission is still on the way: answered when it comes.
                self.early_unlinks.insert(u.victim, u.seqnum);
                return;
            }
            // Already given back (or never submitted): nothing to cancel.
            self.shared.send(&[&wire::ret_unlink(u.seqnum, 0)]);
            return;
        };
        p.unlinked_by = Some(u.seqnum);
        match &p.kind {
            PendingKind::Iso(iso) => {
                let mut udc = self.shared.host.udc().lock();
                for (id, end) in iso.ids.iter().zip(&iso.ends) {
                    if end.is_none() {
                        udc.cancel_urb(iso.ep, *id);
                    }
                }
            }
            &PendingKind::Urb { ep, id } => {
                // Its result (cancelled, or done just before) reaches
                // the completion thread, which answers the unlink.
                self.shared.host.udc().lock().cancel_urb(ep, id);
            }
            PendingKind::Control if running_control == Some(u.victim) => {
                self.shared.host.udc().lock().cancel_control();
            }
            PendingKind::Control => {
                // Still queued: the control thread skips it.
            }
        }
    }
}

fn complete_urbs(s: &Arc<Shared>, rx: Receiver<UrbResult>) {
    for r in rx {
        let mut f = s.inflight.lock().unwrap();
        let Some(seqnum) = f.by_id.remove(&r.id) else {
            continue;
        };
        if let Some(PendingKind::Iso(iso)) = f.by_seqnum.get_mut(&seqnum).map(|p| &mut p.kind) {
            let i = iso
                .ids
                .iter()
                .position(|&id| id == r.id)
                .expect("a packet of this URB");
            iso.ends[i] = Some(r);
            if iso.ends.iter().all(Option::is_some) {
                let p = f.by_seqnum.remove(&seqnum).expect("found above");
                f.bytes -= p.bytes;
                iso_finished(s, seqnum, &p);
            }
            continue;
        }
        drop(f);
        s.finished(seqnum, r.status, &r.data, r.actual);
    }
}

/// The last packet of an isochronous URB ended (under the in-flight lock,
/// as [`Shared::finished`] writes).
fn iso_finished(s: &Shared, seqnum: u32, p: &Pending) {
    let PendingKind::Iso(iso) = &p.kind else { return };
    let cancelled = iso
        .ends
        .iter()
        .flatten()
        .any(|e| e.status == UrbStatus::Cancelled);
    match p.unlinked_by {
        Some(u) if cancelled => s.send(&[&wire::ret_unlink(u, -errno::ECONNRESET)]),
        unlinked => {
            s.send(&[&iso.reply(seqnum, p.is_in)]);
            if let Some(u) = unlinked {
                s.send(&[&wire::ret_unlink(u, 0)]);
            }
        }
    }
}

fn run_controls(s: &Arc<Shared>, rx: Receiver<ControlJob>) {
    for job in rx {
        {
            let mut f = s.inflight.lock().unwrap();
            match f.by_seqnum.get(&job.seqnum) {
                Some(p) if p.unlinked_by.is_some() => {
                    drop(f);
                    s.finished(job.seqnum, UrbStatus::Cancelled, &[], 0);
                    continue;
                }
                Some(_) => f.control_running = Some(job.seqnum),
                None => continue,
            }
        }
        let out_len = job.data_out.len();
        let r = s.host.control(job.setup, job.data_out);
        s.inflight.lock().unwrap().control_running = None;
        match r {
            Ok(mut d) if job.setup.request_type & 0x80 != 0 => {
                d.truncate(job.in_len);
                s.finished(job.seqnum, UrbStatus::Ok, &d, d.len());
            }
            Ok(_) => s.finished(job.seqnum, UrbStatus::Ok, &[], out_len),
            Err(st) => s.finished(job.seqnum, st, &[], 0),
        }
    }
}

/// Ends the session when the gadget goes away (pull-up off, cable out,
/// the driver gone): the bus leaves the session the client imported.
fn watch_bus(s: &Arc<Shared>, stop: &std::sync::atomic::AtomicBool, closer: Box<dyn Stream>) {
    let udc = s.host.udc().clone();
    let session = udc.lock().session();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let (_g, gone) = udc.wait_until(Duration::from_millis(200), |d| {
            d.session() != session || d.state() == BusState::Detached
        });
        if gone {
            info!("usbip {}: the device went away; closing the connection", s.peer);
            closer.shutdown();
            return;
        }
    }
}

/// The session is over: what is still queued on an endpoint or ep0 ends
/// now (the client is gone; nobody wants it).
fn cancel_everything(s: &Arc<Shared>) {
    let mut f = s.inflight.lock().unwrap();
    let urbs: Vec<(u8, u64)> = f
        .by_seqnum
        .values()
        .flat_map(|p| match &p.kind {
            PendingKind::Urb { ep, id } => vec![(*ep, *id)],
            PendingKind::Iso(iso) => iso.ids.iter().map(|id| (iso.ep, *id)).collect(),
            PendingKind::Control => Vec::new(),
        })
        .collect();
    let control = f.control_running.is_some();
    // Nothing more is written: the results find no seqnum.
    f.by_seqnum.clear();
    drop(f);
    let mut udc = s.host.udc().lock();
    for (ep, id) in urbs {
        udc.cancel_urb(ep, id);
    }
    if control {
        udc.cancel_control();
    }
}

/// Reads exactly `buf.len()` bytes; false on a clean end of stream before
/// the first byte.
fn read_exact_or_eof(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
