// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! One boot: the daemon, then QEMU with the virtio-udc device, the control
//! channel and the results port, until the guest powers off or the time
//! is up. A daemon that ends while the guest runs (a crash, or the
//! control socket's `crash`) is started again on the same sockets, as a
//! service manager would, so the guest can show its recovery.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::cpio;
use crate::ffs::{Ffs, GuestFile};
use crate::locate::Image;
use crate::user::{Privileges, RunAs};
use crate::Error;

/// The USB bus speed the host connects at (the daemon's --speed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BusSpeed {
    Full,
    High,
    Super,
}

/// How QEMU runs the guest's CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// kvm when /dev/kvm opens (which some hosts allow without supporting it).
    Auto,
    Kvm,
    Tcg,
}

/// How the guest's DMA reaches the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Coherency {
    /// dma-direct: the device sees the buffers themselves.
    Direct,
    /// swiotlb=force: every mapping bounces.
    Swiotlb,
    /// An Intel vIOMMU (q35's intel-iommu) in strict mode: the device sees
    /// I/O virtual addresses, each mapping with the permission of its DMA
    /// direction (docs/iommu.md).
    #[value(name = "viommu", alias = "viommu=intel")]
    ViommuIntel,
    /// virtio-iommu in strict mode, the same for the paravirtual IOMMU.
    #[value(name = "viommu=virtio")]
    ViommuVirtio,
}

impl Coherency {
    /// Whether the device's DMA goes through a vIOMMU.
    pub fn viommu(self) -> bool {
        matches!(self, Coherency::ViommuIntel | Coherency::ViommuVirtio)
    }

    /// What the guest kernel's command line needs for this mode.
    pub fn kernel_options(self) -> &'static str {
        match self {
            Coherency::Direct => "",
            Coherency::Swiotlb => "swiotlb=force",
            // Strict: every unmap reaches the IOMMU (and the daemon's
            // IOTLB) before dma_unmap returns, so a stale mapping is caught
            // at its first use instead of whenever the flush queue drains.
            Coherency::ViommuIntel => "intel_iommu=on iommu.passthrough=0 iommu.strict=1",
            Coherency::ViommuVirtio => "iommu.passthrough=0 iommu.strict=1",
        }
    }
}

/// A value's name as the command line spells it.
pub fn value_name(v: impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .expect("no value is skipped")
        .get_name()
        .to_string()
}

/// Most daemon restarts in one boot before the runner gives up on it.
const MAX_DAEMON_RESTARTS: u32 = 5;

/// Console lines after which a guest does not recover by itself: a CPU
/// spinning with interrupts off, a hung task, a panic, an oops (which
/// kills the task in the middle of whatever it held: the guest tool's
/// case, most likely, leaving nobody to report it).
const STUCK_MARKERS: &[&str] = &[
    "detected stalls on CPUs",
    "soft lockup",
    "hard LOCKUP",
    "blocked for more than",
    "Kernel panic",
    "Oops: ",
    "general protection fault",
];

/// How long a stuck guest keeps running, so the console gets the kernel's
/// backtraces, before the runner stops it instead of waiting for the
/// timeout.
const STUCK_GRACE: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct VmOptions {
    pub qemu: PathBuf,
    pub device: crate::locate::Device,
    pub image: Image,
    pub daemon: PathBuf,
    pub daemon_args: Vec<String>,
    pub memory: String,
    pub cpus: u32,
    pub speed: BusSpeed,
    pub append: String,
    pub accel: Accel,
    pub timeout: Option<Duration>,
    pub out: PathBuf,
    /// Copy the results port to stdout as it arrives.
    pub echo_results: bool,
    /// The daemon's injection seed, when anything is injected: said again
    /// next to a failure, so that it can be reproduced.
    pub inject_seed: Option<u64>,
    /// The FunctionFS this boot loads (its files join the initramfs),
    /// checked against what the guest says.
    pub ffs: Ffs,
    /// Stop the guest soon after the results port shows this text (the
    /// guest tool saying it stopped after a failed case).
    pub stop_marker: Option<String>,
    /// Stop the guest when the results port shows nothing new for this
    /// long (a case that hangs without the kernel noticing).
    pub quiet_timeout: Option<Duration>,
    /// Run QEMU and the daemon as this user (`--user`), and record how
    /// they ran.
    pub run_as: Option<RunAs>,
    /// `--pcap FILE`: the daemon captures the bus (see [`pcap_path`]).
    pub pcap: Option<PathBuf>,
    /// `--qemu-opt`: added at the end of QEMU's command line.
    pub qemu_opts: Vec<String>,
    /// `--gdb PORT`: QEMU's gdb stub.
    pub gdb: Option<u16>,
    /// The kernel with debug information, where known (a --kdir tree's).
    pub vmlinux: Option<PathBuf>,
    /// `--rodir` / `--rwdir`: host folders the guest mounts.
    pub shares: Vec<crate::shares::Share>,
    /// `--trace`: kernel trace events streamed to [`Paths::trace`].
    pub trace: Vec<String>,
    /// `--usbip`: the daemon's USB/IP server port, and the guest's network.
    pub usbip: Option<u16>,
    /// `--coherency`: a vIOMMU in front of the device, for the viommu modes.
    pub coherency: Coherency,
}

/// Daemons started with a capture in this run of udc-vm.
static CAPTURES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Where the next daemon's capture goes: `file` for the first, then
/// `file-2`, `file-3`, ... (before the extension): a restarted daemon and
/// the next boot each write their own, and none overwrites another.
fn pcap_path(file: &Path, n: u32) -> PathBuf {
    if n == 1 {
        return file.to_path_buf();
    }
    let stem = file.file_stem().unwrap_or_default().to_string_lossy();
    let name = match file.extension() {
        Some(ext) => format!("{stem}-{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{n}"),
    };
    file.with_file_name(name)
}

/// What the guest runs.
pub enum Mode {
    /// A shell on this terminal.
    Interactive,
    /// /udc/run.sh with this content; its output goes to the results port.
    Script(String),
}

pub struct Paths {
    pub console: PathBuf,
    pub results: PathBuf,
    pub daemon_log: PathBuf,
    pub qemu_log: PathBuf,
    /// The guest's trace events, with `--trace`.
    pub trace: PathBuf,
    vhost_sock: PathBuf,
    control_sock: PathBuf,
}

impl Paths {
    fn new(out: &Path) -> Paths {
        Paths {
            console: out.join("console.log"),
            results: out.join("results.ktap"),
            daemon_log: out.join("daemon.log"),
            qemu_log: out.join("qemu.log"),
            trace: out.join("trace.txt"),
            vhost_sock: out.join("udc.sock"),
            control_sock: out.join("control.sock"),
        }
    }
}

pub struct Finished {
    pub paths: Paths,
    pub qemu_status: Option<ExitStatus>,
    pub timed_out: bool,
    pub daemon_restarts: u32,
    pub elapsed: Duration,
    /// The console line that showed the guest's kernel stuck, if it was
    /// stopped for that.
    pub stuck: Option<String>,
    /// Why the runner stopped the guest early for [`VmOptions::stop_marker`]
    /// or [`VmOptions::quiet_timeout`].
    pub stopped: Option<String>,
    /// With [`VmOptions::run_as`]: how the daemon (each start) and QEMU
    /// ran, read from /proc, and their sockets.
    pub privileges: Option<Privileges>,
}

/// How long a guest that said it stopped may go on printing (the kernel's
/// report of what broke) before the runner stops it.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Watches the console log as it grows for a kernel that is stuck.
struct StuckWatch {
    offset: u64,
    partial: String,
    found: Option<(String, Instant)>,
}

impl StuckWatch {
    fn new() -> StuckWatch {
        StuckWatch {
            offset: 0,
            partial: String::new(),
            found: None,
        }
    }

    /// Reads what the console gained; true once the grace time after a
    /// stuck marker has passed.
    fn poll(&mut self, console: &Path) -> bool {
        if self.found.is_none() {
            if let Ok(mut f) = File::open(console) {
                if f.seek(SeekFrom::Start(self.offset)).is_ok() {
                    let mut buf = Vec::new();
                    if let Ok(n) = f.read_to_end(&mut buf) {
                        self.offset += n as u64;
                        self.partial.push_str(&String::from_utf8_lossy(&buf));
                    }
                }
            }
            if let Some(end) = self.partial.rfind('\n') {
                let complete: String = self.partial.drain(..=end).collect();
                if let Some(l) = complete
                    .lines()
                    .find(|l| STUCK_MARKERS.iter().any(|m| l.contains(m)))
                {
                    self.found = Some((l.trim().to_string(), Instant::now()));
                }
            }
        }
        self.found
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() >= STUCK_GRACE)
    }
}

fn kvm_usable() -> bool {
    OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

/// The QEMU command line (without the binary).
pub fn qemu_args(o: &VmOptions, p: &Paths, initrd: &Path, interactive: bool) -> Vec<String> {
    let kvm = match o.accel {
        Accel::Kvm => true,
        Accel::Tcg => false,
        Accel::Auto => kvm_usable(),
    };
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
    match o.coherency {
        // Interrupt remapping, which intel-iommu needs for more than 255
        // CPUs and Linux wants before it enables x2APIC, needs the IOAPIC
        // in QEMU under KVM (a split irqchip); device-iotlb lets a device
        // with ATS take invalidations of its own.
        Coherency::ViommuIntel => push(&[
            "-machine",
            "q35,memory-backend=mem,kernel-irqchip=split",
            "-device",
            "intel-iommu,intremap=on,device-iotlb=on",
        ]),
        Coherency::ViommuVirtio => push(&[
            "-machine",
            "q35,memory-backend=mem",
            "-device",
            "virtio-iommu-pci",
        ]),
        Coherency::Direct | Coherency::Swiotlb => push(&["-machine", "q35,memory-backend=mem"]),
    }
    push(&[
        "-object",
        &format!("memory-backend-memfd,id=mem,size={},share=on", o.memory),
    ]);
    push(&["-m", &o.memory, "-smp", &o.cpus.to_string()]);
    if kvm {
        push(&["-accel", "kvm", "-cpu", "host"]);
    } else {
        push(&["-accel", "tcg", "-cpu", "max"]);
    }
    push(&["-nodefaults", "-no-reboot", "-nic", "none", "-display", "none"]);
    push(&["-kernel", &o.image.bzimage.display().to_string()]);
    push(&["-initrd", &initrd.display().to_string()]);
    let append = format!("console=ttyS0 loglevel=7 panic=-1 {}", o.append)
        .trim()
        .to_string();
    push(&["-append", &append]);
    push(&[
        "-chardev",
        &format!("socket,id=udc,path={},reconnect-ms=200", p.vhost_sock.display()),
        "-device",
        &o.device.arg("udc", o.coherency.viommu()),
    ]);
    push(&["-device", "virtio-serial-pci"]);
    push(&[
        "-chardev",
        &format!("socket,id=ctl,path={},reconnect-ms=200", p.control_sock.display()),
        "-device",
        "virtserialport,chardev=ctl,name=udc-control",
    ]);
    push(&[
        "-chardev",
        &format!("file,id=res,path={}", p.results.display()),
        "-device",
        "virtserialport,chardev=res,name=udc-results",
    ]);
    if interactive {
        push(&[
            "-chardev",
            &format!("stdio,id=con,mux=on,signal=off,logfile={}", p.console.display()),
            "-serial",
            "chardev:con",
            "-mon",
            "chardev=con,mode=readline",
        ]);
    } else {
        push(&["-serial", &format!("file:{}", p.console.display())]);
    }
    if let Some(port) = o.gdb {
        push(&["-gdb", &format!("tcp::{port}")]);
    }
    if !o.trace.is_empty() {
        a.extend(crate::trace::qemu_args(&p.trace));
    }
    a.extend(crate::shares::qemu_args(&o.shares));
    if o.usbip.is_some() {
        a.extend(crate::usbip::qemu_args());
    }
    a.extend(o.qemu_opts.iter().cloned());
    a
}

/// How to attach gdb to the guest's kernel through QEMU's stub: the
/// kernel's vmlinux with debug information, and the kernel's own gdb
/// scripts for module symbols (lx-symbols).
pub fn gdb_hint(o: &VmOptions, port: u16) -> String {
    let vmlinux = match o.vmlinux.as_ref().filter(|v| v.is_file()) {
        Some(v) => v.display().to_string(),
        None => format!(
            "/usr/lib/debug/boot/vmlinux-{} (from linux-image-{}-dbg)",
            o.image.release, o.image.release
        ),
    };
    format!(
        "udc-vm: gdb stub on port {port}; attach with\n  gdb -ex 'target remote :{port}' -ex 'lx-symbols' {vmlinux}\n\
         (lx-symbols needs the kernel tree's scripts/gdb: add-auto-load-safe-path, or source vmlinux-gdb.py)"
    )
}

/// `--dry-run`: the daemon's and QEMU's command lines for the first boot,
/// as they would run, with the initramfs the boot would build.
pub fn dry_run(o: &VmOptions) -> String {
    let p = Paths::new(&o.out);
    let quote = |a: &[String]| {
        a.iter()
            .map(|s| crate::shell_quote(s))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let daemon = daemon_args(o, &p, o.pcap.as_deref().map(|f| pcap_path(f, 1)));
    let qemu = qemu_args(o, &p, &o.out.join("initrd.img"), false);
    let mut s = format!(
        "{} {}\n{} {}\n",
        crate::shell_quote(&o.daemon.display().to_string()),
        quote(&daemon),
        crate::shell_quote(&o.qemu.display().to_string()),
        quote(&qemu)
    );
    if let Some(port) = o.gdb {
        s += &gdb_hint(o, port);
        s.push('\n');
    }
    s
}

/// The daemon's arguments for one start (`pcap`: this start's capture).
fn daemon_args(o: &VmOptions, p: &Paths, pcap: Option<PathBuf>) -> Vec<String> {
    let mut a = vec![
        "--socket-path".to_string(),
        p.vhost_sock.display().to_string(),
        "--control-socket".into(),
        p.control_sock.display().to_string(),
        // The guest's cases end the daemon on purpose to test recovery
        // from a lost back end; the socket is reachable only from this
        // run's QEMU (0600, in the run's own directory).
        "--control-allow-crash".into(),
        "--speed".into(),
        value_name(o.speed),
    ];
    a.extend(o.daemon_args.iter().cloned());
    if let Some(port) = o.usbip {
        a.extend(crate::usbip::daemon_args(port));
    }
    if let Some(f) = pcap {
        a.extend(["--pcap".into(), f.display().to_string()]);
    }
    a
}

struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(o: &VmOptions, p: &Paths) -> Result<Daemon, Error> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.daemon_log)
            .map_err(|e| Error::Io(format!("{}: {e}", p.daemon_log.display())))?;
        let _ = std::fs::remove_file(&p.vhost_sock);
        let _ = std::fs::remove_file(&p.control_sock);
        let mut cmd = Command::new(&o.daemon);
        if let Some(r) = &o.run_as {
            // Its one extra: the group that may open the host's /dev/udmabuf.
            r.apply(&mut cmd, r.udmabuf_gid.as_slice());
        }
        let pcap = o.pcap.as_ref().map(|f| {
            let path = pcap_path(f, CAPTURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
            eprintln!("udc-vm: bus capture: {}", path.display());
            path
        });
        let mut child = cmd
            .args(daemon_args(o, p, pcap))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| Error::Io(e.to_string()))?)
            .stderr(log)
            .spawn()
            .map_err(|e| Error::Missing(format!("cannot start {}: {e}", o.daemon.display())))?;
        let start = Instant::now();
        while !(p.vhost_sock.exists() && p.control_sock.exists()) {
            if let Ok(Some(st)) = child.try_wait() {
                return Err(Error::Daemon(format!(
                    "vhost-device-udc exited ({st}) before listening:\n{}",
                    tail(&p.daemon_log, 10)
                )));
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                return Err(Error::Daemon(format!(
                    "vhost-device-udc did not create its sockets within 10 s:\n{}",
                    tail(&p.daemon_log, 10)
                )));
            }
            sleep(Duration::from_millis(20));
        }
        Ok(Daemon { child })
    }

    /// Records how the daemon runs and its sockets' owner and mode.
    fn record(&self, o: &VmOptions, p: &Paths, privileges: &mut Option<Privileges>) {
        if let (Some(r), Some(rec)) = (&o.run_as, privileges.as_mut()) {
            rec.process("daemon", self.child.id(), r, r.udmabuf_gid.as_slice());
            rec.socket("vhost-user socket", &p.vhost_sock, r);
            rec.socket("control socket", &p.control_sock, r);
        }
    }

    fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The time a crashed daemon asked to stay down (control socket `crash`
/// with `down_ms`), from its last log lines.
fn asked_downtime(log_tail: &str) -> Option<Duration> {
    let i = log_tail.rfind("stay down for ")?;
    let ms = log_tail[i + "stay down for ".len()..].split(' ').next()?;
    ms.parse().ok().map(Duration::from_millis)
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Follows a file the guest writes through QEMU (the results port) while
/// it runs, giving each whole line to `each` every `every`; once `stop` is
/// set it reads what is left and ends.
pub fn follow_lines(
    path: PathBuf,
    stop: Arc<AtomicBool>,
    every: Duration,
    each: impl Fn(&str) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut pos = 0u64;
        let mut partial = String::new();
        loop {
            let last = stop.load(Ordering::SeqCst);
            if let Ok(mut f) = File::open(&path) {
                let mut buf = Vec::new();
                if f.seek(SeekFrom::Start(pos)).is_ok() && f.read_to_end(&mut buf).is_ok() {
                    pos += buf.len() as u64;
                    partial.push_str(&String::from_utf8_lossy(&buf));
                    while let Some(end) = partial.find('\n') {
                        let line: String = partial.drain(..=end).collect();
                        each(&line);
                    }
                }
            }
            if last {
                return;
            }
            std::thread::sleep(every);
        }
    })
}

/// Copies what was appended to a file since `pos` to stdout.
fn echo_new(path: &Path, pos: &mut u64) {
    let Ok(mut f) = File::open(path) else { return };
    if f.seek(SeekFrom::Start(*pos)).is_err() {
        return;
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_ok() && !buf.is_empty() {
        *pos += buf.len() as u64;
        let mut out = std::io::stdout();
        let _ = out.write_all(&buf);
        let _ = out.flush();
    }
}

/// The image's initramfs, with the run's script and extra files appended
/// as a second archive (later entries replace earlier ones).
fn initrd(o: &VmOptions, mode: &Mode) -> Result<PathBuf, Error> {
    let files: &[GuestFile] = &o.ffs.files;
    let script = match mode {
        Mode::Interactive if files.is_empty() && o.shares.is_empty() => return Ok(o.image.initramfs.clone()),
        Mode::Interactive => None,
        Mode::Script(s) => Some(s),
    };
    let base = std::fs::read(&o.image.initramfs)
        .map_err(|e| Error::Missing(format!("{}: {e}", o.image.initramfs.display())))?;
    // Each file's directories first, parents before children.
    let mut dirs: Vec<String> = files
        .iter()
        .flat_map(|f| Path::new(&f.path).ancestors().skip(1))
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.display().to_string())
        .collect();
    dirs.sort();
    dirs.dedup();
    let mut entries: Vec<cpio::Entry> = dirs.iter().map(|d| cpio::Entry::Dir(d)).collect();
    for f in files {
        entries.push(cpio::Entry::File {
            path: &f.path,
            mode: 0o644,
            data: &f.data,
        });
    }
    // The guest's init mounts these before it runs anything.
    let share_table = crate::shares::guest_table(&o.shares);
    if !o.shares.is_empty() {
        entries.push(cpio::Entry::File {
            path: "etc/udc/shares",
            mode: 0o644,
            data: share_table.as_bytes(),
        });
    }
    if let Some(script) = script {
        entries.push(cpio::Entry::Dir("udc"));
        entries.push(cpio::Entry::File {
            path: "udc/run.sh",
            mode: 0o755,
            data: script.as_bytes(),
        });
    }
    let path = o.out.join("initrd.img");
    std::fs::write(&path, cpio::append(&base, &cpio::archive(&entries)))
        .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    Ok(path)
}

pub fn boot(o: &VmOptions, mode: &Mode) -> Result<Finished, Error> {
    std::fs::create_dir_all(&o.out).map_err(|e| Error::Io(format!("{}: {e}", o.out.display())))?;
    let p = Paths::new(&o.out);
    for f in [&p.console, &p.results, &p.daemon_log, &p.qemu_log] {
        let _ = std::fs::remove_file(f);
    }
    let interactive = matches!(mode, Mode::Interactive);
    let initrd = initrd(o, mode)?;
    // With --user, the daemon runs from a copy in the run's directory: the
    // build tree it comes from may be closed to that user (a checkout
    // under /root).
    let staged;
    let o = match &o.run_as {
        Some(r) => {
            let daemon = o.out.join("vhost-device-udc");
            let _ = std::fs::remove_file(&daemon);
            std::fs::copy(&o.daemon, &daemon)
                .map_err(|e| Error::Io(format!("{} to {}: {e}", o.daemon.display(), daemon.display())))?;
            r.prepare(&o.out, &[&o.image.bzimage, &initrd, &o.qemu])?;
            staged = VmOptions { daemon, ..o.clone() };
            &staged
        }
        None => o,
    };
    let mut privileges = o.run_as.as_ref().map(|_| Privileges::default());
    eprintln!("udc-vm: console log: {}", p.console.display());
    eprintln!("udc-vm: daemon log:  {}", p.daemon_log.display());
    if !interactive {
        eprintln!("udc-vm: results:     {}", p.results.display());
    }

    let mut daemon = Daemon::start(o, &p)?;
    daemon.record(o, &p, &mut privileges);
    let args = qemu_args(o, &p, &initrd, interactive);
    if let Some(port) = o.gdb {
        eprintln!("{}", gdb_hint(o, port));
    }
    std::fs::write(
        o.out.join("qemu.cmdline"),
        format!("{} {}\n", o.qemu.display(), args.join(" ")),
    )
    .map_err(|e| Error::Io(e.to_string()))?;
    let qlog = File::create(&p.qemu_log).map_err(|e| Error::Io(e.to_string()))?;
    let mut qemu_cmd = Command::new(&o.qemu);
    qemu_cmd.args(&args);
    if let Some(r) = &o.run_as {
        // No supplementary group at all: QEMU needs none.
        r.apply(&mut qemu_cmd, &[]);
    }
    if !interactive {
        qemu_cmd
            .stdin(Stdio::null())
            .stdout(qlog.try_clone().map_err(|e| Error::Io(e.to_string()))?)
            .stderr(qlog);
    }
    let mut qemu = qemu_cmd
        .spawn()
        .map_err(|e| Error::Missing(format!("cannot start {}: {e}", o.qemu.display())))?;
    // spawn() returns after the exec: /proc shows QEMU itself.
    if let (Some(r), Some(rec)) = (&o.run_as, privileges.as_mut()) {
        rec.process("qemu", qemu.id(), r, &[]);
    }

    let start = Instant::now();
    let mut restarts = 0;
    let mut echoed = 0u64;
    let mut timed_out = false;
    let mut stuck = StuckWatch::new();
    let mut last_stuck_check = Instant::now();
    let mut results = ResultsWatch::new(o.stop_marker.clone(), o.quiet_timeout);
    let qemu_status = loop {
        if let Ok(Some(st)) = qemu.try_wait() {
            break Some(st);
        }
        if let Ok(Some(st)) = daemon.child.try_wait() {
            if restarts >= MAX_DAEMON_RESTARTS {
                eprintln!("udc-vm: the daemon ended ({st}) {restarts} times; stopping the guest");
                let _ = qemu.kill();
                break qemu.wait().ok();
            }
            restarts += 1;
            let down = asked_downtime(&tail(&p.daemon_log, 3));
            match down {
                Some(d) => eprintln!(
                    "udc-vm: the daemon ended ({st}) and asked to stay down for {} ms; starting it again then",
                    d.as_millis()
                ),
                None => eprintln!("udc-vm: the daemon ended ({st}); starting it again on the same sockets"),
            }
            if let Some(d) = down {
                sleep(d.min(Duration::from_secs(60)));
            }
            daemon = Daemon::start(o, &p)?;
            daemon.record(o, &p, &mut privileges);
        }
        if o.echo_results {
            echo_new(&p.results, &mut echoed);
        }
        if let Some(t) = o.timeout {
            if start.elapsed() > t {
                timed_out = true;
                let _ = qemu.kill();
                break qemu.wait().ok();
            }
        }
        // An interactive user sees the console and decides for themselves.
        if !interactive && last_stuck_check.elapsed() >= Duration::from_secs(1) {
            last_stuck_check = Instant::now();
            if stuck.poll(&p.console) || results.poll(&p.results, &p.console) {
                let _ = qemu.kill();
                break qemu.wait().ok();
            }
        }
        sleep(Duration::from_millis(100));
    };
    if o.echo_results {
        echo_new(&p.results, &mut echoed);
    }
    daemon.stop();
    Ok(Finished {
        paths: p,
        qemu_status,
        timed_out,
        daemon_restarts: restarts,
        elapsed: start.elapsed(),
        stuck: stuck
            .found
            .filter(|(_, at)| at.elapsed() >= STUCK_GRACE)
            .map(|(l, _)| l),
        stopped: results.stopped,
        privileges: privileges.inspect(|r| {
            let text = r
                .lines
                .iter()
                .chain(&r.problems)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
                + "\n";
            let _ = std::fs::write(o.out.join("privileges.txt"), text);
        }),
    })
}

/// Watches the results port as it grows: for the guest tool's word that it
/// stopped (the guest may be in no state to power off), and for silence.
struct ResultsWatch {
    marker: Option<String>,
    quiet_timeout: Option<Duration>,
    len: u64,
    changed: Instant,
    marker_seen: Option<Instant>,
    stopped: Option<String>,
}

impl ResultsWatch {
    fn new(marker: Option<String>, quiet_timeout: Option<Duration>) -> ResultsWatch {
        ResultsWatch {
            marker,
            quiet_timeout,
            len: 0,
            changed: Instant::now(),
            marker_seen: None,
            stopped: None,
        }
    }

    /// True when the guest should be stopped now. The marker may come on
    /// the results port or, from a guest too stuck for its virtio ports,
    /// on the console.
    fn poll(&mut self, results: &Path, console: &Path) -> bool {
        let len = std::fs::metadata(results).map(|m| m.len()).unwrap_or(0);
        if len != self.len {
            self.len = len;
            self.changed = Instant::now();
        }
        if let (Some(m), None) = (&self.marker, self.marker_seen) {
            let seen = [results, console].iter().any(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .contains(m.as_str())
            });
            if seen {
                self.marker_seen = Some(Instant::now());
            }
        }
        if self.marker_seen.is_some_and(|at| at.elapsed() >= STOP_GRACE) {
            self.stopped = Some("the guest tool stopped after a failed case".into());
            return true;
        }
        if let Some(t) = self.quiet_timeout {
            if self.changed.elapsed() >= t {
                self.stopped = Some(format!("nothing new on the results port for {} s", t.as_secs()));
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #[test]
    fn a_dry_run_prints_both_command_lines_with_the_debug_hooks() {
        let mut o = opts();
        o.qemu_opts = vec!["-d".into(), "guest_errors".into()];
        o.gdb = Some(4321);
        o.pcap = Some("/out/bus.pcap".into());
        o.daemon_args = vec!["--inject=latency=1ms".into()];
        let text = dry_run(&o);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("/d --socket-path /out/udc.sock"), "{text}");
        assert!(
            lines[0].ends_with("--inject=latency=1ms --pcap /out/bus.pcap"),
            "{text}"
        );
        assert!(lines[1].starts_with("/q -machine q35"), "{text}");
        assert!(lines[1].ends_with("-gdb tcp::4321 -d guest_errors"), "{text}");
        assert!(text.contains("gdb -ex 'target remote :4321'"), "{text}");
        assert_eq!(
            CAPTURES.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "a dry run starts no capture"
        );
    }

    #[test]
    fn each_daemon_start_captures_into_its_own_file() {
        let f = Path::new("/out/bus.pcap");
        assert_eq!(pcap_path(f, 1), Path::new("/out/bus.pcap"));
        assert_eq!(pcap_path(f, 2), Path::new("/out/bus-2.pcap"));
        assert_eq!(pcap_path(Path::new("/out/bus"), 3), Path::new("/out/bus-3"));
    }

    use super::*;

    pub(crate) fn opts() -> VmOptions {
        VmOptions {
            qemu: "/q".into(),
            device: crate::locate::Device::UdcPci,
            image: Image {
                dir: "/img".into(),
                bzimage: "/img/bzImage".into(),
                initramfs: "/img/initramfs.cpio.gz".into(),
                release: "6.12".into(),
            },
            daemon: "/d".into(),
            daemon_args: vec![],
            memory: "2G".into(),
            cpus: 2,
            speed: BusSpeed::Super,
            append: "udmabuf.size_limit_mb=128".into(),
            accel: Accel::Tcg,
            timeout: None,
            out: "/out".into(),
            echo_results: false,
            inject_seed: None,
            ffs: Ffs {
                description: "stock".into(),
                srcversion: None,
                files: vec![],
            },
            stop_marker: None,
            quiet_timeout: None,
            run_as: None,
            pcap: None,
            qemu_opts: vec![],
            gdb: None,
            vmlinux: None,
            shares: Vec::new(),
            trace: Vec::new(),
            usbip: None,
            coherency: Coherency::Direct,
        }
    }

    #[test]
    fn qemu_gets_shared_memfd_ram_and_all_three_channels() {
        let o = opts();
        let p = Paths::new(&o.out);
        let a = qemu_args(&o, &p, Path::new("/out/initrd.img"), false).join(" ");
        assert!(
            a.contains("-object memory-backend-memfd,id=mem,size=2G,share=on"),
            "{a}"
        );
        assert!(a.contains("-machine q35,memory-backend=mem"));
        assert!(a.contains("-accel tcg -cpu max"));
        assert!(a.contains(
            "socket,id=udc,path=/out/udc.sock,reconnect-ms=200 -device vhost-user-udc-pci,chardev=udc"
        ));
        assert!(a.contains("socket,id=ctl,path=/out/control.sock,reconnect-ms=200 -device virtserialport,chardev=ctl,name=udc-control"));
        assert!(a.contains(
            "file,id=res,path=/out/results.ktap -device virtserialport,chardev=res,name=udc-results"
        ));
        assert!(a.contains("-serial file:/out/console.log"));
        assert!(a.contains("-append console=ttyS0 loglevel=7 panic=-1 udmabuf.size_limit_mb=128"));
        assert!(a.contains("-initrd /out/initrd.img"));
    }

    #[test]
    fn a_viommu_comes_before_the_devices_it_translates() {
        let mut o = opts();
        let p = Paths::new(&o.out);
        let a = qemu_args(&o, &p, Path::new("/i"), false).join(" ");
        assert!(!a.contains("iommu"), "{a}");
        o.coherency = Coherency::ViommuIntel;
        let a = qemu_args(&o, &p, Path::new("/i"), false).join(" ");
        let iommu = a
            .find("-machine q35,memory-backend=mem,kernel-irqchip=split -device intel-iommu,intremap=on,device-iotlb=on")
            .unwrap_or_else(|| panic!("{a}"));
        let udc = a
            .find("-device vhost-user-udc-pci,chardev=udc,iommu_platform=on")
            .unwrap_or_else(|| panic!("{a}"));
        assert!(iommu < udc && iommu < a.find("virtio-serial-pci").unwrap(), "{a}");
        o.coherency = Coherency::ViommuVirtio;
        let a = qemu_args(&o, &p, Path::new("/i"), false).join(" ");
        assert!(
            a.contains("-machine q35,memory-backend=mem -device virtio-iommu-pci"),
            "{a}"
        );
        assert!(
            a.contains("vhost-user-udc-pci,chardev=udc,iommu_platform=on"),
            "{a}"
        );
        assert!(!a.contains("intel-iommu"), "{a}");
    }

    #[test]
    fn the_generic_device_is_configured_as_virtio_udc() {
        let mut o = opts();
        o.device = crate::locate::Device::TestDevicePci;
        let a = qemu_args(&o, &Paths::new(&o.out), Path::new("/i"), false).join(" ");
        assert!(a.contains("-device vhost-user-test-device-pci,chardev=udc,virtio-id=63,num_vqs=3,vq_size=1024,config_size=256"), "{a}");
    }

    #[test]
    fn a_stall_on_the_console_stops_the_guest_after_the_grace_time() {
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("console.log");
        std::fs::write(
            &console,
            "[    1.0] udc-init: loaded virtio_udc\n[   32.6] rcu: INFO: rcu_pre",
        )
        .unwrap();
        let mut w = StuckWatch::new();
        assert!(!w.poll(&console));
        assert!(w.found.is_none(), "half a line is not a match yet");
        let mut f = OpenOptions::new().append(true).open(&console).unwrap();
        f.write_all(b"empt detected stalls on CPUs/tasks:\n").unwrap();
        assert!(!w.poll(&console), "the grace time has not passed");
        assert_eq!(
            w.found.as_ref().unwrap().0,
            "[   32.6] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"
        );
        w.found.as_mut().unwrap().1 -= STUCK_GRACE;
        assert!(w.poll(&console));
    }

    #[test]
    fn a_crashed_daemon_may_ask_to_stay_down() {
        assert_eq!(
            asked_downtime("[x WARN vhost_device_udc::control] control socket asked for a crash: exiting now without cleanup; stay down for 4000 ms before a restart"),
            Some(Duration::from_millis(4000))
        );
        assert_eq!(
            asked_downtime("control socket asked for a crash: exiting now without cleanup"),
            None
        );
    }

    #[test]
    fn an_ordinary_console_is_not_stuck() {
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("console.log");
        std::fs::write(
            &console,
            "[    1.0] udc-init: loaded virtio_udc\n[    9.0] udc-init: run.sh exit 0\n",
        )
        .unwrap();
        let mut w = StuckWatch::new();
        assert!(!w.poll(&console));
        assert!(w.found.is_none());
    }

    #[test]
    fn interactive_runs_put_console_and_monitor_on_the_terminal() {
        let o = opts();
        let p = Paths::new(&o.out);
        let a = qemu_args(&o, &p, Path::new("/img/initramfs.cpio.gz"), true).join(" ");
        assert!(a.contains(
            "-chardev stdio,id=con,mux=on,signal=off,logfile=/out/console.log -serial chardev:con"
        ));
        assert!(!a.contains("-serial file:"));
    }
}
