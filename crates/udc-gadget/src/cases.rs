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

use crate::dmabuf::{self, GuestBuf, Source};
use crate::ffs::{Speed, USB_DIR_IN};
use crate::ffs_dmabuf;
use crate::findings;
use crate::gadget::{self, TestGadget};
use crate::host::HostLink;
use crate::recipes;
use crate::Error;

/// Transfers above this size go through a host stream instead of one
/// base64 control-socket transfer.
const MAX_SOCKET_TRANSFER: usize = 1 << 20;
pub(crate) const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(20);
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Ctx {
    pub host: HostLink,
    /// Path of the control channel, to reconnect after a daemon restart.
    pub control: std::path::PathBuf,
    pub udc: Option<String>,
    /// Diagnostics of the running case, printed with its result.
    pub notes: Vec<String>,
    /// Races the running case provokes on purpose: the daemon's race
    /// detectors reporting more than these fails it.
    pub expected_races: u64,
}

pub(crate) type CaseFn = fn(&mut Ctx) -> Result<(), Error>;

/// What a case needs of the controller (the config space's
/// VIRTIO_UDC_CONFIG_F_SG): FunctionFS's DMABUF interface exists only on a
/// UDC with scatter-gather, and its refusal only on one without.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    Any,
    Sg,
    NoSg,
}

impl Needs {
    pub fn admits(self, sg: bool) -> bool {
        match self {
            Needs::Any => true,
            Needs::Sg => sg,
            Needs::NoSg => !sg,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Needs::Any => "any controller",
            Needs::Sg => "a controller with scatter-gather",
            Needs::NoSg => "a controller without scatter-gather (vhost-device-udc --no-sg)",
        }
    }
}

pub struct Case {
    pub name: &'static str,
    pub needs: Needs,
    pub run: CaseFn,
    /// In the suite when no case is named (`udc-gadget test` alone). The
    /// others run when a --filter word or --cases names them: the
    /// reproducers of kernel bugs, which fail (or hang the guest) on a
    /// kernel that has the bug, and the DMABUF lifecycle matrix.
    pub default: bool,
}

const fn case(name: &'static str, needs: Needs, run: CaseFn) -> Case {
    Case {
        name,
        needs,
        run,
        default: true,
    }
}

/// A case that runs only when named (see [`Case::default`]).
pub(crate) const fn on_request(name: &'static str, needs: Needs, run: CaseFn) -> Case {
    Case {
        name,
        needs,
        run,
        default: false,
    }
}

/// Every case, in the order they run: the catalogue and the reproducers,
/// then the DMABUF lifecycle matrix.
pub fn all() -> impl Iterator<Item = &'static Case> {
    CASES.iter().chain(crate::lifecycle::CASES)
}

const CASES: &[Case] = &[
    case("enumeration", Needs::Any, enumeration),
    case("bulk-out-read", Needs::Any, bulk_out_read),
    case("bulk-in-write", Needs::Any, bulk_in_write),
    case("bulk-out-aio", Needs::Any, bulk_out_aio),
    case("bulk-in-aio", Needs::Any, bulk_in_aio),
    case("short-and-zero-length", Needs::Any, short_and_zero_length),
    case(
        "ep0-class-and-vendor-requests-stall",
        Needs::Any,
        ep0_requests_stall,
    ),
    case("bus-suspend-resume-reset-disconnect", Needs::Any, bus_events),
    case("dmabuf-sizes-udmabuf-and-heap", Needs::Sg, dmabuf_sizes),
    case("dmabuf-fifo-and-fence-order", Needs::Sg, dmabuf_fifo),
    case("dmabuf-bad-requests-and-detach-pending", Needs::Sg, dmabuf_errors),
    case(
        "dmabuf-close-with-transfers-pending",
        Needs::Sg,
        dmabuf_close_pending,
    ),
    case(
        "dmabuf-endpoint-disabled-mid-transfer",
        Needs::Sg,
        dmabuf_disabled,
    ),
    case(
        "dmabuf-mixed-with-read-write-keeps-order",
        Needs::Sg,
        dmabuf_mixed,
    ),
    case("dmabuf-attach-without-sg", Needs::NoSg, dmabuf_without_sg),
    case(
        "injection-faults-and-delays-reach-functionfs",
        Needs::Any,
        recipes::faults_reach_functionfs,
    ),
    case(
        "injection-same-seed-same-events",
        Needs::Any,
        recipes::seed_reproduces_events,
    ),
    case(
        "injection-reorder-breaks-fence-order",
        Needs::Sg,
        recipes::reorder_breaks_fence_order,
    ),
    case(
        "recipe-dmabuf-hold-5s-then-detach",
        Needs::Sg,
        recipes::hold_then_detach,
    ),
    case(
        "recipe-out-poison-catches-early-reader",
        Needs::Sg,
        recipes::poison_catches_early_reader,
    ),
    case(
        "recipe-in-checksum-catches-writer-in-flight",
        Needs::Sg,
        recipes::checksum_catches_writer,
    ),
    case(
        "coherency-dmabuf-next-to-read-write",
        Needs::Sg,
        recipes::coherency_dmabuf_next_to_read_write,
    ),
    case(
        "dmabuf-in-attached-before-enumeration",
        Needs::Sg,
        findings::dmabuf_in_attached_before_enumeration,
    ),
    case(
        "udmabuf-sync-keeps-other-writes",
        Needs::Any,
        findings::udmabuf_sync_keeps_other_writes,
    ),
    case("unbind-rebind", Needs::Any, unbind_rebind),
    case("rmmod-insmod-with-transfers-queued", Needs::Any, rmmod_insmod),
    case("daemon-crash-and-restart", Needs::Any, daemon_crash),
    // Reproducers of f_fs bugs (docs/kernel-bugs.md, patches/linux/).
    on_request(
        "ffs-fence-outlives-detach",
        Needs::Sg,
        findings::dmabuf_fence_outlives_detach,
    ),
    on_request(
        "ffs-rw-large-under-swiotlb",
        Needs::Sg,
        findings::rw_large_under_swiotlb,
    ),
    on_request(
        "ffs-rw-above-4mib-without-sg",
        Needs::NoSg,
        findings::rw_above_4mib_without_sg,
    ),
];

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
    let ((ep_in, mps), (ep_out, _)) = ctx.host.enumerated_endpoint_pair()?;
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
fn bulk_in_write(ctx: &mut Ctx) -> Result<(), Error> {
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
fn bulk_out_aio(ctx: &mut Ctx) -> Result<(), Error> {
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

/// One DMABUF transfer each way: attach, transfer, wait on the fence,
/// check the data at the other end, detach.
pub(crate) fn dmabuf_pair(
    ctx: &mut Ctx,
    s: &Setup,
    buf: &mut GuestBuf,
    size: usize,
    seed: u64,
) -> Result<(), Error> {
    let what = format!("{} {} KiB", buf.source.name(), size >> 10);
    let ep_in = s.g.open_ep(1)?;
    let ep_out = s.g.open_ep(2)?;
    // IN: the CPU fills the buffer, the device reads it.
    buf.write(&pattern(seed, 0, size)).map_err(io_err(&what))?;
    ffs_dmabuf::attach(ep_in.as_fd(), buf.fd()).map_err(io_err(&format!("{what}: DMABUF_ATTACH on IN")))?;
    if size > MAX_SOCKET_TRANSFER {
        ctx.host.stream_start(s.ep_in, &format!("prbs:{seed}"), size, 1)?;
    }
    ffs_dmabuf::transfer(ep_in.as_fd(), buf.fd(), size as u64, 0)
        .map_err(io_err(&format!("{what}: DMABUF_TRANSFER on IN")))?;
    if size > MAX_SOCKET_TRANSFER {
        stream_clean(&mut ctx.host, s.ep_in, size as u64, &format!("{what} IN"))?;
    } else {
        let (r, data) = ctx.host.read_in(s.ep_in, size)?;
        transfer_ok(&r, size, &format!("{what} IN"))?;
        verify(seed, 0, &data, &format!("{what} IN"))?;
    }
    check(buf.wait(libc::POLLOUT, IO_TIMEOUT), || {
        format!("{what} IN: the fence did not signal")
    })?;
    ffs_dmabuf::detach(ep_in.as_fd(), buf.fd()).map_err(io_err(&format!("{what}: DMABUF_DETACH on IN")))?;

    // OUT: the device writes the buffer; the CPU reads it after the fence.
    buf.write(&vec![0xa5; size]).map_err(io_err(&what))?;
    ffs_dmabuf::attach(ep_out.as_fd(), buf.fd()).map_err(io_err(&format!("{what}: DMABUF_ATTACH on OUT")))?;
    ffs_dmabuf::transfer(ep_out.as_fd(), buf.fd(), size as u64, 0)
        .map_err(io_err(&format!("{what}: DMABUF_TRANSFER on OUT")))?;
    if size > MAX_SOCKET_TRANSFER {
        ctx.host
            .stream_start(s.ep_out, &format!("prbs:{}", seed + 1), size, 1)?;
        stream_clean(&mut ctx.host, s.ep_out, size as u64, &format!("{what} OUT"))?;
    } else {
        transfer_ok(
            &ctx.host.send_out(s.ep_out, &pattern(seed + 1, 0, size), false)?,
            size,
            &format!("{what} OUT"),
        )?;
    }
    check(buf.wait(libc::POLLIN, IO_TIMEOUT), || {
        format!("{what} OUT: the fence did not signal")
    })?;
    verify(
        seed + 1,
        0,
        &buf.read(size).map_err(io_err(&what))?,
        &format!("{what} OUT"),
    )?;
    ffs_dmabuf::detach(ep_out.as_fd(), buf.fd()).map_err(io_err(&format!("{what}: DMABUF_DETACH on OUT")))?;
    Ok(())
}

/// Catalogue 1: attach, transfer, detach both ways, 4 KiB to 64 MiB, with
/// udmabufs (one segment per page) and dma-heap buffers (few segments).
///
/// Under swiotlb=force a dma-heap buffer of 1 MiB or more cannot be
/// attached: the system heap hands out 1 MiB segments and swiotlb maps at
/// most 256 KiB at once, so the heap's map_dma_buf fails and ATTACH with it
/// (EIO; docs/kernel-bugs.md). The case asserts exactly that there.
fn dmabuf_sizes(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let bounced = dmabuf::dma_bounces();
    let mut seed = 11_000;
    let mut refused = Vec::new();
    for source in [Source::Udmabuf, Source::Heap] {
        for size in [4096usize, 65536, 1 << 20, 16 << 20, 64 << 20] {
            let mut buf = GuestBuf::new(source, size)
                .map_err(|e| Error::Setup(format!("{} of {size} bytes: {e}", source.name())))?;
            if bounced && source == Source::Heap && size >= 1 << 20 {
                for n in [1, 2] {
                    let ep = s.g.open_ep(n)?;
                    expect_errno(
                        ffs_dmabuf::attach(ep.as_fd(), buf.fd()),
                        libc::EIO,
                        &format!(
                            "DMABUF_ATTACH of a {} MiB dma-heap buffer under swiotlb=force",
                            size >> 20
                        ),
                    )?;
                }
                refused.push(format!("{} MiB", size >> 20));
                continue;
            }
            dmabuf_pair(ctx, &s, &mut buf, size, seed)?;
            seed += 2;
        }
    }
    ctx.notes
        .push("udmabuf and dma-heap, 4 KiB to 64 MiB, both ways".into());
    if !refused.is_empty() {
        ctx.notes.push(format!(
            "under swiotlb=force, dma-heap buffers of {} refused at ATTACH with EIO (1 MiB heap segments, 256 KiB swiotlb mappings)",
            refused.join(", ")
        ));
    }
    Ok(())
}

/// Catalogue 2: DMABUFs queued on one endpoint complete in FIFO order and
/// their fences signal in seqno order (sync-file timestamps).
fn dmabuf_fifo(ctx: &mut Ctx) -> Result<(), Error> {
    const N: usize = 6;
    const SIZE: usize = 256 << 10;
    let s = setup(ctx)?;
    let ep_out = s.g.open_ep(2)?;
    let mut bufs = Vec::new();
    let mut syncs = Vec::new();
    for i in 0..N {
        let source = if i % 2 == 0 { Source::Udmabuf } else { Source::Heap };
        let b = GuestBuf::new(source, SIZE).map_err(|e| Error::Setup(e.to_string()))?;
        ffs_dmabuf::attach(ep_out.as_fd(), b.fd()).map_err(io_err("DMABUF_ATTACH"))?;
        ffs_dmabuf::transfer(ep_out.as_fd(), b.fd(), SIZE as u64, 0).map_err(io_err("DMABUF_TRANSFER"))?;
        // Readers wait for the device's write fence: this sync file holds it.
        syncs.push(
            b.export_sync_file(dmabuf::SYNC_READ)
                .map_err(io_err("EXPORT_SYNC_FILE"))?,
        );
        bufs.push(b);
    }
    ctx.host.stream_start(s.ep_out, "prbs:12000", SIZE, N as u64)?;
    stream_clean(&mut ctx.host, s.ep_out, (N * SIZE) as u64, "DMABUF FIFO")?;
    let mut last = 0u64;
    for (i, (b, sync)) in bufs.iter().zip(&syncs).enumerate() {
        check(b.wait(libc::POLLIN, IO_TIMEOUT), || {
            format!("buffer {i}: the fence did not signal")
        })?;
        verify(
            12_000,
            (i * SIZE) as u64,
            &b.read(SIZE).map_err(io_err("read"))?,
            &format!("buffer {i} (FIFO)"),
        )?;
        let f = dmabuf::sync_file_fences(sync.as_fd()).map_err(io_err("SYNC_IOC_FILE_INFO"))?;
        check(f.len() == 1 && f[0].status == 1, || {
            format!(
                "buffer {i}: fence status {:?}, expected one fence signalled without error",
                f.iter().map(|x| x.status).collect::<Vec<_>>()
            )
        })?;
        check(f[0].timestamp_ns >= last, || {
            format!("buffer {i}: its fence signalled before buffer {}'s", i - 1)
        })?;
        last = f[0].timestamp_ns;
        ffs_dmabuf::detach(ep_out.as_fd(), b.fd()).map_err(io_err("DMABUF_DETACH"))?;
    }
    ctx.notes.push(format!(
        "{N} DMABUFs of {} KiB: data and fences in queue order",
        SIZE >> 10
    ));
    Ok(())
}

/// Catalogue 5, 6, 7 and 3: the documented errors, an O_NONBLOCK transfer
/// on a busy DMABUF, and a detach with a transfer pending, whose fence then
/// signals with an error.
fn dmabuf_errors(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let ep_out = s.g.open_ep(2)?;
    let b = GuestBuf::new(Source::Udmabuf, 65536).map_err(|e| Error::Setup(e.to_string()))?;
    let never = GuestBuf::new(Source::Heap, 4096).map_err(|e| Error::Setup(e.to_string()))?;
    let fd = ep_out.as_fd();
    expect_errno(
        ffs_dmabuf::transfer(fd, b.fd(), 4096, 0),
        libc::EPERM,
        "transfer on an unattached DMABUF",
    )?;
    expect_errno(
        ffs_dmabuf::detach(fd, never.fd()),
        libc::EPERM,
        "detach of a DMABUF never attached",
    )?;
    ffs_dmabuf::attach(fd, b.fd()).map_err(io_err("DMABUF_ATTACH"))?;
    expect_errno(
        ffs_dmabuf::transfer(fd, b.fd(), 0, 0),
        libc::EINVAL,
        "transfer of length 0",
    )?;
    expect_errno(
        ffs_dmabuf::transfer(fd, b.fd(), 65537, 0),
        libc::EINVAL,
        "transfer longer than the DMABUF",
    )?;
    expect_errno(
        ffs_dmabuf::transfer(fd, b.fd(), 4096, 0x8000_0000),
        libc::EINVAL,
        "transfer with unknown flags",
    )?;

    // A transfer the host never serves keeps the DMABUF busy.
    ffs_dmabuf::transfer(fd, b.fd(), 65536, 0).map_err(io_err("DMABUF_TRANSFER"))?;
    let nb = open_nonblock(&s, 2)?;
    let start = Instant::now();
    expect_errno(
        ffs_dmabuf::transfer(nb.as_fd(), b.fd(), 65536, 0),
        libc::EBUSY,
        "O_NONBLOCK transfer on a busy DMABUF",
    )?;
    check(start.elapsed() < Duration::from_secs(1), || {
        format!("the O_NONBLOCK transfer blocked for {:?}", start.elapsed())
    })?;

    // Detach with the transfer pending: the device sees the request
    // cancelled and the fence signals (poll on the DMABUF). No sync file
    // here: f_fs (6.9 to at least 6.12) keeps the fence's spinlock in the
    // attachment it frees on detach, so reading a sync file's status, or
    // closing one that was polled, after detach touches freed memory and
    // can spin forever (docs/kernel-bugs.md). Fence error status is
    // checked while attached, in dmabuf-endpoint-disabled-mid-transfer.
    let queued = wait_device_queue(ctx, s.ep_out, 1, "before detach")?;
    ffs_dmabuf::detach(fd, b.fd()).map_err(io_err("DMABUF_DETACH with a transfer pending"))?;
    check(b.wait(libc::POLLIN, IO_TIMEOUT), || {
        "the pending transfer's fence did not signal after detach".into()
    })?;
    wait_cancelled(ctx, s.ep_out, queued, 1, "after detach")?;
    ctx.notes
        .push("detach with a transfer pending: cancelled at the device, fence signalled".into());
    expect_errno(ffs_dmabuf::detach(fd, b.fd()), libc::EPERM, "second detach")?;
    // The endpoint still works.
    round_trip(ctx, &s, 12_100)?;
    Ok(())
}

/// Catalogue 8: on a controller without scatter-gather FunctionFS refuses
/// to attach a DMABUF (-EPERM), and read()/write() still work.
fn dmabuf_without_sg(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let ep_in = s.g.open_ep(1)?;
    let ep_out = s.g.open_ep(2)?;
    for (source, size) in [(Source::Udmabuf, 65536), (Source::Heap, 1 << 20)] {
        let b = GuestBuf::new(source, size).map_err(|e| Error::Setup(e.to_string()))?;
        for (f, dir) in [(&ep_in, "IN"), (&ep_out, "OUT")] {
            expect_errno(
                ffs_dmabuf::attach(f.as_fd(), b.fd()),
                libc::EPERM,
                &format!(
                    "DMABUF_ATTACH of a {} on {dir} without scatter-gather",
                    source.name()
                ),
            )?;
        }
    }
    ctx.notes
        .push("DMABUF_ATTACH: EPERM on both endpoints, udmabuf and dma-heap".into());
    round_trip(ctx, &s, 13_500)?;
    Ok(())
}

/// Catalogue 4: closing the endpoint file with DMABUF transfers pending
/// signals every fence.
fn dmabuf_close_pending(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let ep_in = s.g.open_ep(1)?;
    let mut bufs = Vec::new();
    for _ in 0..3 {
        let b = GuestBuf::new(Source::Udmabuf, 65536).map_err(|e| Error::Setup(e.to_string()))?;
        ffs_dmabuf::attach(ep_in.as_fd(), b.fd()).map_err(io_err("DMABUF_ATTACH"))?;
        ffs_dmabuf::transfer(ep_in.as_fd(), b.fd(), 65536, 0).map_err(io_err("DMABUF_TRANSFER"))?;
        bufs.push(b);
    }
    let queued = wait_device_queue(ctx, s.ep_in, 3, "before close")?;
    // Closing detaches every DMABUF; as after a detach, only the DMABUF
    // itself can be waited on safely (docs/kernel-bugs.md).
    drop(ep_in);
    for (i, b) in bufs.iter().enumerate() {
        check(b.wait(libc::POLLOUT, IO_TIMEOUT), || {
            format!("buffer {i}: no fence signal after close")
        })?;
    }
    wait_cancelled(ctx, s.ep_in, queued, 3, "after close")?;
    ctx.notes
        .push("3 pending IN transfers: every fence signalled on close".into());
    round_trip(ctx, &s, 13_000)?;
    Ok(())
}

/// Catalogue 9: the endpoint goes away under a pending DMABUF transfer (the
/// host's SET_CONFIGURATION 0, a bus reset, a disconnect): the fence signals
/// with an error, and after the host configures the device again DMABUF
/// transfers work.
fn dmabuf_disabled(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let ep_out = s.g.open_ep(2)?;
    // Open for the whole case: closing any file of an endpoint detaches
    // every DMABUF attached to it (docs/kernel-bugs.md).
    let nb = open_nonblock(&s, 2)?;
    let events: [(&str, Value); 3] = [
        (
            "SET_CONFIGURATION 0",
            json!({"op": "control", "request_type": 0, "request": 9, "value": 0}),
        ),
        ("bus reset", json!({"op": "bus", "action": "reset"})),
        ("disconnect", json!({"op": "bus", "action": "disconnect"})),
    ];
    for (k, (what, req)) in events.into_iter().enumerate() {
        let mut b = GuestBuf::new(Source::Udmabuf, 65536).map_err(|e| Error::Setup(e.to_string()))?;
        ffs_dmabuf::attach(ep_out.as_fd(), b.fd()).map_err(io_err("DMABUF_ATTACH"))?;
        ffs_dmabuf::transfer(ep_out.as_fd(), b.fd(), 65536, 0).map_err(io_err("DMABUF_TRANSFER"))?;
        let sync = b
            .export_sync_file(dmabuf::SYNC_READ)
            .map_err(io_err("EXPORT_SYNC_FILE"))?;
        ctx.host.ok(req)?;
        check(b.wait(libc::POLLIN, IO_TIMEOUT), || {
            format!("{what}: the pending fence did not signal")
        })?;
        // Still attached: the fence's status can be read (docs/kernel-bugs.md).
        let f = dmabuf::sync_file_fences(sync.as_fd()).map_err(io_err("SYNC_IOC_FILE_INFO"))?;
        drop(sync);
        check(f.len() == 1 && f[0].status == -libc::ESHUTDOWN, || {
            format!(
                "{what}: fence status {:?}, expected -ESHUTDOWN (the endpoint was disabled)",
                f.iter().map(|x| x.status).collect::<Vec<_>>()
            )
        })?;
        ctx.notes
            .push(format!("{what}: the fence signalled with -ESHUTDOWN"));
        // Until the host configures the device again the endpoint is gone:
        // a non-blocking transfer fails at once. (After a bus reset the host
        // enumerates again by itself, so there is no window to test.)
        let reconnect = match what {
            "SET_CONFIGURATION 0" => {
                Some(json!({"op": "control", "request_type": 0, "request": 9, "value": 1}))
            }
            "disconnect" => Some(json!({"op": "bus", "action": "connect"})),
            _ => None,
        };
        if let Some(again) = reconnect {
            if what == "disconnect" {
                // The device ends the pending request before the guest has
                // handled the disconnect event: the fence can signal while
                // the endpoint is still enabled. Wait for the gadget to see
                // the cable gone.
                let start = Instant::now();
                while !matches!(s.g.udc.state(), Ok(usb_gadget::UdcState::NotAttached)) {
                    check(start.elapsed() < IO_TIMEOUT, || {
                        format!("the UDC state is {:?} long after the disconnect", s.g.udc.state())
                    })?;
                    thread::sleep(Duration::from_millis(20));
                }
            }
            expect_errno(
                ffs_dmabuf::transfer(nb.as_fd(), b.fd(), 65536, 0),
                libc::EAGAIN,
                &format!("O_NONBLOCK transfer after {what}"),
            )?;
            ctx.host.ok(again)?;
        }
        ctx.host.wait_configured(CONFIGURE_TIMEOUT)?;
        // The same DMABUF works again once the host has configured the device.
        ffs_dmabuf::detach(ep_out.as_fd(), b.fd()).map_err(io_err("DMABUF_DETACH"))?;
        dmabuf_pair(ctx, &s, &mut b, 65536, 13_100 + 2 * k as u64)?;
    }
    Ok(())
}

/// Catalogue 10: read()s and DMABUF transfers queued on one endpoint
/// complete in the order they were queued.
fn dmabuf_mixed(ctx: &mut Ctx) -> Result<(), Error> {
    const SIZE: usize = 16384;
    let s = setup(ctx)?;
    let ep_out = s.g.open_ep(2)?;
    let a = GuestBuf::new(Source::Udmabuf, SIZE).map_err(|e| Error::Setup(e.to_string()))?;
    let b = GuestBuf::new(Source::Heap, SIZE).map_err(|e| Error::Setup(e.to_string()))?;
    ffs_dmabuf::attach(ep_out.as_fd(), a.fd()).map_err(io_err("DMABUF_ATTACH"))?;
    ffs_dmabuf::attach(ep_out.as_fd(), b.fd()).map_err(io_err("DMABUF_ATTACH"))?;
    // Queue: DMABUF a, then a read(), then DMABUF b.
    ffs_dmabuf::transfer(ep_out.as_fd(), a.fd(), SIZE as u64, 0).map_err(io_err("DMABUF_TRANSFER a"))?;
    let reader = read_thread(clone(&ep_out)?, SIZE);
    thread::sleep(Duration::from_millis(300));
    ffs_dmabuf::transfer(ep_out.as_fd(), b.fd(), SIZE as u64, 0).map_err(io_err("DMABUF_TRANSFER b"))?;
    ctx.host.stream_start(s.ep_out, "prbs:14000", SIZE, 3)?;
    stream_clean(&mut ctx.host, s.ep_out, 3 * SIZE as u64, "mixed OUT")?;
    let got = join(reader, "read() between the DMABUFs")?;
    check(
        a.wait(libc::POLLIN, IO_TIMEOUT) && b.wait(libc::POLLIN, IO_TIMEOUT),
        || "a fence did not signal".into(),
    )?;
    verify(
        14_000,
        0,
        &a.read(SIZE).map_err(io_err("read a"))?,
        "first (DMABUF a)",
    )?;
    verify(14_000, SIZE as u64, &got, "second (read())")?;
    verify(
        14_000,
        2 * SIZE as u64,
        &b.read(SIZE).map_err(io_err("read b"))?,
        "third (DMABUF b)",
    )?;
    ffs_dmabuf::detach(ep_out.as_fd(), a.fd()).map_err(io_err("DMABUF_DETACH"))?;
    ffs_dmabuf::detach(ep_out.as_fd(), b.fd()).map_err(io_err("DMABUF_DETACH"))?;
    Ok(())
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
fn wait_cancelled(ctx: &mut Ctx, ep: u8, before: (u64, u64), n: u64, when: &str) -> Result<(), Error> {
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
fn ep0_requests_stall(ctx: &mut Ctx) -> Result<(), Error> {
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

fn rmmod_insmod(ctx: &mut Ctx) -> Result<(), Error> {
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
fn daemon_crash(ctx: &mut Ctx) -> Result<(), Error> {
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
