// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The bus, the gadget, the UDC driver and the daemon going away and
//! coming back: with read()/write() and AIO (bus events, unbind and
//! rebind, rmmod and insmod, the daemon crashing), and the DMABUF
//! lifecycle matrix.
//!
//! The DMABUF lifecycle matrix (docs/dmabuf-lifecycle.md):
//! FUNCTIONFS_DMABUF_ATTACH, _TRANSFER, _DETACH and close() of the endpoint
//! file, each against every state the gadget can be in. One case per
//! ordering: bring the gadget into the state (with a DMABUF attached and a
//! transfer pending where the state comes after enumeration), do the one
//! operation, check its outcome and what became of the pending transfer,
//! bring the gadget back and move data through a fresh DMABUF. The kernel
//! log must stay clean throughout (the suite checks it after every case).
//! crate::suite names one case per ordering.
//!
//! The outcomes are those of f_fs with the fix series (patches/linux/);
//! stock f_fs 6.9 to 6.12 dereferences a NULL gadget in TRANSFER and DETACH
//! when the function is not bound (patch 0005), which these cases show.

use std::fs::File;
use std::os::fd::AsFd;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;

use crate::dmabuf::{GuestBuf, Source};
use crate::error::Error;
use crate::ffs_dmabuf;
use crate::gadget::{self, TestGadget};
use crate::support::{
    check, expect_errno, insmod_and_rebind, io_err, open_endpoint, pattern, read_thread, round_trip, run,
    setup, transfer_ok, verify, virtio_udc_ko, wait_device_queue, wait_ep0_event, write_thread, Ctx, Setup,
    CONFIGURE_TIMEOUT, IO_TIMEOUT,
};

/// What the host and the cable do to the bus reaches the gadget: suspend
/// and resume as FunctionFS events; a bus reset and a disconnect end the
/// transfers in flight with an error, and the host enumerates again.
pub(crate) fn bus_events(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    ctx.host.ok(json!({"op": "bus", "action": "suspend"}))?;
    wait_ep0_event(&s, "suspend")?;
    ctx.host.ok(json!({"op": "bus", "action": "resume"}))?;
    wait_ep0_event(&s, "resume")?;
    round_trip(ctx, &s, 9000)?;

    // A bus reset under a pending read.
    let reader = read_thread(s.g.open_ep(2)?, 4096);
    thread::sleep(Duration::from_millis(200));
    ctx.host.ok(json!({"op": "bus", "action": "reset"}))?;
    match reader.join() {
        Ok(Err(e)) => ctx
            .notes
            .push(format!("read pending over a bus reset ended with: {e}")),
        Ok(Ok(d)) => {
            return Err(Error::Check(format!(
                "a read pending over a bus reset returned {} bytes",
                d.len()
            )))
        }
        Err(_) => return Err(Error::Check("reader thread panicked".into())),
    }
    ctx.host.wait_configured(CONFIGURE_TIMEOUT)?;
    round_trip(ctx, &s, 9010)?;

    // A disconnect under a pending write, then the cable back in.
    let writer = write_thread(s.g.open_ep(1)?, pattern(9020, 0, 4096));
    thread::sleep(Duration::from_millis(200));
    ctx.host.ok(json!({"op": "bus", "action": "disconnect"}))?;
    match writer.join() {
        Ok(Err(e)) => ctx
            .notes
            .push(format!("write pending over a disconnect ended with: {e}")),
        Ok(Ok(n)) => {
            return Err(Error::Check(format!(
                "a write pending over a disconnect returned {n}"
            )))
        }
        Err(_) => return Err(Error::Check("writer thread panicked".into())),
    }
    ctx.notes
        .push(format!("UDC state after the disconnect: {:?}", s.g.udc.state()));
    ctx.host.ok(json!({"op": "bus", "action": "connect"}))?;
    ctx.host.wait_configured(CONFIGURE_TIMEOUT)?;
    round_trip(ctx, &s, 9030)?;
    Ok(())
}

pub(crate) fn unbind_rebind(ctx: &mut Ctx) -> Result<(), Error> {
    let mut s = setup(ctx)?;
    round_trip(ctx, &s, 6000)?;
    for round in 0..3 {
        s.g.unbind()?;
        ctx.host.wait_detached(Duration::from_secs(5))?;
        s.g.rebind()?;
        ctx.host.wait_configured(CONFIGURE_TIMEOUT)?;
        round_trip(ctx, &s, 6010 + 2 * round)?;
    }
    ctx.notes.push("unbound and bound again 3 times".into());
    Ok(())
}

pub(crate) fn rmmod_insmod(ctx: &mut Ctx) -> Result<(), Error> {
    let ko = virtio_udc_ko()?;
    let mut s = setup(ctx)?;
    queue_unserved(&mut s, 7000)?;
    let start = Instant::now();
    run("rmmod", &["virtio_udc"])?;
    ctx.notes
        .push(format!("rmmod with 3 requests queued took {:?}", start.elapsed()));
    check(
        std::fs::read_dir("/sys/class/udc")
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        || "a UDC is still registered after rmmod".into(),
    )?;
    // Every queued request came back, with an error.
    queued_requests_failed(ctx, &mut s, 10, "nobody read it")?;
    insmod_and_rebind(ctx, &ko, &mut s.g)?;
    ctx.host.wait_configured(CONFIGURE_TIMEOUT)?;
    round_trip(ctx, &s, 7100)?;
    Ok(())
}

/// Queues requests the host never serves: two 64 KiB reads and a 64 KiB
/// write of pattern `seed`, and gives the device time to see them.
fn queue_unserved(s: &mut Setup, seed: u64) -> Result<(), Error> {
    for _ in 0..2 {
        s.g.rx
            .submit_read(65536)
            .map_err(|e| Error::Check(format!("io_submit read: {e}")))?;
    }
    s.g.tx
        .submit_write(Bytes::from(pattern(seed, 0, 65536)))
        .map_err(|e| Error::Check(format!("io_submit write: {e}")))?;
    thread::sleep(Duration::from_millis(200));
    Ok(())
}

/// The two reads and the write a case queued all came back within `secs`
/// seconds, each with an error (noted): none moved data, as `why` says
/// none could.
fn queued_requests_failed(ctx: &mut Ctx, s: &mut Setup, secs: u64, why: &str) -> Result<(), Error> {
    for k in 0..2 {
        match s.g.rx.wait_read(Duration::from_secs(secs)) {
            Err(e) => ctx.notes.push(format!("queued read {k} ended with: {e}")),
            Ok(Some(b)) => {
                return Err(Error::Check(format!(
                    "queued read {k} completed with {} bytes",
                    b.len()
                )))
            }
            Ok(None) => {
                return Err(Error::Check(format!(
                    "queued read {k} did not complete within {secs} s"
                )))
            }
        }
    }
    match s.g.tx.flush(Duration::from_secs(secs)) {
        Err(e) => ctx.notes.push(format!("queued write ended with: {e}")),
        Ok(()) => return Err(Error::Check(format!("the queued write completed although {why}"))),
    }
    Ok(())
}

/// The daemon dies with requests queued: QEMU tells the driver, which fails
/// them; `udc-vm` starts a new daemon, the driver resets the device, the
/// host enumerates again and data moves.
pub(crate) fn daemon_crash(ctx: &mut Ctx) -> Result<(), Error> {
    let mut s = setup(ctx)?;
    queue_unserved(&mut s, 8000)?;
    ctx.host.ok(json!({"op": "crash"}))?;
    let start = Instant::now();
    queued_requests_failed(ctx, &mut s, 15, "the daemon died")?;
    ctx.notes.push(format!(
        "queued requests failed {:?} after the crash",
        start.elapsed()
    ));
    let control = ctx.control.clone();
    ctx.host.reconnect(&control, Duration::from_secs(30))?;
    ctx.host.wait_configured(Duration::from_secs(30))?;
    ctx.notes.push(format!(
        "enumerated by the new daemon {:?} after the crash",
        start.elapsed()
    ));
    let _ = s.g.rx.cancel_all(IO_TIMEOUT);
    let _ = s.g.tx.cancel_all(IO_TIMEOUT);
    round_trip(ctx, &s, 8100)?;
    Ok(())
}

/// Where the gadget is when the operation comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// FunctionFS has its descriptors (the endpoint files exist), the
    /// gadget is not bound to the UDC yet.
    NotBound,
    /// Bound (pull-up on), the host has not enumerated it.
    NotEnumerated,
    Configured,
    /// The host set configuration 0: the endpoints are disabled.
    EndpointDisabled,
    /// The host suspended the bus.
    Suspended,
    /// The gadget was unbound from the UDC (configfs UDC emptied).
    UdcUnbound,
    /// The UDC driver went away (rmmod virtio_udc).
    DriverRemoved,
    /// The back end died and has not come back yet.
    DaemonGone,
}

/// What the application does in that state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Attach,
    Transfer,
    Detach,
    Close,
}

impl State {
    /// What the state does to a transfer pending when it comes: true when
    /// it ends it (the fence signals with an error).
    fn ends_pending(self) -> bool {
        matches!(
            self,
            State::EndpointDisabled | State::UdcUnbound | State::DriverRemoved | State::DaemonGone
        )
    }
}

/// The documented outcome of `op` in `state` (docs/dmabuf-lifecycle.md):
/// Ok, or the errno it fails with.
pub fn expected(state: State, op: Op) -> Result<(), i32> {
    use Op::*;
    use State::*;
    match (op, state) {
        // No gadget, no DMA device to attach for.
        (Attach, NotBound | UdcUnbound | DriverRemoved) => Err(libc::EPERM),
        (Attach, _) => Ok(()),
        // Nothing was ever attached before the function was bound.
        (Transfer, NotBound) => Err(libc::ENODEV),
        (Transfer, UdcUnbound | DriverRemoved) => Err(libc::ENODEV),
        // No endpoint: O_NONBLOCK says so at once.
        (Transfer, NotEnumerated | EndpointDisabled | DaemonGone) => Err(libc::EAGAIN),
        // The transfer queued before is still pending on the same DMABUF.
        (Transfer, Configured | Suspended) => Err(libc::EBUSY),
        (Detach, NotBound) => Err(libc::EPERM),
        (Detach, _) => Ok(()),
        (Close, _) => Ok(()),
    }
}

const SIZE: usize = 65536;

/// The host holds the gadget in "bound, not enumerated" when it does not
/// enumerate on its own.
fn auto_enumerate(ctx: &mut Ctx, on: bool) -> Result<(), Error> {
    ctx.host.ok(json!({"op": "host", "auto_enumerate": on}))?;
    Ok(())
}

/// One ordering: `op` on the gadget in `state`.
pub fn run_ordering(ctx: &mut Ctx, state: State, op: Op) -> Result<(), Error> {
    let what = format!("{op:?} in state {state:?}");
    let udc = gadget::find_udc(ctx.udc.as_deref())?;
    let mut g = TestGadget::unbound(udc)?;
    let ep_path = g.ep_path(2);
    let open = |nonblock: bool| -> Result<File, Error> { open_endpoint(&ep_path, nonblock) };
    // The file the DMABUF is attached through, and an O_NONBLOCK one kept
    // open all along (closing any file of an endpoint detaches its DMABUFs).
    let mut fa = Some(open(false)?);
    let nb = open(true)?;
    let a = GuestBuf::new(Source::Udmabuf, SIZE).map_err(|e| Error::Setup(e.to_string()))?;
    let mut pending = false;

    // Into the state.
    match state {
        State::NotBound => {}
        State::NotEnumerated => {
            auto_enumerate(ctx, false)?;
            g.rebind()?;
            // Bound: the UDC has a gadget driver, the host leaves it alone.
            thread::sleep(Duration::from_millis(300));
            let st = ctx.host.status()?;
            check(st["device"]["state"] != "configured", || {
                format!(
                    "the host configured the gadget although auto_enumerate is off: state {}",
                    st["device"]["state"]
                )
            })?;
            if op != Op::Attach {
                ffs_dmabuf::attach(fa.as_ref().unwrap().as_fd(), a.fd())
                    .map_err(io_err("DMABUF_ATTACH while not enumerated"))?;
            }
        }
        _ => {
            g.rebind()?;
            ctx.host.wait_configured(CONFIGURE_TIMEOUT)?;
            let out = ctx.host.enumerated_endpoint_pair()?[1].address;
            let f = fa.as_ref().unwrap();
            ffs_dmabuf::attach(f.as_fd(), a.fd()).map_err(io_err("DMABUF_ATTACH"))?;
            ffs_dmabuf::transfer(f.as_fd(), a.fd(), SIZE as u64, 0).map_err(io_err("DMABUF_TRANSFER"))?;
            wait_device_queue(ctx, out, 1, "the transfer queued")?;
            pending = true;
        }
    }
    let ko = virtio_udc_ko()?;
    match state {
        State::EndpointDisabled => {
            ctx.host
                .ok(json!({"op": "control", "request_type": 0, "request": 9, "value": 0}))?;
        }
        State::Suspended => {
            ctx.host.ok(json!({"op": "bus", "action": "suspend"}))?;
        }
        State::UdcUnbound => {
            g.unbind()?;
            ctx.host.wait_detached(Duration::from_secs(5))?;
        }
        State::DriverRemoved => run("rmmod", &["virtio_udc"])?,
        State::DaemonGone => {
            let disables = |g: &TestGadget| {
                let log = g.ep0_log.lock().unwrap();
                log.events.iter().filter(|e| *e == "disable").count()
            };
            let before = disables(&g);
            // The runner starts it again 4 s later (docs/control-socket.md).
            ctx.host.ok(json!({"op": "crash", "down_ms": 4000}))?;
            // The driver learns the back end is gone and ends what it had.
            check(a.wait(libc::POLLIN, Duration::from_secs(3)), || {
                "the pending transfer did not end within 3 s of the daemon's death".into()
            })?;
            // It fails the requests first and tells the gadget driver of
            // the disconnect just after, as UDC drivers do: the state is
            // reached when FunctionFS has disabled the function.
            let start = Instant::now();
            while disables(&g) == before {
                check(start.elapsed() < Duration::from_secs(5), || {
                    "FunctionFS saw no DISABLE within 5 s of the daemon's death".into()
                })?;
                thread::sleep(Duration::from_millis(20));
            }
        }
        _ => {}
    }
    if state.ends_pending() {
        check(a.wait(libc::POLLIN, IO_TIMEOUT), || {
            format!("{state:?} did not end the pending transfer (its fence did not signal)")
        })?;
    }

    // The operation.
    let b = GuestBuf::new(Source::Udmabuf, SIZE).map_err(|e| Error::Setup(e.to_string()))?;
    let start = Instant::now();
    let got = match op {
        Op::Attach => ffs_dmabuf::attach(fa.as_ref().unwrap().as_fd(), b.fd()),
        Op::Transfer => ffs_dmabuf::transfer(nb.as_fd(), a.fd(), SIZE as u64, 0),
        Op::Detach => ffs_dmabuf::detach(fa.as_ref().unwrap().as_fd(), a.fd()),
        Op::Close => {
            drop(fa.take());
            Ok(())
        }
    };
    check(start.elapsed() < Duration::from_secs(2), || {
        format!("{what}: took {:?}", start.elapsed())
    })?;
    match expected(state, op) {
        Ok(()) => got.map_err(|e| Error::Check(format!("{what}: {e}, expected success")))?,
        Err(errno) => expect_errno(got, errno, &what)?,
    }
    // A DETACH or close ends a transfer still pending on the DMABUF.
    if pending && matches!(op, Op::Detach | Op::Close) {
        check(a.wait(libc::POLLIN, IO_TIMEOUT), || {
            format!("{what}: the pending transfer's fence did not signal")
        })?;
    }
    ctx.notes.push(format!(
        "{what}: {}",
        match expected(state, op) {
            Ok(()) => "ok".to_string(),
            Err(e) => std::io::Error::from_raw_os_error(e).to_string(),
        }
    ));

    // Back to configured.
    match state {
        State::NotBound => {
            g.rebind()?;
        }
        State::NotEnumerated => {
            auto_enumerate(ctx, true)?;
            ctx.host.ok(json!({"op": "enumerate"}))?;
        }
        State::EndpointDisabled => {
            ctx.host
                .ok(json!({"op": "control", "request_type": 0, "request": 9, "value": 1}))?;
        }
        State::Suspended => {
            ctx.host.ok(json!({"op": "bus", "action": "resume"}))?;
        }
        State::UdcUnbound => g.rebind()?,
        State::DriverRemoved => insmod_and_rebind(ctx, &ko, &mut g)?,
        State::DaemonGone => {
            let control = ctx.control.clone();
            ctx.host.reconnect(&control, Duration::from_secs(30))?;
        }
        State::Configured => {}
    }
    ctx.host.wait_configured(CONFIGURE_TIMEOUT)?;
    let out = ctx.host.enumerated_endpoint_pair()?[1].address;
    // Whatever is still pending ends with the files; then data moves
    // through a fresh DMABUF on a fresh file.
    drop(fa);
    drop(nb);
    check(a.wait(libc::POLLIN, IO_TIMEOUT), || {
        "after closing the endpoint files the first DMABUF's fence did not signal".into()
    })?;
    let f = open(false)?;
    let c = GuestBuf::new(Source::Udmabuf, SIZE).map_err(|e| Error::Setup(e.to_string()))?;
    ffs_dmabuf::attach(f.as_fd(), c.fd()).map_err(io_err("DMABUF_ATTACH after"))?;
    ffs_dmabuf::transfer(f.as_fd(), c.fd(), SIZE as u64, 0).map_err(io_err("DMABUF_TRANSFER after"))?;
    let data = pattern(64_000, 0, SIZE);
    transfer_ok(&ctx.host.send_out(out, &data, false)?, SIZE, "OUT after")?;
    check(c.wait(libc::POLLIN, IO_TIMEOUT), || "OUT after: no fence".into())?;
    verify(64_000, 0, &c.read(SIZE).map_err(io_err("read"))?, "OUT after")?;
    ffs_dmabuf::detach(f.as_fd(), c.fd()).map_err(io_err("DMABUF_DETACH after"))?;
    drop(b);
    Ok(())
}
