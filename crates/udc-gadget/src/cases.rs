// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The VM scenario suite. Each case sets up the gadget, drives both ends
//! of the bus (FunctionFS in the guest, the host through the control
//! channel), checks both, and tears down. Data is the `prbs:SEED` pattern
//! of `udc-patterns`, the same bytes the host's streams produce and check.

use std::fs::File;
use std::io::{Read, Write};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use udc_patterns::Pattern;

use std::os::fd::AsFd;

use crate::case::Ctx;
use crate::dmabuf::{GuestBuf, Source};
use crate::ffs::{Speed, USB_DIR_IN};
use crate::ffs_dmabuf;
use crate::gadget::{self, TestGadget};
use crate::host::HostLink;
use crate::Error;

/// Transfers above this size go through a host stream instead of one
/// base64 control-socket transfer.
pub(crate) const MAX_SOCKET_TRANSFER: usize = 1 << 20;
pub(crate) const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(20);
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Sizes for the read/write cases, around the packet size and up to 8 MiB.
/// Without scatter-gather f_fs kmallocs each read()/write() whole, and
/// above 4 MiB the page allocator warns and fails it with ENOMEM
/// (docs/kernel-bugs.md): there the largest is 2 MiB.
fn sizes(s: &Setup) -> Vec<usize> {
    let mps = s.mps;
    let largest = if s.sg { 8 << 20 } else { 2 << 20 };
    vec![1, mps - 1, mps, mps + 1, 4096, 65536, 1 << 20, largest]
}

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

/// The host's parsed descriptors are what this tool wrote.
pub(crate) fn enumeration(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let d = ctx.host.ok(json!({"op": "descriptors"}))?;
    let e = &d["enumerated"];
    let dev = &e["device"];
    check(
        dev["id_vendor"] == gadget::VENDOR && dev["id_product"] == gadget::PRODUCT,
        || {
            format!(
                "device ids {}:{} instead of {:04x}:{:04x}",
                dev["id_vendor"],
                dev["id_product"],
                gadget::VENDOR,
                gadget::PRODUCT
            )
        },
    )?;
    let strings = e["strings"].to_string();
    for want in [
        gadget::MANUFACTURER,
        gadget::PRODUCT_NAME,
        gadget::SERIAL,
        gadget::INTERFACE_NAME,
    ] {
        check(strings.contains(want), || {
            format!("string {want:?} missing from the host's strings {strings}")
        })?;
    }
    let ep0 = if s.speed == "super" { 9 } else { 64 };
    check(dev["max_packet_size0"] == ep0, || {
        format!(
            "bMaxPacketSize0 {} at {} speed, expected {ep0}",
            dev["max_packet_size0"], s.speed
        )
    })?;
    let configs = e["configurations"].as_array().cloned().unwrap_or_default();
    check(configs.len() == 1, || {
        format!("{} configurations, expected 1", configs.len())
    })?;
    let intfs = configs[0]["interfaces"].as_array().cloned().unwrap_or_default();
    check(intfs.len() == 1, || {
        format!("{} interfaces, expected 1", intfs.len())
    })?;
    let intf = &intfs[0];
    let want = gadget::FUNCTION.interface();
    check(
        intf["class"] == want.class && intf["subclass"] == want.subclass && intf["protocol"] == want.protocol,
        || {
            format!(
                "interface class {}/{}/{}, expected {}/{}/{}",
                intf["class"], intf["subclass"], intf["protocol"], want.class, want.subclass, want.protocol
            )
        },
    )?;
    let speed =
        Speed::from_name(&s.speed).ok_or_else(|| Error::Check(format!("unexpected speed {}", s.speed)))?;
    let want_eps = gadget::FUNCTION.endpoints(speed);
    let eps = intf["endpoints"].as_array().cloned().unwrap_or_default();
    check(eps.len() == want_eps.len(), || {
        format!("{} endpoints, expected {}", eps.len(), want_eps.len())
    })?;
    for ((ep, addr), (want, companion)) in eps.iter().zip([s.ep_in, s.ep_out]).zip(&want_eps) {
        // The UDC numbers the endpoints; direction and the rest are ours.
        check(
            ep["address"] == addr
                && (addr & USB_DIR_IN != 0) == want.is_in()
                && ep["attributes"] == want.attributes,
            || format!("endpoint {ep}: expected {want:?} at {addr:#04x}"),
        )?;
        check(
            ep["w_max_packet_size"] == want.max_packet_size && ep["interval"] == want.interval,
            || {
                format!(
                    "endpoint {addr:#04x}: wMaxPacketSize {} and bInterval {} at {} speed, expected {} and {}",
                    ep["w_max_packet_size"], ep["interval"], s.speed, want.max_packet_size, want.interval
                )
            },
        )?;
        let c = &ep["companion"];
        let companion_ok = match companion {
            None => c.is_null(),
            Some(w) => {
                c["max_burst"] == w.max_burst
                    && c["attributes"] == w.attributes
                    && c["bytes_per_interval"] == w.bytes_per_interval
            }
        };
        check(companion_ok, || {
            format!(
                "endpoint {addr:#04x}: SuperSpeed companion {c} at {} speed, expected {companion:?}",
                s.speed
            )
        })?;
    }
    ctx.notes.push(format!(
        "host read {} bytes of configuration",
        configs[0]["total_length"]
    ));
    Ok(())
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
pub(crate) fn stream_clean(host: &mut HostLink, ep: u8, bytes: u64, what: &str) -> Result<(), Error> {
    let s = host.stream_wait(ep, IO_TIMEOUT)?;
    check(
        s["offset"] == bytes && s["stats"]["errors"] == 0 && s["last_error"].is_null(),
        || format!("{what}: host stream ended with {s}, expected {bytes} bytes and no error"),
    )
}

/// Host OUT transfers of 1 byte to 8 MiB, each read whole by one read().
pub(crate) fn bulk_out_read(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let f = s.g.open_ep(2)?;
    for (i, n) in sizes(&s).into_iter().enumerate() {
        let seed = 1000 + i as u64;
        let what = format!("OUT {n} bytes");
        let reader = read_thread(clone(&f)?, n);
        if n <= MAX_SOCKET_TRANSFER {
            let r = ctx.host.send_out(s.ep_out, &pattern(seed, 0, n), false)?;
            transfer_ok(&r, n, &what)?;
        } else {
            ctx.host.stream_start(s.ep_out, &format!("prbs:{seed}"), n, 1)?;
        }
        let got = join(reader, &what)?;
        check(got.len() == n, || {
            format!("{what}: read() returned {} bytes", got.len())
        })?;
        verify(seed, 0, &got, &what)?;
        if n > MAX_SOCKET_TRANSFER {
            stream_clean(&mut ctx.host, s.ep_out, n as u64, &what)?;
        }
    }
    Ok(())
}

/// Guest write()s of 1 byte to 8 MiB, each read whole by the host.
pub(crate) fn bulk_in_write(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let f = s.g.open_ep(1)?;
    for (i, n) in sizes(&s).into_iter().enumerate() {
        let seed = 2000 + i as u64;
        let what = format!("IN {n} bytes");
        if n <= MAX_SOCKET_TRANSFER {
            let writer = write_thread(clone(&f)?, pattern(seed, 0, n));
            let (r, data) = ctx.host.read_in(s.ep_in, n)?;
            transfer_ok(&r, n, &what)?;
            verify(seed, 0, &data, &what)?;
            let w = join(writer, &what)?;
            check(w == n, || format!("{what}: write() returned {w}"))?;
        } else {
            ctx.host.stream_start(s.ep_in, &format!("prbs:{seed}"), n, 1)?;
            let w = clone(&f)?
                .write(&pattern(seed, 0, n))
                .map_err(|e| Error::Check(format!("{what}: write(): {e}")))?;
            check(w == n, || format!("{what}: write() returned {w}"))?;
            stream_clean(&mut ctx.host, s.ep_in, n as u64, &what)?;
        }
    }
    Ok(())
}

/// Groups of AIO reads in flight at once (io_submit on the endpoint file),
/// filled by a host stream, completing in order.
pub(crate) fn bulk_out_aio(ctx: &mut Ctx) -> Result<(), Error> {
    let mut s = setup(ctx)?;
    for (g, (size, count)) in [(65536usize, 4u64), (1 << 20, 4), (s.mps, 8)]
        .into_iter()
        .enumerate()
    {
        let seed = 3000 + g as u64;
        let what = format!("OUT AIO {count} x {size} bytes");
        for _ in 0..count {
            s.g.rx
                .submit_read(size)
                .map_err(|e| Error::Check(format!("{what}: io_submit: {e}")))?;
            let done =
                s.g.rx
                    .wait(Duration::ZERO)
                    .map_err(|e| Error::Check(format!("{what}: io_getevents: {e}")))?;
            check(done.is_none(), || {
                format!("{what}: a read completed before the host sent anything")
            })?;
        }
        ctx.host
            .stream_start(s.ep_out, &format!("prbs:{seed}"), size, count)?;
        for k in 0..count {
            let buf =
                s.g.rx
                    .wait_read(IO_TIMEOUT)
                    .map_err(|e| Error::Check(format!("{what}: read {k}: {e}")))?
                    .ok_or_else(|| Error::Check(format!("{what}: read {k} did not complete")))?;
            check(buf.len() == size, || {
                format!("{what}: read {k} got {} bytes", buf.len())
            })?;
            // FIFO: completion k carries the stream's k-th transfer.
            verify(seed, k * size as u64, &buf, &format!("{what}, completion {k}"))?;
        }
        stream_clean(&mut ctx.host, s.ep_out, count * size as u64, &what)?;
    }
    Ok(())
}

/// Groups of AIO writes in flight at once, checked by a verifying host
/// stream.
pub(crate) fn bulk_in_aio(ctx: &mut Ctx) -> Result<(), Error> {
    let mut s = setup(ctx)?;
    for (g, (size, count)) in [(65536usize, 4u64), (1 << 20, 4), (s.mps, 8)]
        .into_iter()
        .enumerate()
    {
        let seed = 4000 + g as u64;
        let what = format!("IN AIO {count} x {size} bytes");
        ctx.host
            .stream_start(s.ep_in, &format!("prbs:{seed}"), size, count)?;
        for k in 0..count {
            s.g.tx
                .submit_write(Bytes::from(pattern(seed, k * size as u64, size)))
                .map_err(|e| Error::Check(format!("{what}: io_submit {k}: {e}")))?;
        }
        s.g.tx
            .flush(IO_TIMEOUT)
            .map_err(|e| Error::Check(format!("{what}: completions: {e}")))?;
        stream_clean(&mut ctx.host, s.ep_in, count * size as u64, &what)?;
    }
    Ok(())
}

/// Transfers that end early: short packets and zero-length packets both
/// ways, and a ZLP ending an OUT transfer that fills whole packets.
pub(crate) fn short_and_zero_length(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let fout = s.g.open_ep(2)?;
    let fin = s.g.open_ep(1)?;

    // OUT: 100 bytes into a 4096-byte read: the short packet ends it.
    let reader = read_thread(clone(&fout)?, 4096);
    transfer_ok(
        &ctx.host.send_out(s.ep_out, &pattern(5001, 0, 100), false)?,
        100,
        "OUT short",
    )?;
    let got = join(reader, "OUT short")?;
    check(got.len() == 100, || {
        format!("OUT short: read() returned {} bytes, expected 100", got.len())
    })?;
    verify(5001, 0, &got, "OUT short")?;

    // OUT: a zero-length packet alone: read() returns 0.
    let reader = read_thread(clone(&fout)?, 4096);
    transfer_ok(&ctx.host.send_out(s.ep_out, &[], false)?, 0, "OUT zero-length")?;
    let got = join(reader, "OUT zero-length")?;
    check(got.is_empty(), || {
        format!("OUT zero-length: read() returned {} bytes, expected 0", got.len())
    })?;

    // OUT: two full packets then a ZLP end a larger read at 2 packets.
    let n = 2 * s.mps;
    let reader = read_thread(clone(&fout)?, 8 * s.mps);
    transfer_ok(
        &ctx.host.send_out(s.ep_out, &pattern(5002, 0, n), true)?,
        n,
        "OUT packets + ZLP",
    )?;
    let got = join(reader, "OUT packets + ZLP")?;
    check(got.len() == n, || {
        format!(
            "OUT packets + ZLP: read() returned {} bytes, expected {n}",
            got.len()
        )
    })?;
    verify(5002, 0, &got, "OUT packets + ZLP")?;

    // IN: 100 bytes written, the host asked for 4096: a short transfer.
    let writer = write_thread(clone(&fin)?, pattern(5003, 0, 100));
    let (r, data) = ctx.host.read_in(s.ep_in, 4096)?;
    transfer_ok(&r, 100, "IN short")?;
    verify(5003, 0, &data, "IN short")?;
    check(join(writer, "IN short")? == 100, || {
        "IN short: write() did not return 100".into()
    })?;

    // IN: a zero-length write() is a zero-length packet.
    let writer = write_thread(clone(&fin)?, Vec::new());
    let (r, _) = ctx.host.read_in(s.ep_in, 4096)?;
    transfer_ok(&r, 0, "IN zero-length")?;
    check(join(writer, "IN zero-length")? == 0, || {
        "IN zero-length: write() did not return 0".into()
    })?;

    // Nothing stray is left: one more exact transfer each way.
    let reader = read_thread(clone(&fout)?, 512);
    transfer_ok(
        &ctx.host.send_out(s.ep_out, &pattern(5004, 0, 300), false)?,
        300,
        "OUT after",
    )?;
    verify(
        5004,
        0,
        &join(reader, "OUT after")?,
        "OUT after (a stray ZLP would make this empty)",
    )?;
    Ok(())
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
pub(crate) fn open_endpoint(path: &std::path::Path, nonblock: bool) -> Result<File, Error> {
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
fn wait_ep0_event(s: &Setup, name: &str) -> Result<(), Error> {
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

/// Class and vendor requests to the interface reach the ep0 thread as
/// FunctionFS SETUP events, in both directions; it stalls them, as the
/// function has none, and the function keeps moving data afterwards.
pub(crate) fn ep0_requests_stall(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let interface = gadget::FUNCTION.interface().number;
    for (req, event) in [
        (
            json!({"op": "control", "request_type": 0xc1, "request": 1, "value": 0,
                "index": interface, "length": 4}),
            "setup-in",
        ),
        (
            json!({"op": "control", "request_type": 0x21, "request": 2, "value": 0,
                "index": interface, "length": 3, "data": "AQID"}),
            "setup-out",
        ),
    ] {
        let r = ctx.host.request(&req)?;
        check(r["ok"] == false && r["status"] == "stall", || {
            format!("control request {req}: the host got {r}, expected a stall")
        })?;
        wait_ep0_event(&s, event)?;
    }
    round_trip(ctx, &s, 9500)?;
    Ok(())
}

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

pub(crate) fn rmmod_insmod(ctx: &mut Ctx) -> Result<(), Error> {
    let ko = virtio_udc_ko()?;
    let mut s = setup(ctx)?;
    // Requests the host never serves: two reads and a write.
    for _ in 0..2 {
        s.g.rx
            .submit_read(65536)
            .map_err(|e| Error::Check(format!("io_submit read: {e}")))?;
    }
    s.g.tx
        .submit_write(Bytes::from(pattern(7000, 0, 65536)))
        .map_err(|e| Error::Check(format!("io_submit write: {e}")))?;
    thread::sleep(Duration::from_millis(200));
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
    for k in 0..2 {
        match s.g.rx.wait_read(Duration::from_secs(10)) {
            Err(e) => ctx.notes.push(format!("queued read {k} ended with: {e}")),
            Ok(Some(b)) => {
                return Err(Error::Check(format!(
                    "queued read {k} completed with {} bytes",
                    b.len()
                )))
            }
            Ok(None) => {
                return Err(Error::Check(format!(
                    "queued read {k} did not complete within 10 s"
                )))
            }
        }
    }
    match s.g.tx.flush(Duration::from_secs(10)) {
        Err(e) => ctx.notes.push(format!("queued write ended with: {e}")),
        Ok(()) => {
            return Err(Error::Check(
                "the queued write completed although nobody read it".into(),
            ))
        }
    }
    insmod_and_rebind(ctx, &ko, &mut s.g)?;
    ctx.host.wait_configured(CONFIGURE_TIMEOUT)?;
    round_trip(ctx, &s, 7100)?;
    Ok(())
}

/// The daemon dies with requests queued: QEMU tells the driver, which fails
/// them; `udc-vm` starts a new daemon, the driver resets the device, the
/// host enumerates again and data moves.
pub(crate) fn daemon_crash(ctx: &mut Ctx) -> Result<(), Error> {
    let mut s = setup(ctx)?;
    for _ in 0..2 {
        s.g.rx
            .submit_read(65536)
            .map_err(|e| Error::Check(format!("io_submit read: {e}")))?;
    }
    s.g.tx
        .submit_write(Bytes::from(pattern(8000, 0, 65536)))
        .map_err(|e| Error::Check(format!("io_submit write: {e}")))?;
    thread::sleep(Duration::from_millis(200));
    ctx.host.ok(json!({"op": "crash"}))?;
    let start = Instant::now();
    for k in 0..2 {
        match s.g.rx.wait_read(Duration::from_secs(15)) {
            Err(e) => ctx.notes.push(format!("queued read {k} ended with: {e}")),
            Ok(Some(b)) => {
                return Err(Error::Check(format!(
                    "queued read {k} completed with {} bytes",
                    b.len()
                )))
            }
            Ok(None) => {
                return Err(Error::Check(format!(
                    "queued read {k} did not complete within 15 s"
                )))
            }
        }
    }
    match s.g.tx.flush(Duration::from_secs(15)) {
        Err(e) => ctx.notes.push(format!("queued write ended with: {e}")),
        Ok(()) => {
            return Err(Error::Check(
                "the queued write completed although the daemon died".into(),
            ))
        }
    }
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

/// `udc-gadget demo`: verified read/write throughput each way.
pub fn demo(ctx: &mut Ctx, size: usize) -> Result<(), Error> {
    const CHUNK: usize = 1 << 20;
    let s = setup(ctx)?;
    let count = (size / CHUNK).max(1) as u64;
    let total = count * CHUNK as u64;
    println!(
        "udc-gadget: {} speed, bulk IN {:#04x} and OUT {:#04x}",
        s.speed, s.ep_in, s.ep_out
    );

    let mut f = s.g.open_ep(2)?;
    ctx.host.ok(
        json!({"op": "stream_start", "ep": crate::host::ep_str(s.ep_out), "pattern": "prbs:1",
        "transfer_size": CHUNK, "depth": 4, "count": count}),
    )?;
    let mut buf = vec![0u8; CHUNK];
    let start = Instant::now();
    for k in 0..count {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::Check(format!("OUT read(): {e}")))?;
        check(n == CHUNK, || format!("OUT read() returned {n}"))?;
        verify(1, k * CHUNK as u64, &buf, "OUT")?;
    }
    let t = start.elapsed().as_secs_f64();
    let host_out = ctx.host.stream_wait(s.ep_out, IO_TIMEOUT)?;
    println!(
        "OUT (host to gadget, read()): {} MiB in {t:.2} s = {:.1} MiB/s, verified byte for byte",
        total >> 20,
        (total as f64 / (1 << 20) as f64) / t
    );

    let mut f = s.g.open_ep(1)?;
    ctx.host.ok(
        json!({"op": "stream_start", "ep": crate::host::ep_str(s.ep_in), "pattern": "prbs:2",
        "transfer_size": CHUNK, "depth": 4, "count": count, "verify": true}),
    )?;
    let start = Instant::now();
    for k in 0..count {
        let data = pattern(2, k * CHUNK as u64, CHUNK);
        let n = f
            .write(&data)
            .map_err(|e| Error::Check(format!("IN write(): {e}")))?;
        check(n == CHUNK, || format!("IN write() returned {n}"))?;
    }
    let host_in = ctx.host.stream_wait(s.ep_in, IO_TIMEOUT)?;
    let t = start.elapsed().as_secs_f64();
    check(
        host_in["offset"] == total && host_in["stats"]["errors"] == 0,
        || format!("IN: the host's verifying stream reports {host_in}"),
    )?;
    println!(
        "IN (gadget to host, write()): {} MiB in {t:.2} s = {:.1} MiB/s, verified byte for byte by the host",
        total >> 20,
        (total as f64 / (1 << 20) as f64) / t
    );
    let _ = host_out;
    demo_dmabuf(ctx, &s, count)
}

/// DMABUFs in flight per direction in the demo.
const DEMO_DMABUFS: usize = 2;

/// The demo's DMABUF half: udmabufs of 1 MiB attached to each endpoint,
/// kept in flight with FUNCTIONFS_DMABUF_TRANSFER, each waited on through
/// its fence before the CPU touches it again; verified at both ends.
fn demo_dmabuf(ctx: &mut Ctx, s: &Setup, count: u64) -> Result<(), Error> {
    const CHUNK: usize = 1 << 20;
    let total = count * CHUNK as u64;
    let mib_s = |t: f64| (total as f64 / (1 << 20) as f64) / t;

    // OUT: the host streams prbs:3; the device writes each DMABUF, the CPU
    // checks it after the fence and queues it again.
    let ep_out = s.g.open_ep(2)?;
    let bufs = (0..DEMO_DMABUFS)
        .map(|_| GuestBuf::new(Source::Udmabuf, CHUNK).map_err(|e| Error::Setup(format!("udmabuf: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    for b in &bufs {
        ffs_dmabuf::attach(ep_out.as_fd(), b.fd()).map_err(io_err("DMABUF_ATTACH on OUT"))?;
    }
    ctx.host.ok(
        json!({"op": "stream_start", "ep": crate::host::ep_str(s.ep_out), "pattern": "prbs:3",
        "transfer_size": CHUNK, "depth": 4, "count": count}),
    )?;
    let start = Instant::now();
    for (k, b) in bufs.iter().enumerate().take(count as usize) {
        ffs_dmabuf::transfer(ep_out.as_fd(), b.fd(), CHUNK as u64, 0)
            .map_err(io_err(&format!("OUT DMABUF {k}")))?;
    }
    for k in 0..count {
        let b = &bufs[k as usize % DEMO_DMABUFS];
        check(b.wait(libc::POLLIN, IO_TIMEOUT), || {
            format!("OUT DMABUF transfer {k}: no fence signal")
        })?;
        let data = b.read(CHUNK).map_err(io_err("DMABUF read"))?;
        verify(3, k * CHUNK as u64, &data, &format!("OUT DMABUF transfer {k}"))?;
        if k + (DEMO_DMABUFS as u64) < count {
            ffs_dmabuf::transfer(ep_out.as_fd(), b.fd(), CHUNK as u64, 0).map_err(io_err(&format!(
                "OUT DMABUF transfer {}",
                k + DEMO_DMABUFS as u64
            )))?;
        }
    }
    let t = start.elapsed().as_secs_f64();
    stream_clean(&mut ctx.host, s.ep_out, total, "OUT DMABUF")?;
    println!(
        "OUT (host to gadget, DMABUF): {} MiB in {t:.2} s = {:.1} MiB/s, {DEMO_DMABUFS} udmabufs in flight, verified byte for byte",
        total >> 20,
        mib_s(t)
    );
    for b in &bufs {
        ffs_dmabuf::detach(ep_out.as_fd(), b.fd()).map_err(io_err("DMABUF_DETACH on OUT"))?;
    }

    // IN: the CPU fills each DMABUF with prbs:4 after its last transfer's
    // fence, the device reads it, the host's stream verifies.
    let ep_in = s.g.open_ep(1)?;
    let mut bufs = bufs;
    for b in &bufs {
        ffs_dmabuf::attach(ep_in.as_fd(), b.fd()).map_err(io_err("DMABUF_ATTACH on IN"))?;
    }
    ctx.host.ok(
        json!({"op": "stream_start", "ep": crate::host::ep_str(s.ep_in), "pattern": "prbs:4",
        "transfer_size": CHUNK, "depth": 4, "count": count, "verify": true}),
    )?;
    let start = Instant::now();
    for k in 0..count {
        let b = &mut bufs[k as usize % DEMO_DMABUFS];
        check(b.wait(libc::POLLOUT, IO_TIMEOUT), || {
            format!("IN DMABUF transfer {k}: buffer still busy")
        })?;
        b.write(&pattern(4, k * CHUNK as u64, CHUNK))
            .map_err(io_err("DMABUF write"))?;
        ffs_dmabuf::transfer(ep_in.as_fd(), b.fd(), CHUNK as u64, 0)
            .map_err(io_err(&format!("IN DMABUF transfer {k}")))?;
    }
    let host_in = ctx.host.stream_wait(s.ep_in, IO_TIMEOUT)?;
    let t = start.elapsed().as_secs_f64();
    check(
        host_in["offset"] == total && host_in["stats"]["errors"] == 0,
        || format!("IN DMABUF: the host's verifying stream reports {host_in}"),
    )?;
    println!(
        "IN (gadget to host, DMABUF): {} MiB in {t:.2} s = {:.1} MiB/s, {DEMO_DMABUFS} udmabufs in flight, verified byte for byte by the host",
        total >> 20,
        mib_s(t)
    );
    for b in &bufs {
        check(b.wait(libc::POLLOUT, IO_TIMEOUT), || {
            "IN DMABUF: a fence did not signal".into()
        })?;
        ffs_dmabuf::detach(ep_in.as_fd(), b.fd()).map_err(io_err("DMABUF_DETACH on IN"))?;
    }
    Ok(())
}
