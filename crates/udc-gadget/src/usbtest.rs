// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `udc-gadget usbtest`: the kernel's own gadget test suite. The
//! sourcesink function (usb_f_ss_lb, as Gadget Zero 0525:a4a0) is bound to
//! a UDC, the guest's own USB host stack enumerates it (through vhci_hcd
//! and the daemon's USB/IP server for virtio-udc, directly for dummy_hcd),
//! usbtest binds to it, and tools/usb/testusb.c, unmodified, runs each test
//! number: one KTAP case per test, with usbtest's own result.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::ktap::{Ktap, Outcome};
use crate::usbip;

/// Where the image puts the kernel's testusb (images/build.sh).
pub const TESTUSB: &str = "/usr/libexec/udc/testusb";

const CONFIGFS: &str = "/sys/kernel/config/usb_gadget";
const GADGET: &str = "udc-usbtest";

/// Test numbers of testusb and what each does (drivers/usb/misc/usbtest.c).
pub const TESTS: &[(u32, &str)] = &[
    (0, "nop"),
    (1, "bulk-out"),
    (2, "bulk-in"),
    (3, "bulk-out-varied-lengths"),
    (4, "bulk-in-varied-lengths"),
    (5, "bulk-out-sg"),
    (6, "bulk-in-sg"),
    (7, "bulk-out-sg-varied"),
    (8, "bulk-in-sg-varied"),
    (9, "ch9-control-subset"),
    (10, "control-queued"),
    (11, "unlink-in"),
    (12, "unlink-out"),
    (13, "set-clear-halt"),
    (14, "control-out"),
    (15, "iso-out"),
    (16, "iso-in"),
    (17, "bulk-out-odd-address"),
    (18, "bulk-in-odd-address"),
    (19, "bulk-out-odd-address-premapped"),
    (20, "bulk-in-odd-address-premapped"),
    (21, "control-out-odd-address"),
    (22, "iso-out-odd-address"),
    (23, "iso-in-odd-address"),
    (24, "unlink-from-queues"),
    (25, "int-out"),
    (26, "int-in"),
    (27, "bulk-out-throughput"),
    (28, "bulk-in-throughput"),
    (29, "clear-toggle-between-writes"),
];

/// The tests that apply to sourcesink on a bulk-and-control device path
/// (docs/usbtest.md says why each other one does not).
pub const APPLICABLE: &[u32] = &[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 27, 28, 29,
];

/// Which host controller the guest's USB stack reaches the gadget through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// virtio-udc, attached to vhci_hcd through the daemon's USB/IP server.
    Usbip,
    /// dummy_hcd's own UDC and host controller, in this guest.
    Dummy,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Usbip => "usbip",
            Via::Dummy => "dummy",
        }
    }
}

impl Device {
    fn name(self) -> &'static str {
        match self {
            Device::Sourcesink => "sourcesink",
            Device::FfsDmabuf => "ffs-dmabuf",
        }
    }
}

/// The device usbtest tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// The sourcesink function (usb_f_ss_lb) as Gadget Zero.
    Sourcesink,
    /// A FunctionFS gadget moving its data with DMABUF transfers, as
    /// usbtest's user-mode device (crate::usbtest_ffs).
    FfsDmabuf,
}

/// The tests that apply to the FunctionFS user-mode device: bulk of a
/// fixed length both ways. A DMABUF transfer does not tell how many bytes
/// it moved, so the device cannot follow the varied lengths of tests 3, 4,
/// 7 and 8, nor tell a zero-length packet from data: it runs with a length
/// that is not a multiple of the packet size, after which usbtest sends
/// none (its OUT transfers ask for URB_ZERO_PACKET). Tests 13 and 29 write
/// 1024 bytes whatever the length, and so end with one.
pub const FFS_APPLICABLE: &[u32] = &[0, 1, 2];

#[derive(clap::Args, Debug)]
pub struct UsbtestArgs {
    /// The device under test.
    #[arg(long, value_enum, default_value_t = Device::Sourcesink)]
    pub device: Device,
    /// The way to the gadget.
    #[arg(long, value_enum, default_value_t = Via::Usbip)]
    pub via: Via,
    /// The daemon's USB/IP server (default: udc.usbip= on the kernel
    /// command line, which `udc-vm --usbip` sets).
    #[arg(long)]
    pub server: Option<String>,
    /// Test numbers (comma-separated; default: those that apply).
    #[arg(long, value_delimiter = ',')]
    pub tests: Vec<u32>,
    /// testusb -c: iterations per test.
    #[arg(long, default_value_t = 100)]
    pub count: u32,
    /// testusb -s: transfer length.
    #[arg(long, default_value_t = 4096)]
    pub size: u32,
    /// testusb -v: the step of the varied lengths (tests 3, 4, 7, 8, 14,
    /// 21); below the length, and a multiple of the bulk packet size, or
    /// a device that sends whole packets babbles (-EOVERFLOW) as it must.
    #[arg(long, default_value_t = 1024)]
    pub vary: u32,
}

fn setup(what: impl std::fmt::Display) -> Error {
    Error::Setup(format!("usbtest: {what}"))
}

fn write(path: &Path, value: &str) -> Result<(), Error> {
    std::fs::write(path, value).map_err(|e| setup(format!("writing {value:?} to {}: {e}", path.display())))
}

/// The sourcesink gadget in configfs, removed when dropped.
pub struct SourceSink {
    dir: PathBuf,
}

impl SourceSink {
    /// Gadget Zero's ids (which usbtest knows), sourcesink with `pattern`
    /// (1: mod63, and each side checks the other's data), bound to `udc`.
    fn bind(udc: &str, pattern: u8) -> Result<SourceSink, Error> {
        let _ = usb_gadget::remove_all();
        let dir = Path::new(CONFIGFS).join(GADGET);
        let g = SourceSink { dir: dir.clone() };
        let mkdir =
            |p: &Path| std::fs::create_dir_all(p).map_err(|e| setup(format!("mkdir {}: {e}", p.display())));
        mkdir(&dir)?;
        write(&dir.join("idVendor"), "0x0525")?;
        write(&dir.join("idProduct"), "0xa4a0")?;
        mkdir(&dir.join("strings/0x409"))?;
        write(&dir.join("strings/0x409/manufacturer"), "virtio-udc")?;
        write(&dir.join("strings/0x409/product"), "Gadget Zero (usbtest)")?;
        write(&dir.join("strings/0x409/serialnumber"), "0001")?;
        let f = dir.join("functions/SourceSink.0");
        mkdir(&f).map_err(|e| setup(format!("{e} (is usb_f_ss_lb loaded?)")))?;
        write(&f.join("pattern"), &pattern.to_string())?;
        let c = dir.join("configs/c.1");
        mkdir(&c.join("strings/0x409"))?;
        write(&c.join("strings/0x409/configuration"), "source/sink")?;
        std::os::unix::fs::symlink(&f, c.join("SourceSink.0"))
            .map_err(|e| setup(format!("linking the function: {e}")))?;
        write(&dir.join("UDC"), udc)?;
        Ok(g)
    }
}

impl Drop for SourceSink {
    fn drop(&mut self) {
        let d = &self.dir;
        let _ = std::fs::write(d.join("UDC"), "\n");
        let _ = std::fs::remove_file(d.join("configs/c.1/SourceSink.0"));
        for sub in [
            "configs/c.1/strings/0x409",
            "configs/c.1",
            "functions/SourceSink.0",
            "strings/0x409",
            "",
        ] {
            let _ = std::fs::remove_dir(d.join(sub));
        }
    }
}

/// The UDCs in /sys/class/udc, by name.
fn udcs() -> Result<Vec<String>, Error> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/udc")
        .map_err(|e| setup(format!("/sys/class/udc: {e}")))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// The first UDC whose name starts with `prefix` (dummy_hcd's).
fn udc_named(prefix: &str) -> Result<String, Error> {
    let names = udcs()?;
    names
        .iter()
        .find(|n| n.starts_with(prefix))
        .cloned()
        .ok_or_else(|| {
            setup(format!(
                "no UDC named {prefix}* in /sys/class/udc (there are {names:?})"
            ))
        })
}

/// The first UDC whose name does not start with `prefix` (virtio-udc's,
/// when dummy_hcd's is there too).
fn udc_not_named(prefix: &str) -> Result<String, Error> {
    udcs()?
        .into_iter()
        .find(|n| !n.starts_with(prefix))
        .ok_or_else(|| {
            setup(format!(
                "no UDC but {prefix}* in /sys/class/udc: is virtio_udc loaded?"
            ))
        })
}

/// The usbfs node of the device `vendor`:`product` on a host controller
/// that is not vhci_hcd (dummy_hcd), once usbtest has bound it.
fn wait_device(vendor: &str, product: &str, timeout: Duration) -> Result<PathBuf, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(rd) = std::fs::read_dir("/sys/bus/usb/devices") {
            for d in rd.flatten() {
                let p = d.path();
                let r = |f: &str| {
                    std::fs::read_to_string(p.join(f))
                        .map(|s| s.trim().to_string())
                        .ok()
                };
                if r("idVendor").as_deref() == Some(vendor) && r("idProduct").as_deref() == Some(product) {
                    if let (Some(b), Some(n)) = (r("busnum"), r("devnum")) {
                        let node = PathBuf::from(format!("/dev/bus/usb/{:0>3}/{:0>3}", b, n));
                        if node.exists() && usbtest_bound(&p) {
                            return Ok(node);
                        }
                    }
                }
            }
        }
        if Instant::now() > deadline {
            return Err(setup(format!(
                "{vendor}:{product} did not appear with usbtest bound"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether usbtest has bound an interface of the device at `dev` (sysfs).
fn usbtest_bound(dev: &Path) -> bool {
    std::fs::read_dir(dev).into_iter().flatten().flatten().any(|i| {
        std::fs::read_link(i.path().join("driver"))
            .map(|l| l.ends_with("usbtest"))
            .unwrap_or(false)
    })
}

/// testusb's line for one test: Pass, a failure with usbtest's errno, or
/// None when usbtest answered EOPNOTSUPP (testusb prints nothing then).
fn parse_testusb(out: &str, n: u32) -> Option<Outcome> {
    let pass = format!("test {n},");
    let fail = format!("test {n} -->");
    out.lines().find_map(|l| {
        if l.contains(&pass) {
            Some(Outcome::Pass)
        } else {
            l.find(&fail)
                .map(|i| Outcome::Fail(format!("usbtest: {}", l[i..].trim())))
        }
    })
}

/// The device under test, bound to a UDC and kept until dropped.
enum Bound {
    /// Held for its Drop, which removes the gadget.
    SourceSink(#[allow(dead_code)] SourceSink),
    Ffs(Box<crate::usbtest_ffs::FfsDmabufDevice>),
}

impl Bound {
    fn bind(device: Device, udc: usb_gadget::Udc, pattern: u8) -> Result<Bound, Error> {
        Ok(match device {
            Device::Sourcesink => {
                Bound::SourceSink(SourceSink::bind(&udc.name().to_string_lossy(), pattern)?)
            }
            Device::FfsDmabuf => Bound::Ffs(Box::new(crate::usbtest_ffs::FfsDmabufDevice::bind(udc)?)),
        })
    }

    /// The ids usbtest binds the device by.
    fn id(&self) -> (&'static str, &'static str) {
        match self {
            Bound::SourceSink(_) => ("0525", "a4a0"),
            Bound::Ffs(_) => ("0525", "a4a4"),
        }
    }
}

/// The bulk packet size at the UDC's current speed.
fn max_packet(udc: &str) -> usize {
    match std::fs::read_to_string(format!("/sys/class/udc/{udc}/current_speed"))
        .unwrap_or_default()
        .trim()
    {
        "full-speed" => 64,
        "super-speed" | "super-speed-plus" => 1024,
        _ => 512,
    }
}

/// Runs the suite; KTAP on stdout. True when every test passed.
pub fn run(a: &UsbtestArgs) -> Result<bool, Error> {
    if !Path::new(TESTUSB).exists() {
        return Err(setup(format!(
            "{TESTUSB} is not in the image (images/build.sh builds it)"
        )));
    }
    let default = match a.device {
        Device::Sourcesink => APPLICABLE,
        Device::FfsDmabuf => FFS_APPLICABLE,
    };
    let tests: Vec<u32> = if a.tests.is_empty() {
        default.to_vec()
    } else {
        a.tests.clone()
    };
    for n in &tests {
        if !TESTS.iter().any(|(t, _)| t == n) {
            return Err(setup(format!(
                "test {n}: testusb has tests 0 to {}",
                TESTS.len() - 1
            )));
        }
        if a.device == Device::FfsDmabuf && needs(*n) != Needs::default() {
            return Err(setup(format!(
                "test {n} needs sourcesink (an isochronous alternate setting or zeros)"
            )));
        }
    }
    let mut k = Ktap::start(tests.len());
    k.diag(&format!(
        "testusb -c {} -s {} -v {} ({:?} via {:?})",
        a.count, a.size, a.vary, a.device, a.via
    ));
    // A kernel warning, oops or leak report during a test fails it.
    let mut kernel = crate::kmsg::KmsgWatch::start();
    let mut conn: Option<Connected> = None;
    // Setups that failed, with why: their tests fail with that reason,
    // the others still run.
    let mut broken: Vec<(Needs, String)> = Vec::new();
    for n in tests {
        let name = TESTS
            .iter()
            .find(|(t, _)| *t == n)
            .map(|(_, d)| *d)
            .unwrap_or("unknown");
        // Unique across the suites, so that an expectation names one.
        let case = format!("usbtest-{}-{}-{n:02}-{name}", a.via.name(), a.device.name());
        let start = Instant::now();
        // The device and usbtest as this test needs them: bound again
        // (and attached again) when the last test needed them otherwise.
        let want = needs(n);
        if let Some((_, why)) = broken.iter().find(|(b, _)| *b == want) {
            k.result(&case, &Outcome::Fail(why.clone()), start.elapsed());
            continue;
        }
        if conn.as_ref().is_none_or(|c| c.needs != want) {
            drop(conn.take());
            match Connected::new(a, want) {
                Ok(c) => {
                    k.diag(&format!(
                        "{} ({}, packets of {})",
                        c.node.display(),
                        want.describe(),
                        c.max_packet
                    ));
                    conn = Some(c);
                }
                Err(e) => {
                    let why = format!("{} cannot be set up: {e}", want.describe());
                    broken.push((want, why.clone()));
                    k.result(&case, &Outcome::Fail(why), start.elapsed());
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        let before = ffs_counts(&c.bound);
        let out = Command::new(TESTUSB)
            .arg("-D")
            .arg(&c.node)
            .args([
                "-t",
                &n.to_string(),
                "-c",
                &a.count.to_string(),
                "-s",
                &a.size.to_string(),
            ])
            // Varied lengths and control writes run 1..length in steps of
            // this; it must be below the length (usbtest: -EINVAL otherwise).
            .args(["-v", &a.vary.to_string()])
            .output()
            .map_err(|e| setup(format!("running {TESTUSB}: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut outcome = match parse_testusb(&stdout, n) {
            Some(o) => o,
            None => Outcome::Fail(format!(
                "usbtest does not run test {n} on this device (EOPNOTSUPP); testusb said: {}{}",
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        };
        if outcome == Outcome::Pass {
            if let Some(why) = ffs_check(&c.bound, before, n, a.count as u64, a.size as u64) {
                outcome = Outcome::Fail(why);
            }
        }
        let problems = kernel.problems();
        if !problems.is_empty() {
            let mut why = match outcome {
                Outcome::Fail(w) => w + "\n",
                Outcome::Pass => String::new(),
            };
            why += &format!("the kernel logged:\n{}", problems.join("\n"));
            outcome = Outcome::Fail(why);
        }
        k.result(&case, &outcome, start.elapsed());
    }
    k.finish();
    Ok(k.failed == 0)
}

/// What a test needs of the device and of usbtest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Needs {
    /// The data pattern of both sides: 1 (mod63, each side checks the
    /// other's data) or 0 (zeros: usbtest's throughput tests run only so,
    /// and then sourcesink must not expect mod63).
    pattern: u8,
    /// usbtest's `alt`: -1 takes the first alternate setting with bulk
    /// endpoints; the isochronous tests need sourcesink's alternate 1.
    alt: i32,
}

impl Default for Needs {
    fn default() -> Self {
        Needs { pattern: 1, alt: -1 }
    }
}

impl Needs {
    fn describe(&self) -> String {
        format!(
            "pattern {}, alternate setting {}",
            self.pattern,
            if self.alt < 0 {
                "of the bulk endpoints".into()
            } else {
                self.alt.to_string()
            }
        )
    }
}

fn needs(n: u32) -> Needs {
    match n {
        15 | 16 | 22 | 23 => Needs { pattern: 1, alt: 1 },
        27 | 28 => Needs { pattern: 0, alt: -1 },
        _ => Needs::default(),
    }
}

/// The device bound, reached by the guest's USB stack, with usbtest on it.
struct Connected {
    needs: Needs,
    // Fields drop in order: detached from vhci_hcd first, then unbound.
    _attached: Option<usbip::Attached>,
    bound: Bound,
    node: PathBuf,
    max_packet: usize,
}

impl Connected {
    fn new(a: &UsbtestArgs, needs: Needs) -> Result<Connected, Error> {
        let mut log = crate::kmsg::KmsgWatch::start();
        Self::connect(a, needs).map_err(|e| {
            // What the kernel said about it: usbtest's probe, vhci_hcd.
            let said: Vec<String> = log
                .read_new()
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("usbtest") || l.contains("vhci") || l.contains("usb "))
                .map(str::to_string)
                .collect();
            if said.is_empty() {
                e
            } else {
                setup(format!("{e}; the kernel said:\n{}", said.join("\n")))
            }
        })
    }

    fn connect(a: &UsbtestArgs, needs: Needs) -> Result<Connected, Error> {
        let params = Path::new("/sys/module/usbtest/parameters");
        if !params.exists() {
            return Err(setup(
                "usbtest is not loaded (/sys/module/usbtest): the image loads it where the kernel has it",
            ));
        }
        // usbtest reads both when it binds (alt) and on each test (pattern).
        write(&params.join("pattern"), &needs.pattern.to_string())?;
        write(&params.join("alt"), &needs.alt.to_string())?;
        let (bound, attached, node, udc_name) = match a.via {
            Via::Usbip => {
                let server = a
                    .server
                    .clone()
                    .or_else(usbip::server_from_cmdline)
                    .ok_or_else(|| setup("no USB/IP server: give --server, or boot with udc-vm --usbip"))?;
                // Not dummy_hcd's UDC, which an earlier run may have loaded.
                let name = udc_not_named("dummy_udc")?;
                let udc = crate::gadget::find_udc(Some(&name))?;
                let bound = Bound::bind(a.device, udc, needs.pattern)?;
                let att = usbip::attach(&server)?;
                let node = att.devnode.clone();
                let deadline = Instant::now() + Duration::from_secs(30);
                while !usbtest_bound(&att.sysfs) {
                    if Instant::now() > deadline {
                        return Err(setup(format!("usbtest did not bind {}", att.sysfs.display())));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                (bound, Some(att), node, name)
            }
            Via::Dummy => {
                crate::bench::load_dummy_hcd()?;
                let name = udc_named("dummy_udc")?;
                let udc = crate::gadget::find_udc(Some(&name))?;
                let bound = Bound::bind(a.device, udc, needs.pattern)?;
                let (v, p) = bound.id();
                let node = wait_device(v, p, Duration::from_secs(15))?;
                (bound, None, node, name)
            }
        };
        let max_packet = max_packet(&udc_name);
        let mut c = Connected {
            needs,
            _attached: attached,
            bound,
            node,
            max_packet,
        };
        if let Bound::Ffs(d) = &mut c.bound {
            d.start(a.size as usize, max_packet)?;
        }
        Ok(c)
    }
}

/// The FunctionFS device's (IN, OUT) transfer counts.
fn ffs_counts(b: &Bound) -> (u64, u64) {
    match b {
        Bound::Ffs(d) => (
            d.counts.in_transfers.load(std::sync::atomic::Ordering::SeqCst),
            d.counts.out_transfers.load(std::sync::atomic::Ordering::SeqCst),
        ),
        Bound::SourceSink(_) => (0, 0),
    }
}

/// What the FunctionFS device saw of test `n`, checked against what
/// usbtest sent and read: its DMABUF transfers all done, every OUT byte
/// usbtest's pattern. None when all is well (or for sourcesink, which
/// checks its OUT data in the kernel and fails the transfer otherwise).
fn ffs_check(b: &Bound, before: (u64, u64), n: u32, count: u64, size: u64) -> Option<String> {
    let Bound::Ffs(d) = b else { return None };
    // Tests 5 and 6 send scatterlists of 32 entries of `size` bytes.
    let per = if matches!(n, 5 | 6) { 32 } else { 1 };
    let (want_in, want_out) = match n {
        1 | 5 => (0, count * per),
        2 | 6 => (count * per, 0),
        _ => (0, 0),
    };
    // The last fence may signal a moment after the host saw the transfer.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (i, o) = ffs_counts(b);
        let (di, dout) = (i - before.0, o - before.1);
        let problems = d.counts.problems.lock().unwrap().clone();
        if !problems.is_empty() {
            return Some(format!("the FunctionFS device: {}", problems.join("; ")));
        }
        if di >= want_in && dout >= want_out {
            return None;
        }
        if Instant::now() > deadline {
            return Some(format!(
                "the FunctionFS device finished {di} IN and {dout} OUT DMABUF transfers of {size} bytes; usbtest moved {want_in} IN and {want_out} OUT"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn testusb_lines_give_usbtests_result() {
        let out = "/dev/bus/usb/003/002 test 1,    0.123456 secs\n\
                   /dev/bus/usb/003/002 test 13 --> 32 (Broken pipe)\n";
        assert_eq!(parse_testusb(out, 1), Some(Outcome::Pass));
        assert_eq!(
            parse_testusb(out, 13),
            Some(Outcome::Fail("usbtest: test 13 --> 32 (Broken pipe)".into()))
        );
        assert_eq!(parse_testusb(out, 2), None);
        assert_eq!(
            parse_testusb("x test 11, 0.1 secs", 1),
            None,
            "test 1 is not test 11"
        );
    }

    #[test]
    fn every_applicable_test_has_a_name() {
        for n in APPLICABLE {
            assert!(TESTS.iter().any(|(t, _)| t == n));
        }
        assert_eq!(TESTS.len(), 30, "testusb's TEST_CASES");
    }
}
