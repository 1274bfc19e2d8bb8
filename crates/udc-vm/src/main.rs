// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! udc-vm: boots a virtio-udc guest (QEMU with vhost-user-udc-pci and the
//! vhost-device-udc daemon) and runs a shell, a command or the VM scenario
//! suite in it. See docs/vm-tier.md.

mod bench;
mod cpio;
mod ffs;
mod junit;
mod kernel_log;
mod ktap;
mod ktap_write;
mod locate;
mod matrix;
mod shares;
mod soak;
mod suite;
mod trace;
mod usbip;
mod user;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::ffs::FfsArgs;
use crate::suite::{Controllers, Expectation, TestArgs};
use crate::vm::{Accel, BusSpeed, Coherency, Mode, VmOptions};

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
        /// Write the whole run as one KTAP document here (each suite a
        /// subtest, kselftest's totals); the exit status is then
        /// kselftest's: 0 all passed, 1 a failure, 4 skips.
        #[arg(long, value_name = "FILE")]
        ktap: Option<PathBuf>,
        /// Which controllers to boot: the default one with scatter-gather,
        /// one without (the daemon's --no-sg, where FunctionFS must refuse
        /// DMABUFs and read/write take the linear path), or both in turn.
        #[arg(long, value_enum, default_value_t = Controllers::Both)]
        controller: Controllers,
        /// CASE:TEXT (repeatable): CASE must fail and show TEXT among its
        /// reasons (a known kernel bug, asserted); it then counts as
        /// passed, and fails if it passes.
        #[arg(long, value_name = "CASE:TEXT")]
        expect_fail: Vec<Expectation>,
        /// Also run the kernel's gadget test suite (usbtest with the
        /// unmodified tools/usb/testusb.c; docs/usbtest.md) through USB/IP
        /// (implies --usbip) and on dummy_hcd, one KTAP case per test
        /// number; without --filter, only that.
        #[arg(long)]
        usbtest: bool,
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
    /// The suite on a list of kernels and FunctionFS builds: one table of
    /// kernel and f_fs against case (markdown and CSV).
    Matrix(matrix::MatrixArgs),
    /// Read/write and DMABUF transfers both ways for a set time under
    /// seeded random delays and faults, every byte checked; reports
    /// transfers, bytes, faults, corruptions and kernel warnings.
    Soak {
        #[command(flatten)]
        vm: VmArgs,
        #[command(flatten)]
        soak: soak::SoakArgs,
    },
}

#[derive(Args, Debug, Clone)]
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
    /// A kernel tree you built (make bzImage modules): the guest boots its
    /// bzImage with its modules, copied, never installed here. With
    /// --kernel: the tree to build virtio_udc.ko against.
    #[arg(long, conflicts_with = "image")]
    kdir: Option<PathBuf>,
    /// Debian 6.12 kernel version, e.g. 6.12.48+deb12 (default: the newest).
    #[arg(long, conflicts_with_all = ["image", "kernel", "kdir"])]
    kernel_version: Option<String>,
    /// A patch to FunctionFS (repeatable, applied in order): usb_f_fs.ko is
    /// built for the booted kernel from its own f_fs source (Debian's, or
    /// your tree's) with the patches and loaded instead of the stock one
    /// (docs/ffs.md).
    #[arg(long, value_name = "FILE")]
    ffs_patch: Vec<PathBuf>,
    /// Build usb_f_fs.ko from the f_fs of this kernel tree.
    #[arg(long, value_name = "DIR", conflicts_with = "ffs_version")]
    ffs_source: Option<PathBuf>,
    /// Build usb_f_fs.ko from the f_fs of this Debian 6.12 version (6.12.43
    /// or later), for the booted kernel: an older f_fs on a newer kernel.
    #[arg(long, value_name = "VERSION")]
    ffs_version: Option<String>,
    /// Make the guest kernel catch touches of freed memory the same way on
    /// every run: SLUB poisoning and checks on every cache
    /// (slub_debug=FZPU), poisoned free pages, no KFENCE sampling and no
    /// zeroing on free, which would hide the poison.
    #[arg(long)]
    debug_kernel_options: bool,
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
    /// device sees the buffers themselves), swiotlb (swiotlb=force: every
    /// mapping bounces, so the device sees bounce buffers and data moves
    /// only at the DMA API's sync and unmap points), or viommu (a strict
    /// vIOMMU, intel-iommu or viommu=virtio for virtio-iommu: the device
    /// sees I/O virtual addresses, and an access against a mapping's DMA
    /// direction is a fault the daemon reports; docs/iommu.md).
    #[arg(long, value_enum, default_value_t = Coherency::Direct)]
    coherency: Coherency,
    /// Guest memory.
    #[arg(long, default_value = "1G")]
    memory: String,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// USB bus speed the host connects at.
    #[arg(long, value_enum, default_value_t = BusSpeed::Super)]
    speed: BusSpeed,
    /// Extra kernel command line.
    #[arg(long, default_value = "")]
    append: String,
    /// Accelerator: tcg everywhere; kvm where /dev/kvm works (auto: kvm
    /// when /dev/kvm opens, which some hosts allow without supporting it).
    #[arg(long, value_enum, default_value_t = Accel::Tcg)]
    accel: Accel,
    /// Seconds before the guest is stopped (default: 900 for test and
    /// commands, none for a shell).
    #[arg(long)]
    timeout: Option<u64>,
    /// Directory for the logs and sockets (default: a new one under /tmp).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run QEMU and the daemon as this unprivileged user (udc-vm itself
    /// runs as root): no supplementary groups but the one that may open
    /// the host's /dev/udmabuf, no capabilities; the run's directory
    /// becomes the user's, and how they ran is checked and recorded
    /// (OUT/privileges.txt; the `unprivileged` case).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// Capture the bus into FILE, as the host saw it, in usbmon's pcap
    /// format for Wireshark (docs/capture.md). Each later daemon start (a
    /// restart, the next boot) writes FILE-2, FILE-3, ... beside it. FILE
    /// must not exist; with --user, its directory must be the user's (the
    /// run's --out is).
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// Extra argument for QEMU (repeatable, added at the end of its
    /// command line), e.g. --qemu-opt=-d --qemu-opt=guest_errors.
    #[arg(long = "qemu-opt", value_name = "ARG", allow_hyphen_values = true)]
    qemu_opts: Vec<String>,
    /// Start QEMU's gdb stub on this TCP port (default 1234) and boot the
    /// kernel with nokaslr; the gdb command line to attach is printed.
    #[arg(long, value_name = "PORT", num_args = 0..=1, default_missing_value = "1234")]
    gdb: Option<u16>,
    /// Print the daemon's and QEMU's command lines for the first boot, and
    /// exit without starting anything.
    #[arg(long)]
    dry_run: bool,
    /// Share a host folder with the guest, read-only (repeatable; 9p over
    /// virtio, mounted before anything runs): HOST:GUEST, or DIR for the
    /// same path in the guest.
    #[arg(long, value_name = "HOST[:GUEST]")]
    rodir: Vec<shares::ShareSpec>,
    /// Share a host folder with the guest, read-write (repeatable): files
    /// the guest writes belong to the user QEMU runs as (root, or --user).
    #[arg(long, value_name = "HOST[:GUEST]")]
    rwdir: Vec<shares::ShareSpec>,
    /// Turn on these kernel trace events before anything runs and stream
    /// them to OUT/trace.txt (repeatable, comma-separated): SYSTEM for all
    /// of its events, SYSTEM:EVENT, or SYSTEM:PREFIX*; e.g. virtio_udc
    /// (the driver's requests and events), gadget (the gadget core's).
    #[arg(long, value_name = "EVENTS")]
    trace: Vec<String>,
    /// Export the gadget over USB/IP (the daemon's --usbip-listen on
    /// 127.0.0.1:PORT, a free port without one) and give the guest QEMU's
    /// user networking: `udc-gadget usbip-attach` in the guest, or
    /// `usbip attach -r 127.0.0.1 -b 1-1` on a host with vhci_hcd, imports
    /// the device (docs/usbip.md).
    #[arg(long, value_name = "PORT", num_args = 0..=1, default_missing_value = "0")]
    usbip: Option<u16>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let vm_args = match &cli.cmd {
        Cmd::Run { vm, .. } | Cmd::Test { vm, .. } | Cmd::Bench { vm, .. } | Cmd::Soak { vm, .. } => Some(vm),
        Cmd::Matrix(_) => None,
    };
    if let Some(vm) = vm_args.filter(|v| v.dry_run) {
        return match options(vm, None, false) {
            Ok(o) => {
                print!("{}", vm::dry_run(&o));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("udc-vm: error: {e}");
                ExitCode::from(2)
            }
        };
    }
    let result = match cli.cmd {
        Cmd::Run { vm, command } => run(&vm, &command),
        Cmd::Test {
            vm,
            filter,
            junit,
            ktap,
            controller,
            expect_fail,
            usbtest,
        } => {
            let mut vm = vm;
            if usbtest && vm.usbip.is_none() {
                vm.usbip = Some(0);
            }
            options(&vm, Some(900), true).and_then(|o| {
                suite::run(
                    &o,
                    &TestArgs {
                        filter,
                        junit,
                        ktap,
                        controller,
                        expect_fail,
                        usbtest,
                    },
                )
            })
        }
        Cmd::Bench { vm, bench } => bench::run(&vm, &bench),
        Cmd::Matrix(m) => matrix::run(&m),
        Cmd::Soak { vm, soak } => soak::run(&vm, &soak),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("udc-vm: error: {e}");
            ExitCode::from(2)
        }
    }
}

pub(crate) fn options(a: &VmArgs, default_timeout: Option<u64>, echo: bool) -> Result<VmOptions, Error> {
    let image = locate::image(&locate::ImageSource {
        image: a.image.as_deref(),
        kernel: a.kernel.as_deref(),
        modules: a.modules.as_deref(),
        kdir: a.kdir.as_deref(),
        kernel_version: a.kernel_version.as_deref(),
    })?;
    let ffs = ffs::choose(
        &FfsArgs {
            patches: a.ffs_patch.clone(),
            source: a.ffs_source.clone(),
            version: a.ffs_version.clone(),
        },
        &image,
    )?;
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
    eprintln!("udc-vm: f_fs: {}", ffs.summary());
    let (daemon_args, append, inject_seed) = injection_and_coherency(a)?;
    let trace = trace::events(&a.trace).map_err(Error::Usage)?;
    let append = if trace.is_empty() {
        append
    } else {
        eprintln!("udc-vm: trace events {} (OUT/trace.txt)", trace.join(","));
        format!("{append} {}", trace::cmdline(&trace)).trim().to_string()
    };
    let usbip = match a.usbip {
        Some(0) => Some(usbip::free_port().map_err(|e| Error::Io(format!("--usbip: no free port: {e}")))?),
        p => p,
    };
    let append = match usbip {
        Some(port) => {
            eprintln!(
                "udc-vm: USB/IP server on 127.0.0.1:{port} (the guest reaches it at {}:{port})",
                usbip::GUEST_SEES_HOST
            );
            format!("{append} {}", usbip::cmdline(port)).trim().to_string()
        }
        None => append,
    };
    let shares = shares::Share::all(&a.rodir, &a.rwdir).map_err(Error::Usage)?;
    for s in &shares {
        eprintln!("udc-vm: host folder {}", shares::describe(s));
    }
    Ok(VmOptions {
        qemu,
        device,
        image,
        daemon,
        daemon_args,
        memory: a.memory.clone(),
        cpus: a.cpus,
        speed: a.speed,
        append,
        accel: a.accel,
        timeout: a.timeout.or(default_timeout).map(Duration::from_secs),
        out: std::path::absolute(&out).unwrap_or(out),
        echo_results: echo,
        inject_seed,
        ffs,
        stop_marker: None,
        quiet_timeout: None,
        run_as: a.user.as_deref().map(user::RunAs::lookup).transpose()?,
        pcap: a
            .pcap
            .as_ref()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
        qemu_opts: a.qemu_opts.clone(),
        gdb: a.gdb,
        vmlinux: a.kdir.as_ref().map(|k| k.join("vmlinux")),
        shares,
        trace,
        usbip,
        coherency: a.coherency,
    })
}

/// Kernel options under which a touch of freed memory fails the same way
/// every time (--debug-kernel-options): SLUB poisons, red-zones and checks
/// every object and tracks its last user; freed pages are poisoned too;
/// KFENCE, which would take some allocations away from SLUB at random, is
/// off; and nothing zeroes freed memory over the poison.
pub const DEBUG_KERNEL_OPTIONS: &str =
    "slub_debug=FZPU page_poison=1 kfence.sample_interval=0 init_on_free=0";

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
    if a.gdb.is_some() {
        // gdb's symbols match the kernel only where it was linked to run.
        append = format!("{append} nokaslr").trim().to_string();
    }
    append = format!("{append} {}", a.coherency.kernel_options())
        .trim()
        .to_string();
    if a.debug_kernel_options {
        append = format!("{append} {DEBUG_KERNEL_OPTIONS}").trim().to_string();
    }
    Ok((args, append, seed))
}

/// `s` as one POSIX shell word.
pub(crate) fn shell_quote(s: &str) -> String {
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
pub(crate) fn report_kernel_log(console: &std::path::Path) -> Vec<String> {
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
    let mut problems = report_kernel_log(&f.paths.console);
    let console = std::fs::read_to_string(&f.paths.console).unwrap_or_default();
    if let Err(e) = o.ffs.check_console(&console) {
        eprintln!("udc-vm: {e}");
        problems.push(e);
    }
    if !o.trace.is_empty() {
        let events = std::fs::read_to_string(&f.paths.trace).unwrap_or_default();
        let n = events.lines().filter(|l| !l.starts_with('#')).count();
        eprintln!("udc-vm: trace: {} ({n} events)", f.paths.trace.display());
    }
    for l in console
        .lines()
        .filter(|l| l.contains(shares::MOUNT_FAILED) || l.contains(trace::ENABLE_FAILED))
    {
        eprintln!("udc-vm: {}", l.trim());
        problems.push(l.to_string());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(Cli::try_parse_from(["udc-vm", "run", "--coherency", "viommu=amd"]).is_err());
        for (mode, kernel) in [
            ("viommu", "intel_iommu=on iommu.passthrough=0 iommu.strict=1"),
            (
                "viommu=intel",
                "intel_iommu=on iommu.passthrough=0 iommu.strict=1",
            ),
            ("viommu=virtio", "iommu.passthrough=0 iommu.strict=1"),
        ] {
            let (_, append, _) = injection_and_coherency(&vm_args(&["--coherency", mode])).unwrap();
            assert_eq!(append, kernel, "{mode}");
        }
        let (_, append, _) = injection_and_coherency(&vm_args(&["--debug-kernel-options"])).unwrap();
        assert_eq!(append, DEBUG_KERNEL_OPTIONS);
        assert!(append.contains("slub_debug=FZPU") && append.contains("kfence.sample_interval=0"));
    }

    #[test]
    fn a_kernel_tree_alone_is_a_kernel() {
        let a = vm_args(&[
            "--kdir",
            "/src/linux",
            "--ffs-patch",
            "a.patch",
            "--ffs-patch",
            "b.patch",
        ]);
        assert_eq!(a.kdir.as_deref(), Some(std::path::Path::new("/src/linux")));
        assert_eq!(a.ffs_patch.len(), 2);
        assert!(Cli::try_parse_from([
            "udc-vm",
            "run",
            "--kdir",
            "/k",
            "--kernel-version",
            "6.12.95+deb12"
        ])
        .is_err());
        assert!(
            Cli::try_parse_from(["udc-vm", "run", "--ffs-source", "/k", "--ffs-version", "6.12.43"]).is_err()
        );
        assert!(Cli::try_parse_from(["udc-vm", "test", "--expect-fail", "nocolon"]).is_err());
        assert!(Cli::try_parse_from(["udc-vm", "test", "--expect-fail", "case:text"]).is_ok());
    }
}
