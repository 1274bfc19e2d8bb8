// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Protocol-tier benchmark: the real daemon, driven by the fake guest over
//! vhost-user, with the host side streaming through the control socket.
//! Prints GiB/s and transfers/s for IN and OUT at each size, next to the
//! host's memcpy bandwidth measured in the same run.

mod common;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use clap::Parser;
use common::{Ctl, Daemon};
use serde_json::json;
use udc_harness::{BufferSpec, FakeGadget, Harness, HarnessOptions};

#[derive(Parser)]
#[command(about = "Benchmark vhost-device-udc through the protocol tier (no QEMU)")]
struct Args {
    /// Transfer sizes in KiB.
    #[arg(long, value_delimiter = ',', default_values_t = [4u64, 16, 64, 256, 1024, 4096, 16384])]
    sizes_kib: Vec<u64>,
    /// Guest requests kept in flight per direction.
    #[arg(long, default_value_t = 8)]
    depth: usize,
    /// Bytes to move per measurement, in MiB (small sizes are capped by --max-transfers).
    #[arg(long, default_value_t = 512)]
    mib: u64,
    #[arg(long, default_value_t = 20000)]
    max_transfers: u64,
    /// Split each guest buffer into one segment per 4 KiB page, as a udmabuf
    /// arrives from FunctionFS.
    #[arg(long)]
    per_page: bool,
    /// Write CSV here as well.
    #[arg(long)]
    csv: Option<std::path::PathBuf>,
    /// Run the daemon with --pcap into this new file, to measure what the
    /// bus capture costs (compare with a run without).
    #[arg(long, value_name = "FILE")]
    pcap: Option<std::path::PathBuf>,
    /// Put the device behind an IOMMU, as QEMU does with a vIOMMU: the
    /// fake guest acks ACCESS_PLATFORM, maps its memory for the device and
    /// answers the device's misses a 4 KiB page at a time (docs/iommu.md),
    /// to measure what translation costs (compare with a run without).
    #[arg(long)]
    iommu: bool,
    /// Run the daemon with --poll-us: its worker watches a drained queue
    /// this many microseconds before sleeping (default: the daemon's own,
    /// 50; 0 to compare with a worker that does not poll).
    #[arg(long, value_name = "US")]
    poll_us: Option<u64>,
    /// Round trips measured per latency row (0- and 4 KiB transfers, one
    /// at a time); 0 leaves the latency rows out.
    #[arg(long, default_value_t = 2000)]
    latency_transfers: u64,
}

/// Host transfers the stream keeps in flight in the throughput rows.
const HOST_DEPTH: usize = 4;

fn memcpy_gib_s(size: usize) -> f64 {
    let src = vec![0x5au8; size];
    let mut dst = vec![0u8; size];
    let total: usize = (1usize << 30).max(size * 8);
    dst.copy_from_slice(&src);
    let start = Instant::now();
    let mut done = 0;
    while done < total {
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
        done += size;
    }
    done as f64 / start.elapsed().as_secs_f64() / (1u64 << 30) as f64
}

/// memcpy as a row's copies touch memory: `size` bytes at a time from
/// `sources` buffers in turn (the guest's, one per request in flight) into
/// `dests` (the host's, one per transfer in flight). Once the buffers
/// together outgrow the CPU's cache, this is what one copy of each byte
/// can reach; [`memcpy_gib_s`] copies one buffer again and again, from
/// cache.
fn memcpy_working_set_gib_s(size: usize, sources: usize, dests: usize) -> f64 {
    let src: Vec<Vec<u8>> = (0..sources).map(|_| vec![0x5au8; size]).collect();
    let mut dst: Vec<Vec<u8>> = (0..dests).map(|_| vec![0u8; size]).collect();
    let total: usize = (1usize << 30).max(size * 2 * (sources + dests));
    for (k, d) in dst.iter_mut().enumerate() {
        d.copy_from_slice(&src[k % sources]);
    }
    let start = Instant::now();
    let (mut done, mut k) = (0, 0);
    while done < total {
        dst[k % dests].copy_from_slice(&src[k % sources]);
        std::hint::black_box(&mut dst);
        done += size;
        k += 1;
    }
    done as f64 / start.elapsed().as_secs_f64() / (1u64 << 30) as f64
}

struct Row {
    dir: &'static str,
    size: u64,
    count: u64,
    secs: f64,
    /// The daemon's CPU time (all threads) during the row, microseconds,
    /// and its context switches (voluntary and not); None from a daemon
    /// older than `status`'s `process` (VHOST_DEVICE_UDC, to compare).
    usage: Option<(u64, u64)>,
}

impl Row {
    /// The daemon's CPU microseconds and context switches per transfer,
    /// printed; "-" from a daemon that does not report them.
    fn usage_per_transfer(&self) -> (String, String) {
        let per = |n: u64| n as f64 / self.count as f64;
        self.usage.map_or(("-".into(), "-".into()), |(c, s)| {
            (format!("{:.1}", per(c)), format!("{:.2}", per(s)))
        })
    }
}

/// The daemon's CPU time and context switches so far (`status`'s
/// `process`), so a row can report what it cost, which a shared machine's
/// load moves far less than the rate.
fn daemon_usage(ctl: &mut Ctl) -> Result<Option<(u64, u64)>, String> {
    let s = ctl.req(json!({"op": "status"}))?;
    let p = &s["process"];
    let n = |k: &str| p[k].as_u64();
    Ok((|| {
        Some((
            n("user_us")? + n("system_us")?,
            n("voluntary_switches")? + n("involuntary_switches")?,
        ))
    })())
}

/// One measurement: `count` transfers of `size` bytes one way, `depth`
/// guest requests in flight.
#[derive(Clone, Copy)]
struct Measure {
    is_in: bool,
    size: u64,
    count: u64,
    depth: usize,
    /// Host transfers the stream keeps in flight.
    host_depth: usize,
    per_page: bool,
}

/// What one measurement gave: its row, and each transfer's round trip
/// (from the guest's submission to its completion) when asked for.
fn run(
    h: &mut Harness,
    ctl: &mut Ctl,
    m: Measure,
    mut round_trips: Option<&mut Vec<Duration>>,
) -> Result<Row, String> {
    let Measure {
        is_in,
        size,
        count,
        depth,
        host_depth,
        per_page,
    } = m;
    let (ep, name) = if is_in {
        (0x81u8, "ep1in")
    } else {
        (0x02u8, "ep2out")
    };
    let spec = if per_page {
        BufferSpec::per_page(size)
    } else {
        BufferSpec::contiguous(size)
    };
    let mut bufs = Vec::new();
    for _ in 0..depth {
        // A zero-length request has no buffer (its one page goes unused).
        bufs.push(
            h.alloc_buffer(&spec.clone().with_page_aligned(true))
                .map_err(|e| e.to_string())?,
        );
    }
    // First each buffer once, untimed: fresh guest pages fault in on first
    // touch, in the guest and in the daemon's mapping (one fault per page,
    // zeroed), which a guest's DMA buffers in use have long done; counted,
    // that was 40% of a 16 MiB row.
    let warm = if size == 0 { 0 } else { depth as u64 };
    // The host side: a stream that discards IN data / sends zeros OUT, so
    // the measurement is the transport and the DMA engine.
    ctl.req(
        json!({"op": "stream_start", "ep": name, "pattern": "zeros", "verify": false,
        "transfer_size": size, "depth": host_depth, "count": warm + count}),
    )?;
    let warm_ups: Vec<_> = bufs
        .iter()
        .take(warm as usize)
        .enumerate()
        .map(|(i, b)| h.submit_buffer(ep, 0, b, u64::MAX - i as u64))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    for x in warm_ups {
        let c = h
            .wait_completion(x, Duration::from_secs(30))
            .map_err(|e| e.to_string())?;
        if !c.is_ok() {
            return Err(format!("{name} warm-up transfer failed: {c:?}"));
        }
    }
    let before = daemon_usage(ctl)?;
    let start = Instant::now();
    let mut inflight = VecDeque::new();
    let mut submitted = 0u64;
    let mut done = 0u64;
    while done < count {
        while inflight.len() < depth && submitted < count {
            let b = &bufs[(submitted % depth as u64) as usize];
            let x = if size == 0 {
                h.submit(ep, 0, 0, &[], submitted)
            } else {
                h.submit_buffer(ep, 0, b, submitted)
            };
            inflight.push_back((x.map_err(|e| e.to_string())?, Instant::now()));
            submitted += 1;
        }
        let (x, at) = inflight.pop_front().unwrap();
        let c = h
            .wait_completion(x, Duration::from_secs(30))
            .map_err(|e| e.to_string())?;
        if let Some(v) = round_trips.as_deref_mut() {
            v.push(at.elapsed());
        }
        if !c.is_ok() {
            return Err(format!("{name} transfer {done} failed: {c:?}"));
        }
        done += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let after = daemon_usage(ctl)?;
    let s = ctl.wait_stream(name, Duration::from_secs(30))?;
    if s["last_error"] != serde_json::Value::Null {
        return Err(format!("{name} stream: {}", s["last_error"]));
    }
    for b in bufs {
        h.free_buffer(b).map_err(|e| e.to_string())?;
    }
    Ok(Row {
        dir: if is_in { "IN" } else { "OUT" },
        size,
        count,
        secs,
        usage: before.zip(after).map(|(b, a)| (a.0 - b.0, a.1 - b.1)),
    })
}

fn main() {
    let args = Args::parse();
    if let Err(e) = real_main(&args) {
        eprintln!("udc-proto-bench: {e}");
        std::process::exit(1);
    }
}

fn real_main(args: &Args) -> Result<(), String> {
    let mut daemon_args = vec!["--speed".to_string(), "super".into()];
    if let Some(p) = &args.pcap {
        daemon_args.extend(["--pcap".into(), p.display().to_string()]);
    }
    if let Some(us) = args.poll_us {
        daemon_args.extend(["--poll-us".into(), us.to_string()]);
    }
    let d = Daemon::start(&daemon_args.iter().map(String::as_str).collect::<Vec<_>>())?;
    let opts = HarnessOptions {
        iommu: args.iommu,
        ..HarnessOptions::default()
    };
    let mut h = Harness::connect(&d.socket, opts.with_mem_size(1 << 30)).map_err(|e| e.to_string())?;
    let mut g = FakeGadget::new();
    g.connect_and_configure(&mut h, Duration::from_secs(20))
        .map_err(|e| e.to_string())?;
    let mut ctl = Ctl::connect(&d.control)?;

    let big = memcpy_gib_s(64 << 20);
    let cached = memcpy_gib_s(4 << 20);
    println!("host memcpy: {big:.1} GiB/s (64 MiB buffers), {cached:.1} GiB/s (4 MiB, in cache);");
    println!(
        "each row compares with memcpy of its own size, measured just before it: one buffer \
         copied again and again (memcpy), and as the row's copies touch memory, {} guest \
         buffers in turn into {HOST_DEPTH} host buffers (working set)",
        args.depth
    );
    println!(
        "guest buffers: {}, {} requests in flight; host: one stream, {HOST_DEPTH} transfers in flight",
        if args.per_page {
            "one segment per 4 KiB page"
        } else {
            "one segment each"
        },
        args.depth
    );
    println!(
        "cpu: the daemon's CPU time per transfer, all threads; switches: its context switches per transfer"
    );
    if let Some(p) = &args.pcap {
        println!("the bus captured into {} (--pcap)", p.display());
    }
    if let Some(us) = args.poll_us {
        println!("the daemon watches a drained queue {us} us before it sleeps (--poll-us)");
    }
    if args.iommu {
        println!(
            "the device behind an IOMMU: every access translated, the IOTLB filled a 4 KiB page at a time"
        );
    }
    println!();
    println!(
        "{:<4} {:>7} {:>6} {:>7} {:>11} {:>7} {:>5} {:>12} {:>5} {:>7} {:>8}",
        "dir",
        "size",
        "count",
        "GiB/s",
        "transfers/s",
        "memcpy",
        "of",
        "working set",
        "of",
        "cpu us",
        "switches"
    );
    let mut csv = String::from(
        "direction,size_bytes,transfers,seconds,gib_per_s,transfers_per_s,memcpy_gib_per_s,\
         working_set_memcpy_gib_per_s,daemon_cpu_us_per_transfer,daemon_switches_per_transfer\n",
    );
    for &kib in &args.sizes_kib {
        let size = kib * 1024;
        let count = ((args.mib << 20) / size).clamp(64, args.max_transfers);
        // The ceilings for this size, measured now: memcpy of one buffer
        // (from cache), and over the row's working set.
        let ceiling = memcpy_gib_s(size as usize);
        let ws = memcpy_working_set_gib_s(size as usize, args.depth, HOST_DEPTH);
        for is_in in [true, false] {
            let m = Measure {
                is_in,
                size,
                count,
                depth: args.depth,
                host_depth: HOST_DEPTH,
                per_page: args.per_page,
            };
            let r = run(&mut h, &mut ctl, m, None)?;
            let gib = (r.size * r.count) as f64 / r.secs / (1u64 << 30) as f64;
            let tps = r.count as f64 / r.secs;
            let (cpu, sw) = r.usage_per_transfer();
            let size_s = if r.size >= 1 << 20 {
                format!("{} MiB", r.size >> 20)
            } else {
                format!("{} KiB", r.size >> 10)
            };
            println!(
                "{:<4} {:>7} {:>6} {:>7.2} {:>11.0} {:>7.1} {:>4.0}% {:>12.1} {:>4.0}% {:>7} {:>8}",
                r.dir,
                size_s,
                r.count,
                gib,
                tps,
                ceiling,
                100.0 * gib / ceiling,
                ws,
                100.0 * gib / ws,
                cpu,
                sw
            );
            csv.push_str(&format!(
                "{},{},{},{:.6},{:.4},{:.1},{:.2},{:.2},{},{}\n",
                r.dir,
                r.size,
                r.count,
                r.secs,
                gib,
                tps,
                ceiling,
                ws,
                cpu.replace('-', ""),
                sw.replace('-', "")
            ));
        }
    }
    if args.latency_transfers > 0 {
        latency(&mut h, &mut ctl, args, &mut csv)?;
    }
    if let Some(p) = &args.csv {
        std::fs::write(p, csv).map_err(|e| format!("{}: {e}", p.display()))?;
        println!("\nCSV written to {}", p.display());
    }
    Ok(())
}

/// The `q` quantile of sorted durations, in microseconds.
fn quantile_us(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// Round trips one transfer at a time (0 bytes: the transport alone; 4 KiB:
/// one page), then requests per second at depths 1, 8 and 64.
fn latency(h: &mut Harness, ctl: &mut Ctl, args: &Args, csv: &mut String) -> Result<(), String> {
    let n = args.latency_transfers;
    println!();
    println!("round trip, one request at a time ({n} each): guest submission to completion");
    println!(
        "{:<4} {:>9} {:>10} {:>10} {:>10}",
        "dir", "size", "p50 us", "p99 us", "max us"
    );
    csv.push_str("\ndirection,size_bytes,transfers,p50_us,p99_us,max_us\n");
    for size in [0u64, 4096] {
        for is_in in [true, false] {
            let mut rt = Vec::with_capacity(n as usize);
            let m = Measure {
                is_in,
                size,
                count: n,
                depth: 1,
                host_depth: 4,
                per_page: false,
            };
            let r = run(h, ctl, m, Some(&mut rt))?;
            rt.sort();
            let (p50, p99) = (quantile_us(&rt, 0.5), quantile_us(&rt, 0.99));
            let max = rt.last().map_or(0.0, |d| d.as_secs_f64() * 1e6);
            println!(
                "{:<4} {:>7} B {:>10.1} {:>10.1} {:>10.1}",
                r.dir, size, p50, p99, max
            );
            csv.push_str(&format!("{},{size},{n},{p50:.2},{p99:.2},{max:.2}\n", r.dir));
        }
    }
    println!();
    println!("4 KiB requests per second by depth (requests the guest keeps in flight)");
    println!(
        "{:<4} {:>6} {:>12} {:>7} {:>8}",
        "dir", "depth", "requests/s", "cpu us", "switches"
    );
    csv.push_str(
        "\ndirection,size_bytes,depth,transfers,requests_per_s,daemon_cpu_us_per_transfer,\
         daemon_switches_per_transfer\n",
    );
    let count = (n * 10).max(1000);
    for depth in [1usize, 8, 64] {
        for is_in in [true, false] {
            let m = Measure {
                is_in,
                size: 4096,
                count,
                depth,
                // As many host transfers as guest requests (at least 4):
                // neither side waits for the other's queue.
                host_depth: depth.clamp(4, 64),
                per_page: false,
            };
            let r = run(h, ctl, m, None)?;
            let rps = r.count as f64 / r.secs;
            let (cpu, sw) = r.usage_per_transfer();
            println!("{:<4} {:>6} {:>12.0} {:>7} {:>8}", r.dir, depth, rps, cpu, sw);
            csv.push_str(&format!(
                "{},4096,{depth},{},{rps:.1},{},{}\n",
                r.dir,
                r.count,
                cpu.replace('-', ""),
                sw.replace('-', "")
            ));
        }
    }
    Ok(())
}
