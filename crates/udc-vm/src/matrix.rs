// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `udc-vm matrix`: the VM suite on a list of kernels and FunctionFS
//! builds, one table of kernel and f_fs against case, each cell ok or the
//! first line that failed it (a kernel-log line where there is one).
//! Markdown on stdout and in a file, CSV beside it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::ktap::{Case, Outcome};
use crate::suite::{self, Controllers, TestArgs};
use crate::vm::{value_name, Accel, BusSpeed, Coherency};
use crate::{locate, options, Error, VmArgs};

#[derive(Args, Debug, Clone)]
pub struct MatrixArgs {
    /// QEMU with vhost-user-udc-pci (default: built by qemu/build.sh).
    #[arg(long)]
    pub qemu: Option<PathBuf>,
    /// Debian 6.12 kernels: `all` (every version the archive serves,
    /// bookworm-backports' included), `newest`, or versions such as
    /// 6.12.95+deb12,6.12.118+deb12; `none` for your trees alone.
    #[arg(long, default_value = "all")]
    pub kernels: String,
    /// A kernel tree you built (repeatable): a column of its own.
    #[arg(long = "tree", value_name = "DIR")]
    pub trees: Vec<PathBuf>,
    /// The FunctionFS of each column, comma-separated: `stock` (the
    /// kernel's), `series` (the kernel's with patches/linux applied), or a
    /// Debian version (6.12.43: that version's f_fs built for the kernel).
    #[arg(long, default_value = "stock,series")]
    pub ffs: String,
    /// The cases (udc-vm test --filter; `catalogue` is the default plan).
    #[arg(long, default_value = "catalogue,lifecycle")]
    pub filter: String,
    /// Which controller: sg, no-sg or both.
    #[arg(long, value_enum, default_value_t = Controllers::Sg)]
    pub controller: Controllers,
    /// The kernel command line's extra options for every column.
    #[arg(long, default_value = "")]
    pub append: String,
    /// Boot with --debug-kernel-options.
    #[arg(long)]
    pub debug_kernel_options: bool,
    /// --coherency for every column.
    #[arg(long, value_enum, default_value_t = Coherency::Direct)]
    pub coherency: Coherency,
    /// Seconds each boot may take.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Directory for each column's logs (default: target/matrix).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The table as markdown (default: OUT/matrix.md); CSV next to it.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

/// One column: a kernel and an f_fs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    kernel: Kernel,
    ffs: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kernel {
    Debian(String),
    Tree(PathBuf),
}

impl Column {
    fn title(&self) -> String {
        let k = match &self.kernel {
            Kernel::Debian(v) => v.trim_end_matches("+deb12").to_string(),
            Kernel::Tree(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let f = match self.ffs.as_str() {
            "stock" => "stock f_fs".to_string(),
            "series" => "fix series".to_string(),
            v => format!("f_fs {v}"),
        };
        format!("{k} {f}")
    }

    fn dir(&self) -> String {
        self.title().replace([' ', '/'], "-")
    }
}

/// The Debian kernels `spec` names.
fn debian_kernels(spec: &str) -> Result<Vec<String>, Error> {
    if spec == "none" {
        return Ok(Vec::new());
    }
    if spec != "all" && spec != "newest" {
        return Ok(spec.split(',').map(str::to_string).collect());
    }
    let root = locate::repo_root()
        .ok_or_else(|| Error::Missing("no virtio-udc checkout (set VIRTIO_UDC_ROOT)".into()))?;
    let out = std::process::Command::new(root.join("images/build.sh"))
        .arg("--list-kernels")
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Error::Missing(format!("images/build.sh --list-kernels: {e}")))?;
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("6.12."))
        .map(str::to_string)
        .collect();
    if v.is_empty() {
        return Err(Error::Missing(
            "Debian serves no 6.12 kernel (apt-get update?)".into(),
        ));
    }
    if spec == "newest" {
        v = v.split_off(v.len() - 1);
    }
    Ok(v)
}

fn columns(m: &MatrixArgs) -> Result<Vec<Column>, Error> {
    let mut kernels: Vec<Kernel> = debian_kernels(&m.kernels)?
        .into_iter()
        .map(Kernel::Debian)
        .collect();
    kernels.extend(m.trees.iter().cloned().map(Kernel::Tree));
    if kernels.is_empty() {
        return Err(Error::Usage("no kernel: give --kernels or --tree".into()));
    }
    let mut cols = Vec::new();
    for k in &kernels {
        for f in m.ffs.split(',').filter(|f| !f.is_empty()) {
            if f != "stock" && f != "series" && !f.starts_with("6.12.") {
                return Err(Error::Usage(format!(
                    "--ffs {f}: say stock, series or a Debian 6.12 version"
                )));
            }
            cols.push(Column {
                kernel: k.clone(),
                ffs: f.to_string(),
            });
        }
    }
    Ok(cols)
}

/// The patches of the fix series.
fn series() -> Result<Vec<PathBuf>, Error> {
    let root = locate::repo_root()
        .ok_or_else(|| Error::Missing("no virtio-udc checkout (set VIRTIO_UDC_ROOT)".into()))?;
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("patches/linux"))
        .map_err(|e| Error::Missing(format!("patches/linux: {e}")))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .collect();
    v.sort();
    Ok(v)
}

/// `udc-vm test`'s options for one column.
fn column_args(m: &MatrixArgs, c: &Column, out: &Path) -> Result<VmArgs, Error> {
    let (kernel_version, kdir) = match &c.kernel {
        Kernel::Debian(v) => (Some(v.clone()), None),
        Kernel::Tree(p) => (None, Some(p.clone())),
    };
    let (ffs_patch, ffs_version) = match c.ffs.as_str() {
        "stock" => (Vec::new(), None),
        "series" => (series()?, None),
        v => (Vec::new(), Some(v.to_string())),
    };
    Ok(VmArgs {
        qemu: m.qemu.clone(),
        image: None,
        kernel: None,
        modules: None,
        kdir,
        kernel_version,
        ffs_patch,
        ffs_source: None,
        ffs_version,
        debug_kernel_options: m.debug_kernel_options,
        daemon: None,
        daemon_args: Vec::new(),
        inject: Vec::new(),
        seed: None,
        coherency: m.coherency,
        memory: "1G".into(),
        cpus: 2,
        speed: BusSpeed::Super,
        append: m.append.clone(),
        accel: Accel::Tcg,
        timeout: m.timeout,
        out: Some(out.to_path_buf()),
        user: None,
        pcap: None,
        qemu_opts: Vec::new(),
        gdb: None,
        dry_run: false,
        rodir: Vec::new(),
        rwdir: Vec::new(),
        trace: Vec::new(),
        usbip: None,
    })
}

/// A cell: ok, or the first line that failed the case.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cell {
    Ok,
    NotOk(String),
    /// The column could not run at all (no image, f_fs did not build).
    Broken(String),
}

/// The line that says why `c` failed: its first kernel-log line, else the
/// last of its own reasons.
pub fn first_reason(c: &Case) -> String {
    let lines: Vec<&str> = c.diagnostics.iter().flat_map(|d| d.lines()).collect();
    let kernel =
        |l: &&&str| !udc_patterns::kernel_log::problem_lines(l).is_empty() && !l.contains("Call Trace");
    // The console's own lines first (the runner's summary of a stuck
    // guest quotes one too), then the guest tool's kernel-log lines.
    if let Some(k) = lines
        .iter()
        .filter(|l| l.starts_with("console: "))
        .find(kernel)
        .or_else(|| lines.iter().find(kernel))
    {
        let k = k.trim_start_matches("console: ").trim();
        // Without the console's timestamp: it differs from run to run.
        let k = match k.find("] ") {
            Some(i) if k.starts_with('[') => &k[i + 2..],
            _ => k,
        };
        return k.to_string();
    }
    // Else the case's own words: the last line that is not a note the
    // runner added, a console line or a backtrace frame.
    let frame = |l: &str| {
        let t = l.trim();
        t.starts_with("RIP: ")
            || t.split_whitespace()
                .next()
                .is_some_and(|w| w.contains("+0x") && w.contains('/'))
    };
    lines
        .iter()
        .rev()
        .find(|l| {
            !l.starts_with("last console lines")
                && !l.starts_with("console: ")
                && !l.starts_with('[')
                && !l.starts_with("the kernel's backtrace")
                && l.trim() != "kernel log:"
                && !frame(l)
                && !l.trim().is_empty()
        })
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| "failed".into())
}

fn case_key(c: &Case) -> String {
    if c.suite == "udc-gadget" {
        c.name.clone()
    } else {
        format!("{} / {}", c.suite, c.name)
    }
}

/// The table: case rows in first-seen order, one column each.
struct Table {
    titles: Vec<String>,
    rows: Vec<(String, Vec<Option<Cell>>)>,
}

impl Table {
    fn new(titles: Vec<String>) -> Table {
        Table {
            titles,
            rows: Vec::new(),
        }
    }

    fn set(&mut self, row: &str, col: usize, cell: Cell) {
        let n = self.titles.len();
        let i = match self.rows.iter().position(|(r, _)| r == row) {
            Some(i) => i,
            None => {
                self.rows.push((row.to_string(), vec![None; n]));
                self.rows.len() - 1
            }
        };
        self.rows[i].1[col] = Some(cell);
    }

    fn markdown(&self) -> String {
        let short = |s: &str| {
            let s = s.replace('|', "\\|");
            if s.chars().count() > 90 {
                format!("{}…", s.chars().take(90).collect::<String>())
            } else {
                s
            }
        };
        let mut m = format!("| case | {} |\n", self.titles.join(" | "));
        m += &format!("| --- |{}\n", " --- |".repeat(self.titles.len()));
        for (row, cells) in &self.rows {
            let cells: Vec<String> = cells
                .iter()
                .map(|c| match c {
                    None => "–".to_string(),
                    Some(Cell::Ok) => "ok".to_string(),
                    Some(Cell::NotOk(why)) => format!("**not ok**: {}", short(why)),
                    Some(Cell::Broken(why)) => format!("did not run: {}", short(why)),
                })
                .collect();
            m += &format!("| {row} | {} |\n", cells.join(" | "));
        }
        m
    }

    /// The rows where some column is not ok; the rest counted in a line.
    fn differences(&self) -> Table {
        let (same, diff): (Vec<_>, Vec<_>) = self
            .rows
            .iter()
            .cloned()
            .partition(|(_, cells)| cells.iter().all(|c| matches!(c, None | Some(Cell::Ok))));
        let mut t = Table::new(self.titles.clone());
        t.rows = diff;
        let n = same
            .iter()
            .filter(|(r, _)| !r.starts_with("udc-vm / kernel-log"))
            .count();
        t.rows.push((
            format!("the other {n} cases"),
            vec![Some(Cell::Ok); self.titles.len()],
        ));
        t
    }

    fn csv(&self) -> String {
        let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let mut out = String::from("case,column,result,reason\n");
        for (row, cells) in &self.rows {
            for (t, c) in self.titles.iter().zip(cells) {
                let (r, why) = match c {
                    None => continue,
                    Some(Cell::Ok) => ("ok", ""),
                    Some(Cell::NotOk(w)) => ("not ok", w.as_str()),
                    Some(Cell::Broken(w)) => ("did not run", w.as_str()),
                };
                out += &format!("{},{},{},{}\n", q(row), q(t), r, q(why));
            }
        }
        out
    }
}

pub fn run(m: &MatrixArgs) -> Result<ExitCode, Error> {
    let cols = columns(m)?;
    let out = m.out.clone().unwrap_or_else(|| PathBuf::from("target/matrix"));
    std::fs::create_dir_all(&out).map_err(|e| Error::Io(format!("{}: {e}", out.display())))?;
    let mut table = Table::new(cols.iter().map(Column::title).collect());
    let mut ffs_lines: BTreeMap<String, String> = BTreeMap::new();
    let started = std::time::Instant::now();
    for (i, c) in cols.iter().enumerate() {
        eprintln!("udc-vm matrix: column {} of {}: {}", i + 1, cols.len(), c.title());
        let dir = std::path::absolute(out.join(c.dir())).unwrap_or_else(|_| out.join(c.dir()));
        let result = column_args(m, c, &dir)
            .and_then(|a| options(&a, Some(1800), false))
            .and_then(|o| {
                ffs_lines.insert(c.title(), o.ffs.summary());
                suite::collect(
                    &o,
                    &TestArgs {
                        filter: Some(m.filter.clone()),
                        junit: None,
                        ktap: None,
                        controller: m.controller,
                        expect_fail: Vec::new(),
                        usbtest: false,
                    },
                )
            });
        match result {
            Err(e) => table.set("(the run)", i, Cell::Broken(e.to_string())),
            Ok(r) => {
                let holes = suite::holes(&r.cases, m.controller);
                for case in &r.cases {
                    let cell = match &case.outcome {
                        Outcome::Pass => Cell::Ok,
                        // The other controller's boot ran it (its own row),
                        // or the matrix was asked for one controller.
                        Outcome::Skip(_) if !holes.contains(&case) => continue,
                        Outcome::Skip(why) => Cell::NotOk(format!("skipped: {why}")),
                        Outcome::Fail => Cell::NotOk(first_reason(case)),
                    };
                    table.set(&case_key(case), i, cell);
                }
                for e in &r.errors {
                    table.set(
                        "(the run)",
                        i,
                        Cell::NotOk(e.lines().next().unwrap_or("").to_string()),
                    );
                }
            }
        }
    }
    let md_path = m.markdown.clone().unwrap_or_else(|| out.join("matrix.md"));
    let mut md = table.markdown();
    md += "\nThe cases that are not ok somewhere:\n\n";
    md += &table.differences().markdown();
    md += "\nf_fs of each column:\n\n";
    for (t, f) in &ffs_lines {
        md += &format!("- {t}: {f}\n");
    }
    md += &format!(
        "\n{} columns, {:.0} minutes, filter `{}`, {} controller{}.\n",
        cols.len(),
        started.elapsed().as_secs_f64() / 60.0,
        m.filter,
        value_name(m.controller),
        match m.coherency {
            Coherency::Direct => String::new(),
            c => format!(", {}", c.kernel_options()),
        }
    );
    std::fs::write(&md_path, &md).map_err(|e| Error::Io(format!("{}: {e}", md_path.display())))?;
    let csv_path = md_path.with_extension("csv");
    std::fs::write(&csv_path, table.csv()).map_err(|e| Error::Io(format!("{}: {e}", csv_path.display())))?;
    println!("{md}");
    eprintln!(
        "udc-vm matrix: {} and {}; logs under {}",
        md_path.display(),
        csv_path.display(),
        out.display()
    );
    // The matrix reports; it does not judge: a kernel with a known bug is
    // a finding, not a failure of the run. A column that could not run is.
    let broken = table
        .rows
        .iter()
        .any(|(_, cells)| cells.iter().any(|c| matches!(c, Some(Cell::Broken(_)))));
    Ok(if broken {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str, outcome: Outcome, diags: &[&str]) -> Case {
        Case {
            suite: "udc-gadget".into(),
            name: name.into(),
            outcome,
            diagnostics: diags.iter().map(|s| s.to_string()).collect(),
            seconds: None,
        }
    }

    #[test]
    fn a_failed_case_is_named_by_its_first_kernel_log_line() {
        let c = case(
            "lifecycle-detach-not-bound",
            Outcome::Fail,
            &[
                "the guest's kernel broke down during this case ([ 8.42] Oops: Oops: 0000 [#1] PREEMPT SMP NOPTI)",
                "console: [ 8.41] BUG: kernel NULL pointer dereference, address: 00000000000000b0",
                "console: [ 8.42] Call Trace:",
            ],
        );
        assert_eq!(
            first_reason(&c),
            "BUG: kernel NULL pointer dereference, address: 00000000000000b0"
        );
        let c = case(
            "x",
            Outcome::Fail,
            &["super speed, bulk IN 0x81", "OUT 4 KiB: data differs"],
        );
        assert_eq!(first_reason(&c), "OUT 4 KiB: data differs");
        // A case whose kernel lines are only a backtrace: its own words.
        let c = case(
            "ffs-fence-outlives-detach",
            Outcome::Fail,
            &[
                "super speed, bulk IN 0x81",
                "SYNC_IOC_FILE_INFO did not return within 5 s; the kernel:\nRIP: 0010:native_queued_spin_lock_slowpath+0x84/0x2a0\ndma_fence_get_status+0x18/0x80",
                "console: [ 12.33] Call Trace:",
            ],
        );
        assert_eq!(
            first_reason(&c),
            "SYNC_IOC_FILE_INFO did not return within 5 s; the kernel:"
        );
    }

    #[test]
    fn the_table_has_a_row_per_case_and_a_column_per_run() {
        let mut t = Table::new(vec!["6.12.118 stock f_fs".into(), "6.12.118 fix series".into()]);
        t.set("enumeration", 0, Cell::Ok);
        t.set("enumeration", 1, Cell::Ok);
        t.set(
            "lifecycle-detach-not-bound",
            0,
            Cell::NotOk("BUG: kernel NULL | pointer".into()),
        );
        t.set("lifecycle-detach-not-bound", 1, Cell::Ok);
        let md = t.markdown();
        assert!(
            md.starts_with("| case | 6.12.118 stock f_fs | 6.12.118 fix series |\n| --- | --- | --- |\n"),
            "{md}"
        );
        assert!(
            md.contains("| lifecycle-detach-not-bound | **not ok**: BUG: kernel NULL \\| pointer | ok |"),
            "{md}"
        );
        let d = t.differences().markdown();
        assert!(
            d.contains("| lifecycle-detach-not-bound |") && !d.contains("| enumeration |"),
            "{d}"
        );
        assert!(d.contains("| the other 1 cases | ok | ok |"), "{d}");
        let csv = t.csv();
        assert!(csv.contains(
            "\"lifecycle-detach-not-bound\",\"6.12.118 stock f_fs\",not ok,\"BUG: kernel NULL | pointer\""
        ));
        assert_eq!(csv.lines().count(), 5);
    }

    #[test]
    fn columns_are_kernels_times_f_fs() {
        let m = MatrixArgs {
            qemu: None,
            kernels: "6.12.95+deb12,6.12.118+deb12".into(),
            trees: vec!["/src/linux".into()],
            ffs: "stock,series,6.12.43".into(),
            filter: "catalogue".into(),
            controller: Controllers::Sg,
            append: String::new(),
            debug_kernel_options: false,
            coherency: Coherency::Direct,
            timeout: None,
            out: None,
            markdown: None,
        };
        let cols = columns(&m).unwrap();
        assert_eq!(cols.len(), 9);
        assert_eq!(cols[0].title(), "6.12.95 stock f_fs");
        assert_eq!(cols[2].title(), "6.12.95 f_fs 6.12.43");
        assert_eq!(cols[7].title(), "linux fix series");
        let bad = MatrixArgs {
            ffs: "newest".into(),
            ..m
        };
        assert!(columns(&bad).is_err());
    }
}
