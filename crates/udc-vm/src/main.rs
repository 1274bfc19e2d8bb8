//! udc-vm: boots a virtio-udc guest (QEMU with vhost-user-udc-pci and the
//! vhost-device-udc daemon) and runs a shell, a command or the VM scenario
//! suite in it. See docs/vm-tier.md.

mod bench;
mod cpio;
mod junit;
mod kernel_log;
mod ktap;
mod locate;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::ktap::{Case, Outcome};
use crate::vm::{Mode, VmOptions};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Missing(String),
    #[error("daemon: {0}")]
    Daemon(String),
    #[error("{0}")]
    Io(String),
    #[error("bench: {0}")]
    Bench(#[from] bench::Error),
}

#[derive(Parser)]
#[command(
    version,
    about = "Boot a virtio-udc guest and run a shell, a command or the VM scenario suite"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot the guest: an interactive shell (Ctrl-A x quits), or COMMAND.
    Run {
        #[command(flatten)]
        vm: VmArgs,
        /// Command to run in the guest instead of a shell; udc-vm exits
        /// with its status.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Run the VM scenario suite in the guest; KTAP on stdout.
    Test {
        #[command(flatten)]
        vm: VmArgs,
        /// Only the guest tool's cases whose names contain one of these
        /// comma-separated words (the guest test binaries are left out).
        #[arg(long)]
        filter: Option<String>,
        /// Write JUnit XML here.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Which controllers to boot: the default one with scatter-gather,
        /// one without (the daemon's --no-sg, where FunctionFS must refuse
        /// DMABUFs and read/write take the linear path), or both in turn.
        #[arg(long, default_value = "both", value_parser = ["both", "sg", "no-sg"])]
        controller: String,
    },
    /// Throughput and guest CPU time per GiB of DMABUF, read/write and AIO
    /// transfers on virtio-udc and read/write on dummy_hcd; a table on
    /// stdout, a CSV and an SVG plot.
    Bench {
        #[command(flatten)]
        vm: VmArgs,
        #[command(flatten)]
        bench: bench::BenchArgs,
    },
}

#[derive(Args)]
struct VmArgs {
    /// QEMU with vhost-user-udc-pci (default: built by qemu/build.sh).
    #[arg(long)]
    qemu: Option<PathBuf>,
    /// Guest image directory (default: built by images/build.sh).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Your own kernel (bzImage); needs --modules.
    #[arg(long, requires = "modules", conflicts_with = "image")]
    kernel: Option<PathBuf>,
    /// The module tree of --kernel (/lib/modules/RELEASE as installed).
    #[arg(long, requires = "kernel")]
    modules: Option<PathBuf>,
    /// Kernel build tree to build virtio_udc.ko against (default: MODULES/build).
    #[arg(long, requires = "kernel")]
    kdir: Option<PathBuf>,
    /// Debian 6.12 kernel version, e.g. 6.12.48+deb12 (default: the newest).
    #[arg(long, conflicts_with_all = ["image", "kernel"])]
    kernel_version: Option<String>,
    /// vhost-device-udc binary (default: next to udc-vm).
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// Extra argument for the daemon (repeatable), e.g. --daemon-arg=--config=udc.toml.
    #[arg(long = "daemon-arg", allow_hyphen_values = true)]
    daemon_args: Vec<String>,
    /// Delay or fault injection in the daemon, KEY=VALUE or EP.KEY=VALUE
    /// (repeatable; docs/injection.md), e.g. --inject latency=100us..2ms
    /// --inject ep2out.out_poison=50ms.
    #[arg(long, value_name = "KEY=VALUE")]
    inject: Vec<String>,
    /// Seed of the injection's random choices (default with --inject: a new
    /// one, printed so that a failure can be reproduced).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// How the guest's DMA reaches the device: direct (dma-direct: the
    /// device sees the buffers themselves) or swiotlb (swiotlb=force: every
    /// mapping bounces, so the device sees bounce buffers and data moves
    /// only at the DMA API's sync and unmap points).
    #[arg(long, default_value = "direct", value_parser = ["direct", "swiotlb"])]
    coherency: String,
    /// Guest memory.
    #[arg(long, default_value = "1G")]
    memory: String,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// USB bus speed the host connects at.
    #[arg(long, default_value = "super", value_parser = ["full", "high", "super"])]
    speed: String,
    /// Extra kernel command line.
    #[arg(long, default_value = "")]
    append: String,
    /// Accelerator: tcg everywhere; kvm where /dev/kvm works (auto: kvm
    /// when /dev/kvm opens, which some hosts allow without supporting it).
    #[arg(long, default_value = "tcg", value_parser = ["auto", "kvm", "tcg"])]
    accel: String,
    /// Seconds before the guest is stopped (default: 900 for test and
    /// commands, none for a shell).
    #[arg(long)]
    timeout: Option<u64>,
    /// Directory for the logs and sockets (default: a new one under /tmp).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run { vm, command } => run(&vm, &command),
        Cmd::Test {
            vm,
            filter,
            junit,
            controller,
        } => test(&vm, filter.as_deref(), junit, &controller),
        Cmd::Bench { vm, bench } => bench::run(&vm, &bench),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("udc-vm: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn options(a: &VmArgs, default_timeout: Option<u64>, echo: bool) -> Result<VmOptions, Error> {
    let image = locate::image(&locate::ImageSource {
        image: a.image.as_deref(),
        kernel: a.kernel.as_deref(),
        modules: a.modules.as_deref(),
        kdir: a.kdir.as_deref(),
        kernel_version: a.kernel_version.as_deref(),
    })?;
    let (qemu, device) = locate::qemu(a.qemu.as_deref())?;
    let daemon = locate::daemon(a.daemon.as_deref())?;
    let out = match &a.out {
        Some(o) => o.clone(),
        None => {
            let base = std::env::temp_dir().join(format!("udc-vm.{}", std::process::id()));
            std::fs::create_dir_all(&base).map_err(|e| Error::Io(e.to_string()))?;
            base
        }
    };
    eprintln!("udc-vm: kernel {} from {}", image.release, image.dir.display());
    let (daemon_args, append, inject_seed) = injection_and_coherency(a)?;
    Ok(VmOptions {
        qemu,
        device,
        image,
        daemon,
        daemon_args,
        memory: a.memory.clone(),
        cpus: a.cpus,
        speed: a.speed.clone(),
        append,
        accel: a.accel.clone(),
        timeout: a.timeout.or(default_timeout).map(Duration::from_secs),
        out: std::path::absolute(&out).unwrap_or(out),
        echo_results: echo,
        inject_seed,
    })
}

/// The daemon's arguments and the kernel command line for --inject, --seed
/// and --coherency.
fn injection_and_coherency(a: &VmArgs) -> Result<(Vec<String>, String, Option<u64>), Error> {
    let mut args = a.daemon_args.clone();
    for i in &a.inject {
        if !i.contains('=') {
            return Err(Error::Usage(format!(
                "--inject {i}: say KEY=VALUE or EP.KEY=VALUE (docs/injection.md)"
            )));
        }
        args.push(format!("--inject={i}"));
    }
    let seed = match a.seed {
        Some(s) => Some(s),
        None if !a.inject.is_empty() => {
            // A fresh seed each run, so repeated runs explore; printed, so
            // any one of them can be run again.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            Some(u64::from(t.subsec_nanos()) ^ t.as_secs().rotate_left(20) ^ u64::from(std::process::id()))
        }
        None => None,
    };
    if let Some(s) = seed {
        args.push(format!("--seed={s}"));
        eprintln!("udc-vm: injection seed {s} (--seed {s} gives the same injected events again)");
    }
    let mut append = a.append.clone();
    if a.coherency == "swiotlb" {
        append = format!("{append} swiotlb=force").trim().to_string();
    }
    Ok((args, append, seed))
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Prints the kernel-log problems of a finished boot; true if there were any.
fn report_kernel_log(console: &std::path::Path) -> Vec<String> {
    let log = std::fs::read_to_string(console).unwrap_or_default();
    let problems = kernel_log::problems(&log);
    if !problems.is_empty() {
        eprintln!(
            "udc-vm: the guest kernel log shows problems ({}):",
            console.display()
        );
        for l in &problems {
            eprintln!("  {l}");
        }
    }
    problems
}

fn run(a: &VmArgs, command: &[String]) -> Result<ExitCode, Error> {
    if command.is_empty() {
        let o = options(a, None, false)?;
        let f = vm::boot(&o, &Mode::Interactive)?;
        report_kernel_log(&f.paths.console);
        return Ok(ExitCode::SUCCESS);
    }
    let script = command
        .iter()
        .map(|s| shell_quote(s))
        .collect::<Vec<_>>()
        .join(" ")
        + "\n";
    let o = options(a, Some(900), true)?;
    let f = vm::boot(&o, &Mode::Script(script))?;
    let problems = report_kernel_log(&f.paths.console);
    if let Some(line) = &f.stuck {
        eprintln!(
            "udc-vm: the guest's kernel is stuck ({line}); stopped it; last console lines:\n{}",
            vm::tail(&f.paths.console, 20)
        );
        return Ok(ExitCode::from(3));
    }
    if f.timed_out {
        eprintln!(
            "udc-vm: timeout after {:?}; last console lines:\n{}",
            o.timeout.unwrap(),
            vm::tail(&f.paths.console, 20)
        );
        return Ok(ExitCode::from(3));
    }
    let results = std::fs::read_to_string(&f.paths.results).unwrap_or_default();
    let status = ktap::parse(&results).run_exit;
    match status {
        Some(0) if problems.is_empty() => Ok(ExitCode::SUCCESS),
        Some(0) => Ok(ExitCode::from(1)),
        Some(n) => Ok(ExitCode::from(n.clamp(1, 255) as u8)),
        None => {
            eprintln!(
                "udc-vm: the guest did not report the command's end ({}); last console lines:\n{}\nQEMU said:\n{}",
                f.qemu_status.map(|s| s.to_string()).unwrap_or_default(),
                vm::tail(&f.paths.console, 20),
                vm::tail(&f.paths.qemu_log, 5)
            );
            Ok(ExitCode::from(3))
        }
    }
}

/// /udc/run.sh for `udc-vm test`: each suite is one top-level KTAP case,
/// its own output indented as a subtest.
fn test_script(filter: Option<&str>, guest_binaries: bool) -> String {
    // The daemon's own tests find its guest build here (docs/vm-tier.md).
    let mut s = String::from(
        "set -u\n\
         export VHOST_DEVICE_UDC_BIN=/usr/bin/vhost-device-udc\n\
         suites=/usr/bin/udc-gadget\n",
    );
    if guest_binaries {
        s += "for t in /usr/libexec/udc/*; do [ -x \"$t\" ] && suites=\"$suites $t\"; done\n";
    }
    s += "set -- $suites\n\
          echo 'KTAP version 1'\n\
          echo \"1..$#\"\n\
          i=0\n\
          for t in \"$@\"; do\n\
          \x20   i=$((i + 1))\n\
          \x20   name=${t##*/}\n\
          \x20   case $name in\n";
    match filter {
        Some(f) => {
            s += &format!(
                "        udc-gadget) set -- \"$t\" test --filter {} ;;\n",
                shell_quote(f)
            )
        }
        None => s += "        udc-gadget) set -- \"$t\" test ;;\n",
    }
    s += "        *) set -- \"$t\" --test-threads=1 ;;\n\
          \x20   esac\n\
          \x20   { \"$@\"; echo $? > /tmp/suite.rc; } 2>&1 | sed 's/^/    /'\n\
          \x20   rc=$(cat /tmp/suite.rc)\n\
          \x20   if [ \"$rc\" = 0 ]; then echo \"ok $i $name\"; else echo \"not ok $i $name # exit status $rc\"; fi\n\
          done\n";
    // The loop rebinds "$@": keep the list in a variable instead.
    s.replace("for t in \"$@\"; do", "for t in $suites; do")
}

/// The guest tool's cases the controller without scatter-gather runs when
/// no --filter is given: enumeration and the linear read/write path, and
/// the DMABUF cases, of which the guest tool keeps only the one for this
/// controller (attach refused).
const NO_SG_FILTER: &str = "enumeration,bulk-out-read,bulk-in-write,short-and-zero-length,dmabuf";

/// One boot of `udc-vm test`.
struct TestBoot {
    /// Said in the output and added to suite names after the first boot.
    label: &'static str,
    daemon_args: Vec<String>,
    filter: Option<String>,
    guest_binaries: bool,
    out: PathBuf,
}

fn test_boots(o: &VmOptions, filter: Option<&str>, controller: &str) -> Vec<TestBoot> {
    let mut boots = Vec::new();
    if controller != "no-sg" {
        boots.push(TestBoot {
            label: "",
            daemon_args: o.daemon_args.clone(),
            filter: filter.map(str::to_string),
            guest_binaries: filter.is_none(),
            out: o.out.clone(),
        });
    }
    if controller != "sg" {
        let mut daemon_args = o.daemon_args.clone();
        daemon_args.push("--no-sg".into());
        boots.push(TestBoot {
            label: "no sg",
            daemon_args,
            filter: Some(filter.unwrap_or(NO_SG_FILTER).to_string()),
            guest_binaries: false,
            out: if controller == "no-sg" {
                o.out.clone()
            } else {
                o.out.join("no-sg")
            },
        });
    }
    boots
}

/// Boots once and reads what the guest reported; suite names get
/// `label` appended.
fn test_boot(o: &VmOptions, b: &TestBoot) -> Result<(ktap::Report, vm::Finished), Error> {
    std::fs::create_dir_all(&b.out).map_err(|e| Error::Io(format!("{}: {e}", b.out.display())))?;
    let o = VmOptions {
        daemon_args: b.daemon_args.clone(),
        out: b.out.clone(),
        ..o.clone()
    };
    let f = vm::boot(
        &o,
        &Mode::Script(test_script(b.filter.as_deref(), b.guest_binaries)),
    )?;
    let results = std::fs::read_to_string(&f.paths.results).unwrap_or_default();
    let mut report = ktap::parse(&results);
    if let Some(line) = &f.stuck {
        report.errors.push(format!(
            "the guest's kernel is stuck ({line}); the runner stopped it; console: {}",
            f.paths.console.display()
        ));
    } else if f.timed_out {
        report.errors.push(format!(
            "timeout after {:?}; last console lines:\n{}",
            o.timeout.unwrap(),
            vm::tail(&f.paths.console, 20)
        ));
    } else if f.qemu_status.is_some_and(|s| !s.success()) {
        report.errors.push(format!(
            "QEMU failed ({}):\n{}",
            f.qemu_status.unwrap(),
            vm::tail(&f.paths.qemu_log, 20)
        ));
    } else if report.run_exit.is_none() {
        report.errors.push(format!(
            "the guest did not finish the suite; last console lines:\n{}",
            vm::tail(&f.paths.console, 20)
        ));
    }
    let problems = report_kernel_log(&f.paths.console);
    let console = std::fs::read_to_string(&f.paths.console).unwrap_or_default();
    for l in console.lines().filter(|l| l.contains("udc-init: FAILED to load")) {
        report.errors.push(format!(
            "{} (a module that does not match the kernel? rebuild the image)",
            l.trim()
        ));
    }
    report.cases.push(Case {
        suite: "udc-vm".into(),
        name: "kernel-log".into(),
        outcome: if problems.is_empty() {
            Outcome::Pass
        } else {
            Outcome::Fail
        },
        diagnostics: problems,
    });
    if !b.label.is_empty() {
        for c in &mut report.cases {
            c.suite = format!("{} ({})", c.suite, b.label);
        }
        for e in &mut report.errors {
            *e = format!("{}: {e}", b.label);
        }
    }
    for e in &report.errors {
        eprintln!("udc-vm: {e}");
    }
    if f.daemon_restarts > 0 {
        eprintln!("udc-vm: the daemon was started again {} times", f.daemon_restarts);
    }
    Ok((report, f))
}

fn test(
    a: &VmArgs,
    filter: Option<&str>,
    junit_path: Option<PathBuf>,
    controller: &str,
) -> Result<ExitCode, Error> {
    let o = options(a, Some(900), true)?;
    let boots = test_boots(&o, filter, controller);
    let mut all = ktap::Report::default();
    let mut seconds = 0.0;
    let mut console_tail = String::new();
    for (n, b) in boots.iter().enumerate() {
        if boots.len() > 1 {
            eprintln!(
                "udc-vm: boot {} of {}: {}",
                n + 1,
                boots.len(),
                if b.label.is_empty() {
                    "controller with scatter-gather".to_string()
                } else {
                    format!(
                        "controller without scatter-gather (daemon --no-sg), logs in {}",
                        b.out.display()
                    )
                }
            );
        }
        let (report, f) = test_boot(&o, b)?;
        seconds += f.elapsed.as_secs_f64();
        console_tail += &vm::tail(&f.paths.console, 200);
        all.cases.extend(report.cases);
        all.errors.extend(report.errors);
    }
    if let Some(path) = junit_path {
        let mut cases = all.cases.clone();
        for e in &all.errors {
            cases.push(Case {
                suite: "udc-vm".into(),
                name: "run".into(),
                outcome: Outcome::Fail,
                diagnostics: vec![e.clone()],
            });
        }
        let xml = junit::render("udc-vm", &cases, seconds, &console_tail);
        std::fs::write(&path, xml).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        eprintln!("udc-vm: JUnit XML: {}", path.display());
    }
    for c in all.cases.iter().filter(|c| c.outcome == Outcome::Fail) {
        println!("# FAILED: {} / {}", c.suite, c.name);
    }
    println!(
        "udc-vm: {} passed, {} failed, {} skipped",
        all.passed(),
        all.failed(),
        all.skipped()
    );
    if let (Some(seed), true) = (o.inject_seed, all.failed() > 0) {
        println!("udc-vm: injection seed {seed}: run again with --seed {seed} to reproduce");
    }
    // A skipped case is not a pass: the suite must run whole.
    Ok(if all.failed() == 0 && all.skipped() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_boots_both_controllers_by_default() {
        let mut o = vm::tests::opts();
        o.daemon_args = vec!["--config=udc.toml".into()];
        let boots = test_boots(&o, None, "both");
        assert_eq!(boots.len(), 2);
        assert_eq!(boots[0].daemon_args, ["--config=udc.toml"]);
        assert!(boots[0].guest_binaries && boots[0].filter.is_none());
        assert_eq!(boots[1].daemon_args, ["--config=udc.toml", "--no-sg"]);
        assert_eq!(boots[1].filter.as_deref(), Some(NO_SG_FILTER));
        assert!(!boots[1].guest_binaries);
        assert_eq!(boots[1].out, o.out.join("no-sg"));
    }

    #[test]
    fn a_filter_and_one_controller_give_one_boot() {
        let o = vm::tests::opts();
        let boots = test_boots(&o, Some("bulk"), "sg");
        assert_eq!(boots.len(), 1);
        assert_eq!(boots[0].filter.as_deref(), Some("bulk"));
        assert!(!boots[0].guest_binaries);
        let boots = test_boots(&o, Some("bulk"), "no-sg");
        assert_eq!(boots.len(), 1);
        assert_eq!(boots[0].filter.as_deref(), Some("bulk"));
        assert_eq!(boots[0].out, o.out);
    }

    fn vm_args(args: &[&str]) -> VmArgs {
        let argv = ["udc-vm", "run"].iter().chain(args).copied();
        match Cli::try_parse_from(argv).unwrap().cmd {
            Cmd::Run { vm, .. } => vm,
            _ => unreachable!(),
        }
    }

    #[test]
    fn injection_and_coherency_reach_the_daemon_and_the_kernel() {
        let a = vm_args(&[
            "--inject",
            "latency=1ms",
            "--inject",
            "ep2out.stall=nth:2",
            "--seed",
            "5",
            "--coherency",
            "swiotlb",
            "--append",
            "quiet",
        ]);
        let (args, append, seed) = injection_and_coherency(&a).unwrap();
        assert_eq!(seed, Some(5));
        assert_eq!(
            args,
            ["--inject=latency=1ms", "--inject=ep2out.stall=nth:2", "--seed=5"]
        );
        assert_eq!(append, "quiet swiotlb=force");
        // Without --seed, a seed is chosen and passed on.
        let (args, _, _) = injection_and_coherency(&vm_args(&["--inject", "latency=1ms"])).unwrap();
        assert!(args[1].starts_with("--seed="), "{args:?}");
        let (args, append, seed) = injection_and_coherency(&vm_args(&[])).unwrap();
        assert!(args.is_empty() && append.is_empty() && seed.is_none());
        assert!(injection_and_coherency(&vm_args(&["--inject", "latency"])).is_err());
        assert!(Cli::try_parse_from(["udc-vm", "run", "--coherency", "iommu"]).is_err());
    }

    #[test]
    fn the_test_script_runs_guest_binaries_only_when_asked() {
        assert!(test_script(None, true).contains("/usr/libexec/udc/*"));
        let s = test_script(Some("dmabuf"), false);
        assert!(!s.contains("/usr/libexec/udc/*"));
        assert!(s.contains("test --filter dmabuf"));
    }
}
