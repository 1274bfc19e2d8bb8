// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The control socket: one JSON object per line in, one per line out.
//! docs/control-socket.md is its reference.
//!
//! Each client gets its own thread; a request blocks only that client, so a
//! long IN transfer on one connection does not stall a status query on
//! another. Who may connect, and the requests that need the daemon's
//! explicit permission, are [`access`]'s business; what one client may make
//! the daemon keep (threads, line buffers) is bounded here.

mod access;
pub mod client;

pub use access::{AccessError, ControlArgs, ControlPolicy};

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::Duration;
use vm_memory::GuestMemory;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use log::{debug, info, warn};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::device::{DeviceError, UrbKind, UrbStatus};
use crate::host::{Host, HostError, MAX_CONTROL_TIMEOUT_MS};
use crate::inject::InjectError;
use crate::traffic::{StreamSpec, Traffic, TrafficError};
use crate::usb::{ParseSpeedError, SetupPacket, Speed};
use crate::wire::{ep_is_in, ep_name, ep_num, EpAddress, ParseEpAddressError, Status};
use crate::zerocopy::{self, ZeroCopyError};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Longest request line accepted (an OUT transfer of 16 MiB in base64 fits).
const MAX_LINE: usize = 32 << 20;
/// Lines up to this size need nothing more than the client's own buffer.
const SMALL_LINE: usize = 64 << 10;
/// Bytes all clients together may hold in lines longer than [`SMALL_LINE`]:
/// two of the longest at a time. A client whose line grows past
/// [`SMALL_LINE`] waits for its share, so many clients sending long lines
/// cost the daemon this much and no more.
const LONG_LINE_BUDGET: usize = 2 * MAX_LINE;
/// Clients served at once; more are told so and disconnected. Each costs a
/// thread with a small stack and at most [`SMALL_LINE`] of buffer, so the
/// daemon's memory stays bounded, and there are enough that clients stuck
/// mid-line cannot lock out a `status` query.
const MAX_CLIENTS: usize = 1024;
/// A client thread's stack: serde_json's nesting limit (128) keeps a
/// request's parsing well inside it.
const CLIENT_STACK: usize = 512 << 10;
/// Largest single transfer over the socket; streams handle bulk traffic.
const MAX_SOCKET_TRANSFER: usize = 16 << 20;

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    Status {},
    Descriptors {},
    /// The enumerated device as `lsusb` (or `lsusb -v`) prints it.
    Lsusb {
        #[serde(default)]
        verbose: bool,
    },
    Enumerate {},
    Control {
        request_type: u8,
        request: u8,
        #[serde(default)]
        value: u16,
        #[serde(default)]
        index: u16,
        #[serde(default)]
        length: u16,
        /// OUT data stage, base64.
        #[serde(default)]
        data: Option<String>,
    },
    Transfer {
        ep: String,
        /// IN: bytes to read.
        #[serde(default)]
        length: Option<usize>,
        /// OUT: bytes to write, base64.
        #[serde(default)]
        data: Option<String>,
        #[serde(default)]
        zlp: bool,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    StreamStart {
        ep: String,
        #[serde(default)]
        pattern: Option<String>,
        #[serde(default)]
        verify: Option<bool>,
        #[serde(default)]
        transfer_size: Option<usize>,
        #[serde(default)]
        depth: Option<usize>,
        #[serde(default)]
        count: Option<u64>,
        #[serde(default)]
        zlp: Option<bool>,
    },
    StreamStop {
        ep: String,
    },
    Streams {},
    Bus {
        action: String,
    },
    /// The bus capture (docs/capture.md): `start` into a new `path` inside
    /// --control-file-dir, `stop`.
    Capture {
        action: String,
        #[serde(default)]
        path: Option<String>,
        #[serde(default)]
        snaplen: Option<u32>,
    },
    Hold {
        ep: String,
        #[serde(default)]
        timeout_ms: Option<u64>,
        #[serde(default)]
        dmabuf: bool,
    },
    Release {
        ep: String,
        handle: u64,
        #[serde(default)]
        actual: Option<u32>,
        #[serde(default)]
        status: Option<String>,
    },
    /// Reads or changes delay and fault injection (docs/injection.md).
    Inject {
        /// Keys to set, over the current settings; all or none apply.
        #[serde(default)]
        set: Option<std::collections::BTreeMap<String, Value>>,
        /// Turn everything off first (the seed stays).
        #[serde(default)]
        clear: bool,
    },
    /// The injected-event log and the race detectors' reports.
    Injections {},
    /// Ends the daemon at once, without cleanup, as a crash would: for
    /// testing how QEMU and the guest driver recover from a lost back end.
    Crash {
        /// How long a supervisor should leave the daemon down before it
        /// starts it again (said in the log; udc-vm honours it).
        #[serde(default)]
        down_ms: Option<u64>,
    },
    Host {
        #[serde(default)]
        speed: Option<String>,
        #[serde(default)]
        auto_enumerate: Option<bool>,
        #[serde(default)]
        control_timeout_ms: Option<u64>,
        /// "usbcore" or "strict", for the next enumeration.
        #[serde(default)]
        descriptors: Option<String>,
    },
}

/// The server: owns the socket path and removes it when dropped.
pub struct ControlServer {
    path: PathBuf,
}

/// Clients being served now.
static CLIENTS: AtomicUsize = AtomicUsize::new(0);

/// Why the control socket could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("cannot start its thread: {0}")]
    Thread(std::io::Error),
}

impl ControlServer {
    pub fn start(
        path: &Path,
        policy: ControlPolicy,
        host: Arc<Host>,
        traffic: Arc<Traffic>,
    ) -> Result<Self, StartError> {
        let listener = policy.bind(path)?;
        info!("control socket listening on {}", path.display());
        let policy = Arc::new(policy);
        thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    match conn {
                        Ok(stream) => accept(stream, &policy, &host, &traffic),
                        Err(e) => warn!("control socket: accept failed: {e}"),
                    }
                }
            })
            .map_err(StartError::Thread)?;
        Ok(ControlServer {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why a control request failed: the reply's `"error"`.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The request itself is wrong: a field missing, out of range or
    /// contradicting another.
    #[error("{0}")]
    Bad(String),
    #[error(transparent)]
    Endpoint(#[from] ParseEpAddressError),
    #[error(transparent)]
    Speed(#[from] ParseSpeedError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Traffic(#[from] TrafficError),
    #[error(transparent)]
    ZeroCopy(#[from] ZeroCopyError),
    #[error("inject: {0}")]
    Inject(#[from] InjectError),
    #[error("inject: {0}")]
    InjectEndpoint(DeviceError),
}

impl From<&str> for RequestError {
    fn from(s: &str) -> Self {
        RequestError::Bad(s.to_string())
    }
}

impl From<String> for RequestError {
    fn from(s: String) -> Self {
        RequestError::Bad(s)
    }
}

/// Checks a new connection and gives it a thread, or tells it why not.
fn accept(mut stream: UnixStream, policy: &Arc<ControlPolicy>, host: &Arc<Host>, traffic: &Arc<Traffic>) {
    let refuse = |stream: &mut UnixStream, why: String| {
        let _ = writeln!(stream, "{}", json!({"ok": false, "error": why}));
    };
    if let Err(why) = policy.admit(&stream) {
        warn!("control socket: connection refused: {why}");
        return refuse(&mut stream, why);
    }
    if CLIENTS.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
        CLIENTS.fetch_sub(1, Ordering::SeqCst);
        crate::guest_warn!("control socket: {MAX_CLIENTS} clients already: connection refused");
        return refuse(&mut stream, format!("too many clients ({MAX_CLIENTS} connected)"));
    }
    let (p, h, t) = (policy.clone(), host.clone(), traffic.clone());
    let spawned = thread::Builder::new()
        .name("control-client".into())
        .stack_size(CLIENT_STACK)
        .spawn(move || {
            serve_client(stream, &p, &h, &t);
            CLIENTS.fetch_sub(1, Ordering::SeqCst);
        });
    if let Err(e) = spawned {
        CLIENTS.fetch_sub(1, Ordering::SeqCst);
        warn!("control socket: cannot start a client thread: {e}");
    }
}

/// The shared allowance for long request lines (see [`LONG_LINE_BUDGET`]).
struct LongLines {
    used: Mutex<usize>,
    freed: Condvar,
}

static LONG_LINES: LongLines = LongLines {
    used: Mutex::new(0),
    freed: Condvar::new(),
};

/// A client's share of [`LONG_LINES`], given back when dropped.
struct LongLineShare(usize);

impl LongLineShare {
    fn take(bytes: usize) -> LongLineShare {
        let mut used = LONG_LINES.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used + bytes > LONG_LINE_BUDGET {
            used = LONG_LINES.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += bytes;
        LongLineShare(bytes)
    }
}

impl Drop for LongLineShare {
    fn drop(&mut self) {
        *LONG_LINES.used.lock().unwrap_or_else(|p| p.into_inner()) -= self.0;
        LONG_LINES.freed.notify_all();
    }
}

/// How reading one request line ended.
enum Line {
    /// A whole line (without its newline) in the buffer.
    Complete,
    /// The client closed the connection.
    Closed,
    /// Longer than [`MAX_LINE`]: answered, and the connection ends, as the
    /// rest of the line cannot be told from the next request.
    TooLong,
}

/// Reads one line into `buf`: the first [`SMALL_LINE`] bytes freely, the
/// rest only with a share of the long-line budget, which `share` then holds
/// until the caller frees the buffer.
fn read_request_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    share: &mut Option<LongLineShare>,
) -> std::io::Result<Line> {
    buf.clear();
    let n = reader.take(SMALL_LINE as u64).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(Line::Closed);
    }
    if buf.last() != Some(&b'\n') && n == SMALL_LINE {
        share.get_or_insert_with(|| LongLineShare::take(MAX_LINE));
        reader
            .take((MAX_LINE + 1 - SMALL_LINE) as u64)
            .read_until(b'\n', buf)?;
        if buf.len() > MAX_LINE {
            return Ok(Line::TooLong);
        }
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    Ok(Line::Complete)
}

fn serve_client(stream: UnixStream, policy: &ControlPolicy, host: &Host, traffic: &Traffic) {
    let Ok(mut out) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    let mut share = None;
    loop {
        match read_request_line(&mut reader, &mut buf, &mut share) {
            Ok(Line::Complete) => {}
            Ok(Line::Closed) => return,
            Ok(Line::TooLong) => {
                let error = format!("request line longer than {MAX_LINE} bytes");
                let _ = writeln!(out, "{}", json!({"ok": false, "error": error}));
                return;
            }
            Err(e) => {
                debug!("control socket: read failed: {e}");
                return;
            }
        }
        // A long line's buffer goes back when the request is done.
        let Some((reply, fd)) = answer_line(&buf, policy, host, traffic) else {
            continue;
        };
        if buf.capacity() > SMALL_LINE {
            buf = Vec::new();
            share = None;
        }
        let text = format!("{reply}\n");
        let sent = match fd {
            Some(fd) => send_with_fd(&out, text.as_bytes(), fd.as_raw_fd()),
            None => out.write_all(text.as_bytes()),
        };
        if sent.is_err() {
            return;
        }
    }
}

/// The answer to one request line (without its newline) and the file
/// descriptor to send with it, if any; None for a blank line, which gets no
/// answer. This is the whole protocol short of the socket: public for the
/// fuzz targets (fuzz/), which feed it lines without one.
#[doc(hidden)]
pub fn answer_line(
    line: &[u8],
    policy: &ControlPolicy,
    host: &Host,
    traffic: &Traffic,
) -> Option<(Value, Option<OwnedFd>)> {
    let line = match std::str::from_utf8(line) {
        Ok(l) => l,
        Err(e) => {
            let error = format!(
                "request is not UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            );
            return Some((json!({"ok": false, "error": error}), None));
        }
    };
    if line.trim().is_empty() {
        return None;
    }
    let mut fd = None;
    let reply = match serde_json::from_str::<Request>(line) {
        Ok(req) => handle(req, policy, host, traffic, &mut fd)
            .unwrap_or_else(|e| json!({"ok": false, "error": e.to_string()})),
        Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
    };
    Some((reply, fd))
}

fn status_name(s: UrbStatus) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}

fn decode_b64(s: &str) -> Result<Vec<u8>, RequestError> {
    B64.decode(s.trim())
        .map_err(|e| RequestError::Bad(format!("data is not base64: {e}")))
}

/// Writes a reply line with a file descriptor attached (SCM_RIGHTS) to its
/// first byte, so the client receives both with one recvmsg.
fn send_with_fd(out: &UnixStream, bytes: &[u8], fd: RawFd) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(bytes)];
    let n =
        sendmsg::<()>(out.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).map_err(std::io::Error::from)?;
    let mut w = out;
    w.write_all(&bytes[n..])
}

fn parse_status(s: &str) -> Result<Status, RequestError> {
    Status::ALL
        .iter()
        .copied()
        .find(|st| {
            st.spec_name()
                .trim_start_matches("VIRTIO_UDC_S_")
                .eq_ignore_ascii_case(s)
        })
        .ok_or_else(|| {
            RequestError::Bad(format!(
                "status {s:?} is not one of docs/virtio-udc.md section 8 (ok, stall, proto, ...)"
            ))
        })
}

fn handle(
    req: Request,
    policy: &ControlPolicy,
    host: &Host,
    traffic: &Traffic,
    fd: &mut Option<OwnedFd>,
) -> Result<Value, RequestError> {
    match req {
        Request::Hold {
            ep,
            timeout_ms,
            dmabuf,
        } => hold(ep, timeout_ms, dmabuf, host, fd),
        Request::Release {
            ep,
            handle,
            actual,
            status,
        } => release(ep, handle, actual, status, host),
        Request::Status {} => status(host),
        Request::Lsusb { verbose } => {
            let view = host.view();
            match view.enumerated {
                Some(e) => {
                    let text = crate::lsusb::render(&e, verbose, &crate::lsusb::UsbIds::system());
                    Ok(json!({"ok": true, "text": text}))
                }
                None => Err(RequestError::Bad(
                    view.last_error
                        .map(|e| format!("not enumerated: {e}"))
                        .unwrap_or_else(|| "not enumerated yet".into()),
                )),
            }
        }
        Request::Descriptors {} => {
            let view = host.view();
            match view.enumerated {
                Some(e) => Ok(json!({"ok": true, "enumerated": e})),
                None => Err(RequestError::Bad(
                    view.last_error
                        .map(|e| format!("not enumerated: {e}"))
                        .unwrap_or_else(|| "not enumerated yet".into()),
                )),
            }
        }
        Request::Enumerate {} => {
            let e = host.reset_and_enumerate()?;
            Ok(json!({"ok": true, "enumerated": e}))
        }
        Request::Control {
            request_type,
            request,
            value,
            index,
            length,
            data,
        } => {
            host.check_not_owned()?;
            control(request_type, request, value, index, length, data, host)
        }
        Request::Transfer {
            ep,
            length,
            data,
            zlp,
            timeout_ms,
        } => {
            host.check_not_owned()?;
            transfer(ep, length, data, zlp, timeout_ms, host)
        }
        Request::StreamStart {
            ep,
            pattern,
            verify,
            transfer_size,
            depth,
            count,
            zlp,
        } => {
            host.check_not_owned()?;
            if let Some(p) = &pattern {
                policy.check_source(p)?;
            }
            let spec =
                StreamSpec::from_parts(&ep, pattern.as_deref(), verify, transfer_size, depth, count, zlp)?;
            traffic.start(spec)?;
            Ok(json!({"ok": true}))
        }
        Request::StreamStop { ep } => {
            let s = traffic.stop(parse_ep(&ep)?)?;
            Ok(json!({"ok": true, "stream": s}))
        }
        Request::Streams {} => Ok(json!({"ok": true, "streams": traffic.status()})),
        Request::Inject { set, clear } => inject(set, clear, host),
        Request::Injections {} => {
            let g = host.udc().lock();
            Ok(json!({"ok": true, "settings": g.injection().to_map(), "log": g.inject_log()}))
        }
        Request::Bus { action } => bus(action, host),
        Request::Capture {
            action,
            path,
            snaplen,
        } => capture(&action, path.as_deref(), snaplen, policy, host),
        Request::Crash { down_ms } => {
            policy.check_crash()?;
            crash(down_ms)
        }
        Request::Host {
            speed,
            auto_enumerate,
            control_timeout_ms,
            descriptors,
        } => host_settings(speed, auto_enumerate, control_timeout_ms, descriptors, host),
    }
}

/// `hold`: the front request of an endpoint, held for the client (a
/// zero-copy handoff), with its pages as a DMABUF if asked.
fn hold(
    ep: String,
    timeout_ms: Option<u64>,
    dmabuf: bool,
    host: &Host,
    fd: &mut Option<OwnedFd>,
) -> Result<Value, RequestError> {
    let ep = parse_ep(&ep)?;
    let timeout = Duration::from_millis(timeout_ms.unwrap_or(5000));
    let udc = host.udc();
    let deadline = std::time::Instant::now() + timeout;
    let held = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let (mut g, _) = udc.wait_until(left.min(Duration::from_millis(100)), |_| true);
        if let Some(h) = g.hold_front(ep)? {
            break h;
        }
        drop(g);
        if left.is_zero() {
            return Err(RequestError::Bad(format!(
                "no request was queued on {} within {} ms",
                ep_name(ep),
                timeout.as_millis()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut v = json!({"ok": true, "handle": held.handle, "tag": held.tag, "length": held.length, "segments": held.segments});
    if dmabuf {
        let export = {
            let g = udc.lock();
            let mem = g.memory().ok_or("no guest memory")?;
            // Under an IOMMU the segments are IOVAs, and a DMABUF names
            // pages: the device would have to pin the guest's mappings.
            let phys = mem
                .physical_memory()
                .ok_or("a zero-copy DMABUF is not available while the device is behind an IOMMU")?;
            zerocopy::export_segments(phys, &held.segments)
        };
        match export {
            Ok(x) => {
                v["dmabuf"] = json!({"size": x.size, "offset": x.offset});
                *fd = Some(x.fd);
            }
            Err(e) => {
                // Not held after all: the driver's request goes on.
                udc.lock().unhold(ep, held.handle);
                return Err(e.into());
            }
        }
    }
    Ok(v)
}

/// `release`: completes a held request, or lets a completion held by
/// injection go.
fn release(
    ep: String,
    handle: u64,
    actual: Option<u32>,
    status: Option<String>,
    host: &Host,
) -> Result<Value, RequestError> {
    let ep = parse_ep(&ep)?;
    let udc = host.udc();
    let mut g = udc.lock();
    // A completion held by injection keeps its own status and length
    // unless told otherwise.
    let st = status.as_deref().map(parse_status).transpose()?;
    if g.release_completion(ep, handle, st)? {
        return Ok(json!({"ok": true, "held": "completion"}));
    }
    let status = st.unwrap_or(Status::Ok);
    let length = g.held_length(ep, handle)?;
    g.release_held(ep, handle, status, actual.unwrap_or(length))?;
    Ok(json!({"ok": true}))
}

/// `status`: the device, its endpoints and what the host knows.
fn capture(
    action: &str,
    path: Option<&str>,
    snaplen: Option<u32>,
    policy: &ControlPolicy,
    host: &Host,
) -> Result<Value, RequestError> {
    match action {
        "start" => {
            let path = path.ok_or("capture start needs a path")?;
            let real = policy.check_capture_path(path).map_err(RequestError::Bad)?;
            let info = host.start_capture(&real, snaplen.unwrap_or(crate::capture::DEFAULT_SNAPLEN))?;
            Ok(json!({"ok": true, "capture": info}))
        }
        "stop" => match host.stop_capture() {
            Some(info) => Ok(json!({"ok": true, "capture": info})),
            None => Err("no capture is running".into()),
        },
        other => Err(RequestError::Bad(format!(
            "capture action {other:?}: start or stop"
        ))),
    }
}

fn status(host: &Host) -> Result<Value, RequestError> {
    let (dev, iommu) = {
        let g = host.udc().lock();
        let iommu = g.memory().map(|m| m.iommu().stats(m.get_iommu_enabled()));
        (g.status(), iommu)
    };
    let holds = host.udc().lock_holds();
    let view = host.view();
    let summary = view.enumerated.as_ref().map(|e| {
        json!({
            "vendor": format!("{:04x}", e.device.id_vendor),
            "product": format!("{:04x}", e.device.id_product),
            "speed": e.speed,
            "strings": e.strings,
            // What broke the rules and how the host took it, as usbcore.
            "defects": e
                .configurations
                .iter()
                .flat_map(|c| &c.defects)
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        })
    });
    Ok(json!({
        "ok": true,
        "device": dev,
        "capture": host.capture_info(),
        // Translation counters while the device has memory (docs/iommu.md).
        "iommu": iommu,
        "process": process_usage(),
        "lock": {
            "holds": holds.count,
            "longest_hold_us": holds.longest.as_micros() as u64,
            "mean_hold_us": holds.total.as_micros().checked_div(u128::from(holds.count)).unwrap_or(0) as u64,
            "holds_over_1ms": holds.over_1ms,
            "holds_over_10ms": holds.over_10ms,
            "most_work_bytes": holds.most_work,
        },
        "host": {
            "config": host_config_json(host),
            "enumerations": view.enumerations,
            "owner": view.owner,
            "defects": view.defects,
            "enumerated": summary,
            "last_error": view.last_error,
        },
    }))
}

/// The daemon's own CPU time and context switches so far, all its threads
/// (those that ended too): what a benchmark divides by the transfers it
/// ran, a figure the load of a shared machine moves far less than a rate.
fn process_usage() -> Value {
    use nix::sys::resource::{getrusage, UsageWho};
    let Ok(ru) = getrusage(UsageWho::RUSAGE_SELF) else {
        return Value::Null;
    };
    let us = |t: nix::sys::time::TimeVal| (t.tv_sec() as u64) * 1_000_000 + t.tv_usec() as u64;
    json!({
        "user_us": us(ru.user_time()),
        "system_us": us(ru.system_time()),
        "voluntary_switches": ru.voluntary_context_switches(),
        "involuntary_switches": ru.involuntary_context_switches(),
    })
}

/// `control`: one control transfer from the host to the gadget.
fn control(
    request_type: u8,
    request: u8,
    value: u16,
    index: u16,
    length: u16,
    data: Option<String>,
    host: &Host,
) -> Result<Value, RequestError> {
    let setup = SetupPacket {
        request_type,
        request,
        value,
        index,
        length,
    };
    let out = match data {
        Some(d) => decode_b64(&d)?,
        None => Vec::new(),
    };
    if setup.is_in() && !out.is_empty() {
        return Err("an IN control request takes no data".into());
    }
    if !setup.is_in() && out.len() != usize::from(length) {
        return Err(RequestError::Bad(format!(
            "OUT data is {} bytes but length says {length}",
            out.len()
        )));
    }
    match host.control(setup, out) {
        Ok(d) => Ok(json!({"ok": true, "status": "ok", "data": B64.encode(&d), "actual": d.len()})),
        Err(s) => Ok(json!({"ok": false, "status": status_name(s), "error": format!("{setup}: {s:?}")})),
    }
}

/// `transfer`: one IN read or OUT write on a non-control endpoint.
fn transfer(
    ep: String,
    length: Option<usize>,
    data: Option<String>,
    zlp: bool,
    timeout_ms: Option<u64>,
    host: &Host,
) -> Result<Value, RequestError> {
    let ep = parse_ep(&ep)?;
    if ep_num(ep) == 0 {
        return Err("use op \"control\" for ep0".into());
    }
    let timeout = Duration::from_millis(timeout_ms.unwrap_or(5000));
    let kind = if ep_is_in(ep) {
        let len = length.ok_or("an IN transfer needs \"length\"")?;
        if data.is_some() {
            return Err("an IN transfer takes no \"data\"".into());
        }
        if len > MAX_SOCKET_TRANSFER {
            return Err(RequestError::Bad(format!(
                "length {len} is over {MAX_SOCKET_TRANSFER}; use a stream"
            )));
        }
        UrbKind::In { len }
    } else {
        let d = decode_b64(data.as_deref().ok_or("an OUT transfer needs \"data\"")?)?;
        if d.len() > MAX_SOCKET_TRANSFER {
            return Err(RequestError::Bad(format!(
                "data is over {MAX_SOCKET_TRANSFER} bytes; use a stream"
            )));
        }
        UrbKind::Out { data: d, zlp }
    };
    let r = host.transfer(ep, kind, timeout);
    let mut v = json!({
        "ok": r.status == UrbStatus::Ok,
        "status": status_name(r.status),
        "actual": r.actual,
        "latency_us": r.completed.duration_since(r.submitted).as_micros() as u64,
    });
    if ep_is_in(ep) {
        v["data"] = json!(B64.encode(&r.data));
    }
    Ok(v)
}

/// `inject`: reads or changes the injection settings; all keys apply or
/// none.
fn inject(
    set: Option<std::collections::BTreeMap<String, Value>>,
    clear: bool,
    host: &Host,
) -> Result<Value, RequestError> {
    let udc = host.udc();
    let mut g = udc.lock();
    let mut cfg = g.injection().clone();
    let changed = clear || set.is_some();
    if clear {
        cfg = crate::inject::InjectConfig {
            seed: cfg.seed,
            ..Default::default()
        };
    }
    for (k, v) in set.unwrap_or_default() {
        let text = match &v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(RequestError::Bad(format!(
                    "inject: {k}: give the value as a string, not {other}"
                )))
            }
        };
        cfg.set(&k, &text)?;
    }
    g.config()
        .check_injection(&cfg)
        .map_err(RequestError::InjectEndpoint)?;
    if clear {
        g.set_injection(cfg);
    } else if changed {
        g.update_injection(cfg);
    }
    let log = g.inject_log();
    Ok(json!({
        "ok": true,
        "settings": g.injection().to_map(),
        "events": log.total,
        "digest": log.digest,
        "races": log.races_total,
    }))
}

/// `bus`: reset, disconnect, connect, suspend or resume the bus.
fn bus(action: String, host: &Host) -> Result<Value, RequestError> {
    let udc = host.udc();
    let did = match action.as_str() {
        "reset" if host.config().auto_enumerate => {
            // A host that resets the bus enumerates again, as the
            // control-socket docs promise.
            let e = host.reset_and_enumerate()?;
            return Ok(json!({"ok": true, "changed": true, "enumerated": e}));
        }
        "reset" => {
            host.check_not_owned()?;
            let speed = host.config().speed;
            udc.lock().bus_reset(speed).is_some()
        }
        "disconnect" => {
            udc.lock().plug(false);
            true
        }
        "connect" => {
            udc.lock().plug(true);
            true
        }
        "suspend" => udc.lock().suspend(),
        "resume" => udc.lock().resume(),
        other => {
            return Err(RequestError::Bad(format!(
                "bus action {other:?}: use reset, disconnect, connect, suspend or resume"
            )))
        }
    };
    Ok(json!({"ok": true, "changed": did}))
}

/// `crash`: ends the daemon at once, as a crash would.
fn crash(down_ms: Option<u64>) -> Result<Value, RequestError> {
    match down_ms {
        Some(ms) => log::warn!(
            "control socket asked for a crash: exiting now without cleanup; stay down for {ms} ms before a restart"
        ),
        None => log::warn!("control socket asked for a crash: exiting now without cleanup"),
    }
    // Let the reply reach the client first.
    std::thread::spawn(|| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        // SAFETY: _exit ends the process; nothing runs after it.
        unsafe { libc::_exit(70) }
    });
    Ok(json!({"ok": true, "exit_status": 70}))
}

/// `host`: reads or changes the host's speed, auto-enumeration, control
/// timeout and descriptor policy.
fn host_settings(
    speed: Option<String>,
    auto_enumerate: Option<bool>,
    control_timeout_ms: Option<u64>,
    descriptors: Option<String>,
    host: &Host,
) -> Result<Value, RequestError> {
    let mut cfg = host.config();
    if let Some(s) = speed {
        cfg.speed = s.parse::<Speed>()?;
    }
    if let Some(a) = auto_enumerate {
        cfg.auto_enumerate = a;
    }
    if let Some(ms) = control_timeout_ms {
        if ms == 0 || ms > MAX_CONTROL_TIMEOUT_MS {
            return Err(format!("control_timeout_ms {ms} is outside 1..={MAX_CONTROL_TIMEOUT_MS}").into());
        }
        cfg.control_timeout = Duration::from_millis(ms);
    }
    if let Some(d) = descriptors {
        cfg.descriptors = d.parse().map_err(|m| format!("descriptors {m}"))?;
    }
    host.set_config(cfg);
    Ok(json!({"ok": true, "config": host_config_json(host)}))
}

fn host_config_json(host: &Host) -> Value {
    let c = host.config();
    json!({
        "speed": c.speed,
        "auto_enumerate": c.auto_enumerate,
        "control_timeout_ms": c.control_timeout.as_millis() as u64,
        "address": c.address,
        "descriptors": c.descriptors,
    })
}

/// An endpoint named in a request, as a wire address.
fn parse_ep(s: &str) -> Result<u8, ParseEpAddressError> {
    s.parse::<EpAddress>().map(u8::from)
}
