// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The host's traffic engine: per endpoint, a stream of host transfers kept
//! in flight. OUT streams are sources (a pattern from udc-patterns, or a
//! file); IN streams are sinks that check every byte against the same
//! source, or discard. The guest tool uses the same patterns, so both ends
//! agree on every byte without exchanging anything but a pattern name.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use log::{info, warn};
use serde::Serialize;
use std::fmt;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use udc_patterns::{Pattern, Stats, StatsSnapshot};

use crate::device::{UrbKind, UrbResult, UrbStatus};
use crate::host::Host;
use crate::wire::{ep_is_in, ep_name, EpAddress, ParseEpAddressError};

/// Where a stream's bytes come from, or what they are checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    /// A generated stream (counter, prbs:SEED, zeros), endless.
    Pattern(Pattern),
    /// A file's bytes from its start; the stream ends at its end.
    File(PathBuf),
}

/// Why a stream cannot be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    #[error("cannot open {}: {source}", .path.display())]
    Open { path: PathBuf, source: std::io::Error },
    #[error("{0} (or file:PATH)")]
    Pattern(#[from] udc_patterns::ParsePatternError),
    #[error("pattern {text:?}: {source}")]
    Source { text: String, source: Box<TrafficError> },
    #[error(transparent)]
    Endpoint(#[from] ParseEpAddressError),
    #[error("transfer_size {0} is outside 0..={MAX_TRANSFER}")]
    TransferSize(usize),
    #[error("transfer_size 0 (zero-length transfers) takes a pattern, not a file: a file's stream ends at its end")]
    ZeroLengthFile,
    #[error("depth {0} is outside 1..=64")]
    Depth(usize),
    #[error("{0} already has a running stream; stop it first")]
    Running(EpAddress),
    #[error("{0} has no stream")]
    NoStream(EpAddress),
    #[error("cannot start the stream thread: {0}")]
    Thread(std::io::Error),
    #[error("reading {}: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// Received data differs from the stream's pattern.
    #[error(transparent)]
    Mismatch(#[from] udc_patterns::Mismatch),
    #[error("data mismatch at stream offset {offset}: expected {expected:#04x} (from {}), got {got:#04x}", .path.display())]
    FileMismatch {
        offset: u64,
        expected: u8,
        path: PathBuf,
        got: u8,
    },
    #[error("received {bytes} bytes past the end of {} (at stream offset {offset})", .path.display())]
    PastEnd {
        bytes: usize,
        path: PathBuf,
        offset: u64,
    },
}

impl std::str::FromStr for DataSource {
    type Err = TrafficError;
    fn from_str(s: &str) -> Result<Self, TrafficError> {
        if let Some(path) = s.strip_prefix("file:") {
            let path = PathBuf::from(path);
            if let Err(source) = std::fs::File::open(&path) {
                return Err(TrafficError::Open { path, source });
            }
            return Ok(DataSource::File(path));
        }
        Ok(DataSource::Pattern(s.parse::<Pattern>()?))
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::Pattern(p) => write!(f, "{p}"),
            DataSource::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// An open source: a pattern, or a file read at offsets.
enum OpenSource {
    Pattern(Pattern),
    File(std::fs::File, PathBuf),
}

impl OpenSource {
    fn open(s: &DataSource) -> Result<Self, TrafficError> {
        match s {
            DataSource::Pattern(p) => Ok(OpenSource::Pattern(*p)),
            DataSource::File(p) => std::fs::File::open(p)
                .map(|f| OpenSource::File(f, p.clone()))
                .map_err(|source| TrafficError::Open {
                    path: p.clone(),
                    source,
                }),
        }
    }

    /// Fills `buf` from stream offset `at`; returns the bytes filled (less
    /// than `buf.len()` only at a file's end).
    fn fill(&self, at: u64, buf: &mut [u8]) -> Result<usize, TrafficError> {
        match self {
            OpenSource::Pattern(p) => {
                p.fill(at, buf);
                Ok(buf.len())
            }
            OpenSource::File(f, path) => {
                let mut n = 0;
                while n < buf.len() {
                    match f.read_at(&mut buf[n..], at + n as u64) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(source) => {
                            return Err(TrafficError::Read {
                                path: path.clone(),
                                source,
                            })
                        }
                    }
                }
                Ok(n)
            }
        }
    }

    fn verify(&self, at: u64, data: &[u8]) -> Result<(), TrafficError> {
        match self {
            OpenSource::Pattern(p) => Ok(p.verify(at, data)?),
            OpenSource::File(_, path) => {
                let mut want = vec![0u8; data.len()];
                let n = self.fill(at, &mut want)?;
                if let Some(i) = (0..n).find(|&i| want[i] != data[i]) {
                    return Err(TrafficError::FileMismatch {
                        offset: at + i as u64,
                        expected: want[i],
                        path: path.clone(),
                        got: data[i],
                    });
                }
                if n < data.len() {
                    return Err(TrafficError::PastEnd {
                        bytes: data.len() - n,
                        path: path.clone(),
                        offset: at + n as u64,
                    });
                }
                Ok(())
            }
        }
    }
}

/// One stream's parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StreamSpec {
    pub ep: u8,
    #[serde(serialize_with = "ser_display")]
    pub pattern: DataSource,
    pub verify: bool,
    pub transfer_size: usize,
    pub depth: usize,
    /// 0: until stopped.
    pub count: u64,
    pub zlp: bool,
}

fn ser_display<S: serde::Serializer>(p: &DataSource, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(p)
}

/// Largest transfer a stream may use; one buffer per transfer in flight.
pub const MAX_TRANSFER: usize = 64 << 20;

impl StreamSpec {
    /// Builds a spec from the optional fields of the config file or the
    /// control socket, with defaults, checking each.
    pub fn from_parts(
        endpoint: &str,
        pattern: Option<&str>,
        verify: Option<bool>,
        transfer_size: Option<usize>,
        depth: Option<usize>,
        count: Option<u64>,
        zlp: Option<bool>,
    ) -> Result<StreamSpec, TrafficError> {
        let ep = endpoint.parse::<EpAddress>()?.0;
        let pattern = match pattern {
            Some(p) => p.parse::<DataSource>().map_err(|e| TrafficError::Source {
                text: p.to_string(),
                source: Box::new(e),
            })?,
            None => DataSource::Pattern(Pattern::Counter),
        };
        let transfer_size = transfer_size.unwrap_or(64 * 1024);
        if transfer_size > MAX_TRANSFER {
            return Err(TrafficError::TransferSize(transfer_size));
        }
        // Zero-length transfers (a latency measurement's floor): a file
        // source would never reach its end.
        if transfer_size == 0 && matches!(pattern, DataSource::File(_)) {
            return Err(TrafficError::ZeroLengthFile);
        }
        let depth = depth.unwrap_or(4);
        if !(1..=64).contains(&depth) {
            return Err(TrafficError::Depth(depth));
        }
        Ok(StreamSpec {
            ep,
            pattern,
            verify: verify.unwrap_or(true),
            transfer_size,
            depth,
            count: count.unwrap_or(0),
            zlp: zlp.unwrap_or(false),
        })
    }
}

/// A stream's state, for the control socket.
#[derive(Clone, Debug, Serialize)]
pub struct StreamStatus {
    pub endpoint: String,
    pub spec: StreamSpec,
    pub running: bool,
    /// Stream offset of the next byte.
    pub offset: u64,
    pub stats: StatsSnapshot,
    pub last_error: Option<String>,
}

struct Stream {
    spec: StreamSpec,
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<StreamShared>>,
    thread: Option<thread::JoinHandle<()>>,
}

struct StreamShared {
    running: bool,
    offset: u64,
    stats: Stats,
    last_error: Option<String>,
}

/// All streams of the daemon, one per endpoint at most.
pub struct Traffic {
    host: Arc<Host>,
    streams: Mutex<BTreeMap<u8, Stream>>,
}

impl Traffic {
    pub fn new(host: Arc<Host>) -> Arc<Self> {
        Arc::new(Traffic {
            host,
            streams: Mutex::new(BTreeMap::new()),
        })
    }

    /// Starts a stream, replacing a finished one on the same endpoint.
    pub fn start(&self, spec: StreamSpec) -> Result<(), TrafficError> {
        let mut streams = self.streams.lock().unwrap();
        if let Some(s) = streams.get(&spec.ep) {
            if s.shared.lock().unwrap().running {
                return Err(TrafficError::Running(EpAddress(spec.ep)));
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(StreamShared {
            running: true,
            offset: 0,
            stats: Stats::new(),
            last_error: None,
        }));
        let host = self.host.clone();
        let (st, sh, sp) = (stop.clone(), shared.clone(), spec.clone());
        let thread = thread::Builder::new()
            .name(format!("stream-{}", ep_name(spec.ep)))
            .spawn(move || run_stream(&host, &sp, &st, &sh))
            .map_err(TrafficError::Thread)?;
        info!(
            "traffic: {} stream started: {}, {} bytes x {} in flight",
            ep_name(spec.ep),
            spec.pattern,
            spec.transfer_size,
            spec.depth
        );
        streams.insert(
            spec.ep,
            Stream {
                spec,
                stop,
                shared,
                thread: Some(thread),
            },
        );
        Ok(())
    }

    /// Stops a stream and waits for its transfers to end.
    pub fn stop(&self, ep: u8) -> Result<StreamStatus, TrafficError> {
        let mut streams = self.streams.lock().unwrap();
        let s = streams
            .get_mut(&ep)
            .ok_or(TrafficError::NoStream(EpAddress(ep)))?;
        s.stop.store(true, Ordering::SeqCst);
        if let Some(t) = s.thread.take() {
            let _ = t.join();
        }
        Ok(status_of(s))
    }

    pub fn stop_all(&self) {
        let eps: Vec<u8> = self.streams.lock().unwrap().keys().copied().collect();
        for ep in eps {
            let _ = self.stop(ep);
        }
    }

    pub fn status(&self) -> Vec<StreamStatus> {
        self.streams.lock().unwrap().values().map(status_of).collect()
    }
}

fn status_of(s: &Stream) -> StreamStatus {
    let sh = s.shared.lock().unwrap();
    StreamStatus {
        endpoint: ep_name(s.spec.ep),
        spec: s.spec.clone(),
        running: sh.running,
        offset: sh.offset,
        stats: sh.stats.snapshot(),
        last_error: sh.last_error.clone(),
    }
}

/// Keeps `depth` transfers in flight until stopped, the count is reached,
/// or a transfer fails.
fn run_stream(host: &Host, spec: &StreamSpec, stop: &AtomicBool, shared: &Mutex<StreamShared>) {
    let is_in = ep_is_in(spec.ep);
    let source = match OpenSource::open(&spec.pattern) {
        Ok(s) => s,
        Err(e) => {
            let mut sh = shared.lock().unwrap();
            sh.last_error = Some(e.to_string());
            sh.running = false;
            return;
        }
    };
    let zeros = matches!(source, OpenSource::Pattern(Pattern::Zeros));
    // A file source ends the stream at the file's end.
    let mut eof = false;
    let mut submit_offset = 0u64;
    let mut check_offset = 0u64;
    let mut submitted = 0u64;
    let mut inflight: VecDeque<(u64, std::sync::mpsc::Receiver<UrbResult>)> = VecDeque::new();
    // Buffers come back with each result and go out again with the next
    // transfer: no allocation or page faults per transfer.
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let fail = |msg: String| {
        warn!("traffic: {}: {msg}", ep_name(spec.ep));
        let mut sh = shared.lock().unwrap();
        sh.stats.record_error();
        sh.last_error = Some(msg);
    };
    // A result: checked, counted, its buffer kept for the next transfer.
    // Err ends the stream.
    let mut take = |r: UrbResult, spare: &mut Vec<Vec<u8>>| -> Result<(), ()> {
        match r.status {
            UrbStatus::Ok => {}
            UrbStatus::Cancelled if stop.load(Ordering::SeqCst) => return Err(()),
            other => {
                fail(format!(
                    "transfer at stream offset {check_offset} failed: {other:?}"
                ));
                return Err(());
            }
        }
        if is_in && spec.verify {
            if let Err(m) = source.verify(check_offset, &r.data) {
                fail(m.to_string());
                return Err(());
            }
        }
        check_offset += r.actual as u64;
        {
            let mut sh = shared.lock().unwrap();
            sh.stats
                .record(r.actual as u64, r.completed.duration_since(r.submitted));
            sh.offset = check_offset;
        }
        spare.push(r.data);
        Ok(())
    };
    'run: loop {
        // The queue is refilled in one hold of the device lock: after a
        // wake-up that found several transfers done, one hold, not one each.
        let mut batch = Vec::new();
        while inflight.len() + batch.len() < spec.depth
            && (spec.count == 0 || submitted < spec.count)
            && !eof
            && !stop.load(Ordering::SeqCst)
        {
            let mut buf = spare.pop().unwrap_or_default();
            let kind = if is_in {
                UrbKind::In {
                    len: spec.transfer_size,
                }
            } else {
                buf.resize(spec.transfer_size, 0);
                // The device only reads an OUT transfer's data, and the
                // buffer comes back unchanged: one of zeros still is (and
                // resize zeroed what is new). A 16 MiB memset a transfer
                // was a tenth of a zeros stream's CPU time.
                let fill = if zeros {
                    Ok(buf.len())
                } else {
                    source.fill(submit_offset, &mut buf)
                };
                match fill {
                    Ok(n) if n < buf.len() => {
                        eof = true;
                        buf.truncate(n);
                        if n == 0 {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        fail(e.to_string());
                        break 'run;
                    }
                }
                UrbKind::Out {
                    data: std::mem::take(&mut buf),
                    zlp: spec.zlp,
                }
            };
            submit_offset += match &kind {
                UrbKind::Out { data, .. } => data.len() as u64,
                UrbKind::In { len } => *len as u64,
            };
            submitted += 1;
            batch.push((kind, buf));
        }
        if !batch.is_empty() {
            inflight.extend(host.submit_many(spec.ep, batch));
        }
        let Some((id, rx)) = inflight.pop_front() else {
            break;
        };
        let r = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(r) => break r,
                Err(_) if stop.load(Ordering::SeqCst) => {
                    host.udc().lock().cancel_urb(spec.ep, id);
                    if let Ok(r) = rx.recv_timeout(Duration::from_millis(500)) {
                        break r;
                    }
                    break 'run;
                }
                Err(_) => {}
            }
        };
        if take(r, &mut spare).is_err() {
            break;
        }
        // Whatever else finished while this thread slept, without sleeping.
        while let Some(r) = inflight.front().and_then(|(_, rx)| rx.try_recv().ok()) {
            inflight.pop_front();
            if take(r, &mut spare).is_err() {
                break 'run;
            }
        }
    }
    // Cancel what is still in flight so the endpoint is left clean.
    for (id, rx) in inflight {
        host.udc().lock().cancel_urb(spec.ep, id);
        let _ = rx.recv_timeout(Duration::from_millis(500));
    }
    shared.lock().unwrap().running = false;
    info!(
        "traffic: {} stream ended at offset {check_offset}",
        ep_name(spec.ep)
    );
}
