// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `udc-gadget bench`: throughput and guest CPU cost of bulk transfers, per
//! way of moving the data and buffer size (docs/vm-tier.md, "udc-vm bench").
//!
//! On virtio-udc the USB host is the daemon's traffic streams, reached over
//! the control channel: DMABUF transfers, read()/write() and AIO on the
//! FunctionFS endpoint files. On dummy_hcd, in the same guest, the tool
//! plays the USB host itself through usbfs, so the host's work is guest
//! CPU time too.
//!
//! Each measurement prints one line on stdout that `udc-vm bench` parses:
//!
//! ```text
//! bench: udc=virtio method=dmabuf dir=in size=1048576 inflight=4 bytes=... seconds=... cpu_seconds=...
//! bench: udc=dummy method=rw dir=out size=16777216 skipped=REASON
//! bench: dummy_hcd dmabuf_attach=EPERM
//! ```
//!
//! Data is checked cheaply enough not to dominate the numbers, but so that
//! a path that does not move it cannot report a fast number: OUT buffers
//! (filled by the host with `prbs:SEED`) have their first and last 8 bytes
//! checked at the stream offset they must hold. IN data has to be produced
//! by the guest, and filling every buffer with the pattern again would
//! measure the pattern generator, so each IN measurement is preceded by a
//! warm-up over the same buffers and the same path that the host verifies
//! byte for byte against `prbs:SEED`; the timed run then sends zeroed
//! buffers, which the host verifies as `zeros`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use udc_patterns::Pattern;

use crate::cases::{check, io_err, pattern};

use crate::aio::Buffer;
use crate::case::Ctx;
use crate::dmabuf::{GuestBuf, Source};
use crate::ffs_dmabuf;
use crate::gadget::{self, TestGadget};
use crate::host::{ep_str, HostLink};
use crate::Error;

/// Transfers the host's streams keep in flight.
const HOST_DEPTH: usize = 4;
/// Longest wait for one transfer, a stream's end or an enumeration.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// IN AIO keeps the endpoint's whole AIO queue in flight (what
/// usb-gadget's EndpointSender did before our own AIO layer, kept so that
/// the numbers stay comparable); OUT AIO keeps `--inflight` reads.
const AIO_QUEUE: usize = gadget::AIO_DEPTH;
/// f_fs allocates a read()/write() request's buffer with kmalloc when the
/// UDC has no scatter-gather (dummy_hcd): larger requests fail, and the
/// page allocator warns on the way (MAX_PAGE_ORDER, 4 MiB with 4 KiB pages).
const KMALLOC_MAX: usize = 4 << 20;
/// First guesses of a series' throughput, for the length of its first
/// point; later points use the rate of the one before.
const FIRST_GUESS_VIRTIO: f64 = 150.0 * (1 << 20) as f64;
const FIRST_GUESS_DUMMY: f64 = 50.0 * (1 << 20) as f64;

/// Buffer sizes, from a comma-separated list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sizes(pub Vec<usize>);

pub use udc_patterns::parse_size;

/// `--sizes`: each a positive multiple of 4 KiB (a udmabuf is whole pages)
/// and at most 64 MiB (the host streams' largest transfer).
pub fn parse_sizes(s: &str) -> Result<Sizes, String> {
    let mut v = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let n = parse_size(part)?;
        if n % 4096 != 0 || n > 64 << 20 {
            return Err(format!(
                "size {part:?}: must be a multiple of 4 KiB, at most 64 MiB"
            ));
        }
        v.push(n as usize);
    }
    if v.is_empty() {
        return Err("no sizes given".into());
    }
    Ok(Sizes(v))
}

/// A series of measurements: how the data moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Series {
    /// FUNCTIONFS_DMABUF_TRANSFER of udmabufs on virtio-udc.
    Dmabuf,
    /// read()/write() on the endpoint files on virtio-udc.
    Rw,
    /// FunctionFS AIO on virtio-udc.
    Aio,
    /// read()/write() on dummy_hcd, the host side through usbfs.
    Dummy,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Buffer sizes, comma-separated; K, M and G are binary.
    #[arg(long, default_value = "64K,256K,1M,4M,16M", value_parser = parse_sizes)]
    sizes: Sizes,
    /// Target time of each measurement, in seconds; its length comes from
    /// the throughput of the series' previous point.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Move this many bytes in each measurement instead (whole buffers).
    #[arg(long, value_parser = parse_size, conflicts_with = "seconds")]
    bytes: Option<u64>,
    /// Buffers in flight: DMABUFs, AIO reads, usbfs URBs.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=16))]
    inflight: u32,
    /// Series to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "dmabuf,rw,aio,dummy")]
    methods: Vec<Series>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    /// Gadget to host.
    In,
    /// Host to gadget.
    Out,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Dir::In => "in",
            Dir::Out => "out",
        }
    }

    /// The test gadget's FunctionFS endpoint file number.
    fn ffs_ep(self) -> u32 {
        match self {
            Dir::In => 1,
            Dir::Out => 2,
        }
    }

    /// What poll() on a DMABUF waits for: an IN transfer reads the buffer
    /// (wait for all fences), an OUT transfer writes it (wait for writers).
    fn fence_events(self) -> i16 {
        match self {
            Dir::In => libc::POLLOUT,
            Dir::Out => libc::POLLIN,
        }
    }
}

/// One measurement's result.
struct Measured {
    bytes: u64,
    seconds: f64,
    cpu_seconds: f64,
}

/// Busy jiffies of all CPUs from /proc/stat's `cpu` line: everything but
/// idle and iowait. guest and guest_nice are left out too, as the kernel
/// already counts them in user and nice.
fn busy_jiffies(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    if f.len() < 8 {
        return None;
    }
    Some(f[0] + f[1] + f[2] + f[5] + f[6] + f[7])
}

/// Wall time and guest CPU time across a measurement.
struct Meter {
    start: Instant,
    busy: u64,
}

impl Meter {
    fn read_busy() -> Result<u64, Error> {
        let stat =
            std::fs::read_to_string("/proc/stat").map_err(|e| Error::Setup(format!("/proc/stat: {e}")))?;
        busy_jiffies(&stat).ok_or_else(|| Error::Setup("/proc/stat has no cpu line as expected".into()))
    }

    fn start() -> Result<Meter, Error> {
        Ok(Meter {
            busy: Meter::read_busy()?,
            start: Instant::now(),
        })
    }

    fn stop(self, bytes: u64) -> Result<Measured, Error> {
        let seconds = self.start.elapsed().as_secs_f64();
        let busy = Meter::read_busy()? - self.busy;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Ok(Measured {
            bytes,
            seconds,
            cpu_seconds: busy as f64 / hz.max(1) as f64,
        })
    }
}

/// How long each measurement is.
struct Plan {
    seconds: f64,
    bytes: Option<u64>,
    inflight: usize,
}

impl Plan {
    /// Transfers of `size` for one measurement: the fixed byte count, or
    /// what `rate` (bytes/s) moves in the target time, with the pipeline
    /// filled twice over at least.
    fn count(&self, size: usize, rate: f64) -> u64 {
        match self.bytes {
            Some(b) => b.div_ceil(size as u64).max(1),
            None => ((self.seconds * rate) as u64 / size as u64).max(2 * self.inflight as u64),
        }
    }

    /// Runs `f` with the count for `rate`; runs it again, with the count
    /// for the rate it measured, while it was much shorter than the target
    /// (the first guess, or the previous size's rate, was far too low).
    /// With `prime`, a short untimed run comes first: under TCG the first
    /// pass through a code path also translates it.
    fn measure(
        &self,
        size: usize,
        rate: f64,
        prime: bool,
        mut f: impl FnMut(u64) -> Result<Measured, Error>,
    ) -> Result<Measured, Error> {
        if prime {
            f(2 * self.inflight as u64)?;
        }
        let mut m = f(self.count(size, rate))?;
        for _ in 0..2 {
            if self.bytes.is_some() || m.seconds >= self.seconds / 2.0 {
                break;
            }
            m = f(self.count(size, m.bytes as f64 / m.seconds))?;
        }
        Ok(m)
    }
}

fn report(udc: &str, method: &str, dir: Dir, size: usize, inflight: usize, m: &Measured) {
    println!(
        "bench: udc={udc} method={method} dir={} size={size} inflight={inflight} bytes={} seconds={:.6} cpu_seconds={:.3}",
        dir.name(),
        m.bytes,
        m.seconds,
        m.cpu_seconds
    );
    let gib = m.bytes as f64 / (1u64 << 30) as f64;
    eprintln!(
        "udc-gadget bench: {udc} {method} {} {} KiB: {} MiB in {:.2} s = {:.1} MiB/s, {:.2} CPU s/GiB",
        dir.name(),
        size >> 10,
        m.bytes >> 20,
        m.seconds,
        m.bytes as f64 / (1 << 20) as f64 / m.seconds,
        m.cpu_seconds / gib
    );
}

/// The first and last 8 bytes of a `size`-byte transfer at stream offset
/// `offset` are those of `prbs:seed` there.
fn check_ends(
    seed: u64,
    offset: u64,
    size: usize,
    head: &[u8],
    tail: &[u8],
    what: &str,
) -> Result<(), Error> {
    let p = Pattern::Prbs { seed };
    p.verify(offset, head)
        .and_then(|()| p.verify(offset + (size - tail.len()) as u64, tail))
        .map_err(|m| Error::Check(format!("{what}: data differs from prbs:{seed}: {m}")))
}

/// Keeps `n` transfers in flight: submits 0..n, then completes each in
/// order and submits the one `n` further on.
fn pipeline(
    count: u64,
    n: usize,
    mut submit: impl FnMut(u64) -> Result<(), Error>,
    mut complete: impl FnMut(u64) -> Result<(), Error>,
) -> Result<(), Error> {
    let n = n as u64;
    for k in 0..count.min(n) {
        submit(k)?;
    }
    for k in 0..count {
        complete(k)?;
        if k + n < count {
            submit(k + n)?;
        }
    }
    Ok(())
}

/// Runs every series the arguments ask for.
pub fn run(ctx: &mut Ctx, args: &BenchArgs) -> Result<(), Error> {
    let plan = Plan {
        seconds: args.seconds,
        bytes: args.bytes,
        inflight: args.inflight as usize,
    };
    let sizes = &args.sizes.0;
    let mut seed = 20_000;
    let virtio: Vec<Series> = args
        .methods
        .iter()
        .copied()
        .filter(|m| *m != Series::Dummy)
        .collect();
    if !virtio.is_empty() {
        let mut v = Virtio::setup(ctx)?;
        for method in virtio {
            for dir in [Dir::Out, Dir::In] {
                let mut rate = FIRST_GUESS_VIRTIO;
                for (i, &size) in sizes.iter().enumerate() {
                    seed += 1;
                    let inflight = match (method, dir) {
                        (Series::Rw, _) => 1,
                        (Series::Aio, Dir::In) => AIO_QUEUE,
                        _ => plan.inflight,
                    };
                    let m = plan.measure(size, rate, i == 0, |count| match method {
                        Series::Dmabuf => v.dmabuf(dir, size, count, plan.inflight, seed),
                        Series::Rw => v.rw(dir, size, count, seed),
                        Series::Aio if dir == Dir::Out => v.aio_out(size, count, plan.inflight, seed),
                        Series::Aio => v.aio_in(size, count, seed),
                        Series::Dummy => unreachable!("filtered out above"),
                    })?;
                    report("virtio", method_name(method), dir, size, inflight, &m);
                    rate = m.bytes as f64 / m.seconds;
                }
            }
        }
    }
    if args.methods.contains(&Series::Dummy) {
        dummy(&plan, sizes, &mut seed)?;
    }
    Ok(())
}

fn method_name(s: Series) -> &'static str {
    match s {
        Series::Dmabuf => "dmabuf",
        Series::Rw | Series::Dummy => "rw",
        Series::Aio => "aio",
    }
}

/// The test gadget on virtio-udc, configured by the daemon's host.
struct Virtio<'a> {
    host: &'a mut HostLink,
    g: TestGadget,
    ep_in: u8,
    ep_out: u8,
}

impl<'a> Virtio<'a> {
    fn setup(ctx: &'a mut Ctx) -> Result<Virtio<'a>, Error> {
        let g = TestGadget::bind(gadget::find_udc(ctx.udc.as_deref())?)?;
        let host = &mut ctx.host;
        host.wait_configured(IO_TIMEOUT)?;
        let [ep_in, ep_out] = host.enumerated_endpoint_pair()?.map(|e| e.address);
        Ok(Virtio {
            host,
            g,
            ep_in,
            ep_out,
        })
    }

    fn ep(&self, dir: Dir) -> u8 {
        match dir {
            Dir::In => self.ep_in,
            Dir::Out => self.ep_out,
        }
    }

    /// Starts a host stream of `count` transfers of `size` on `dir`'s
    /// endpoint; IN streams verify what they receive against `pattern`.
    fn stream(&mut self, dir: Dir, pattern: &str, size: usize, count: u64) -> Result<(), Error> {
        self.host.ok(json!({
            "op": "stream_start", "ep": ep_str(self.ep(dir)), "pattern": pattern,
            "transfer_size": size, "depth": HOST_DEPTH, "count": count, "verify": true,
        }))?;
        Ok(())
    }

    /// The stream on `dir`'s endpoint ended after `bytes` with no error.
    fn stream_done(&mut self, dir: Dir, bytes: u64, what: &str) -> Result<(), Error> {
        let s = self.host.stream_wait(self.ep(dir), IO_TIMEOUT)?;
        check(
            s["offset"] == bytes && s["stats"]["errors"] == 0 && s["last_error"].is_null(),
            || format!("{what}: the host stream ended with {s}, expected {bytes} bytes and no error"),
        )
    }

    fn dmabuf(&mut self, dir: Dir, size: usize, count: u64, n: usize, seed: u64) -> Result<Measured, Error> {
        let what = format!("DMABUF {} {} KiB", dir.name(), size >> 10);
        // Closing any file of the endpoint detaches every DMABUF on it:
        // this one stays open until they are detached.
        let ep = self.g.open_ep(dir.ffs_ep())?;
        let mut bufs = Vec::with_capacity(n);
        for _ in 0..n {
            let b = GuestBuf::new(Source::Udmabuf, size)
                .map_err(|e| Error::Setup(format!("udmabuf of {size} bytes: {e}")))?;
            ffs_dmabuf::attach(ep.as_fd(), b.fd()).map_err(io_err(&format!("{what}: DMABUF_ATTACH")))?;
            bufs.push(b);
        }
        let result = self.dmabuf_run(&ep, &mut bufs, dir, size, count, seed, &what);
        // After a failure transfers may be pending; detaching signals
        // their fences (no sync file is used, docs/kernel-bugs.md).
        for b in &bufs {
            let r = ffs_dmabuf::detach(ep.as_fd(), b.fd());
            if result.is_ok() {
                r.map_err(io_err(&format!("{what}: DMABUF_DETACH")))?;
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn dmabuf_run(
        &mut self,
        ep: &File,
        bufs: &mut [GuestBuf],
        dir: Dir,
        size: usize,
        count: u64,
        seed: u64,
        what: &str,
    ) -> Result<Measured, Error> {
        let n = bufs.len();
        let transfer = |b: &GuestBuf| {
            ffs_dmabuf::transfer(ep.as_fd(), b.fd(), size as u64, 0)
                .map_err(io_err(&format!("{what}: DMABUF_TRANSFER")))
        };
        let wait = |b: &GuestBuf| {
            check(b.wait(dir.fence_events(), IO_TIMEOUT), || {
                format!("{what}: the fence did not signal within {IO_TIMEOUT:?}")
            })
        };
        if dir == Dir::In {
            // Warm-up, verified byte for byte by the host.
            for (i, b) in bufs.iter_mut().enumerate() {
                b.write(&pattern(seed, (i * size) as u64, size))
                    .map_err(io_err(what))?;
            }
            self.stream(dir, &format!("prbs:{seed}"), size, n as u64)?;
            bufs.iter().try_for_each(transfer)?;
            bufs.iter().try_for_each(wait)?;
            self.stream_done(dir, (n * size) as u64, &format!("{what} warm-up"))?;
            let zeros = vec![0u8; size];
            for b in bufs.iter_mut() {
                b.write(&zeros).map_err(io_err(what))?;
            }
            self.stream(dir, "zeros", size, count)?;
        } else {
            self.stream(dir, &format!("prbs:{seed}"), size, count)?;
        }
        let meter = Meter::start()?;
        let (mut head, mut tail) = ([0u8; 8], [0u8; 8]);
        pipeline(
            count,
            n,
            |k| transfer(&bufs[k as usize % n]),
            |k| {
                let b = &bufs[k as usize % n];
                wait(b)?;
                if dir == Dir::Out {
                    b.read_at(0, &mut head).map_err(io_err(what))?;
                    b.read_at(size - 8, &mut tail).map_err(io_err(what))?;
                    check_ends(seed, k * size as u64, size, &head, &tail, what)?;
                }
                Ok(())
            },
        )?;
        let m = meter.stop(count * size as u64)?;
        self.stream_done(dir, count * size as u64, what)?;
        Ok(m)
    }

    fn rw(&mut self, dir: Dir, size: usize, count: u64, seed: u64) -> Result<Measured, Error> {
        let what = format!("read/write {} {} KiB", dir.name(), size >> 10);
        let mut f = self.g.open_ep(dir.ffs_ep())?;
        let mut buf = vec![0u8; size];
        match dir {
            Dir::Out => self.stream(dir, &format!("prbs:{seed}"), size, count)?,
            Dir::In => {
                self.stream(dir, &format!("prbs:{seed}"), size, 2)?;
                for k in 0..2u64 {
                    let w = f
                        .write(&pattern(seed, k * size as u64, size))
                        .map_err(io_err(&what))?;
                    check(w == size, || format!("{what}: warm-up write() returned {w}"))?;
                }
                self.stream_done(dir, 2 * size as u64, &format!("{what} warm-up"))?;
                self.stream(dir, "zeros", size, count)?;
            }
        }
        let meter = Meter::start()?;
        for k in 0..count {
            let n = match dir {
                Dir::Out => f.read(&mut buf),
                Dir::In => f.write(&buf),
            }
            .map_err(io_err(&what))?;
            check(n == size, || format!("{what}: transfer {k} moved {n} bytes"))?;
            if dir == Dir::Out {
                check_ends(seed, k * size as u64, size, &buf[..8], &buf[size - 8..], &what)?;
            }
        }
        let m = meter.stop(count * size as u64)?;
        self.stream_done(dir, count * size as u64, &what)?;
        Ok(m)
    }

    fn aio_out(&mut self, size: usize, count: u64, n: usize, seed: u64) -> Result<Measured, Error> {
        let what = format!("AIO out {} KiB", size >> 10);
        self.stream(Dir::Out, &format!("prbs:{seed}"), size, count)?;
        let meter = Meter::start()?;
        let rx = &mut self.g.rx;
        for _ in 0..count.min(n as u64) {
            rx.submit_read(size)
                .map_err(io_err(&format!("{what}: io_submit")))?;
        }
        for k in 0..count {
            let buf = rx
                .wait_read(IO_TIMEOUT)
                .map_err(io_err(&format!("{what}: read {k}")))?
                .ok_or_else(|| {
                    Error::Check(format!("{what}: read {k} did not complete within {IO_TIMEOUT:?}"))
                })?;
            check(buf.len() == size, || {
                format!("{what}: read {k} got {} bytes", buf.len())
            })?;
            check_ends(seed, k * size as u64, size, &buf[..8], &buf[size - 8..], &what)?;
            if k + (n as u64) < count {
                // The same buffer again, whole: each request must be one
                // transfer exactly, or reads would merge transfers.
                rx.submit(Buffer::Read(buf))
                    .map_err(io_err(&format!("{what}: io_submit")))?;
            }
        }
        let m = meter.stop(count * size as u64)?;
        self.stream_done(Dir::Out, count * size as u64, &what)?;
        Ok(m)
    }

    fn aio_in(&mut self, size: usize, count: u64, seed: u64) -> Result<Measured, Error> {
        let what = format!("AIO in {} KiB", size >> 10);
        self.stream(Dir::In, &format!("prbs:{seed}"), size, 2)?;
        for k in 0..2u64 {
            self.g
                .tx
                .submit_write_waiting(Bytes::from(pattern(seed, k * size as u64, size)), IO_TIMEOUT)
                .map_err(io_err(&format!("{what}: warm-up io_submit")))?;
        }
        self.g
            .tx
            .flush(IO_TIMEOUT)
            .map_err(io_err(&format!("{what}: warm-up completions")))?;
        self.stream_done(Dir::In, 2 * size as u64, &format!("{what} warm-up"))?;
        // One zeroed buffer for every write: Bytes clones share it.
        let zeros = Bytes::from(vec![0u8; size]);
        self.stream(Dir::In, "zeros", size, count)?;
        let meter = Meter::start()?;
        for k in 0..count {
            self.g
                .tx
                .submit_write_waiting(zeros.clone(), IO_TIMEOUT)
                .map_err(io_err(&format!("{what}: io_submit {k}")))?;
        }
        self.g
            .tx
            .flush(IO_TIMEOUT)
            .map_err(io_err(&format!("{what}: completions")))?;
        let m = meter.stop(count * size as u64)?;
        self.stream_done(Dir::In, count * size as u64, &what)?;
        Ok(m)
    }
}

/// The name of an errno, for the report lines.
fn errno_name(e: &io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::EPERM) => "EPERM",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::ENODEV) => "ENODEV",
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP",
        Some(libc::ENOTTY) => "ENOTTY",
        Some(libc::EBUSY) => "EBUSY",
        Some(libc::ENOMEM) => "ENOMEM",
        Some(n) => return format!("errno{n}"),
        None => return "unknown".into(),
    };
    name.into()
}

/// The first file named `name` under `dir`, depth first.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).collect();
    entries.sort();
    entries.into_iter().find_map(|p| {
        if p.is_dir() {
            find_file(&p, name)
        } else if p.file_name().is_some_and(|f| f == name) {
            Some(p)
        } else {
            None
        }
    })
}

/// Loads dummy_hcd as a SuperSpeed controller, as virtio-udc runs at
/// SuperSpeed by default. The image ships it without loading it at boot
/// (it binds a UDC of its own as soon as it loads).
fn load_dummy_hcd() -> Result<(), Error> {
    if Path::new("/sys/module/dummy_hcd").exists() {
        return Ok(());
    }
    let ko = find_file(Path::new("/lib/modules"), "dummy_hcd.ko")
        .ok_or_else(|| Error::Setup("no dummy_hcd.ko under /lib/modules".into()))?;
    let out = Command::new("insmod")
        .arg(&ko)
        .arg("is_super_speed=1")
        .output()
        .map_err(|e| Error::Setup(format!("insmod: {e}")))?;
    check(out.status.success(), || {
        format!(
            "insmod {} is_super_speed=1: {}: {}",
            ko.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// The test gadget as the guest's own USB host sees it: its usbfs node
/// and speed (Mb/s, as sysfs gives it).
fn wait_usb_device(timeout: Duration) -> Result<(PathBuf, String), Error> {
    let attr = |d: &Path, a: &str| {
        std::fs::read_to_string(d.join(a))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let want_vendor = format!("{:04x}", gadget::VENDOR);
    let want_product = format!("{:04x}", gadget::PRODUCT);
    let start = Instant::now();
    loop {
        if let Ok(rd) = std::fs::read_dir("/sys/bus/usb/devices") {
            for d in rd.flatten().map(|e| e.path()) {
                if attr(&d, "idVendor") == want_vendor
                    && attr(&d, "idProduct") == want_product
                    && attr(&d, "bConfigurationValue") == "1"
                {
                    let (bus, dev) = (attr(&d, "busnum"), attr(&d, "devnum"));
                    if let (Ok(bus), Ok(dev)) = (bus.parse::<u32>(), dev.parse::<u32>()) {
                        let node = PathBuf::from(format!("/dev/bus/usb/{bus:03}/{dev:03}"));
                        if node.exists() {
                            return Ok((node, attr(&d, "speed")));
                        }
                    }
                }
            }
        }
        if start.elapsed() > timeout {
            return Err(Error::Check(format!(
                "no configured {want_vendor}:{want_product} device with a usbfs node within {timeout:?}"
            )));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The bulk IN and OUT endpoint addresses of interface `iface` (alternate
/// setting 0) in the descriptors a usbfs node reads: the device
/// descriptor, then each configuration's.
fn bulk_endpoints(desc: &[u8], iface: u8) -> Option<(u8, u8)> {
    const INTERFACE: u8 = 4;
    const ENDPOINT: u8 = 5;
    const BULK: u8 = 2;
    let (mut ep_in, mut ep_out) = (None, None);
    let mut in_ours = false;
    let mut rest = desc;
    while rest.len() >= 2 {
        let len = rest[0] as usize;
        if len < 2 || len > rest.len() {
            return None;
        }
        let d = &rest[..len];
        match d[1] {
            INTERFACE if len >= 4 => in_ours = d[2] == iface && d[3] == 0,
            ENDPOINT if len >= 4 && in_ours && d[3] & 3 == BULK => {
                if d[2] & 0x80 != 0 {
                    ep_in.get_or_insert(d[2]);
                } else {
                    ep_out.get_or_insert(d[2]);
                }
            }
            _ => {}
        }
        rest = &rest[len..];
    }
    Some((ep_in?, ep_out?))
}

/// `struct usbdevfs_urb` of include/uapi/linux/usbdevice_fs.h (no
/// isochronous frames).
#[repr(C)]
struct Urb {
    typ: u8,
    endpoint: u8,
    status: i32,
    flags: u32,
    buffer: *mut libc::c_void,
    buffer_length: i32,
    actual_length: i32,
    start_frame: i32,
    number_of_packets: i32,
    error_count: i32,
    signr: u32,
    usercontext: *mut libc::c_void,
}

const fn ioc(dir: u64, nr: u64, size: u64) -> u64 {
    crate::dmabuf::ioc(dir, b'U', nr, size)
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;
const USBDEVFS_SUBMITURB: u64 = ioc(IOC_READ, 10, std::mem::size_of::<Urb>() as u64);
const USBDEVFS_DISCARDURB: u64 = ioc(0, 11, 0);
const USBDEVFS_REAPURBNDELAY: u64 = ioc(IOC_WRITE, 13, std::mem::size_of::<*mut Urb>() as u64);
const USBDEVFS_CLAIMINTERFACE: u64 = ioc(IOC_READ, 15, 4);
const USBDEVFS_URB_TYPE_BULK: u8 = 3;

/// A usbfs device node, with URBs of its own buffers in flight.
struct Usbfs {
    file: File,
    /// Boxed: usbfs keeps each submitted URB's address until it is reaped,
    /// and the vector grows while others are in flight.
    #[allow(clippy::vec_box)]
    urbs: Vec<Box<Urb>>,
    /// Slots with an URB submitted and not yet reaped, oldest first.
    inflight: VecDeque<usize>,
}

impl Usbfs {
    fn open(node: &Path) -> Result<Usbfs, Error> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(node)
            .map_err(|e| Error::Setup(format!("{}: {e}", node.display())))?;
        Ok(Usbfs {
            file,
            urbs: Vec::new(),
            inflight: VecDeque::new(),
        })
    }

    fn ioctl(&self, req: u64, arg: *mut libc::c_void) -> io::Result<()> {
        // SAFETY: each caller passes the argument its request's number
        // encodes, alive across the call (URBs: until reaped).
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), req as _, arg) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn descriptors(&mut self) -> Result<Vec<u8>, Error> {
        let mut d = Vec::new();
        self.file
            .read_to_end(&mut d)
            .map_err(|e| Error::Setup(format!("reading the usbfs descriptors: {e}")))?;
        Ok(d)
    }

    fn claim(&self, iface: u32) -> Result<(), Error> {
        let mut i = iface;
        self.ioctl(USBDEVFS_CLAIMINTERFACE, &mut i as *mut u32 as *mut _)
            .map_err(|e| Error::Setup(format!("USBDEVFS_CLAIMINTERFACE {iface}: {e}")))
    }

    /// Submits a bulk URB on `ep` over `buf`, as slot `slot`.
    fn submit(&mut self, slot: usize, ep: u8, buf: &mut [u8]) -> Result<(), Error> {
        while self.urbs.len() <= slot {
            self.urbs.push(Box::new(Urb {
                typ: 0,
                endpoint: 0,
                status: 0,
                flags: 0,
                buffer: std::ptr::null_mut(),
                buffer_length: 0,
                actual_length: 0,
                start_frame: 0,
                number_of_packets: 0,
                error_count: 0,
                signr: 0,
                usercontext: std::ptr::null_mut(),
            }));
        }
        let urb = &mut *self.urbs[slot];
        *urb = Urb {
            typ: USBDEVFS_URB_TYPE_BULK,
            endpoint: ep,
            buffer: buf.as_mut_ptr() as *mut _,
            buffer_length: buf.len() as i32,
            usercontext: slot as *mut _,
            ..*urb
        };
        let p = urb as *mut Urb as *mut _;
        self.ioctl(USBDEVFS_SUBMITURB, p).map_err(|e| {
            Error::Check(format!(
                "USBDEVFS_SUBMITURB of {} bytes on {ep:#04x}: {e}",
                buf.len()
            ))
        })?;
        self.inflight.push_back(slot);
        Ok(())
    }

    /// Waits for the oldest URB to complete; returns its slot and length.
    fn reap(&mut self, timeout: Duration) -> Result<(usize, usize), Error> {
        let start = Instant::now();
        let mut urb: *mut Urb = std::ptr::null_mut();
        loop {
            match self.ioctl(USBDEVFS_REAPURBNDELAY, &mut urb as *mut *mut Urb as *mut _) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
                Err(e) => return Err(Error::Check(format!("USBDEVFS_REAPURBNDELAY: {e}"))),
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(Error::Check(format!("no URB completed within {timeout:?}")));
            }
            // usbfs is writable when an URB has completed.
            let mut pfd = libc::pollfd {
                fd: self.file.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one pollfd that lives across the call.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
        }
        // SAFETY: usbfs hands back the pointer we submitted: one of ours.
        let (slot, status, actual) =
            unsafe { ((*urb).usercontext as usize, (*urb).status, (*urb).actual_length) };
        let want = self.inflight.pop_front();
        check(want == Some(slot), || {
            format!("URB of slot {slot} completed before slot {want:?}, out of submission order")
        })?;
        check(status == 0, || {
            format!(
                "URB of slot {slot} ended with {}",
                io::Error::from_raw_os_error(-status)
            )
        })?;
        Ok((slot, actual as usize))
    }

    /// Cancels what is in flight and reaps it, so nothing completes into
    /// buffers that are about to go.
    fn discard_all(&mut self) {
        for &slot in &self.inflight {
            let p = &mut *self.urbs[slot] as *mut Urb as *mut _;
            let _ = self.ioctl(USBDEVFS_DISCARDURB, p);
        }
        while !self.inflight.is_empty() {
            let before = self.inflight.len();
            // A discarded URB reaps with an error status; one that does
            // not complete at all is given up on.
            if self.reap(Duration::from_secs(1)).is_err() && self.inflight.len() == before {
                self.inflight.pop_front();
            }
        }
    }
}

/// The test gadget on dummy_hcd, the guest itself the USB host.
struct Dummy {
    g: TestGadget,
    usb: Usbfs,
    ep_in: u8,
    ep_out: u8,
}

fn dummy(plan: &Plan, sizes: &[usize], seed: &mut u64) -> Result<(), Error> {
    load_dummy_hcd()?;
    let g = TestGadget::bind(gadget::find_udc(Some("dummy_udc.0"))?)?;
    let (node, speed) = wait_usb_device(IO_TIMEOUT)?;
    println!("bench: dummy_hcd speed_mbps={speed}");
    let mut usb = Usbfs::open(&node)?;
    let desc = usb.descriptors()?;
    let (ep_in, ep_out) = bulk_endpoints(&desc, 0).ok_or_else(|| {
        Error::Check(format!(
            "{}: no bulk IN and OUT pair in interface 0",
            node.display()
        ))
    })?;
    usb.claim(0)?;

    // dummy_hcd does not set sg_supported, which f_fs's DMABUF interface needs.
    {
        let ep = g.open_ep(1)?;
        let b = GuestBuf::new(Source::Udmabuf, 65536).map_err(|e| Error::Setup(format!("udmabuf: {e}")))?;
        let r = ffs_dmabuf::attach(ep.as_fd(), b.fd());
        println!(
            "bench: dummy_hcd dmabuf_attach={}",
            r.as_ref().map_or_else(errno_name, |()| "ok".into())
        );
        if r.is_ok() {
            ffs_dmabuf::detach(ep.as_fd(), b.fd()).map_err(io_err("DMABUF_DETACH on dummy_hcd"))?;
        }
    }

    // usbfs limits its buffers to 16 MiB in all by default.
    let biggest = sizes
        .iter()
        .copied()
        .filter(|&s| s <= KMALLOC_MAX)
        .max()
        .unwrap_or(0);
    let mb = ((2 * plan.inflight * biggest) >> 20) + 16;
    std::fs::write("/sys/module/usbcore/parameters/usbfs_memory_mb", mb.to_string())
        .map_err(|e| Error::Setup(format!("raising usbcore's usbfs_memory_mb to {mb}: {e}")))?;

    let mut d = Dummy {
        g,
        usb,
        ep_in,
        ep_out,
    };
    for dir in [Dir::Out, Dir::In] {
        let f = d.g.open_ep(dir.ffs_ep())?;
        let mut rate = FIRST_GUESS_DUMMY;
        for &size in sizes {
            *seed += 1;
            if size > KMALLOC_MAX {
                println!(
                    "bench: udc=dummy method=rw dir={} size={size} skipped=f_fs-without-sg-kmallocs-each-request-4MiB-max",
                    dir.name()
                );
                continue;
            }
            // Warm-up over the same buffers, every byte checked; then the
            // timed run with spot checks.
            d.point(&f, dir, size, plan.inflight as u64, plan.inflight, *seed, true)?;
            // That warm-up also primes the code paths.
            let m = plan.measure(size, rate, false, |count| {
                d.point(&f, dir, size, count, plan.inflight, *seed, false)
            })?;
            report("dummy", "rw", dir, size, plan.inflight, &m);
            rate = m.bytes as f64 / m.seconds;
        }
    }
    Ok(())
}

impl Dummy {
    /// `count` transfers of `size` on `dir`: read()/write() on the gadget's
    /// endpoint file in a thread, `n` URBs in flight on the host side. The
    /// sender's `n` buffers hold `prbs:seed` at offsets 0, size, ...;
    /// transfer `j` is buffer `j % n`, and the receiver checks all of it
    /// (`full`) or its first and last 8 bytes.
    #[allow(clippy::too_many_arguments)]
    fn point(
        &mut self,
        ep_file: &File,
        dir: Dir,
        size: usize,
        count: u64,
        n: usize,
        seed: u64,
        full: bool,
    ) -> Result<Measured, Error> {
        let what = format!("dummy_hcd {} {} KiB", dir.name(), size >> 10);
        let offset = move |j: u64| (j % n as u64) * size as u64;
        let check_data = move |j: u64, data: &[u8], what: &str| {
            check(data.len() == size, || {
                format!("{what}: transfer {j} moved {} bytes", data.len())
            })?;
            if full {
                Pattern::Prbs { seed }
                    .verify(offset(j), data)
                    .map_err(|m| Error::Check(format!("{what}: transfer {j} differs from prbs:{seed}: {m}")))
            } else {
                check_ends(
                    seed,
                    offset(j),
                    size,
                    &data[..8],
                    &data[size - 8..],
                    &format!("{what}: transfer {j}"),
                )
            }
        };
        let sender: Vec<Vec<u8>> = (0..n as u64)
            .map(|i| pattern(seed, i * size as u64, size))
            .collect();
        let mut f = ep_file
            .try_clone()
            .map_err(|e| Error::Setup(format!("dup: {e}")))?;
        let ep = match dir {
            Dir::In => self.ep_in,
            Dir::Out => self.ep_out,
        };
        let mut bufs = match dir {
            Dir::In => vec![vec![0u8; size]; n],
            Dir::Out => sender.clone(),
        };

        let meter = Meter::start()?;
        let gadget_what = what.clone();
        let gadget = thread::spawn(move || -> Result<(), Error> {
            let mut buf = vec![0u8; size];
            for j in 0..count {
                match dir {
                    Dir::In => {
                        let w = f
                            .write(&sender[(j % n as u64) as usize])
                            .map_err(io_err(&gadget_what))?;
                        check(w == size, || format!("{gadget_what}: write() {j} returned {w}"))?;
                    }
                    Dir::Out => {
                        let r = f.read(&mut buf).map_err(io_err(&gadget_what))?;
                        check_data(j, &buf[..r], &gadget_what)?;
                    }
                }
            }
            Ok(())
        });
        let slot = move |j: u64| (j % n as u64) as usize;
        let usb = &mut self.usb;
        let mut host = || -> Result<(), Error> {
            for j in 0..count.min(n as u64) {
                usb.submit(slot(j), ep, &mut bufs[slot(j)])?;
            }
            for j in 0..count {
                let (s, actual) = usb.reap(IO_TIMEOUT)?;
                match dir {
                    Dir::In => check_data(j, &bufs[s][..actual], &what)?,
                    Dir::Out => check(actual == size, || format!("{what}: URB {j} sent {actual} bytes"))?,
                }
                if j + (n as u64) < count {
                    usb.submit(s, ep, &mut bufs[s])?;
                }
            }
            Ok(())
        };
        let host = host();
        if host.is_err() {
            self.usb.discard_all();
        }
        // A gadget side that failed leaves the host waiting: its error is
        // the one that explains.
        if gadget.is_finished() || host.is_ok() {
            gadget
                .join()
                .map_err(|_| Error::Check(format!("{what}: the gadget thread panicked")))??;
        }
        host?;
        meter.stop(count * size as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(
            parse_sizes("64K,256K,1M,4M,16M"),
            Ok(Sizes(vec![64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20]))
        );
        assert!(parse_sizes("1000").is_err(), "not whole pages");
        assert!(parse_sizes("128M").is_err(), "larger than a host stream transfer");
        assert!(parse_sizes(",").is_err());
    }

    #[test]
    fn busy_jiffies_leave_out_idle_iowait_and_guest() {
        let stat = "cpu  100 20 300 4000 50 6 7 8 900 90\n\
                    cpu0 50 10 150 2000 25 3 3 4 450 45\n\
                    intr 12345\n";
        assert_eq!(busy_jiffies(stat), Some(100 + 20 + 300 + 6 + 7 + 8));
        assert_eq!(
            busy_jiffies("cpu  1 2 3 4 5 6 7 8\n"),
            Some(1 + 2 + 3 + 6 + 7 + 8)
        );
        assert_eq!(
            busy_jiffies("cpu0 1 2 3 4 5 6 7 8\n"),
            None,
            "only the all-CPU line"
        );
        assert_eq!(busy_jiffies("cpu  1 2 3\n"), None);
        assert_eq!(busy_jiffies("cpu  1 x 3 4 5 6 7 8\n"), None);
    }

    #[test]
    fn counts_fill_the_target_time_or_the_byte_count() {
        let p = Plan {
            seconds: 1.0,
            bytes: None,
            inflight: 4,
        };
        assert_eq!(p.count(1 << 20, 100.0 * (1 << 20) as f64), 100);
        assert_eq!(
            p.count(16 << 20, 10.0 * (1 << 20) as f64),
            8,
            "the pipeline fills twice"
        );
        let p = Plan {
            bytes: Some(3 << 20),
            ..p
        };
        assert_eq!(p.count(1 << 20, 1.0), 3);
        assert_eq!(p.count(16 << 20, 1.0), 1);
    }

    #[test]
    fn pipeline_keeps_n_in_flight_in_order() {
        let log = std::cell::RefCell::new(Vec::new());
        pipeline(
            5,
            2,
            |k| {
                log.borrow_mut().push(format!("s{k}"));
                Ok(())
            },
            |k| {
                log.borrow_mut().push(format!("c{k}"));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(log.into_inner().join(" "), "s0 s1 c0 s2 c1 s3 c2 s4 c3 c4");
    }

    #[test]
    fn ends_are_checked_at_their_stream_offset() {
        let data = pattern(7, 4096, 4096);
        assert!(check_ends(7, 4096, 4096, &data[..8], &data[4088..], "t").is_ok());
        assert!(check_ends(7, 0, 4096, &data[..8], &data[4088..], "t").is_err());
        assert!(check_ends(8, 4096, 4096, &data[..8], &data[4088..], "t").is_err());
    }

    #[test]
    fn bulk_endpoints_come_from_the_first_alternate_setting() {
        let dev = [18u8, 1, 0, 2, 0, 0, 0, 64, 0x6b, 0x1d, 4, 1, 0, 1, 1, 2, 3, 1];
        let cfg = [9u8, 2, 46, 0, 1, 1, 0, 0x80, 50];
        let if0 = [9u8, 4, 0, 0, 2, 0xff, 0, 0, 1];
        let ep_in = [7u8, 5, 0x81, 2, 0, 4, 0];
        let comp = [6u8, 0x30, 0, 0, 0, 0];
        let ep_out = [7u8, 5, 0x02, 2, 0, 4, 0];
        let alt1 = [9u8, 4, 0, 1, 1, 0xff, 0, 0, 1];
        let ep_alt = [7u8, 5, 0x83, 2, 0, 4, 0];
        let all: Vec<u8> = [&dev[..], &cfg, &alt1, &ep_alt, &if0, &ep_in, &comp, &ep_out].concat();
        assert_eq!(bulk_endpoints(&all, 0), Some((0x81, 0x02)));
        assert_eq!(bulk_endpoints(&all, 1), None);
        assert_eq!(bulk_endpoints(&all[..all.len() - 3], 0), None, "truncated");
    }

    #[test]
    fn usbfs_ioctl_numbers_are_the_kernels() {
        assert_eq!(std::mem::size_of::<Urb>(), 56);
        assert_eq!(USBDEVFS_SUBMITURB, 0x8038_550a);
        assert_eq!(USBDEVFS_DISCARDURB, 0x550b);
        assert_eq!(USBDEVFS_REAPURBNDELAY, 0x4008_550d);
        assert_eq!(USBDEVFS_CLAIMINTERFACE, 0x8004_550f);
    }

    #[test]
    fn errnos_have_names() {
        assert_eq!(errno_name(&io::Error::from_raw_os_error(libc::EPERM)), "EPERM");
        assert_eq!(errno_name(&io::Error::from_raw_os_error(1000)), "errno1000");
    }
}
