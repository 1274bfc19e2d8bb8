// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `udc-vm bench`: boots the guest with `udc-gadget bench`, collects its
//! `bench:` lines from the results port, and prints a table, writes a CSV
//! and an SVG plot of throughput per buffer size (docs/vm-tier.md).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::vm::{self, value_name, Coherency, Mode};
use crate::VmArgs;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("QEMU failed ({status}):\n{log}")]
    Qemu { status: String, log: String },
    #[error("the guest's kernel is stuck ({0}); stopped it")]
    Stuck(String),
    #[error("timeout after {0:?}; last console lines:\n{1}")]
    Timeout(Duration, String),
    #[error("the guest did not report the end of udc-gadget bench; last console lines:\n{0}")]
    NoReport(String),
    #[error("udc-gadget bench failed in the guest (exit status {status}):\n{detail}")]
    Guest { status: i32, detail: String },
    #[error("the guest reported no measurement")]
    NoResults,
    #[error("malformed bench line {line:?}: {why}")]
    BadLine { line: String, why: String },
    #[error("the guest kernel log shows {0} problem line(s) (listed above)")]
    KernelLog(usize),
    #[error("{0}")]
    Io(String),
    /// The guest loaded another FunctionFS than the run built.
    #[error("{0}")]
    WrongFfs(String),
}

#[derive(clap::Args, Clone)]
pub struct BenchArgs {
    /// Buffer sizes, comma-separated, K/M binary (guest default 64K,256K,1M,4M,16M).
    #[arg(long)]
    sizes: Option<String>,
    /// Target seconds per measurement (guest default 1).
    #[arg(long)]
    seconds: Option<f64>,
    /// Bytes per measurement instead of a target time (e.g. 256M).
    #[arg(long, conflicts_with = "seconds")]
    bytes: Option<String>,
    /// Buffers in flight: DMABUFs, AIO reads, usbfs URBs (guest default 4).
    #[arg(long)]
    inflight: Option<u32>,
    /// Series: dmabuf, rw, aio (virtio-udc), dummy (dummy_hcd); default all.
    #[arg(long)]
    methods: Option<String>,
    /// CSV output (default bench.csv under --out, or target/bench/bench.csv).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// SVG plot of throughput (default bench.svg beside the CSV's default).
    #[arg(long)]
    plot: Option<PathBuf>,
}

impl BenchArgs {
    /// The guest's command line.
    fn guest_command(&self) -> String {
        let mut c = vec!["udc-gadget".to_string(), "bench".to_string()];
        let mut opt = |name: &str, v: Option<String>| {
            if let Some(v) = v {
                c.push(format!("--{name}"));
                c.push(v);
            }
        };
        opt("sizes", self.sizes.clone());
        opt("seconds", self.seconds.map(|s| s.to_string()));
        opt("bytes", self.bytes.clone());
        opt("inflight", self.inflight.map(|n| n.to_string()));
        opt("methods", self.methods.clone());
        c.iter()
            .map(|s| crate::shell_quote(s))
            .collect::<Vec<_>>()
            .join(" ")
            + "\n"
    }
}

/// What one measurement gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Measured {
        inflight: u32,
        bytes: u64,
        seconds: f64,
        cpu_seconds: f64,
    },
    Skipped(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub udc: String,
    /// How the guest's DMA reached the device in the boot that measured
    /// this (udc-vm's --coherency); `-` for dummy_hcd, which does no DMA.
    pub dma: String,
    pub method: String,
    pub dir: String,
    pub size: u64,
    pub outcome: Outcome,
}

impl Row {
    /// MiB/s and guest CPU seconds per GiB, when measured.
    pub fn rates(&self) -> Option<(f64, f64)> {
        match self.outcome {
            Outcome::Measured {
                bytes,
                seconds,
                cpu_seconds,
                ..
            } => Some((
                bytes as f64 / (1u64 << 20) as f64 / seconds,
                cpu_seconds / (bytes as f64 / (1u64 << 30) as f64),
            )),
            Outcome::Skipped(_) => None,
        }
    }

    /// The UDC, with the DMA mode where that is not dma-direct.
    fn subject(&self) -> String {
        match self.dma.as_str() {
            "" | "-" | "direct" => self.udc.clone(),
            dma => format!("{}+{dma}", self.udc),
        }
    }

    fn series(&self) -> String {
        format!("{} {} {}", self.subject(), self.method, self.dir)
    }
}

/// `bench: SUBJECT key=value`: a finding that is not a measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    pub subject: String,
    pub key: String,
    pub value: String,
}

#[derive(Debug, Default, PartialEq)]
pub struct Report {
    pub rows: Vec<Row>,
    pub facts: Vec<Fact>,
}

/// The `bench:` lines of the results port; other lines (progress, init's)
/// are ignored.
pub fn parse(results: &str) -> Result<Report, Error> {
    let mut r = Report::default();
    for line in results.lines() {
        let Some(rest) = line.trim_end().strip_prefix("bench: ") else {
            continue;
        };
        let bad = |why: &str| Error::BadLine {
            line: line.to_string(),
            why: why.to_string(),
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        if let [subject, kv] = words[..] {
            if !subject.contains('=') {
                let (key, value) = kv
                    .split_once('=')
                    .ok_or_else(|| bad("a finding is SUBJECT key=value"))?;
                r.facts.push(Fact {
                    subject: subject.into(),
                    key: key.into(),
                    value: value.into(),
                });
                continue;
            }
        }
        let mut fields = std::collections::HashMap::new();
        for w in &words {
            let (k, v) = w.split_once('=').ok_or_else(|| bad("a word without '='"))?;
            fields.insert(k, v);
        }
        let text = |k: &str| {
            fields
                .get(k)
                .map(|v| v.to_string())
                .ok_or_else(|| bad(&format!("no {k}")))
        };
        fn num<T: std::str::FromStr>(fields: &std::collections::HashMap<&str, &str>, k: &str) -> Option<T> {
            fields.get(k).and_then(|v| v.parse().ok())
        }
        let need = |k: &str| bad(&format!("no numeric {k}"));
        let outcome = match fields.get("skipped") {
            Some(why) => Outcome::Skipped(why.to_string()),
            None => {
                let seconds: f64 = num(&fields, "seconds").ok_or_else(|| need("seconds"))?;
                let bytes: u64 = num(&fields, "bytes").ok_or_else(|| need("bytes"))?;
                if seconds <= 0.0 || bytes == 0 {
                    return Err(bad("no bytes or no time"));
                }
                Outcome::Measured {
                    inflight: num(&fields, "inflight").ok_or_else(|| need("inflight"))?,
                    bytes,
                    seconds,
                    cpu_seconds: num(&fields, "cpu_seconds").ok_or_else(|| need("cpu_seconds"))?,
                }
            }
        };
        let udc = text("udc")?;
        r.rows.push(Row {
            dma: if udc == "dummy" { "-" } else { "direct" }.into(),
            udc,
            method: text("method")?,
            dir: text("dir")?,
            size: num(&fields, "size").ok_or_else(|| need("size"))?,
            outcome,
        });
    }
    Ok(r)
}

/// `65536` → `64 KiB`.
pub fn size_name(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

/// The table for stdout.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "{:<7} {:<13} {:<7} {:<4} {:>8} {:>9} {:>10} {:>9}\n",
        "udc", "dma", "method", "dir", "size", "MiB/s", "CPU s/GiB", "in flight"
    );
    for row in &r.rows {
        let _ = write!(
            s,
            "{:<7} {:<13} {:<7} {:<4} {:>8}",
            row.udc,
            row.dma,
            row.method,
            row.dir,
            size_name(row.size)
        );
        match (&row.outcome, row.rates()) {
            (Outcome::Measured { inflight, .. }, Some((mib, cpu))) => {
                let _ = writeln!(s, " {mib:>9.1} {cpu:>10.2} {inflight:>9}");
            }
            (Outcome::Skipped(why), _) => {
                let _ = writeln!(s, "  skipped: {why}");
            }
            (Outcome::Measured { .. }, None) => unreachable!("a measured row has rates"),
        }
    }
    for f in &r.facts {
        let _ = writeln!(s, "{}: {} = {}", f.subject, f.key, f.value);
    }
    s
}

/// CSV with a header; a skipped row has empty numbers and its reason.
pub fn csv(r: &Report) -> String {
    let mut s = String::from(
        "udc,dma,method,dir,size,inflight,bytes,seconds,cpu_seconds,mib_per_s,cpu_s_per_gib,skipped\n",
    );
    for row in &r.rows {
        let _ = write!(
            s,
            "{},{},{},{},{},",
            row.udc, row.dma, row.method, row.dir, row.size
        );
        match (&row.outcome, row.rates()) {
            (
                Outcome::Measured {
                    inflight,
                    bytes,
                    seconds,
                    cpu_seconds,
                },
                Some((mib, cpu)),
            ) => {
                let _ = writeln!(
                    s,
                    "{inflight},{bytes},{seconds:.6},{cpu_seconds:.3},{mib:.1},{cpu:.3},"
                );
            }
            (Outcome::Skipped(why), _) => {
                let _ = writeln!(s, ",,,,,,{}", why.replace([',', '"', '\n'], " "));
            }
            (Outcome::Measured { .. }, None) => unreachable!("a measured row has rates"),
        }
    }
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// 1, 2, 5, 10, 20, 50, ... from below `lo` to above `hi`.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut t = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi * 10.0 {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if v >= lo / 2.0 && v <= hi * 2.0 {
                t.push(v);
            }
        }
        decade *= 10.0;
    }
    t
}

/// An SVG line plot of MiB/s against buffer size: log2 x axis, log10 y
/// axis (DMABUF and copying paths differ by an order of magnitude), one
/// polyline per udc/method/direction, colour per udc/method, dashed OUT.
pub fn svg(r: &Report, title: &str) -> String {
    const W: f64 = 900.0;
    const H: f64 = 540.0;
    const L: f64 = 80.0;
    const R: f64 = 680.0;
    const T: f64 = 50.0;
    const B: f64 = 470.0;
    const COLOURS: &[&str] = &["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];

    /// A series' name, direction and (size, MiB/s) points.
    type Series = (String, String, Vec<(u64, f64)>);
    let mut series: Vec<Series> = Vec::new();
    let mut kinds: Vec<String> = Vec::new();
    for row in &r.rows {
        let Some((mib, _)) = row.rates() else { continue };
        let kind = format!("{} {}", row.subject(), row.method);
        if !kinds.contains(&kind) {
            kinds.push(kind.clone());
        }
        match series.iter_mut().find(|(name, _, _)| *name == row.series()) {
            Some((_, _, pts)) => pts.push((row.size, mib)),
            None => series.push((row.series(), row.dir.clone(), vec![(row.size, mib)])),
        }
    }
    let pts = series.iter().flat_map(|(_, _, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(size, mib) in pts {
        x0 = x0.min((size as f64).log2());
        x1 = x1.max((size as f64).log2());
        y0 = y0.min(mib);
        y1 = y1.max(mib);
    }
    if series.is_empty() {
        (x0, x1, y0, y1) = (16.0, 24.0, 1.0, 1000.0);
    }
    if x1 - x0 < 1.0 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    let ticks = log_ticks(y0.max(1e-3), y1.max(1e-3));
    let (ly0, ly1) = (
        ticks.first().copied().unwrap_or(1.0).log10(),
        ticks
            .last()
            .copied()
            .unwrap_or(10.0)
            .log10()
            .max(ticks[0].log10() + 1.0),
    );
    let x = |size: f64| L + (size.log2() - x0) / (x1 - x0) * (R - L);
    let y = |mib: f64| B - (mib.max(1e-3).log10() - ly0) / (ly1 - ly0) * (B - T);

    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"13\">"
    );
    let _ = writeln!(s, "<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">{}</text>",
        (L + R) / 2.0,
        xml_escape(title)
    );
    // Axes, grid and tick labels.
    let _ = writeln!(s, "<g stroke=\"#ccc\" stroke-width=\"1\">");
    let mut e = x0.ceil() as i64;
    while e as f64 <= x1 {
        let px = x((e as f64).exp2());
        let _ = writeln!(s, "<line x1=\"{px:.1}\" y1=\"{T}\" x2=\"{px:.1}\" y2=\"{B}\"/>");
        e += 1;
    }
    for &t in &ticks {
        let py = y(t);
        let _ = writeln!(s, "<line x1=\"{L}\" y1=\"{py:.1}\" x2=\"{R}\" y2=\"{py:.1}\"/>");
    }
    let _ = writeln!(s, "</g>");
    let _ = writeln!(
        s,
        "<path d=\"M{L} {T} V{B} H{R}\" fill=\"none\" stroke=\"black\" stroke-width=\"1.5\"/>"
    );
    let mut e = x0.ceil() as i64;
    while e as f64 <= x1 {
        let px = x((e as f64).exp2());
        let _ = writeln!(
            s,
            "<text class=\"xtick\" x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            B + 18.0,
            size_name(1u64 << e)
        );
        e += 1;
    }
    for &t in &ticks {
        let _ = writeln!(
            s,
            "<text class=\"ytick\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{t}</text>",
            L - 6.0,
            y(t) + 4.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">buffer size (log2 scale)</text>",
        (L + R) / 2.0,
        B + 42.0
    );
    let _ = writeln!(
        s,
        "<text x=\"20\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 20 {})\">MiB/s (log scale)</text>",
        (T + B) / 2.0,
        (T + B) / 2.0
    );
    // One polyline per series, and its legend entry.
    for (i, (name, dir, pts)) in series.iter().enumerate() {
        let kind = name.rsplit_once(' ').map_or(name.as_str(), |(k, _)| k);
        let colour = COLOURS[kinds.iter().position(|k| k == kind).unwrap_or(0) % COLOURS.len()];
        let dash = if dir == "out" {
            " stroke-dasharray=\"7 4\""
        } else {
            ""
        };
        let points: Vec<String> = pts
            .iter()
            .map(|&(size, mib)| format!("{:.1},{:.1}", x(size as f64), y(mib)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline class=\"series\" points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash}><title>{}</title></polyline>",
            points.join(" "),
            xml_escape(name)
        );
        for p in &points {
            let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(s, "<circle cx=\"{cx}\" cy=\"{cy}\" r=\"3\" fill=\"{colour}\"/>");
        }
        let ly = T + 10.0 + i as f64 * 22.0;
        let _ = writeln!(
            s,
            "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/>",
            R + 20.0,
            R + 50.0
        );
        let _ = writeln!(
            s,
            "<text class=\"legend\" x=\"{}\" y=\"{}\">{}</text>",
            R + 58.0,
            ly + 4.0,
            xml_escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn write_file(path: &Path, data: &str) -> Result<(), Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?;
    }
    std::fs::write(path, data).map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}

/// One boot's measurements, with the kernel-log problems it showed.
struct Measured {
    report: Report,
    problems: usize,
    ffs: String,
}

/// Boots the guest once with `udc-gadget bench` and reads its rows.
fn measure(a: &VmArgs, b: &BenchArgs) -> Result<Measured, crate::Error> {
    let o = crate::options(a, Some(900), false)?;
    let stop = Arc::new(AtomicBool::new(false));
    // vm::boot names the results port's file so inside --out.
    // The guest tool's progress lines to stderr while the guest runs
    // (stdout is for the table).
    let tail = vm::follow_lines(
        o.out.join("results.ktap"),
        stop.clone(),
        Duration::from_millis(200),
        |l| {
            if l.starts_with("udc-gadget") {
                eprint!("{l}");
            }
        },
    );
    let booted = vm::boot(&o, &Mode::Script(b.guest_command()));
    stop.store(true, Ordering::SeqCst);
    let _ = tail.join();
    let f = booted?;

    let problems = crate::report_kernel_log(&f.paths.console);
    let console = std::fs::read_to_string(&f.paths.console).unwrap_or_default();
    o.ffs.check_console(&console).map_err(Error::WrongFfs)?;
    if let Some(line) = &f.stuck {
        return Err(Error::Stuck(line.clone()).into());
    }
    if f.timed_out {
        return Err(Error::Timeout(o.timeout.unwrap_or_default(), vm::tail(&f.paths.console, 20)).into());
    }
    let results = std::fs::read_to_string(&f.paths.results).unwrap_or_default();
    match crate::ktap::parse(&results).run_exit {
        Some(0) => {}
        Some(status) => {
            let detail: Vec<&str> = results.lines().filter(|l| !l.starts_with("bench: ")).collect();
            return Err(Error::Guest {
                status,
                detail: detail[detail.len().saturating_sub(10)..].join("\n"),
            }
            .into());
        }
        None if f.qemu_status.is_some_and(|s| !s.success()) => {
            return Err(Error::Qemu {
                status: f.qemu_status.map(|s| s.to_string()).unwrap_or_default(),
                log: vm::tail(&f.paths.qemu_log, 20),
            }
            .into())
        }
        None => return Err(Error::NoReport(vm::tail(&f.paths.console, 20)).into()),
    }
    let mut report = parse(&results)?;
    if report.rows.is_empty() {
        return Err(Error::NoResults.into());
    }
    for row in report.rows.iter_mut().filter(|r| r.dma != "-") {
        row.dma = value_name(a.coherency);
    }
    Ok(Measured {
        report,
        problems: problems.len(),
        ffs: o.ffs.summary(),
    })
}

pub fn run(a: &VmArgs, b: &BenchArgs) -> Result<ExitCode, crate::Error> {
    let default_dir = a.out.clone().unwrap_or_else(|| PathBuf::from("target/bench"));
    let csv_path = b.csv.clone().unwrap_or_else(|| default_dir.join("bench.csv"));
    let svg_path = b.plot.clone().unwrap_or_else(|| default_dir.join("bench.svg"));

    // Under a vIOMMU the rows only mean something next to dma-direct's,
    // measured the same way in the same run: two boots, the same methods
    // (by default the DMABUF and read/write ones the IOMMU translates).
    let boots: Vec<(VmArgs, BenchArgs)> = if a.coherency.viommu() {
        let methods = b.methods.clone().or_else(|| Some("dmabuf,rw".into()));
        [Coherency::Direct, a.coherency]
            .into_iter()
            .map(|c| {
                let mut va = a.clone();
                va.coherency = c;
                let base = a
                    .out
                    .clone()
                    .unwrap_or_else(|| std::env::temp_dir().join(format!("udc-vm.{}", std::process::id())));
                va.out = Some(base.join(value_name(c)));
                let mut ba = b.clone();
                ba.methods = methods.clone();
                (va, ba)
            })
            .collect()
    } else {
        vec![(a.clone(), b.clone())]
    };
    let mut report = Report::default();
    let mut problems = 0;
    let mut ffs = String::new();
    for (va, ba) in &boots {
        if boots.len() > 1 {
            eprintln!("udc-vm: bench with --coherency {}", value_name(va.coherency));
        }
        let m = measure(va, ba)?;
        report.rows.extend(m.report.rows);
        for f in m.report.facts {
            if !report.facts.contains(&f) {
                report.facts.push(f);
            }
        }
        problems += m.problems;
        ffs = m.ffs;
    }
    print!("{}", table(&report));
    println!("f_fs: {ffs}");
    write_file(&csv_path, &csv(&report))?;
    let title = format!(
        "udc-vm bench: bulk throughput, {} guest, {} vCPUs",
        value_name(a.accel).to_uppercase(),
        a.cpus
    );
    write_file(&svg_path, &svg(&report, &title))?;
    eprintln!("udc-vm: CSV: {}", csv_path.display());
    eprintln!("udc-vm: plot: {}", svg_path.display());
    if problems > 0 {
        return Err(Error::KernelLog(problems).into());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESULTS: &str = "udc-gadget bench: virtio dmabuf out 64 KiB: ...\n\
        bench: udc=virtio method=dmabuf dir=out size=65536 inflight=4 bytes=104857600 seconds=0.500000 cpu_seconds=0.250\n\
        bench: udc=virtio method=dmabuf dir=out size=1048576 inflight=4 bytes=1073741824 seconds=2.000000 cpu_seconds=0.500\n\
        bench: udc=virtio method=rw dir=in size=65536 inflight=1 bytes=52428800 seconds=0.500000 cpu_seconds=0.400\n\
        bench: dummy_hcd dmabuf_attach=EPERM\n\
        bench: udc=dummy method=rw dir=in size=16777216 skipped=too-big\n\
        udc-init: run.sh exit 0\n";

    #[test]
    fn bench_lines_parse_and_the_rest_is_ignored() {
        let r = parse(RESULTS).unwrap();
        assert_eq!(r.rows.len(), 4);
        assert_eq!(
            r.rows[1],
            Row {
                udc: "virtio".into(),
                dma: "direct".into(),
                method: "dmabuf".into(),
                dir: "out".into(),
                size: 1 << 20,
                outcome: Outcome::Measured {
                    inflight: 4,
                    bytes: 1 << 30,
                    seconds: 2.0,
                    cpu_seconds: 0.5
                },
            }
        );
        assert_eq!(r.rows[1].rates(), Some((512.0, 0.5)));
        assert_eq!(r.rows[3].outcome, Outcome::Skipped("too-big".into()));
        assert_eq!(r.rows[3].rates(), None);
        assert_eq!(
            r.facts,
            vec![Fact {
                subject: "dummy_hcd".into(),
                key: "dmabuf_attach".into(),
                value: "EPERM".into()
            }]
        );
    }

    #[test]
    fn malformed_bench_lines_are_errors() {
        for bad in [
            "bench: udc=virtio method=rw dir=in size=4096 inflight=1 bytes=10 cpu_seconds=1\n",
            "bench: udc=virtio method=rw dir=in size=4096 inflight=1 bytes=0 seconds=1 cpu_seconds=1\n",
            "bench: udc=virtio method=rw size=4096 inflight=1 bytes=10 seconds=1 cpu_seconds=1\n",
            "bench: udc=virtio oops\n",
            "bench: dummy_hcd oops\n",
        ] {
            assert!(matches!(parse(bad), Err(Error::BadLine { .. })), "{bad}");
        }
    }

    #[test]
    fn table_has_a_row_per_measurement_and_the_findings() {
        let t = table(&parse(RESULTS).unwrap());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 1 + 4 + 1, "{t}");
        assert!(lines[0].contains("MiB/s") && lines[0].contains("CPU s/GiB"));
        assert!(
            lines[2].contains("1 MiB") && lines[2].contains("512.0") && lines[2].contains("0.50"),
            "{t}"
        );
        assert!(lines[4].contains("skipped: too-big"), "{t}");
        assert_eq!(lines[5], "dummy_hcd: dmabuf_attach = EPERM");
    }

    #[test]
    fn csv_has_a_header_and_one_line_per_row() {
        let c = csv(&parse(RESULTS).unwrap());
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(lines.len(), 5);
        let cols = lines[0].split(',').count();
        assert!(lines.iter().all(|l| l.split(',').count() == cols), "{c}");
        assert_eq!(
            lines[2],
            "virtio,direct,dmabuf,out,1048576,4,1073741824,2.000000,0.500,512.0,0.500,"
        );
        assert_eq!(lines[4], "dummy,-,rw,in,16777216,,,,,,,too-big");
    }

    #[test]
    fn svg_has_a_polyline_per_series_axes_and_a_legend() {
        let s = svg(&parse(RESULTS).unwrap(), "t <1>");
        assert!(s.starts_with("<svg ") && s.trim_end().ends_with("</svg>"));
        // Two series with measurements: virtio dmabuf out (2 points), virtio rw in.
        assert_eq!(s.matches("<polyline").count(), 2, "{s}");
        assert_eq!(s.matches("class=\"legend\"").count(), 2);
        assert!(s.contains(">virtio dmabuf out</text>") && s.contains(">virtio rw in</text>"));
        assert!(s.contains(">64 KiB</text>") && s.contains(">1 MiB</text>") && s.contains(">256 KiB</text>"));
        assert!(s.contains("buffer size (log2 scale)") && s.contains("MiB/s (log scale)"));
        assert!(s.contains(">100</text>") && s.contains(">500</text>"), "{s}");
        assert!(s.contains("t &lt;1&gt;"), "the title is escaped");
        assert!(s.contains("stroke-dasharray"), "OUT is dashed");
        let line = s
            .lines()
            .find(|l| l.contains("virtio dmabuf out</title>"))
            .unwrap();
        let pts = line.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(pts.split(' ').count(), 2);
    }

    #[test]
    fn sizes_have_short_names() {
        assert_eq!(size_name(65536), "64 KiB");
        assert_eq!(size_name(16 << 20), "16 MiB");
        assert_eq!(size_name(1 << 30), "1 GiB");
        assert_eq!(size_name(1000), "1000 B");
    }

    #[test]
    fn the_guest_gets_only_the_options_given() {
        let b = BenchArgs {
            sizes: Some("64K,1M".into()),
            seconds: None,
            bytes: Some("256M".into()),
            inflight: None,
            methods: None,
            csv: None,
            plot: None,
        };
        assert_eq!(
            b.guest_command(),
            "udc-gadget bench --sizes 64K,1M --bytes 256M\n"
        );
    }
}
