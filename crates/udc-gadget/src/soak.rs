// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `udc-gadget soak`: read()/write() and DMABUF transfers both ways, one
//! at a time, for a set time, under whatever delay and fault injection the
//! daemon runs with (`udc-vm soak` sets seeded random latency, NAKs and
//! faults). Every transfer is checked at both ends:
//!
//! - both ends say it completed: the bytes must be the transfer's own
//!   `prbs` pattern (a fresh seed per transfer, so stale data from an
//!   earlier one never passes) and both ends must agree on the length;
//!   anything else is a corruption nobody detected;
//! - it ended with an error: the guest's errno and the host's status must
//!   name the same injected fault (EPIPE and `stall`, ...), and what moved
//!   before the fault must still be the pattern;
//! - every few hundred transfers the daemon's injection log is read and
//!   the faults it decided are matched, kind by kind, against the
//!   transfers that ended with them: a fault decided but not seen, or an
//!   error no fault explains, fails the soak.
//!
//! One transfer at a time keeps that matching exact: the injected fault of
//! request N of an endpoint is the one the guest sees on its Nth transfer
//! there. `soak:` lines on stdout: progress, then a `soak: done` summary
//! that udc-vm parses.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use udc_patterns::Pattern;

use crate::dmabuf::{self, GuestBuf, Source};
use crate::error::Error;
use crate::ffs_dmabuf;
use crate::support::{
    clone, fence_result, io_err, pattern, read_thread, setup, write_thread, Ctx, Setup, CONFIGURE_TIMEOUT,
    IO_TIMEOUT, MAX_SOCKET_TRANSFER,
};

#[derive(clap::Args, Debug)]
pub struct SoakArgs {
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Seed of the transfer mix: kinds, sizes and data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Largest transfer in bytes (at most 1 MiB, one control-socket
    /// transfer).
    #[arg(long, default_value_t = MAX_SOCKET_TRANSFER)]
    pub max_size: usize,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 10)]
    pub progress: u64,
}

/// Injected faults as the injection log names them, which the soak
/// matches against the transfers that end with them. `reset` and
/// `disconnect` both reach the guest as ESHUTDOWN: they are matched
/// together as `bus`.
const FAULTS: [&str; 7] = [
    "stall",
    "babble",
    "short",
    "proto_error",
    "io_error",
    "reset",
    "disconnect",
];

/// Read the injection log at least this often: each transfer adds at most
/// three events (latency, NAK, fault) and the log keeps the newest 4096.
const LOG_EVERY: u64 = 300;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    RwOut,
    RwIn,
    DmabufOut,
    DmabufIn,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::RwOut => "rw_out",
            Kind::RwIn => "rw_in",
            Kind::DmabufOut => "dmabuf_out",
            Kind::DmabufIn => "dmabuf_in",
        }
    }
}

/// What one transfer came to.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Both ends say it completed, and `bytes` were the pattern.
    Ok { bytes: u64, short: bool },
    /// Both ends saw the same injected fault; `partial` bytes moved before
    /// it and were the pattern.
    Faulted { fault: &'static str, partial: u64 },
    /// Both ends said it completed, but the data or the length was wrong.
    Corrupt(String),
    /// Data that moved before a fault was wrong.
    BadPartial(String),
    /// An error no injected fault explains, or the ends disagree.
    Unexplained(String),
}

/// splitmix64: the soak's own choices, from its seed.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A transfer size from 1 byte to `max`, spread evenly over the powers
    /// of two, a quarter of them whole packets (no short packet ends them).
    fn size(&mut self, max: usize, mps: usize) -> usize {
        let top = usize::BITS - max.leading_zeros();
        let bits = self.below(u64::from(top)) as u32;
        let lo = 1usize << bits;
        let mut n = (lo + self.below(lo as u64) as usize).clamp(1, max);
        if self.below(4) == 0 && n >= mps {
            n -= n % mps;
        }
        n
    }
}

/// The errno of a failed read()/write(), or its result.
fn io_result<T>(h: thread::JoinHandle<std::io::Result<T>>, what: &str) -> Result<Result<T, i32>, Error> {
    match h.join() {
        Ok(Ok(v)) => Ok(Ok(v)),
        Ok(Err(e)) => Ok(Err(e.raw_os_error().unwrap_or(0))),
        Err(_) => Err(Error::Check(format!("{what}: the I/O thread panicked"))),
    }
}

fn errno_name(e: i32) -> String {
    crate::support::errno_name(e).map_or_else(|| format!("errno {e}"), String::from)
}

/// The injected fault that ends a transfer the guest sees end with `errno`
/// and the host with `status` (docs/injection.md's table); None when they
/// do not name the same one.
fn fault_of(errno: i32, host: &str) -> Option<&'static str> {
    match (errno, host) {
        (libc::EPIPE, "stall") => Some("stall"),
        (libc::EOVERFLOW, "overflow") => Some("babble"),
        (libc::EPROTO, "proto") => Some("proto_error"),
        (libc::EIO, "proto") => Some("io_error"),
        // A bus reset or disconnect ends the host's transfer too, however
        // it names that.
        (libc::ESHUTDOWN, h) if h != "ok" => Some("bus"),
        _ => None,
    }
}

fn check_pattern(seed: u64, data: &[u8]) -> Result<(), String> {
    Pattern::Prbs { seed }
        .verify(0, data)
        .map_err(|m| format!("data differs from prbs:{seed}: {m}"))
}

/// Both ends say the transfer of `n` bytes completed: the guest has
/// `data`, the host says it moved `host_actual`. `may_be_short`: an OUT
/// transfer, which an injected short packet ends early.
fn completed(seed: u64, n: usize, data: &[u8], host_actual: u64, may_be_short: bool) -> Outcome {
    let len = data.len();
    if len as u64 != host_actual || len > n || (len < n && !may_be_short) {
        return Outcome::Corrupt(format!(
            "{len} of {n} bytes at the gadget, the host moved {host_actual}, both said ok"
        ));
    }
    match check_pattern(seed, data) {
        Ok(()) => Outcome::Ok {
            bytes: len as u64,
            short: len < n,
        },
        Err(e) => Outcome::Corrupt(format!("{len} bytes, both ends said ok: {e}")),
    }
}

/// The transfer ended with `errno` at the gadget and `host` at the host;
/// `partial` is what the fault let through, where the soak can see it.
fn faulted(errno: i32, host: &str, seed: u64, partial: Option<&[u8]>) -> Outcome {
    let Some(fault) = fault_of(errno, host) else {
        return Outcome::Unexplained(format!(
            "the gadget got {} and the host {host}: no injected fault ends a transfer so",
            errno_name(errno)
        ));
    };
    let partial = partial.unwrap_or(&[]);
    match check_pattern(seed, partial) {
        Ok(()) => Outcome::Faulted {
            fault,
            partial: partial.len() as u64,
        },
        Err(e) => Outcome::BadPartial(format!("{fault}: the {} bytes before it: {e}", partial.len())),
    }
}

fn host_status(r: &Value) -> (String, u64) {
    (
        r["status"].as_str().unwrap_or("?").to_string(),
        r["actual"].as_u64().unwrap_or(0),
    )
}

/// A blocked read() or write() cannot be taken back: a host transfer that
/// timed out leaves the gadget's request waiting, and the soak cannot go on.
fn host_gave_up(status: &str, what: &str) -> Result<(), Error> {
    if status == "timeout" {
        return Err(Error::Check(format!(
            "{what}: the host's transfer ended {status}: the gadget's request is still queued"
        )));
    }
    Ok(())
}

struct Endpoints {
    fin: File,
    fout: File,
    /// One udmabuf and one dma-heap buffer attached to each endpoint, for
    /// the whole soak (attachments are what f_fs maps once).
    dmabufs_in: Vec<GuestBuf>,
    dmabufs_out: Vec<GuestBuf>,
}

fn rw_out(ctx: &mut Ctx, s: &Setup, ep: &Endpoints, n: usize, seed: u64) -> Result<Outcome, Error> {
    let reader = read_thread(clone(&ep.fout)?, n);
    let r = ctx.host.send_out(s.ep_out, &pattern(seed, 0, n), false)?;
    let (status, actual) = host_status(&r);
    host_gave_up(&status, "OUT read()")?;
    Ok(match io_result(reader, "OUT read()")? {
        Ok(data) if status == "ok" => completed(seed, n, &data, actual, true),
        Ok(data) => Outcome::Unexplained(format!(
            "read() returned {} bytes, the host's transfer ended {status}",
            data.len()
        )),
        // f_fs hands back nothing of a read that failed.
        Err(e) => faulted(e, &status, seed, None),
    })
}

fn rw_in(ctx: &mut Ctx, s: &Setup, ep: &Endpoints, n: usize, seed: u64) -> Result<Outcome, Error> {
    let writer = write_thread(clone(&ep.fin)?, pattern(seed, 0, n));
    let (r, data) = ctx.host.read_in(s.ep_in, n)?;
    let (status, actual) = host_status(&r);
    host_gave_up(&status, "IN write()")?;
    Ok(match io_result(writer, "IN write()")? {
        Ok(w) if status == "ok" && w == n => completed(seed, n, &data, actual, false),
        Ok(w) => Outcome::Unexplained(format!(
            "write() of {n} bytes returned {w}, the host's transfer ended {status} with {actual}"
        )),
        Err(e) => faulted(e, &status, seed, Some(&data)),
    })
}

fn dmabuf_out(
    ctx: &mut Ctx,
    s: &Setup,
    ep: &Endpoints,
    buf: usize,
    n: usize,
    seed: u64,
) -> Result<Outcome, Error> {
    let b = &ep.dmabufs_out[buf];
    let what = format!("OUT {} DMABUF", b.source.name());
    ffs_dmabuf::transfer(ep.fout.as_fd(), b.fd(), n as u64, 0)
        .map_err(io_err(&format!("{what}: DMABUF_TRANSFER")))?;
    // A reader waits for the device's write fence: the sync file holds it.
    let sync = b
        .export_sync_file(dmabuf::SYNC_READ)
        .map_err(io_err(&format!("{what}: EXPORT_SYNC_FILE")))?;
    let r = ctx.host.send_out(s.ep_out, &pattern(seed, 0, n), false)?;
    let (status, actual) = host_status(&r);
    host_gave_up(&status, &what)?;
    if !b.wait(libc::POLLIN, IO_TIMEOUT) {
        return Err(Error::Check(format!(
            "{what}: the fence did not signal in {IO_TIMEOUT:?}"
        )));
    }
    let fence = fence_result(&sync, &what)?;
    drop(sync);
    // The device wrote `actual` bytes into the pages whatever the end; the
    // rest holds an earlier transfer's data, which is another pattern.
    let seen = (actual as usize).min(n);
    let data = b.read(seen).map_err(io_err(&format!("{what}: read")))?;
    Ok(match fence {
        Ok(()) if status == "ok" => completed(seed, n, &data, actual, true),
        Ok(()) => Outcome::Unexplained(format!(
            "the fence signalled without error, the host's transfer ended {status}"
        )),
        Err(e) => faulted(e, &status, seed, Some(&data)),
    })
}

fn dmabuf_in(
    ctx: &mut Ctx,
    s: &Setup,
    ep: &mut Endpoints,
    buf: usize,
    n: usize,
    seed: u64,
) -> Result<Outcome, Error> {
    let b = &mut ep.dmabufs_in[buf];
    let what = format!("IN {} DMABUF", b.source.name());
    b.write(&pattern(seed, 0, n))
        .map_err(io_err(&format!("{what}: write")))?;
    ffs_dmabuf::transfer(ep.fin.as_fd(), b.fd(), n as u64, 0)
        .map_err(io_err(&format!("{what}: DMABUF_TRANSFER")))?;
    // The device reads: its fence is a read fence, which a writer waits for.
    let sync = b
        .export_sync_file(dmabuf::SYNC_WRITE)
        .map_err(io_err(&format!("{what}: EXPORT_SYNC_FILE")))?;
    let (r, data) = ctx.host.read_in(s.ep_in, n)?;
    let (status, actual) = host_status(&r);
    host_gave_up(&status, &what)?;
    if !b.wait(libc::POLLOUT, IO_TIMEOUT) {
        return Err(Error::Check(format!(
            "{what}: the fence did not signal in {IO_TIMEOUT:?}"
        )));
    }
    let fence = fence_result(&sync, &what)?;
    drop(sync);
    Ok(match fence {
        Ok(()) if status == "ok" => completed(seed, n, &data, actual, false),
        Ok(()) => Outcome::Unexplained(format!(
            "the fence signalled without error, the host's transfer ended {status}"
        )),
        Err(e) => faulted(e, &status, seed, Some(&data)),
    })
}

/// The daemon's injection log, read as it grows: events by kind.
#[derive(Default)]
struct LogWatch {
    seen: u64,
    by_kind: BTreeMap<String, u64>,
    /// Events the log dropped before they were read (it keeps 4096).
    missed: u64,
    races: u64,
}

impl LogWatch {
    fn poll(&mut self, ctx: &mut Ctx) -> Result<(), Error> {
        let r = ctx.host.ok(json!({"op": "injections"}))?;
        let log = &r["log"];
        let total = log["total"].as_u64().unwrap_or(0);
        if total < self.seen {
            return Err(Error::Check(format!(
                "the injection log went back from {} to {total} events: someone changed the settings during the soak",
                self.seen
            )));
        }
        let events = log["events"].as_array().cloned().unwrap_or_default();
        let first = events
            .first()
            .and_then(|e| e["seq"].as_u64())
            .unwrap_or(total + 1);
        if total > self.seen && first > self.seen + 1 {
            self.missed += first - self.seen - 1;
        }
        for e in events
            .iter()
            .filter(|e| e["seq"].as_u64().unwrap_or(0) > self.seen)
        {
            let kind = e["event"]
                .as_str()
                .unwrap_or("?")
                .split(' ')
                .next()
                .unwrap_or("?");
            *self.by_kind.entry(kind.to_string()).or_default() += 1;
        }
        self.seen = total;
        self.races = log["races_total"].as_u64().unwrap_or(0);
        Ok(())
    }

    fn count(&self, kind: &str) -> u64 {
        self.by_kind.get(kind).copied().unwrap_or(0)
    }

    fn faults(&self) -> u64 {
        FAULTS.iter().map(|k| self.count(k)).sum()
    }
}

#[derive(Default)]
struct Tally {
    transfers: u64,
    by_kind: BTreeMap<Kind, u64>,
    ok: u64,
    short: u64,
    bytes: u64,
    partial_bytes: u64,
    /// Transfers ended by an injected fault, by the fault's name (`bus`
    /// for a reset or disconnect).
    faulted: BTreeMap<&'static str, u64>,
    corruptions: u64,
    bad_partial: u64,
    unexplained: u64,
    /// The first few problems, said in full.
    said: Vec<String>,
}

impl Tally {
    fn faulted_total(&self) -> u64 {
        self.faulted.values().sum()
    }

    fn note(&mut self, what: String) {
        if self.said.len() < 20 {
            println!("soak: {what}");
            self.said.push(what);
        }
    }

    fn add(&mut self, k: Kind, n: usize, o: Outcome, index: u64) {
        self.transfers += 1;
        *self.by_kind.entry(k).or_default() += 1;
        match o {
            Outcome::Ok { bytes, short } => {
                self.ok += 1;
                self.bytes += bytes;
                self.short += u64::from(short);
            }
            Outcome::Faulted { fault, partial } => {
                *self.faulted.entry(fault).or_default() += 1;
                self.partial_bytes += partial;
            }
            Outcome::Corrupt(e) => {
                self.corruptions += 1;
                self.note(format!(
                    "CORRUPTION transfer {index} ({}, {n} bytes): {e}",
                    k.name()
                ));
            }
            Outcome::BadPartial(e) => {
                self.bad_partial += 1;
                self.note(format!(
                    "BAD PARTIAL DATA transfer {index} ({}, {n} bytes): {e}",
                    k.name()
                ));
            }
            Outcome::Unexplained(e) => {
                self.unexplained += 1;
                self.note(format!(
                    "UNEXPLAINED transfer {index} ({}, {n} bytes): {e}",
                    k.name()
                ));
            }
        }
    }
}

/// The faults the log decided against the transfers that ended with them;
/// a line per kind that differs. Every transfer queued so far has ended,
/// so the two must agree exactly.
fn unmatched(t: &Tally, log: &LogWatch) -> Vec<String> {
    let mut out = Vec::new();
    let seen = |k: &str| t.faulted.get(k).copied().unwrap_or(0);
    for k in ["stall", "babble", "proto_error", "io_error"] {
        if log.count(k) != seen(k) {
            out.push(format!(
                "{k}: {} injected, {} transfers ended by it",
                log.count(k),
                seen(k)
            ));
        }
    }
    if log.count("short") != t.short {
        out.push(format!(
            "short: {} injected, {} transfers ended short",
            log.count("short"),
            t.short
        ));
    }
    let bus = log.count("reset") + log.count("disconnect");
    if bus != seen("bus") {
        out.push(format!(
            "reset and disconnect: {bus} injected, {} transfers ended by them",
            seen("bus")
        ));
    }
    out
}

fn line(head: &str, elapsed: f64, t: &Tally, log: &LogWatch) -> String {
    let mut s = format!(
        "soak: {head} elapsed={elapsed:.1} transfers={} ok={} faulted={} short={} bytes={} partial_bytes={} \
         faults={} delays={} corruptions={} bad_partial={} unexplained={} races={} log_missed={}",
        t.transfers,
        t.ok,
        t.faulted_total(),
        t.short,
        t.bytes,
        t.partial_bytes,
        log.faults(),
        log.count("latency") + log.count("nak"),
        t.corruptions,
        t.bad_partial,
        t.unexplained,
        log.races,
        log.missed,
    );
    for k in [Kind::RwOut, Kind::RwIn, Kind::DmabufOut, Kind::DmabufIn] {
        s.push_str(&format!(
            " {}={}",
            k.name(),
            t.by_kind.get(&k).copied().unwrap_or(0)
        ));
    }
    for k in FAULTS.iter().chain(&["latency", "nak"]) {
        s.push_str(&format!(" log_{k}={}", log.count(k)));
    }
    s
}

fn open_endpoints(s: &Setup, size: usize) -> Result<Endpoints, Error> {
    let fin = s.g.open_ep(1)?;
    let fout = s.g.open_ep(2)?;
    let mut ep = Endpoints {
        fin,
        fout,
        dmabufs_in: Vec::new(),
        dmabufs_out: Vec::new(),
    };
    if !s.sg {
        return Ok(ep);
    }
    let size = size.next_multiple_of(4096);
    for source in [Source::Udmabuf, Source::Heap] {
        for out in [false, true] {
            let b = GuestBuf::new(source, size)
                .map_err(|e| Error::Setup(format!("{} of {size} bytes: {e}", source.name())))?;
            let f = if out { &ep.fout } else { &ep.fin };
            let attached = ffs_dmabuf::attach(f.as_fd(), b.fd());
            // Under swiotlb=force the system heap's 1 MiB segments are
            // more than swiotlb maps at once, and ATTACH fails with EIO
            // (docs/kernel-bugs.md): the soak goes on with udmabufs.
            if source == Source::Heap
                && dmabuf::dma_bounces()
                && attached
                    .as_ref()
                    .is_err_and(|e| e.raw_os_error() == Some(libc::EIO))
            {
                println!(
                    "soak: a {size}-byte dma-heap buffer cannot be attached under swiotlb=force (EIO): udmabufs only"
                );
                ep.dmabufs_in.truncate(1);
                ep.dmabufs_out.truncate(1);
                return Ok(ep);
            }
            attached.map_err(io_err(&format!(
                "DMABUF_ATTACH of a {size}-byte {}",
                source.name()
            )))?;
            if out {
                ep.dmabufs_out.push(b);
            } else {
                ep.dmabufs_in.push(b);
            }
        }
    }
    Ok(ep)
}

fn close_endpoints(ep: Endpoints) -> Result<(), Error> {
    for b in &ep.dmabufs_out {
        ffs_dmabuf::detach(ep.fout.as_fd(), b.fd()).map_err(io_err("DMABUF_DETACH on OUT"))?;
    }
    for b in &ep.dmabufs_in {
        ffs_dmabuf::detach(ep.fin.as_fd(), b.fd()).map_err(io_err("DMABUF_DETACH on IN"))?;
    }
    Ok(())
}

/// `udc-gadget soak`. Ok(true) when every transfer checked out.
pub fn run(ctx: &mut Ctx, a: &SoakArgs) -> Result<bool, Error> {
    let max = a.max_size.clamp(1, MAX_SOCKET_TRANSFER);
    let settings = ctx.host.ok(json!({"op": "inject"}))?["settings"].clone();
    // A held completion waits for a release the soak never sends, and a
    // reordered one for a request behind it that never comes.
    if let Some(k) = settings
        .as_object()
        .and_then(|m| m.keys().find(|k| k.ends_with("hold") || k.ends_with("reorder")))
    {
        return Err(Error::Setup(format!(
            "injection key {k}: the soak moves one transfer at a time, so held or reordered completions would stall it"
        )));
    }
    println!("soak: injection {settings}");
    let s = setup(ctx)?;
    println!(
        "soak: {} speed, bulk IN {:#04x}, OUT {:#04x}, {}-byte packets, {}; {} s, seed {}, 1 to {max} bytes",
        s.speed,
        s.ep_in,
        s.ep_out,
        s.mps,
        if s.sg {
            "read/write and DMABUF (udmabuf and dma-heap)"
        } else {
            "no scatter-gather: read/write only"
        },
        a.seconds,
        a.seed
    );
    let mut ep = open_endpoints(&s, max)?;
    let kinds: &[Kind] = if s.sg {
        &[Kind::RwOut, Kind::RwIn, Kind::DmabufOut, Kind::DmabufIn]
    } else {
        &[Kind::RwOut, Kind::RwIn]
    };
    let mut mix = Mix(a.seed);
    let mut t = Tally::default();
    let mut log = LogWatch::default();
    log.poll(ctx)?;
    // Events before the first transfer (none are expected) are not the soak's.
    log.by_kind.clear();
    let start = Instant::now();
    let mut next_progress = Duration::from_secs(a.progress.max(1));
    let mut since_poll = 0u64;
    let mut last_poll = Instant::now();
    let mut mismatch = Vec::new();
    let mut stopped: Option<String> = None;
    while start.elapsed() < Duration::from_secs(a.seconds) {
        let k = kinds[mix.below(kinds.len() as u64) as usize];
        let n = mix.size(max, s.mps);
        let seed = mix.next();
        // Always drawn, so the mix is the same whichever buffers exist.
        let buf = mix.below(2) as usize % ep.dmabufs_in.len().max(1);
        let index = t.transfers + 1;
        let o = match k {
            Kind::RwOut => rw_out(ctx, &s, &ep, n, seed),
            Kind::RwIn => rw_in(ctx, &s, &ep, n, seed),
            Kind::DmabufOut => dmabuf_out(ctx, &s, &ep, buf, n, seed),
            Kind::DmabufIn => dmabuf_in(ctx, &s, &mut ep, buf, n, seed),
        };
        let o = match o {
            Ok(o) => o,
            Err(e) => {
                stopped = Some(format!("transfer {index} ({}, {n} bytes): {e}", k.name()));
                break;
            }
        };
        let bus = matches!(o, Outcome::Faulted { fault: "bus", .. });
        t.add(k, n, o, index);
        if bus {
            // A reset or disconnect: the host enumerates again.
            if let Err(e) = ctx.host.wait_configured(CONFIGURE_TIMEOUT) {
                stopped = Some(format!("after the bus fault of transfer {index}: {e}"));
                break;
            }
        }
        since_poll += 1;
        if since_poll >= LOG_EVERY || last_poll.elapsed() >= Duration::from_secs(2) {
            log.poll(ctx)?;
            since_poll = 0;
            last_poll = Instant::now();
            let m = unmatched(&t, &log);
            if !m.is_empty() && mismatch.is_empty() && log.missed == 0 {
                t.note(format!(
                    "FAULTS UNMATCHED after transfer {index}: {}",
                    m.join("; ")
                ));
                mismatch = m;
            }
        }
        if start.elapsed() >= next_progress {
            println!("{}", line("progress", start.elapsed().as_secs_f64(), &t, &log));
            next_progress += Duration::from_secs(a.progress.max(1));
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    log.poll(ctx)?;
    if stopped.is_none() {
        let m = unmatched(&t, &log);
        if !m.is_empty() && mismatch.is_empty() {
            t.note(format!("FAULTS UNMATCHED at the end: {}", m.join("; ")));
            mismatch = m;
        }
        close_endpoints(ep)?;
    }
    if log.missed > 0 {
        println!(
            "soak: the injection log dropped {} events before they were read: faults not matched",
            log.missed
        );
    }
    if let Some(e) = &stopped {
        println!("soak: STOPPED: {e}");
    }
    println!("{} unmatched={}", line("done", elapsed, &t, &log), mismatch.len());
    Ok(stopped.is_none()
        && t.corruptions == 0
        && t.bad_partial == 0
        && t.unexplained == 0
        && mismatch.is_empty()
        && log.missed == 0
        && log.races == 0
        && t.transfers > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_cover_one_byte_to_the_largest() {
        let mut m = Mix(7);
        let sizes: Vec<usize> = (0..5000).map(|_| m.size(1 << 20, 1024)).collect();
        assert!(sizes.iter().all(|&n| (1..=1 << 20).contains(&n)));
        assert!(sizes.iter().any(|&n| n < 16));
        assert!(sizes.iter().any(|&n| n > 512 << 10));
        assert!(sizes.iter().filter(|&&n| n >= 1024 && n % 1024 == 0).count() > 500);
    }

    #[test]
    fn errors_match_only_their_own_fault() {
        assert_eq!(fault_of(libc::EPIPE, "stall"), Some("stall"));
        assert_eq!(fault_of(libc::EIO, "proto"), Some("io_error"));
        assert_eq!(fault_of(libc::EPROTO, "proto"), Some("proto_error"));
        assert_eq!(fault_of(libc::EOVERFLOW, "overflow"), Some("babble"));
        assert_eq!(fault_of(libc::ESHUTDOWN, "shutdown"), Some("bus"));
        assert_eq!(fault_of(libc::EPIPE, "ok"), None);
        assert_eq!(fault_of(libc::EIO, "stall"), None);
        assert_eq!(fault_of(libc::ESHUTDOWN, "ok"), None);
    }

    #[test]
    fn completed_transfers_must_be_the_pattern_at_both_ends() {
        let data = pattern(9, 0, 1000);
        assert_eq!(
            completed(9, 1000, &data, 1000, false),
            Outcome::Ok {
                bytes: 1000,
                short: false
            }
        );
        // Short only where a short packet may end it.
        assert!(matches!(
            completed(9, 1000, &data[..512], 512, true),
            Outcome::Ok { short: true, .. }
        ));
        assert!(matches!(
            completed(9, 1000, &data[..512], 512, false),
            Outcome::Corrupt(_)
        ));
        // The ends disagree on the length.
        assert!(matches!(
            completed(9, 1000, &data, 999, false),
            Outcome::Corrupt(_)
        ));
        // One byte wrong.
        let mut bad = data.clone();
        bad[700] ^= 1;
        assert!(matches!(
            completed(9, 1000, &bad, 1000, false),
            Outcome::Corrupt(_)
        ));
        // Another transfer's data.
        assert!(matches!(
            completed(10, 1000, &data, 1000, false),
            Outcome::Corrupt(_)
        ));
    }

    #[test]
    fn faulted_transfers_check_what_moved_before_the_fault() {
        let data = pattern(3, 0, 512);
        assert_eq!(
            faulted(libc::EPIPE, "stall", 3, Some(&data)),
            Outcome::Faulted {
                fault: "stall",
                partial: 512
            }
        );
        assert!(matches!(
            faulted(libc::EPIPE, "stall", 4, Some(&data)),
            Outcome::BadPartial(_)
        ));
        assert!(matches!(
            faulted(libc::EPIPE, "overflow", 3, None),
            Outcome::Unexplained(_)
        ));
    }

    #[test]
    fn faults_are_matched_kind_by_kind() {
        let mut t = Tally::default();
        let mut log = LogWatch::default();
        log.by_kind.insert("stall".into(), 2);
        log.by_kind.insert("short".into(), 1);
        log.by_kind.insert("latency".into(), 40);
        t.add(
            Kind::RwIn,
            10,
            Outcome::Faulted {
                fault: "stall",
                partial: 0,
            },
            1,
        );
        t.add(
            Kind::RwOut,
            10,
            Outcome::Ok {
                bytes: 5,
                short: true,
            },
            2,
        );
        assert_eq!(
            unmatched(&t, &log),
            ["stall: 2 injected, 1 transfers ended by it"]
        );
        t.add(
            Kind::DmabufIn,
            10,
            Outcome::Faulted {
                fault: "stall",
                partial: 0,
            },
            3,
        );
        assert!(unmatched(&t, &log).is_empty());
        assert_eq!(log.faults(), 3);
        let l = line("done", 1.0, &t, &log);
        assert!(
            l.contains(" transfers=3 ") && l.contains(" faulted=2 ") && l.contains(" delays=40 "),
            "{l}"
        );
    }
}
