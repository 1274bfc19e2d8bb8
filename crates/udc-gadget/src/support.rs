// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! What the cases, the demo and the bench share: the context each gets
//! (`Ctx`), the bound and configured gadget (`Setup`), the data patterns
//! and checks, I/O threads and endpoint files, and waits on the device's
//! queues. Data is the `prbs:SEED` pattern of `udc-patterns`, the same
//! bytes the host's streams produce and check.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use udc_patterns::Pattern;

use crate::control_client::ControlClient;
use crate::error::Error;
use crate::gadget::{self, TestGadget};

/// What every case gets: the link to the host side, and its diagnostics.
pub struct Ctx {
    pub host: ControlClient,
    /// Path of the control channel, to reconnect after a daemon restart.
    pub control: PathBuf,
    pub udc: Option<String>,
    /// Diagnostics of the running case, printed with its result.
    pub notes: Vec<String>,
    /// Races the running case provokes on purpose: the daemon's race
    /// detectors reporting more than these fails it.
    pub expected_races: u64,
}

impl Ctx {
    /// Connects to the host side over the control channel `control`; `udc`
    /// names the UDC to bind (default: the only one).
    pub fn open(control: &Path, udc: Option<String>) -> Result<Ctx, Error> {
        Ok(Ctx {
            host: ControlClient::open(control)?,
            control: control.to_path_buf(),
            udc,
            notes: Vec::new(),
            expected_races: 0,
        })
    }
}

/// Transfers above this size go through a host stream instead of one
/// base64 control-socket transfer.
pub(crate) const MAX_SOCKET_TRANSFER: usize = 1 << 20;
pub(crate) const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(20);
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(20);

pub fn pattern(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Pattern::Prbs { seed }.fill(offset, &mut v);
    v
}

pub fn verify(seed: u64, offset: u64, data: &[u8], what: &str) -> Result<(), Error> {
    Pattern::Prbs { seed }
        .verify(offset, data)
        .map_err(|m| Error::Check(format!("{what}: data differs from prbs:{seed}: {m}")))
}

pub(crate) fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), Error> {
    if cond {
        Ok(())
    } else {
        Err(Error::Check(what()))
    }
}

/// A bound gadget the host has configured, with its endpoint addresses and
/// packet size.
pub(crate) struct Setup {
    pub(crate) g: TestGadget,
    pub(crate) ep_in: u8,
    pub(crate) ep_out: u8,
    pub(crate) mps: usize,
    pub(crate) speed: String,
    /// The controller offers scatter-gather (FunctionFS then uses sg lists
    /// for read/write above a page, and DMABUFs).
    pub(crate) sg: bool,
}

pub(crate) fn setup(ctx: &mut Ctx) -> Result<Setup, Error> {
    let udc = gadget::find_udc(ctx.udc.as_deref())?;
    let g = TestGadget::bind(udc)?;
    let st = ctx.host.wait_configured(CONFIGURE_TIMEOUT)?;
    let speed = st["device"]["speed"].as_str().unwrap_or("unknown").to_string();
    let sg = st["device"]["controller"]["scatter_gather"] != false;
    let [ep_in, ep_out] = ctx.host.enumerated_endpoint_pair()?;
    let (ep_in, ep_out, mps) = (ep_in.address, ep_out.address, ep_in.max_packet);
    ctx.notes.push(format!(
        "{speed} speed, bulk IN {ep_in:#04x}, bulk OUT {ep_out:#04x}, {mps}-byte packets"
    ));
    Ok(Setup {
        g,
        ep_in,
        ep_out,
        mps,
        speed,
        sg,
    })
}

pub(crate) fn read_thread(mut f: File, len: usize) -> thread::JoinHandle<std::io::Result<Vec<u8>>> {
    thread::spawn(move || {
        let mut buf = vec![0u8; len];
        let n = f.read(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    })
}

pub(crate) fn write_thread(mut f: File, data: Vec<u8>) -> thread::JoinHandle<std::io::Result<usize>> {
    thread::spawn(move || f.write(&data))
}

pub(crate) fn clone(f: &File) -> Result<File, Error> {
    f.try_clone().map_err(|e| Error::Setup(format!("dup: {e}")))
}

pub(crate) fn join<T>(h: thread::JoinHandle<std::io::Result<T>>, what: &str) -> Result<T, Error> {
    h.join()
        .map_err(|_| Error::Check(format!("{what}: the I/O thread panicked")))?
        .map_err(|e| Error::Check(format!("{what}: {e}")))
}

pub(crate) fn transfer_ok(r: &Value, actual: usize, what: &str) -> Result<(), Error> {
    check(
        r["ok"] == true && r["status"] == "ok" && r["actual"] == actual,
        || {
            // The reply without its data (base64 of up to 1 MiB).
            let mut brief = r.clone();
            if let Some(d) = brief.get_mut("data") {
                *d = Value::String(format!("<{} base64 characters>", d.as_str().map_or(0, str::len)));
            }
            format!("{what}: host transfer gave {brief}, expected status ok with {actual} bytes")
        },
    )
}

/// The stream on `ep` ended after exactly `bytes` with no error.
pub(crate) fn stream_clean(host: &mut ControlClient, ep: u8, bytes: u64, what: &str) -> Result<(), Error> {
    let s = host.stream_wait(ep, IO_TIMEOUT)?;
    check(
        s["offset"] == bytes && s["stats"]["errors"] == 0 && s["last_error"].is_null(),
        || format!("{what}: host stream ended with {s}, expected {bytes} bytes and no error"),
    )
}

/// A small transfer each way with read/write, to show the gadget works.
pub(crate) fn round_trip(ctx: &mut Ctx, s: &Setup, seed: u64) -> Result<(), Error> {
    let fout = s.g.open_ep(2)?;
    let reader = read_thread(fout, 1000);
    transfer_ok(
        &ctx.host.send_out(s.ep_out, &pattern(seed, 0, 1000), false)?,
        1000,
        "OUT round trip",
    )?;
    verify(seed, 0, &join(reader, "OUT round trip")?, "OUT round trip")?;
    let fin = s.g.open_ep(1)?;
    let writer = write_thread(fin, pattern(seed + 1, 0, 1000));
    let (r, data) = ctx.host.read_in(s.ep_in, 4096)?;
    transfer_ok(&r, 1000, "IN round trip")?;
    verify(seed + 1, 0, &data, "IN round trip")?;
    join(writer, "IN round trip")?;
    Ok(())
}

pub(crate) fn io_err(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Check(format!("{what}: {e}"))
}

/// An errno-returning call must fail with exactly `errno`.
pub(crate) fn expect_errno(r: std::io::Result<()>, errno: i32, what: &str) -> Result<(), Error> {
    match r {
        Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
        Err(e) => Err(Error::Check(format!(
            "{what}: {e}, expected {}",
            std::io::Error::from_raw_os_error(errno)
        ))),
        Ok(()) => Err(Error::Check(format!(
            "{what}: succeeded, expected {}",
            std::io::Error::from_raw_os_error(errno)
        ))),
    }
}

/// Endpoint file `n` opened with O_NONBLOCK.
pub(crate) fn open_nonblock(s: &Setup, n: u32) -> Result<File, Error> {
    open_endpoint(&s.g.ep_path(n), true)
}

/// Opens an endpoint file, O_NONBLOCK if `nonblock`. f_fs's open takes the
/// FunctionFS mutex, which an O_NONBLOCK open only tries (EAGAIN while the
/// ep0 thread holds it): the file is opened blocking and made
/// non-blocking after, which is what the ioctls and I/O look at.
pub(crate) fn open_endpoint(path: &Path, nonblock: bool) -> Result<File, Error> {
    use std::os::fd::AsRawFd;
    let f = File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::Setup(format!("{}: {e}", path.display())))?;
    if nonblock {
        // SAFETY: F_SETFL on our own descriptor.
        if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, libc::O_RDWR | libc::O_NONBLOCK) } < 0 {
            return Err(Error::Setup(format!(
                "{}: O_NONBLOCK: {}",
                path.display(),
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(f)
}

/// The device's count of driver requests queued on endpoint `ep` and of
/// those it ended with an error, from the control socket's status.
pub(crate) fn device_queue(ctx: &mut Ctx, ep: u8) -> Result<(u64, u64), Error> {
    let e = ctx.host.endpoint_status(ep)?;
    Ok((
        e["guest_queued"].as_u64().unwrap_or(u64::MAX),
        e["stats"]["guest_errors"].as_u64().unwrap_or(u64::MAX),
    ))
}

/// Waits until the device holds no request on `ep` and has ended `n` more
/// with an error than it had when it held `before` (queued, errors).
pub(crate) fn wait_cancelled(
    ctx: &mut Ctx,
    ep: u8,
    before: (u64, u64),
    n: u64,
    when: &str,
) -> Result<(), Error> {
    let after = wait_device_queue(ctx, ep, 0, when)?;
    check(after.1 == before.1 + n, || {
        format!(
            "{when}: the device ended {} requests on {ep:#04x} with an error, expected {n}",
            after.1 as i128 - before.1 as i128
        )
    })
}

/// Waits until the device holds `want` driver requests on `ep` (a queued
/// or cancelled request reaches it through the virtqueues); returns the
/// counts.
pub(crate) fn wait_device_queue(ctx: &mut Ctx, ep: u8, want: u64, when: &str) -> Result<(u64, u64), Error> {
    let start = Instant::now();
    loop {
        let q = device_queue(ctx, ep)?;
        if q.0 == want {
            return Ok(q);
        }
        check(start.elapsed() < IO_TIMEOUT, || {
            format!(
                "{when}: the device holds {} requests on {ep:#04x}, expected {want}",
                q.0
            )
        })?;
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the ep0 thread has seen FunctionFS event `name`.
pub(crate) fn wait_ep0_event(s: &Setup, name: &str) -> Result<(), Error> {
    let start = Instant::now();
    loop {
        if s.g.ep0_log.lock().unwrap().events.iter().any(|e| e == name) {
            return Ok(());
        }
        check(start.elapsed() < Duration::from_secs(5), || {
            format!(
                "no FunctionFS {name} event within 5 s; saw {:?}",
                s.g.ep0_log.lock().unwrap().events
            )
        })?;
        thread::sleep(Duration::from_millis(20));
    }
}

/// The module path of virtio_udc in this image.
pub(crate) fn virtio_udc_ko() -> Result<String, Error> {
    let list = std::fs::read_to_string("/etc/udc/modules")
        .map_err(|e| Error::Setup(format!("/etc/udc/modules: {e}")))?;
    list.lines()
        .find(|l| l.ends_with("/virtio_udc.ko"))
        .map(str::to_string)
        .ok_or_else(|| Error::Setup("virtio_udc.ko is not in /etc/udc/modules".into()))
}

pub(crate) fn run(cmd: &str, args: &[&str]) -> Result<(), Error> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| Error::Setup(format!("{cmd}: {e}")))?;
    check(out.status.success(), || {
        format!(
            "{cmd} {}: {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// Loads virtio_udc (`ko`) again, waits for its UDC and makes sure `g`
/// is bound to it: the configfs gadget names its UDC, and the gadget core
/// binds it again when that UDC comes back; by hand if it did not.
pub(crate) fn insmod_and_rebind(ctx: &mut Ctx, ko: &str, g: &mut TestGadget) -> Result<(), Error> {
    run("insmod", &[ko])?;
    let start = Instant::now();
    while gadget::find_udc(ctx.udc.as_deref()).is_err() {
        check(start.elapsed() < Duration::from_secs(10), || {
            "no UDC 10 s after insmod".into()
        })?;
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(300));
    if g.bound_udc().is_none() {
        ctx.notes
            .push("the gadget was not bound again by itself: binding it".into());
        g.rebind()?;
    }
    Ok(())
}

/// The symbolic name of an errno value the cases and the bench meet, as
/// the kernel's headers spell it.
pub(crate) fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::EIO => "EIO",
        libc::ENOMEM => "ENOMEM",
        libc::EBUSY => "EBUSY",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOTTY => "ENOTTY",
        libc::EPIPE => "EPIPE",
        libc::EPROTO => "EPROTO",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ECONNRESET => "ECONNRESET",
        libc::ESHUTDOWN => "ESHUTDOWN",
        _ => return None,
    })
}

/// The fence of a DMABUF transfer: Ok, or the errno it signalled with.
pub(crate) fn fence_result(sync: &OwnedFd, what: &str) -> Result<Result<(), i32>, Error> {
    let fences = crate::dmabuf::sync_file_fences(sync.as_fd())
        .map_err(io_err(&format!("{what}: SYNC_IOC_FILE_INFO")))?;
    if fences.is_empty() {
        return Err(Error::Check(format!("{what}: the sync file holds no fence")));
    }
    if let Some(f) = fences.iter().find(|f| f.status < 0) {
        return Ok(Err(-f.status));
    }
    if fences.iter().any(|f| f.status == 0) {
        return Err(Error::Check(format!(
            "{what}: a fence is still pending after the wait"
        )));
    }
    Ok(Ok(()))
}
