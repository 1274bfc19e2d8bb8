// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The DMABUF lifecycle matrix (docs/dmabuf-lifecycle.md):
//! FUNCTIONFS_DMABUF_ATTACH, _TRANSFER, _DETACH and close() of the endpoint
//! file, each against every state the gadget can be in. One case per
//! ordering: bring the gadget into the state (with a DMABUF attached and a
//! transfer pending where the state comes after enumeration), do the one
//! operation, check its outcome and what became of the pending transfer,
//! bring the gadget back and move data through a fresh DMABUF. The kernel
//! log must stay clean throughout (the suite checks it after every case).
//!
//! The outcomes are those of f_fs with the fix series (patches/linux/);
//! stock f_fs 6.9 to 6.12 dereferences a NULL gadget in TRANSFER and DETACH
//! when the function is not bound (patch 0005), which these cases show.

use std::fs::File;
use std::os::fd::AsFd;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::case::{self, Ctx};
use crate::cases::{
    self, check, expect_errno, io_err, pattern, run, transfer_ok, verify, virtio_udc_ko, wait_device_queue,
    CONFIGURE_TIMEOUT, IO_TIMEOUT,
};
use crate::dmabuf::{GuestBuf, Source};
use crate::ffs_dmabuf;
use crate::gadget::{self, TestGadget};
use crate::Error;

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
    let open = |nonblock: bool| -> Result<File, Error> { cases::open_endpoint(&ep_path, nonblock) };
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
            // The runner starts it again 4 s later (docs/control-socket.md).
            ctx.host.ok(json!({"op": "crash", "down_ms": 4000}))?;
            // The driver learns the back end is gone and ends what it had.
            check(a.wait(libc::POLLIN, Duration::from_secs(3)), || {
                "the pending transfer did not end within 3 s of the daemon's death".into()
            })?;
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
        State::DriverRemoved => cases::insmod_and_rebind(ctx, &ko, &mut g)?,
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

/// A case function per ordering, named `lifecycle-OP-STATE`.
macro_rules! orderings {
    ($($f:ident: $name:literal = $op:ident, $state:ident;)*) => {
        $(fn $f(ctx: &mut Ctx) -> Result<(), Error> {
            run_ordering(ctx, State::$state, Op::$op)
        })*
        pub const CASES: &[case::Case] = &[
            $(case::on_request($name, case::Needs::Sg, $f),)*
        ];
    };
}

orderings! {
    attach_not_bound: "lifecycle-attach-not-bound" = Attach, NotBound;
    attach_not_enumerated: "lifecycle-attach-not-enumerated" = Attach, NotEnumerated;
    attach_configured: "lifecycle-attach-configured" = Attach, Configured;
    attach_endpoint_disabled: "lifecycle-attach-endpoint-disabled" = Attach, EndpointDisabled;
    attach_suspended: "lifecycle-attach-suspended" = Attach, Suspended;
    attach_udc_unbound: "lifecycle-attach-udc-unbound" = Attach, UdcUnbound;
    attach_driver_removed: "lifecycle-attach-driver-removed" = Attach, DriverRemoved;
    attach_daemon_gone: "lifecycle-attach-daemon-gone" = Attach, DaemonGone;
    transfer_not_bound: "lifecycle-transfer-not-bound" = Transfer, NotBound;
    transfer_not_enumerated: "lifecycle-transfer-not-enumerated" = Transfer, NotEnumerated;
    transfer_configured: "lifecycle-transfer-configured" = Transfer, Configured;
    transfer_endpoint_disabled: "lifecycle-transfer-endpoint-disabled" = Transfer, EndpointDisabled;
    transfer_suspended: "lifecycle-transfer-suspended" = Transfer, Suspended;
    transfer_udc_unbound: "lifecycle-transfer-udc-unbound" = Transfer, UdcUnbound;
    transfer_driver_removed: "lifecycle-transfer-driver-removed" = Transfer, DriverRemoved;
    transfer_daemon_gone: "lifecycle-transfer-daemon-gone" = Transfer, DaemonGone;
    detach_not_bound: "lifecycle-detach-not-bound" = Detach, NotBound;
    detach_not_enumerated: "lifecycle-detach-not-enumerated" = Detach, NotEnumerated;
    detach_configured: "lifecycle-detach-configured" = Detach, Configured;
    detach_endpoint_disabled: "lifecycle-detach-endpoint-disabled" = Detach, EndpointDisabled;
    detach_suspended: "lifecycle-detach-suspended" = Detach, Suspended;
    detach_udc_unbound: "lifecycle-detach-udc-unbound" = Detach, UdcUnbound;
    detach_driver_removed: "lifecycle-detach-driver-removed" = Detach, DriverRemoved;
    detach_daemon_gone: "lifecycle-detach-daemon-gone" = Detach, DaemonGone;
    close_not_bound: "lifecycle-close-not-bound" = Close, NotBound;
    close_not_enumerated: "lifecycle-close-not-enumerated" = Close, NotEnumerated;
    close_configured: "lifecycle-close-configured" = Close, Configured;
    close_endpoint_disabled: "lifecycle-close-endpoint-disabled" = Close, EndpointDisabled;
    close_suspended: "lifecycle-close-suspended" = Close, Suspended;
    close_udc_unbound: "lifecycle-close-udc-unbound" = Close, UdcUnbound;
    close_driver_removed: "lifecycle-close-driver-removed" = Close, DriverRemoved;
    close_daemon_gone: "lifecycle-close-daemon-gone" = Close, DaemonGone;
}
