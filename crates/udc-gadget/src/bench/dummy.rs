// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The series on dummy_hcd: read()/write() on the test gadget's endpoint
//! files, with the guest itself the USB host through usbfs.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::ioctl::ioctl_num_type as IoctlNum;
use udc_patterns::Pattern;

use super::measure::{check_ends, report, Measured, Meter, Plan};
use super::{Dir, FIRST_GUESS_DUMMY, IO_TIMEOUT, KMALLOC_MAX};
use crate::dmabuf::{ioctl_result, GuestBuf, Source};
use crate::error::Error;
use crate::ffs_dmabuf;
use crate::gadget::{self, TestGadget};
use crate::support::{check, io_err, pattern};

/// The name of an errno, for the report lines.
fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => crate::support::errno_name(n).map_or_else(|| format!("errno{n}"), String::from),
        None => "unknown".into(),
    }
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
pub(crate) fn load_dummy_hcd() -> Result<(), Error> {
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

// include/uapi/linux/usbdevice_fs.h. Its directions are the reverse of what
// the kernel does (SUBMITURB and CLAIMINTERFACE are "read" but read from
// user space; REAPURBNDELAY is "write" but writes a pointer back), and
// DISCARDURB is "none" yet takes the URB: the numbers are the header's, the
// argument types what the kernel really reads or writes.
const USBDEVFS_SUBMITURB: IoctlNum = nix::request_code_read!(b'U', 10, size_of::<Urb>());
const USBDEVFS_DISCARDURB: IoctlNum = nix::request_code_none!(b'U', 11);
const USBDEVFS_REAPURBNDELAY: IoctlNum = nix::request_code_write!(b'U', 13, size_of::<*mut Urb>());
const USBDEVFS_CLAIMINTERFACE: IoctlNum = nix::request_code_read!(b'U', 15, size_of::<u32>());
nix::ioctl_readwrite_bad!(usbdevfs_submiturb, USBDEVFS_SUBMITURB, Urb);
nix::ioctl_write_ptr_bad!(usbdevfs_discardurb, USBDEVFS_DISCARDURB, Urb);
nix::ioctl_readwrite_bad!(usbdevfs_reapurbndelay, USBDEVFS_REAPURBNDELAY, *mut Urb);
nix::ioctl_write_ptr_bad!(usbdevfs_claiminterface, USBDEVFS_CLAIMINTERFACE, u32);
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

    fn descriptors(&mut self) -> Result<Vec<u8>, Error> {
        let mut d = Vec::new();
        self.file
            .read_to_end(&mut d)
            .map_err(|e| Error::Setup(format!("reading the usbfs descriptors: {e}")))?;
        Ok(d)
    }

    fn claim(&self, iface: u32) -> Result<(), Error> {
        // SAFETY: the kernel reads the interface number through the pointer.
        ioctl_result(unsafe { usbdevfs_claiminterface(self.file.as_raw_fd(), &iface) })
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
        // SAFETY: the URB and its buffer stay alive and unmoved (boxed, the
        // buffer the caller's) until it is reaped.
        ioctl_result(unsafe { usbdevfs_submiturb(self.file.as_raw_fd(), urb) }).map_err(|e| {
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
            // SAFETY: usbfs writes one URB pointer through it.
            match ioctl_result(unsafe { usbdevfs_reapurbndelay(self.file.as_raw_fd(), &mut urb) }) {
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
            // SAFETY: usbfs only compares the pointer with the URBs it holds.
            let _ = unsafe { usbdevfs_discardurb(self.file.as_raw_fd(), &*self.urbs[slot]) };
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

pub(super) fn dummy(plan: &Plan, sizes: &[usize], seed: &mut u64) -> Result<(), Error> {
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
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
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
