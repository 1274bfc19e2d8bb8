// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Host DMABUFs over guest pages (control socket `hold` with `"dmabuf":
//! true`, docs/control-socket.md): the daemon makes a udmabuf over the fake
//! guest's memfd and passes it over SCM_RIGHTS; these tests check that its
//! bytes are the guest buffer's bytes, both ways, for contiguous and
//! per-page (udmabuf-style) guest buffers.
//!
//! They need /dev/udmabuf, which the build machines' kernel lacks: there
//! `make test` leaves them out and says so, and `udc-vm test` runs this
//! binary inside the guest, whose kernel has udmabuf. Run anywhere else
//! without /dev/udmabuf, each test fails saying why.

mod common;

use std::io::IoSliceMut;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use common::{Daemon, T};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use serde_json::{json, Value};
use udc_harness::BufferSpec;
use udmabuf::{DmaBuf, SyncDirection};

fn require_udmabuf() {
    assert!(
        Path::new("/dev/udmabuf").exists(),
        "/dev/udmabuf is missing: this test needs a kernel with CONFIG_UDMABUF \
         (make test runs it inside the VM guest)"
    );
}

/// Sends one control request and returns its reply with the descriptor
/// that came with it, if any.
fn request_with_fd(path: &Path, req: &Value) -> (Value, Option<OwnedFd>) {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    writeln!(s, "{req}").unwrap();
    let mut line = Vec::new();
    let mut fd = None;
    while !line.ends_with(b"\n") {
        let mut buf = [0u8; 4096];
        let mut space = nix::cmsg_space!([RawFd; 2]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .expect("recvmsg on the control socket");
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for f in fds {
                    assert!(fd.is_none(), "more than one descriptor in a reply");
                    // SAFETY: SCM_RIGHTS gave us a new descriptor we own.
                    fd = Some(unsafe { OwnedFd::from_raw_fd(f) });
                }
            }
        }
        let n = msg.bytes;
        assert!(n > 0, "the control socket closed before replying");
        line.extend_from_slice(&buf[..n]);
    }
    (serde_json::from_slice(&line).unwrap(), fd)
}

/// Whether DMA_BUF_IOCTL_SYNC may bracket CPU access to a udmabuf here.
/// Not when the kernel bounces every DMA mapping (swiotlb=force, as in
/// the VM suite's swiotlb boots): udmabuf 6.12 then syncs a bounced
/// mapping of its own, which writes stale data over the pages
/// (docs/kernel-bugs.md). The CPU mapping is the pages themselves.
fn sync_is_safe() -> bool {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    !cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("swiotlb="))
        .any(|v| v.split(',').any(|p| p == "force"))
}

/// The `len` bytes at `offset` of a host DMABUF, read by the CPU.
fn dmabuf_bytes(buf: &DmaBuf, offset: u64, len: usize) -> Vec<u8> {
    let map = buf.map().unwrap();
    let _cpu = sync_is_safe().then(|| buf.cpu_access(SyncDirection::Read).unwrap());
    map.as_slice()[offset as usize..offset as usize + len].to_vec()
}

fn check_in_and_out(spec: BufferSpec, seed: u64) {
    require_udmabuf();
    let d = Daemon::start(&[]);
    let (mut h, _g) = d.configured();
    let len = spec.len as usize;

    // IN: the guest's bytes are what the host DMABUF shows.
    let b = h.alloc_buffer(&spec).unwrap();
    let data = common::data(len, seed);
    h.write_buffer(&b, &data).unwrap();
    let x = h.submit_buffer(0x81, 0, &b, 1).unwrap();
    let (r, fd) = request_with_fd(&d.control, &json!({"op": "hold", "ep": "ep1in", "dmabuf": true}));
    assert_eq!(r["ok"], true, "{r}");
    let buf = DmaBuf::from_fd(fd.expect("hold with dmabuf passes a descriptor"));
    let size = buf.size().unwrap();
    assert_eq!(size, r["dmabuf"]["size"].as_u64().unwrap(), "{r}");
    let offset = r["dmabuf"]["offset"].as_u64().unwrap();
    assert!(offset + len as u64 <= size, "{r}");
    assert!(
        dmabuf_bytes(&buf, offset, len) == data,
        "the host DMABUF does not hold the guest's IN data"
    );
    // The same pages: a guest write after the hold shows at once.
    let later = common::data(len, seed + 1);
    h.write_buffer(&b, &later).unwrap();
    assert!(
        dmabuf_bytes(&buf, offset, len) == later,
        "the host DMABUF is a copy, not the guest's pages"
    );
    let mut ctl = d.ctl();
    ctl.ok(json!({"op": "release", "ep": "ep1in", "handle": r["handle"], "actual": len}));
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(len as u32));
    drop(buf);

    // OUT: what the host writes through its DMABUF is what the guest reads.
    let b = h.alloc_buffer(&spec).unwrap();
    h.write_buffer(&b, &vec![0u8; len]).unwrap();
    let x = h.submit_buffer(0x02, 0, &b, 2).unwrap();
    let (r, fd) = request_with_fd(&d.control, &json!({"op": "hold", "ep": "ep2out", "dmabuf": true}));
    assert_eq!(r["ok"], true, "{r}");
    let buf = DmaBuf::from_fd(fd.expect("hold with dmabuf passes a descriptor"));
    let offset = r["dmabuf"]["offset"].as_u64().unwrap() as usize;
    let data = common::data(len, seed + 2);
    {
        let mut map = buf.map().unwrap();
        let _cpu = sync_is_safe().then(|| buf.cpu_access(SyncDirection::Write).unwrap());
        map.as_mut_slice()[offset..offset + len].copy_from_slice(&data);
    }
    ctl.ok(json!({"op": "release", "ep": "ep2out", "handle": r["handle"], "actual": len}));
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(len as u32));
    assert!(
        h.read_buffer(&b).unwrap() == data,
        "the guest buffer does not hold what the host wrote through its DMABUF"
    );
}

#[test]
fn udmabuf_zerocopy_contiguous_buffer_both_ways() {
    let mut spec = BufferSpec::contiguous(256 << 10);
    spec.page_aligned = true;
    check_in_and_out(spec, 31);
}

#[test]
fn udmabuf_zerocopy_per_page_buffer_both_ways() {
    // As a guest udmabuf arrives from FunctionFS: one segment per page.
    check_in_and_out(BufferSpec::per_page(1 << 20), 41);
}

#[test]
fn udmabuf_zerocopy_refuses_unaligned_segments_and_keeps_the_request() {
    require_udmabuf();
    let d = Daemon::start(&[]);
    let (mut h, _g) = d.configured();
    // Two segments that meet in the middle of a page cannot be one DMABUF.
    let mut spec = BufferSpec::scattered(6000, 2);
    spec.sizes = Some(vec![1000, 5000]);
    let b = h.alloc_buffer(&spec).unwrap();
    let x = h.submit_buffer(0x81, 0, &b, 3).unwrap();
    let (r, fd) = request_with_fd(&d.control, &json!({"op": "hold", "ep": "ep1in", "dmabuf": true}));
    assert_eq!(r["ok"], false, "{r}");
    assert!(fd.is_none());
    assert!(r["error"].as_str().unwrap().contains("page-aligned"), "{r}");
    // Not held: an ordinary host read completes it.
    let (t, _) = d.ctl().read_in("ep1in", 6000);
    assert_eq!(t["status"], "ok", "{t}");
    assert!(h.wait_completion(x, T).unwrap().is_ok());
}
