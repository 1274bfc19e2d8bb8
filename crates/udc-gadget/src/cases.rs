//! The VM scenario suite. Each case sets up the gadget, drives both ends
//! of the bus (FunctionFS in the guest, the host through the control
//! channel), checks both, and tears down. Data is the `prbs:SEED` pattern
//! of `udc-patterns`, the same bytes the host's streams produce and check.

use std::fs::File;
use std::io::{Read, Write};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};
use udc_patterns::Pattern;

use crate::ffs_dmabuf;
use crate::gadget::{self, TestGadget};
use crate::host::HostLink;
use crate::Error;

/// Transfers above this size go through a host stream instead of one
/// base64 control-socket transfer.
const MAX_SOCKET_TRANSFER: usize = 1 << 20;
const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(20);
const IO_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Ctx {
    pub host: HostLink,
    /// Path of the control channel, to reconnect after a daemon restart.
    pub control: std::path::PathBuf,
    pub udc: Option<String>,
    /// Diagnostics of the running case, printed with its result.
    pub notes: Vec<String>,
}

type CaseFn = fn(&mut Ctx) -> Result<(), Error>;

/// Every case, in the order they run.
pub const CASES: &[(&str, CaseFn)] = &[
    ("enumeration", enumeration),
    ("bulk-out-read", bulk_out_read),
    ("bulk-in-write", bulk_in_write),
    ("bulk-out-aio", bulk_out_aio),
    ("bulk-in-aio", bulk_in_aio),
    ("short-and-zero-length", short_and_zero_length),
    ("bus-suspend-resume-reset-disconnect", bus_events),
    ("dmabuf-in-out", dmabuf_in_out),
    ("unbind-rebind", unbind_rebind),
    ("rmmod-insmod-with-transfers-queued", rmmod_insmod),
    ("daemon-crash-and-restart", daemon_crash),
];

/// Sizes for the read/write cases, around the packet size and up to 8 MiB.
fn sizes(mps: usize) -> Vec<usize> {
    vec![1, mps - 1, mps, mps + 1, 4096, 65536, 1 << 20, 8 << 20]
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

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), Error> {
    if cond {
        Ok(())
    } else {
        Err(Error::Check(what()))
    }
}

/// A bound gadget the host has configured, with its endpoint addresses and
/// packet size.
struct Setup {
    g: TestGadget,
    ep_in: u8,
    ep_out: u8,
    mps: usize,
    speed: String,
}

fn setup(ctx: &mut Ctx) -> Result<Setup, Error> {
    let udc = gadget::find_udc(ctx.udc.as_deref())?;
    let g = TestGadget::bind(udc)?;
    let st = ctx.host.wait_configured(CONFIGURE_TIMEOUT)?;
    let speed = st["device"]["speed"].as_str().unwrap_or("unknown").to_string();
    // The addresses the UDC gave our endpoints, as the host read them.
    let d = ctx.host.ok(json!({"op": "descriptors"}))?;
    let eps = d["enumerated"]["configurations"][0]["interfaces"][0]["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let find = |want_in: bool| {
        eps.iter()
            .find(|e| e["address"].as_u64().is_some_and(|a| (a & 0x80 != 0) == want_in))
            .map(|e| {
                (
                    e["address"].as_u64().unwrap() as u8,
                    e["max_packet_size"].as_u64().unwrap_or(0) as usize,
                )
            })
    };
    let (Some((ep_in, mps)), Some((ep_out, _))) = (find(true), find(false)) else {
        return Err(Error::Check(format!(
            "the host found no bulk IN and OUT pair: {}",
            d["enumerated"]["configurations"]
        )));
    };
    ctx.notes.push(format!(
        "{speed} speed, bulk IN {ep_in:#04x}, bulk OUT {ep_out:#04x}, {mps}-byte packets"
    ));
    Ok(Setup {
        g,
        ep_in,
        ep_out,
        mps,
        speed,
    })
}

fn expected_mps(speed: &str) -> Option<u64> {
    match speed {
        "full" => Some(64),
        "high" => Some(512),
        "super" | "super_plus" | "super-plus" => Some(1024),
        _ => None,
    }
}

/// The host's parsed descriptors are what this tool wrote.
fn enumeration(ctx: &mut Ctx) -> Result<(), Error> {
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
    check(
        intf["class"] == 0xff && intf["subclass"] == 0 && intf["protocol"] == 0,
        || {
            format!(
                "interface class {}/{}/{}, expected 255/0/0",
                intf["class"], intf["subclass"], intf["protocol"]
            )
        },
    )?;
    let eps = intf["endpoints"].as_array().cloned().unwrap_or_default();
    check(eps.len() == 2, || format!("{} endpoints, expected 2", eps.len()))?;
    let mps = expected_mps(&s.speed).ok_or_else(|| Error::Check(format!("unexpected speed {}", s.speed)))?;
    for (ep, addr) in eps.iter().zip([s.ep_in, s.ep_out]) {
        check(ep["address"] == addr && ep["attributes"] == 2, || {
            format!("endpoint {ep}: expected bulk at {addr:#04x}")
        })?;
        check(ep["max_packet_size"] == mps, || {
            format!(
                "endpoint {addr:#04x}: wMaxPacketSize {} at {} speed, expected {mps}",
                ep["max_packet_size"], s.speed
            )
        })?;
        let has_companion = !ep["companion"].is_null();
        check(has_companion == (s.speed == "super"), || {
            format!(
                "endpoint {addr:#04x}: SuperSpeed companion {} at {} speed",
                ep["companion"], s.speed
            )
        })?;
    }
    ctx.notes.push(format!(
        "host read {} bytes of configuration",
        configs[0]["total_length"]
    ));
    Ok(())
}

fn read_thread(mut f: File, len: usize) -> thread::JoinHandle<std::io::Result<Vec<u8>>> {
    thread::spawn(move || {
        let mut buf = vec![0u8; len];
        let n = f.read(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    })
}

fn write_thread(mut f: File, data: Vec<u8>) -> thread::JoinHandle<std::io::Result<usize>> {
    thread::spawn(move || f.write(&data))
}

fn clone(f: &File) -> Result<File, Error> {
    f.try_clone().map_err(|e| Error::Setup(format!("dup: {e}")))
}

fn join<T>(h: thread::JoinHandle<std::io::Result<T>>, what: &str) -> Result<T, Error> {
    h.join()
        .map_err(|_| Error::Check(format!("{what}: the I/O thread panicked")))?
        .map_err(|e| Error::Check(format!("{what}: {e}")))
}

fn transfer_ok(r: &Value, actual: usize, what: &str) -> Result<(), Error> {
    check(
        r["ok"] == true && r["status"] == "ok" && r["actual"] == actual,
        || format!("{what}: host transfer gave {r}, expected status ok with {actual} bytes"),
    )
}

/// The stream on `ep` ended after exactly `bytes` with no error.
fn stream_clean(host: &mut HostLink, ep: u8, bytes: u64, what: &str) -> Result<(), Error> {
    let s = host.stream_wait(ep, IO_TIMEOUT)?;
    check(
        s["offset"] == bytes && s["stats"]["errors"] == 0 && s["last_error"].is_null(),
        || format!("{what}: host stream ended with {s}, expected {bytes} bytes and no error"),
    )
}

/// Host OUT transfers of 1 byte to 8 MiB, each read whole by one read().
fn bulk_out_read(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let f = s.g.open_ep(2)?;
    for (i, n) in sizes(s.mps).into_iter().enumerate() {
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
fn bulk_in_write(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let f = s.g.open_ep(1)?;
    for (i, n) in sizes(s.mps).into_iter().enumerate() {
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

/// Groups of AIO reads in flight at once (io_submit on the endpoint file,
/// through the usb-gadget crate), filled by a host stream, completing in
/// order.
fn bulk_out_aio(ctx: &mut Ctx) -> Result<(), Error> {
    let mut s = setup(ctx)?;
    for (g, (size, count)) in [(65536usize, 4u64), (1 << 20, 4), (s.mps, 8)]
        .into_iter()
        .enumerate()
    {
        let seed = 3000 + g as u64;
        let what = format!("OUT AIO {count} x {size} bytes");
        for _ in 0..count {
            let done =
                s.g.rx
                    .recv(BytesMut::with_capacity(size))
                    .map_err(|e| Error::Check(format!("{what}: io_submit: {e}")))?;
            check(done.is_none(), || {
                format!("{what}: a read completed before the host sent anything")
            })?;
        }
        ctx.host
            .stream_start(s.ep_out, &format!("prbs:{seed}"), size, count)?;
        for k in 0..count {
            let buf =
                s.g.rx
                    .fetch_timeout(IO_TIMEOUT)
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
fn bulk_in_aio(ctx: &mut Ctx) -> Result<(), Error> {
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
                .send(Bytes::from(pattern(seed, k * size as u64, size)))
                .map_err(|e| Error::Check(format!("{what}: io_submit {k}: {e}")))?;
        }
        s.g.tx
            .flush_timeout(IO_TIMEOUT)
            .map_err(|e| Error::Check(format!("{what}: completions: {e}")))?;
        stream_clean(&mut ctx.host, s.ep_in, count * size as u64, &what)?;
    }
    Ok(())
}

/// Transfers that end early: short packets and zero-length packets both
/// ways, and a ZLP ending an OUT transfer that fills whole packets.
fn short_and_zero_length(ctx: &mut Ctx) -> Result<(), Error> {
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
fn round_trip(ctx: &mut Ctx, s: &Setup, seed: u64) -> Result<(), Error> {
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

/// Waits on a DMABUF's fences: POLLIN for its writers (the device filling an
/// OUT buffer), POLLOUT for every user (an IN buffer the device reads).
fn wait_fence(fd: std::os::fd::BorrowedFd<'_>, events: i16, what: &str) -> Result<(), Error> {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one pollfd that lives across the call.
    let n = unsafe { libc::poll(&mut pfd, 1, IO_TIMEOUT.as_millis() as i32) };
    check(n == 1 && pfd.revents & events != 0, || {
        format!("{what}: the fence did not signal within {IO_TIMEOUT:?}")
    })
}

/// FUNCTIONFS_DMABUF_ATTACH / TRANSFER / DETACH on both endpoints with a
/// udmabuf: the device moves the data into and out of exactly the pages of
/// the guest's DMABUF (a scatterlist of one entry per page).
fn dmabuf_in_out(ctx: &mut Ctx) -> Result<(), Error> {
    use std::os::fd::AsFd;
    use udmabuf::{memfd_for_udmabuf, CreateFlags, SyncDirection, Udmabuf};
    let s = setup(ctx)?;
    let size: usize = 1 << 20;
    let dev = Udmabuf::open().map_err(|e| Error::Setup(format!("/dev/udmabuf: {e}")))?;
    let memfd = memfd_for_udmabuf("udc-gadget", size as u64).map_err(|e| Error::Setup(e.to_string()))?;
    let buf = dev
        .create(memfd.as_fd(), 0, size as u64, CreateFlags::default())
        .map_err(|e| Error::Setup(format!("UDMABUF_CREATE: {e}")))?;
    let mut map = buf
        .map()
        .map_err(|e| Error::Setup(format!("mmap of the DMABUF: {e}")))?;

    // IN: the CPU writes the buffer, the device reads it.
    {
        let _cpu = buf
            .cpu_access(SyncDirection::Write)
            .map_err(|e| Error::Setup(e.to_string()))?;
        map.as_mut_slice().copy_from_slice(&pattern(10_000, 0, size));
    }
    let ep_in = s.g.open_ep(1)?;
    ffs_dmabuf::attach(ep_in.as_fd(), buf.as_fd())
        .map_err(|e| Error::Check(format!("DMABUF_ATTACH on IN: {e}")))?;
    ffs_dmabuf::transfer(ep_in.as_fd(), buf.as_fd(), size as u64, 0)
        .map_err(|e| Error::Check(format!("DMABUF_TRANSFER on IN: {e}")))?;
    let (r, data) = ctx.host.read_in(s.ep_in, size)?;
    transfer_ok(&r, size, "DMABUF IN")?;
    verify(10_000, 0, &data, "DMABUF IN")?;
    wait_fence(buf.as_fd(), libc::POLLOUT, "DMABUF IN")?;
    ffs_dmabuf::detach(ep_in.as_fd(), buf.as_fd())
        .map_err(|e| Error::Check(format!("DMABUF_DETACH on IN: {e}")))?;

    // OUT: the device writes the buffer, the CPU reads it after the fence.
    let ep_out = s.g.open_ep(2)?;
    ffs_dmabuf::attach(ep_out.as_fd(), buf.as_fd())
        .map_err(|e| Error::Check(format!("DMABUF_ATTACH on OUT: {e}")))?;
    ffs_dmabuf::transfer(ep_out.as_fd(), buf.as_fd(), size as u64, 0)
        .map_err(|e| Error::Check(format!("DMABUF_TRANSFER on OUT: {e}")))?;
    transfer_ok(
        &ctx.host.send_out(s.ep_out, &pattern(10_001, 0, size), false)?,
        size,
        "DMABUF OUT",
    )?;
    wait_fence(buf.as_fd(), libc::POLLIN, "DMABUF OUT")?;
    {
        let _cpu = buf
            .cpu_access(SyncDirection::Read)
            .map_err(|e| Error::Setup(e.to_string()))?;
        verify(10_001, 0, map.as_slice(), "DMABUF OUT")?;
    }
    ffs_dmabuf::detach(ep_out.as_fd(), buf.as_fd())
        .map_err(|e| Error::Check(format!("DMABUF_DETACH on OUT: {e}")))?;
    ctx.notes.push(format!(
        "{} KiB each way through a udmabuf of {} pages",
        size >> 10,
        size >> 12
    ));
    Ok(())
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

/// What the host and the cable do to the bus reaches the gadget: suspend
/// and resume as FunctionFS events; a bus reset and a disconnect end the
/// transfers in flight with an error, and the host enumerates again.
fn bus_events(ctx: &mut Ctx) -> Result<(), Error> {
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

fn unbind_rebind(ctx: &mut Ctx) -> Result<(), Error> {
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
fn virtio_udc_ko() -> Result<String, Error> {
    let list = std::fs::read_to_string("/etc/udc/modules")
        .map_err(|e| Error::Setup(format!("/etc/udc/modules: {e}")))?;
    list.lines()
        .find(|l| l.ends_with("/virtio_udc.ko"))
        .map(str::to_string)
        .ok_or_else(|| Error::Setup("virtio_udc.ko is not in /etc/udc/modules".into()))
}

fn run(cmd: &str, args: &[&str]) -> Result<(), Error> {
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

fn rmmod_insmod(ctx: &mut Ctx) -> Result<(), Error> {
    let ko = virtio_udc_ko()?;
    let mut s = setup(ctx)?;
    // Requests the host never serves: two reads and a write.
    for _ in 0..2 {
        s.g.rx
            .recv(BytesMut::with_capacity(65536))
            .map_err(|e| Error::Check(format!("io_submit read: {e}")))?;
    }
    s.g.tx
        .send(Bytes::from(pattern(7000, 0, 65536)))
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
        match s.g.rx.fetch_timeout(Duration::from_secs(10)) {
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
    match s.g.tx.flush_timeout(Duration::from_secs(10)) {
        Err(e) => ctx.notes.push(format!("queued write ended with: {e}")),
        Ok(()) => {
            return Err(Error::Check(
                "the queued write completed although nobody read it".into(),
            ))
        }
    }
    run("insmod", &[&ko])?;
    let start = Instant::now();
    while gadget::find_udc(ctx.udc.as_deref()).is_err() {
        check(start.elapsed() < Duration::from_secs(10), || {
            "no UDC 10 s after insmod".into()
        })?;
        thread::sleep(Duration::from_millis(50));
    }
    // The configfs gadget names its UDC; the gadget core binds it again
    // when that UDC comes back. Bind by hand if it did not.
    thread::sleep(Duration::from_millis(300));
    if s.g.bound_udc().is_none() {
        ctx.notes
            .push("the gadget was not bound again by itself: binding it".into());
        s.g.rebind()?;
    }
    ctx.host.wait_configured(CONFIGURE_TIMEOUT)?;
    round_trip(ctx, &s, 7100)?;
    Ok(())
}

/// The daemon dies with requests queued: QEMU tells the driver, which fails
/// them; `udc-vm` starts a new daemon, the driver resets the device, the
/// host enumerates again and data moves.
fn daemon_crash(ctx: &mut Ctx) -> Result<(), Error> {
    let mut s = setup(ctx)?;
    for _ in 0..2 {
        s.g.rx
            .recv(BytesMut::with_capacity(65536))
            .map_err(|e| Error::Check(format!("io_submit read: {e}")))?;
    }
    s.g.tx
        .send(Bytes::from(pattern(8000, 0, 65536)))
        .map_err(|e| Error::Check(format!("io_submit write: {e}")))?;
    thread::sleep(Duration::from_millis(200));
    ctx.host.ok(json!({"op": "crash"}))?;
    let start = Instant::now();
    for k in 0..2 {
        match s.g.rx.fetch_timeout(Duration::from_secs(15)) {
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
    match s.g.tx.flush_timeout(Duration::from_secs(15)) {
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
    let _ = s.g.rx.cancel();
    let _ = s.g.tx.cancel();
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
    Ok(())
}
