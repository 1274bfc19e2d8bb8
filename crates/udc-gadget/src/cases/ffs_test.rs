// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The kernel's own FunctionFS example, tools/usb/ffs-test.c, unmodified
//! (images/kernel-tools.sh builds it into the image), run as its users run
//! it: a configfs gadget with a FunctionFS function, FunctionFS mounted,
//! ffs-test started in the mount, the gadget bound to the UDC once
//! ffs-test has written its descriptors. The host side is the control
//! channel: it enumerates at the speed the case asks for, and moves data
//! both ways against ffs-test's own pattern.
//!
//! ffs-test's pattern is its default, PAT_ZERO: its IN thread writes 8 KiB
//! blocks of zeros to `ep1` for ever, and its OUT thread reads `ep2` in
//! 8 KiB blocks and checks that every byte is zero, printing `bad OUT byte
//! N, expected 00 got XX` and ending the thread otherwise. The host checks
//! the IN bytes (a stream of pattern `zeros`); for OUT it sends zeros, and
//! then one block that is not, which ffs-test must report: that shows its
//! check saw the bytes the host sent.
//!
//! ffs-test leaves its full-speed bulk wMaxPacketSize at 0 for the kernel
//! to fill in ("autoconfiguration (kernel)"). f_fs hands usb_ep_autoconfig()
//! the descriptor and then writes the user's 0 back over what it chose, so
//! at full speed the host reads wMaxPacketSize 0 and SET_CONFIGURATION
//! fails on the gadget side: usb_ep_enable() refuses an endpoint of
//! maxpacket 0 with a WARN (docs/kernel-bugs.md; patches/linux/0007).

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use usb_gadget::{Id, RegGadget, Udc};

use crate::error::Error;
use crate::gadget::{self, PRODUCT, VENDOR};
use crate::kmsg::KmsgWatch;
use crate::support::{check, stream_clean, transfer_ok, Ctx};

/// Where the image puts ffs-test (images/build.sh).
pub const FFS_TEST: &str = "/usr/libexec/udc/ffs-test";

/// ffs-test's read() and write() size on `ep1` and `ep2`.
const BLOCK: usize = 8192;

/// ffs-test at full speed: the host enumerates and configures the device,
/// reads no descriptor defect, and data moves both ways, checked at both
/// ends. Fails on an f_fs that gives ffs-test's full-speed wMaxPacketSize
/// 0 back to the host (stock 6.12), quoting the descriptor the host read,
/// the host's error and the kernel's WARN.
pub fn full_speed(ctx: &mut Ctx) -> Result<(), Error> {
    run(ctx, "full", 256 << 10)
}

/// ffs-test at high speed, where its descriptors carry wMaxPacketSize 512:
/// configured, no defect, 1 MiB each way checked at both ends.
pub fn high_speed(ctx: &mut Ctx) -> Result<(), Error> {
    run(ctx, "high", 1 << 20)
}

fn run(ctx: &mut Ctx, speed: &str, bytes: usize) -> Result<(), Error> {
    check(Path::new(FFS_TEST).is_file(), || {
        format!("{FFS_TEST} is not in the image (images/build.sh puts it there from images/kernel-tools.sh)")
    })?;
    let before = ctx.host.status()?;
    let old_speed = before["host"]["config"]["speed"]
        .as_str()
        .unwrap_or("high")
        .to_string();
    // The host enumerates when the case says (as a replug), at `speed`.
    ctx.host
        .ok(json!({"op": "host", "speed": speed, "auto_enumerate": false}))?;
    let result = FfsTestGadget::start(ctx).and_then(|mut g| {
        let r = exercise(ctx, &mut g, speed, bytes);
        let out = g.stop();
        r.map_err(|e| match e {
            Error::Check(why) => Error::Check(format!("{why}\nffs-test's output:\n{}", tail(&out, 30))),
            e => e,
        })
        .map(|()| {
            // Its events and what it said of the odd block (not its dump).
            let said: Vec<&str> = out
                .lines()
                .filter(|l| l.starts_with("Event ") || l.contains("bad OUT byte"))
                .collect();
            ctx.notes.push(format!("ffs-test printed: {}", said.join("; ")));
        })
    });
    let _ = ctx
        .host
        .ok(json!({"op": "host", "speed": old_speed, "auto_enumerate": true}));
    result
}

fn exercise(ctx: &mut Ctx, g: &mut FfsTestGadget, speed: &str, bytes: usize) -> Result<(), Error> {
    let mut kmsg = KmsgWatch::start();
    g.bind()?;
    let reply = ctx.host.request(&json!({"op": "enumerate"}))?;
    let st = ctx.host.status()?;
    if reply["ok"] != true || st["device"]["state"] != "configured" {
        return Err(not_configured(ctx, g, &mut kmsg, speed, &reply, &st));
    }
    check(st["device"]["speed"] == speed, || {
        format!(
            "the device runs at {} speed, the case asked the host for {speed}",
            st["device"]["speed"]
        )
    })?;
    let defects = st["host"]["enumerated"]["defects"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    check(defects.is_empty(), || {
        format!(
            "the host read descriptor defects: {}",
            Value::Array(defects.clone())
        )
    })?;
    let [ep_in, ep_out] = ctx.host.enumerated_endpoint_pair()?;
    let mps = match speed {
        "full" => 64,
        _ => 512,
    };
    check(ep_in.max_packet == mps && ep_out.max_packet == mps, || {
        format!(
            "the host enumerated bulk IN {:#04x} with wMaxPacketSize {} and OUT {:#04x} with {}, expected {mps} \
             at {speed} speed",
            ep_in.address, ep_in.max_packet, ep_out.address, ep_out.max_packet
        )
    })?;
    g.wait_output("Event ENABLE", Duration::from_secs(10))
        .map_err(|e| Error::Check(format!("configured, but ffs-test saw no ENABLE event: {e}")))?;

    // IN: ffs-test writes zeros for ever; the host checks every byte.
    let transfer = 64 << 10;
    let count = (bytes / transfer) as u64;
    ctx.host.stream_start(ep_in.address, "zeros", transfer, count)?;
    stream_clean(&mut ctx.host, ep_in.address, bytes as u64, "IN from ffs-test")?;
    // OUT: zeros, which ffs-test's OUT thread checks block by block.
    ctx.host.stream_start(ep_out.address, "zeros", transfer, count)?;
    stream_clean(&mut ctx.host, ep_out.address, bytes as u64, "OUT to ffs-test")?;
    // Its check of the last blocks runs after their read() returned.
    thread::sleep(Duration::from_millis(300));
    let out = g.output();
    check(
        !out.contains("bad OUT byte") && !out.contains("ep2: ends"),
        || {
            format!(
                "ffs-test's OUT thread refused the zeros the host sent or ended: {}",
                tail(&out, 10)
            )
        },
    )?;
    // One block that is not ffs-test's pattern: its check must say so.
    let odd = vec![0x5a_u8; BLOCK];
    transfer_ok(
        &ctx.host.send_out(ep_out.address, &odd, false)?,
        BLOCK,
        "OUT block of 0x5a",
    )?;
    g.wait_output("bad OUT byte 0, expected 00 got 5a", Duration::from_secs(10))
        .map_err(|e| {
            Error::Check(format!(
                "ffs-test did not report the 0x5a block the host sent, so its OUT check did not see the host's \
                 bytes: {e}"
            ))
        })?;
    ctx.notes.push(format!(
        "{speed} speed, bulk IN {:#04x} and OUT {:#04x} of {mps}-byte packets, no descriptor defect; {} KiB each \
         way in ffs-test's pattern (zeros), checked by the host (IN) and by ffs-test (OUT); ffs-test reported the \
         one 0x5a block",
        ep_in.address,
        ep_out.address,
        bytes >> 10
    ));
    let problems = kmsg.problems();
    check(problems.is_empty(), || {
        format!("the kernel: {}", problems.join("; "))
    })
}

/// Why the host could not configure ffs-test's gadget, with what each
/// side saw.
fn not_configured(
    ctx: &mut Ctx,
    g: &mut FfsTestGadget,
    kmsg: &mut KmsgWatch,
    speed: &str,
    reply: &Value,
    st: &Value,
) -> Error {
    let error = match reply["error"].as_str() {
        Some(e) => e.to_string(),
        None => format!("state {} after enumeration", st["device"]["state"]),
    };
    let mut why = vec![format!(
        "at {speed} speed the host could not configure ffs-test's gadget: {error}"
    )];
    // The configuration descriptor as the host reads it (the device is
    // addressed; the host's failed enumeration read the same).
    match read_endpoints(ctx) {
        Ok(eps) => {
            let zero: Vec<String> = eps
                .iter()
                .filter(|e| e.1 == 0)
                .map(|e| format!("{:#04x}", e.0))
                .collect();
            let all: Vec<String> = eps
                .iter()
                .map(|e| format!("{:#04x} wMaxPacketSize {}", e.0, e.1))
                .collect();
            why.push(if zero.is_empty() {
                format!("the configuration descriptor gives bulk endpoints {}", all.join(", "))
            } else {
                format!(
                    "the configuration descriptor gives wMaxPacketSize 0 to bulk endpoint{} {} (ffs-test leaves \
                     the full-speed size to the kernel; f_fs wrote its 0 back over what usb_ep_autoconfig() chose, \
                     docs/kernel-bugs.md)",
                    if zero.len() > 1 { "s" } else { "" },
                    zero.join(", ")
                )
            });
        }
        Err(e) => why.push(format!("reading the configuration descriptor: {e}")),
    }
    thread::sleep(Duration::from_millis(200));
    let log = kmsg.read_new().unwrap_or_default();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("usb_ep_enable")
                || l.contains("maxpacket")
                || l.contains("config_ep_by_speed")
                || l.contains("WARNING:")
        })
        .take(4)
        .collect();
    if !lines.is_empty() {
        why.push(format!("the kernel: {}", lines.join(" | ")));
    }
    let out = g.output();
    let events: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("Event ")).collect();
    why.push(format!("ffs-test saw events [{}]", events.join(", ")));
    Error::Check(why.join("; "))
}

/// The bulk endpoints (address, wMaxPacketSize) of configuration 1, read
/// by the host with GET_DESCRIPTOR.
fn read_endpoints(ctx: &mut Ctx) -> Result<Vec<(u8, u16)>, Error> {
    use base64::Engine;
    let r = ctx.host.ok(json!({
        "op": "control", "request_type": 0x80, "request": 6, "value": 0x0200, "index": 0, "length": 512,
    }))?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(r["data"].as_str().unwrap_or(""))
        .map_err(|e| Error::Host(format!("bad base64: {e}")))?;
    let mut eps = Vec::new();
    let mut i = 0;
    while i + 2 <= data.len() {
        let len = usize::from(data[i]);
        if len < 2 || i + len > data.len() {
            break;
        }
        if data[i + 1] == 5 && len >= 7 {
            eps.push((data[i + 2], u16::from_le_bytes([data[i + 4], data[i + 5]])));
        }
        i += len;
    }
    Ok(eps)
}

/// A configfs gadget with one FunctionFS function, its FunctionFS mounted
/// and ffs-test running in it, its output (stdout and stderr, on a pseudo
/// terminal as on a user's screen, so line by line) collected.
struct FfsTestGadget {
    child: Child,
    out: Arc<Mutex<String>>,
    reader: Option<thread::JoinHandle<()>>,
    udc: Udc,
    reg: Option<RegGadget>,
    ffs_dir: PathBuf,
}

impl FfsTestGadget {
    /// Registers the gadget, mounts FunctionFS and starts ffs-test there;
    /// returns once ffs-test has written its descriptors (the endpoint
    /// files exist).
    fn start(ctx: &Ctx) -> Result<FfsTestGadget, Error> {
        let udc = gadget::find_udc(ctx.udc.as_deref())?;
        let (reg, ffs_dir) = gadget::register_ffs_gadget(Id::new(VENDOR, PRODUCT), "ffs-test", "ffs-test")?;
        let (master, slave) = openpty()?;
        let clone = |f: &OwnedFd| f.try_clone().map_err(|e| Error::Setup(format!("dup: {e}")));
        let child = Command::new(FFS_TEST)
            .current_dir(&ffs_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(clone(&slave)?))
            .stderr(Stdio::from(slave))
            .spawn()
            .map_err(|e| Error::Setup(format!("{FFS_TEST}: {e}")))?;
        let out = Arc::new(Mutex::new(String::new()));
        let reader = {
            let out = Arc::clone(&out);
            let mut master = File::from(master);
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                // EIO once ffs-test, the last holder of the terminal, ends.
                while let Ok(n) = master.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]).replace('\r', "");
                    out.lock().unwrap().push_str(&text);
                }
            })
        };
        let mut g = FfsTestGadget {
            child,
            out,
            reader: Some(reader),
            udc,
            reg: Some(reg),
            ffs_dir,
        };
        let start = Instant::now();
        while !(g.ffs_dir.join("ep1").exists() && g.ffs_dir.join("ep2").exists()) {
            if let Ok(Some(status)) = g.child.try_wait() {
                let out = g.stop();
                return Err(Error::Check(format!(
                    "ffs-test ended ({status}) before its endpoint files appeared:\n{}",
                    tail(&out, 20)
                )));
            }
            if start.elapsed() > Duration::from_secs(10) {
                let out = g.stop();
                return Err(Error::Check(format!(
                    "ffs-test wrote no descriptors within 10 s:\n{}",
                    tail(&out, 20)
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
        // ffs-test opens ep1 and ep2 after writing its strings.
        g.wait_output("ep2: starts", Duration::from_secs(10))?;
        Ok(g)
    }

    /// Binds the gadget to the UDC, as `echo UDC > .../UDC` does.
    fn bind(&mut self) -> Result<(), Error> {
        let reg = self.reg.as_ref().expect("registered until stopped");
        reg.bind(Some(&self.udc))
            .map_err(|e| Error::Setup(format!("binding the gadget to UDC {:?}: {e}", self.udc.name())))
    }

    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits until ffs-test has printed `text`.
    fn wait_output(&self, text: &str, limit: Duration) -> Result<(), Error> {
        let start = Instant::now();
        loop {
            if self.out.lock().unwrap().contains(text) {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(Error::Check(format!(
                    "ffs-test did not print {text:?} within {limit:?}"
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Unbinds, ends ffs-test and removes the gadget (which unmounts
    /// FunctionFS); returns everything ffs-test printed.
    fn stop(&mut self) -> String {
        if let Some(reg) = &self.reg {
            let _ = reg.bind(None);
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        drop(self.reg.take());
        self.output()
    }
}

impl Drop for FfsTestGadget {
    fn drop(&mut self) {
        if self.reg.is_some() {
            self.stop();
        }
    }
}

/// A pseudo terminal: (master, slave).
fn openpty() -> Result<(OwnedFd, OwnedFd), Error> {
    let (mut m, mut s) = (-1, -1);
    // SAFETY: two out-parameters; no name, settings or size.
    let r = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if r < 0 {
        return Err(Error::Setup(format!(
            "openpty: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: both descriptors were just made and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) })
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
