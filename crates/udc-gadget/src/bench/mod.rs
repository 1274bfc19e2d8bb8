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

mod dummy;
pub(crate) use dummy::load_dummy_hcd;
mod measure;
mod virtio;

use std::time::Duration;

use crate::error::Error;
use crate::gadget;
use crate::support::Ctx;

use self::dummy::dummy;
use self::measure::{report, Plan};
use self::virtio::Virtio;

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
}
