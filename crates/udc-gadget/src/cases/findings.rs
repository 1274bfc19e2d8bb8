// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Cases for what the suite found wrong in the guest kernel
//! (docs/kernel-bugs.md). Each asserts the correct behaviour, so on a
//! kernel with the bug it fails, naming the bug (make test runs those with
//! `udc-vm --expect-fail`), and on a kernel or f_fs with the fix
//! (patches/linux/, `udc-vm --ffs-patch`) it passes.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::thread;
use std::time::{Duration, Instant};

use udmabuf::{memfd_for_udmabuf, CreateFlags, SyncDirection, Udmabuf};

use crate::dmabuf::{self, dma_bounces, GuestBuf, Source};
use crate::error::Error;
use crate::ffs_dmabuf;
use crate::kmsg::KmsgWatch;
use crate::support::{
    check, clone, io_err, join, pattern, read_thread, setup, verify, wait_device_queue, Ctx, IO_TIMEOUT,
};

/// Rounds of [`detach_leaves_mapping`]: without patches/linux/0006 most of
/// them read back stale (165 to 181 of 200 in three runs in a 2-vCPU TCG
/// guest), so a run that sees none is the fix, not luck; a few seconds.
const DETACH_ROUNDS: u64 = 200;

/// FUNCTIONFS_DMABUF_DETACH must leave the buffer unmapped once its
/// transfers are done (patches/linux/0006). A dma-heap buffer is sent IN,
/// detached, written by the CPU, attached to the OUT endpoint and received
/// into, [`DETACH_ROUNDS`] times. Stock f_fs drops the transfer's reference
/// from a work item that often runs after DETACH: the IN mapping lingers,
/// the heap syncs it on the reader's DMA_BUF_IOCTL_SYNC, and under
/// swiotlb=force its stale bounce buffer lands over the OUT data.
pub fn detach_leaves_mapping(ctx: &mut Ctx) -> Result<(), Error> {
    const SIZE: usize = 4096;
    check(dma_bounces(), || {
        "this case needs every DMA mapping bounced: run it with udc-vm --coherency swiotlb".into()
    })?;
    let s = setup(ctx)?;
    let mut stale = Vec::new();
    for round in 0..DETACH_ROUNDS {
        let mut buf =
            GuestBuf::new(Source::Heap, SIZE).map_err(|e| Error::Setup(format!("dma-heap buffer: {e}")))?;
        match crate::cases::dmabuf::dmabuf_pair(ctx, &s, &mut buf, SIZE, 70_000 + 2 * round) {
            Ok(()) => {}
            // Stale data is what this case counts (dmabuf_pair's endpoint
            // files close on the way out, which detaches the buffer); any
            // other failure ends it.
            Err(Error::Check(why)) if why.contains("OUT: data differs") => stale.push(round),
            Err(e) => return Err(e),
        }
    }
    check(stale.is_empty(), || {
        format!(
            "{} of {DETACH_ROUNDS} OUT transfers into a buffer detached from IN read back stale data \
             (rounds {:?}...): DETACH left the IN mapping behind, and the heap's sync copied its \
             bounce buffer back",
            stale.len(),
            &stale[..stale.len().min(8)]
        )
    })?;
    ctx.notes.push(format!(
        "{DETACH_ROUNDS} rounds of 4 KiB dma-heap IN, DETACH, OUT under swiotlb=force: every OUT verified"
    ));
    Ok(())
}

/// udmabuf's DMA_BUF_IOCTL_SYNC must leave alone what another writer put
/// in the pages: here a write through the memfd between two CPU accesses.
/// Under swiotlb=force, udmabuf 6.12 syncs a bounced mapping of its own
/// for its misc device (made at the first access), and SYNC_START copies
/// that stale bounce buffer back over the pages.
pub fn udmabuf_sync_keeps_other_writes(ctx: &mut Ctx) -> Result<(), Error> {
    const SIZE: usize = 65536;
    let memfd = memfd_for_udmabuf("udc-gadget", SIZE as u64).map_err(|e| Error::Setup(e.to_string()))?;
    let buf = Udmabuf::open()
        .and_then(|d| d.create(memfd.as_fd(), 0, SIZE as u64, CreateFlags::default()))
        .map_err(|e| Error::Setup(format!("UDMABUF_CREATE: {e}")))?;
    let map = buf.map().map_err(|e| Error::Setup(format!("mmap: {e}")))?;
    // A first CPU access: udmabuf maps the buffer for its own device here.
    drop(
        buf.cpu_access(SyncDirection::Read)
            .map_err(|e| Error::Check(format!("DMA_BUF_IOCTL_SYNC: {e}")))?,
    );
    // Another writer of the same pages (as a device would be).
    let data = pattern(61, 0, SIZE);
    let mut f = File::from(memfd.try_clone().map_err(io_err("dup"))?);
    f.write_all(&data).map_err(io_err("write to the memfd"))?;
    let seen = {
        let _cpu = buf
            .cpu_access(SyncDirection::Read)
            .map_err(|e| Error::Check(format!("DMA_BUF_IOCTL_SYNC: {e}")))?;
        map.as_slice().to_vec()
    };
    // A write bracket syncs that mapping (DMA_FROM_DEVICE, from the first
    // bracket) as DMA_TO_DEVICE: a kernel with DMA_API_DEBUG reports the
    // mismatch, and the suite fails the case on the kernel log.
    drop(
        buf.cpu_access(SyncDirection::Write)
            .map_err(|e| Error::Check(format!("DMA_BUF_IOCTL_SYNC: {e}")))?,
    );
    ctx.notes.push(format!("DMA mode: {}", dmabuf::dma_mode()));
    let zeros = seen.iter().filter(|&&b| b == 0).count();
    check(seen == data, || {
        format!(
            "a DMA_BUF_IOCTL_SYNC read of a udmabuf reverted another writer's data ({zeros} of {SIZE} bytes back to \
             what they held at the first CPU access): udmabuf syncs a bounced mapping of its own \
             (docs/kernel-bugs.md, udmabuf's CPU access)"
        )
    })
}

/// The fence of a DMABUF transfer must stay usable after FUNCTIONFS_DMABUF_DETACH:
/// queue a transfer the host holds, export a sync file of its fence, detach
/// (which cancels it), wait until f_fs has let the attachment go, and read
/// the fence's status through the sync file. f_fs 6.9 to 6.12 keeps the
/// fence's spinlock in the attachment it frees, so the status query locks
/// freed memory: poisoned (udc-vm --debug-kernel-options), the CPU spins
/// there for ever.
///
/// The query runs in a child process, forked before the detach and given
/// 5 s, and nothing between the free and the query allocates (no control
/// socket traffic, no fork), so that the freed attachment is still freed,
/// not already another object, when the query takes its lock.
pub fn dmabuf_fence_outlives_detach(ctx: &mut Ctx) -> Result<(), Error> {
    const SIZE: usize = 65536;
    let s = setup(ctx)?;
    let ep_out = s.g.open_ep(2)?;
    let buf = GuestBuf::new(Source::Udmabuf, SIZE).map_err(|e| Error::Setup(e.to_string()))?;
    ffs_dmabuf::attach(ep_out.as_fd(), buf.fd()).map_err(io_err("DMABUF_ATTACH"))?;
    ffs_dmabuf::transfer(ep_out.as_fd(), buf.fd(), SIZE as u64, 0).map_err(io_err("DMABUF_TRANSFER"))?;
    let sync = buf
        .export_sync_file(dmabuf::SYNC_READ)
        .map_err(io_err("EXPORT_SYNC_FILE"))?;
    // The host never sends: the transfer is pending at the device.
    wait_device_queue(ctx, s.ep_out, 1, "before detach")?;
    let mut kmsg = KmsgWatch::start();
    // Device interrupts go to CPU 0 too, or the results port and the
    // control channel would stop with a stuck CPU 1.
    let irqs = IrqAffinity::all_to_cpu0();
    let child = FenceQuery::fork(&sync)?;
    ffs_dmabuf::detach(ep_out.as_fd(), buf.fd()).map_err(io_err("DMABUF_DETACH"))?;
    check(buf.wait(libc::POLLIN, IO_TIMEOUT), || {
        "the pending transfer's fence did not signal after detach".into()
    })?;
    // f_fs drops its last reference to the attachment from a work item
    // once the fence has signalled: give it time to run.
    thread::sleep(Duration::from_millis(300));
    let answer = child.ask(Duration::from_secs(5));
    if matches!(answer, Ok(Some(_))) {
        unpin();
        irqs.restore();
    }
    match answer? {
        Some(status) => {
            ctx.notes.push(format!(
                "after DETACH the sync file's fence reads status {status} ({})",
                errno_text(status)
            ));
            wait_device_queue(ctx, s.ep_out, 0, "after detach")?;
            check(status == -libc::ECONNRESET, || {
                format!("the detached transfer's fence has status {status}, expected -ECONNRESET (cancelled)")
            })
        }
        None => {
            // A CPU spins with interrupts off. Nothing here may wait for
            // it: unmapping the buffer would (a TLB shootdown to every CPU
            // this process ran on), and so would the gadget's teardown.
            // The guest is lost anyway; keep them.
            std::mem::forget((buf, sync, ep_out, s));
            // Ask every CPU for its backtrace (sysrq l, by NMI, which gets
            // through), to quote where: the RCU stall report would say so
            // only much later.
            let _ = std::fs::write("/proc/sysrq-trigger", "l");
            let evidence = wait_for_backtrace(&mut kmsg, Duration::from_secs(10));
            Err(Error::Check(format!(
                "SYNC_IOC_FILE_INFO on the sync file did not return within 5 s: a CPU is spinning on the fence's \
                 lock, which lived in the DMABUF attachment that DETACH freed (f_fs fence lock use-after-free, \
                 docs/kernel-bugs.md){}",
                if evidence.is_empty() {
                    String::new()
                } else {
                    format!("; the kernel:\n{}", evidence.join("\n"))
                }
            )))
        }
    }
}

/// A child process that reads a sync file's one fence status when told
/// to (it may get stuck in the kernel for good doing so).
struct FenceQuery {
    pid: libc::pid_t,
    go: OwnedFd,
    answer: OwnedFd,
}

impl FenceQuery {
    /// The child runs on CPU 1 and this process on CPU 0 from here on: a
    /// CPU stuck with interrupts off takes its timers with it, and a
    /// parent sleeping there would never wake to say so.
    fn fork(sync: &OwnedFd) -> Result<FenceQuery, Error> {
        let (go_rd, go_wr) = pipe()?;
        let (ans_rd, ans_wr) = pipe()?;
        pin_to_cpu(0)?;
        // SAFETY: the child only waits for a byte, makes the ioctl,
        // writes four bytes and leaves.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(Error::Setup(format!("fork: {}", std::io::Error::last_os_error())));
        }
        if pid == 0 {
            if pin_to_cpu(1).is_err() {
                // SAFETY: leaving the child at once.
                unsafe { libc::_exit(1) };
            }
            let mut b = [0u8; 1];
            // SAFETY: reading one byte into our buffer.
            unsafe { libc::read(go_rd.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
            let status = match dmabuf::sync_file_fences(sync.as_fd()) {
                Ok(f) if f.len() == 1 => f[0].status,
                _ => i32::MIN,
            };
            let b = status.to_ne_bytes();
            // SAFETY: writing our answer and leaving without running destructors.
            unsafe {
                libc::write(ans_wr.as_raw_fd(), b.as_ptr().cast(), 4);
                libc::_exit(0);
            }
        }
        Ok(FenceQuery {
            pid,
            go: go_wr,
            answer: ans_rd,
        })
    }

    /// Tells the child to query; its answer, or None after `limit`.
    fn ask(self, limit: Duration) -> Result<Option<i32>, Error> {
        // SAFETY: writing one byte from our buffer.
        unsafe { libc::write(self.go.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        let mut pfd = libc::pollfd {
            fd: self.answer.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd for the call.
        let n = unsafe { libc::poll(&mut pfd, 1, limit.as_millis() as i32) };
        if n != 1 {
            // Stuck in the kernel: it cannot be killed or reaped; leave it.
            return Ok(None);
        }
        let mut b = [0u8; 4];
        File::from(self.answer)
            .read_exact(&mut b)
            .map_err(io_err("reading the child's answer"))?;
        let mut st = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(self.pid, &mut st, 0) };
        let status = i32::from_ne_bytes(b);
        if status == i32::MIN {
            return Err(Error::Check(
                "SYNC_IOC_FILE_INFO failed or showed no single fence".into(),
            ));
        }
        Ok(Some(status))
    }
}

/// The interrupts' CPU masks, as they were before all went to CPU 0.
struct IrqAffinity(Vec<(std::path::PathBuf, String)>);

impl IrqAffinity {
    fn all_to_cpu0() -> IrqAffinity {
        let mut saved = Vec::new();
        if let Ok(dir) = std::fs::read_dir("/proc/irq") {
            for e in dir.flatten() {
                let p = e.path().join("smp_affinity");
                if let Ok(old) = std::fs::read_to_string(&p) {
                    // Some cannot move (the timer, per-CPU ones): fine.
                    if std::fs::write(&p, "1").is_ok() {
                        saved.push((p, old.trim().to_string()));
                    }
                }
            }
        }
        IrqAffinity(saved)
    }

    fn restore(self) {
        for (p, old) in self.0 {
            let _ = std::fs::write(p, old);
        }
    }
}

/// Runs the calling process on `cpu` alone.
fn pin_to_cpu(cpu: usize) -> Result<(), Error> {
    // SAFETY: a zeroed cpu_set_t with one bit set, passed by reference.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) < 0 {
            return Err(Error::Setup(format!(
                "running on CPU {cpu} alone: {} (the case needs 2 CPUs: udc-vm --cpus 2)",
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

/// Runs the calling process on every CPU again.
fn unpin() {
    // SAFETY: a full cpu_set_t passed by reference.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    let mut fds = [0i32; 2];
    // SAFETY: a pipe whose two ends become ours.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(Error::Setup(format!("pipe: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: both descriptors were just made and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The frames of the kernel's backtraces (sysrq l) that show a fence or a
/// sync file being locked, and the CPU they are on.
fn wait_for_backtrace(kmsg: &mut KmsgWatch, limit: Duration) -> Vec<String> {
    let start = Instant::now();
    let mut lines = Vec::new();
    while start.elapsed() < limit {
        if let Ok(text) = kmsg.read_new() {
            lines.extend(
                text.lines()
                    .filter(|l| {
                        l.contains("RIP: 0010:")
                            || l.contains("dma_fence")
                            || l.contains("sync_file")
                            || l.contains("spin_lock")
                    })
                    .map(|l| l.trim().to_string()),
            );
        }
        if lines.iter().any(|l| l.contains("sync_file_ioctl")) {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    lines.truncate(12);
    lines
}

fn errno_text(status: i32) -> String {
    if status < 0 {
        std::io::Error::from_raw_os_error(-status).to_string()
    } else if status == 1 {
        "signalled".into()
    } else {
        "pending".into()
    }
}

/// read() and write() of 1 to 8 MiB, 8 times each way, under
/// swiotlb=force. f_fs builds each request's scatterlist with
/// sg_alloc_table_from_pages(), which merges physically contiguous pages
/// into one segment of any length; swiotlb maps at most 256 KiB at a time,
/// so a larger segment fails the request with EFAULT ("swiotlb buffer is
/// full"). Whether the pages are contiguous varies, hence the repeats.
pub fn rw_large_under_swiotlb(ctx: &mut Ctx) -> Result<(), Error> {
    check(dma_bounces(), || {
        "this case needs every DMA mapping bounced: run it with udc-vm --coherency swiotlb".into()
    })?;
    let s = setup(ctx)?;
    let fout = s.g.open_ep(2)?;
    let fin = s.g.open_ep(1)?;
    let mut kmsg = KmsgWatch::start();
    let mut moved = 0usize;
    for round in 0..8u64 {
        for size in [1usize << 20, 4 << 20, 8 << 20] {
            let seed = 62_000 + round * 10 + size.trailing_zeros() as u64;
            let what = format!("round {round}: OUT {} MiB", size >> 20);
            let reader = read_thread(clone(&fout)?, size);
            ctx.host
                .stream_start(s.ep_out, &format!("prbs:{seed}"), size, 1)?;
            let got = join(reader, &what).map_err(|e| with_swiotlb_log(e, &mut kmsg))?;
            check(got.len() == size, || {
                format!("{what}: read() returned {} bytes", got.len())
            })?;
            verify(seed, 0, &got, &what)?;
            ctx.host.stream_wait(s.ep_out, IO_TIMEOUT)?;
            let what = format!("round {round}: IN {} MiB", size >> 20);
            ctx.host
                .stream_start(s.ep_in, &format!("prbs:{}", seed + 1), size, 1)?;
            let w = clone(&fin)?
                .write(&pattern(seed + 1, 0, size))
                .map_err(|e| with_swiotlb_log(Error::Check(format!("{what}: write(): {e}")), &mut kmsg))?;
            check(w == size, || format!("{what}: write() returned {w}"))?;
            let st = ctx.host.stream_wait(s.ep_in, IO_TIMEOUT)?;
            check(st["stats"]["errors"] == 0, || {
                format!("{what}: the host saw {st}")
            })?;
            moved += 2 * size;
        }
    }
    ctx.notes.push(format!(
        "{} MiB moved with read()/write() under swiotlb=force",
        moved >> 20
    ));
    Ok(())
}

/// Adds the kernel's swiotlb complaint, if any, to a failure.
fn with_swiotlb_log(e: Error, kmsg: &mut KmsgWatch) -> Error {
    let log = kmsg.read_new().unwrap_or_default();
    match log.lines().find(|l| l.contains("swiotlb buffer is full")) {
        Some(l) => Error::Check(format!(
            "{e}; the kernel: {} (f_fs built a scatterlist segment longer than swiotlb maps at once)",
            l.trim()
        )),
        None => e,
    }
}

/// On a controller without scatter-gather, read() and write() of 8 MiB
/// complete, in as many calls as f_fs takes, with every byte right and no
/// kernel warning. f_fs kmallocs each request whole there; above the
/// page allocator's largest block (4 MiB) that warns and fails with ENOMEM.
pub fn rw_above_4mib_without_sg(ctx: &mut Ctx) -> Result<(), Error> {
    const SIZE: usize = 8 << 20;
    let s = setup(ctx)?;
    check(!s.sg, || {
        "this case needs a controller without scatter-gather (udc-vm --controller no-sg)".into()
    })?;
    let fin = s.g.open_ep(1)?;
    let fout = s.g.open_ep(2)?;

    // IN: write() until all 8 MiB are out; the host reads one stream.
    ctx.host.stream_start(s.ep_in, "prbs:63000", SIZE, 1)?;
    let data = pattern(63_000, 0, SIZE);
    let mut off = 0;
    let mut calls = 0;
    let mut w = clone(&fin)?;
    while off < SIZE {
        let n = w
            .write(&data[off..])
            .map_err(|e| Error::Check(format!("IN 8 MiB: write() at {off}: {e}")))?;
        check(n > 0, || format!("IN 8 MiB: write() at {off} returned 0"))?;
        off += n;
        calls += 1;
    }
    let st = ctx.host.stream_wait(s.ep_in, IO_TIMEOUT)?;
    check(st["offset"] == SIZE && st["stats"]["errors"] == 0, || {
        format!("IN 8 MiB: the host's stream ended with {st}")
    })?;
    let in_calls = calls;

    // OUT: read() until all 8 MiB are in.
    ctx.host.stream_start(s.ep_out, "prbs:63001", SIZE, 1)?;
    let mut got = Vec::with_capacity(SIZE);
    let mut r = clone(&fout)?;
    let mut calls = 0;
    while got.len() < SIZE {
        let mut b = vec![0u8; SIZE - got.len()];
        let n = r
            .read(&mut b)
            .map_err(|e| Error::Check(format!("OUT 8 MiB: read() at {}: {e}", got.len())))?;
        check(n > 0, || format!("OUT 8 MiB: read() at {} returned 0", got.len()))?;
        got.extend_from_slice(&b[..n]);
        calls += 1;
    }
    verify(63_001, 0, &got, "OUT 8 MiB")?;
    ctx.host.stream_wait(s.ep_out, IO_TIMEOUT)?;
    ctx.notes.push(format!(
        "8 MiB each way without scatter-gather: {in_calls} write() and {calls} read() calls"
    ));
    Ok(())
}

/// A DMABUF attached to the IN endpoint before the host first configured
/// the device must still be mapped for the device to read (DMA_TO_DEVICE):
/// its data must reach the host. f_fs before 6.12.107 (Debian's 6.12.95)
/// learnt an endpoint's direction only when the host enabled it, so an
/// early ATTACH mapped an IN buffer DMA_FROM_DEVICE; where the DMA API has
/// work to do (swiotlb=force, with f_fs syncing its mappings: patch 0002)
/// the host then gets what the buffer held at ATTACH, not what the CPU
/// wrote after.
pub fn dmabuf_in_attached_before_enumeration(ctx: &mut Ctx) -> Result<(), Error> {
    const SIZE: usize = 65536;
    let udc = crate::gadget::find_udc(ctx.udc.as_deref())?;
    let mut g = crate::gadget::TestGadget::unbound(udc)?;
    ctx.host
        .ok(serde_json::json!({"op": "host", "auto_enumerate": false}))?;
    let result = (|| {
        g.rebind()?;
        let ep_in = g.open_ep(1)?;
        let mut buf = GuestBuf::new(Source::Udmabuf, SIZE).map_err(|e| Error::Setup(e.to_string()))?;
        ffs_dmabuf::attach(ep_in.as_fd(), buf.fd()).map_err(io_err("DMABUF_ATTACH before enumeration"))?;
        // Written after ATTACH: only the sync for the device at TRANSFER
        // can bring it to a bounce buffer, and only for DMA_TO_DEVICE.
        buf.write(&pattern(65, 0, SIZE)).map_err(io_err("fill"))?;
        ctx.host
            .ok(serde_json::json!({"op": "host", "auto_enumerate": true}))?;
        ctx.host.ok(serde_json::json!({"op": "enumerate"}))?;
        ctx.host.wait_configured(crate::support::CONFIGURE_TIMEOUT)?;
        let ep = ctx.host.enumerated_endpoint_pair()?[0].address;
        ffs_dmabuf::transfer(ep_in.as_fd(), buf.fd(), SIZE as u64, 0).map_err(io_err("DMABUF_TRANSFER"))?;
        let (r, data) = ctx.host.read_in(ep, SIZE)?;
        crate::support::transfer_ok(&r, SIZE, "DMABUF IN")?;
        check(buf.wait(libc::POLLOUT, IO_TIMEOUT), || {
            "DMABUF IN: no fence".into()
        })?;
        ffs_dmabuf::detach(ep_in.as_fd(), buf.fd()).map_err(io_err("DMABUF_DETACH"))?;
        verify(65, 0, &data, "IN data of a DMABUF attached before enumeration")
            .map_err(|e| Error::Check(format!("{e} (was it mapped for the wrong direction?)")))?;
        ctx.notes.push(format!(
            "DMA mode: {}; 64 KiB attached to the IN endpoint before the host enumerated, sent after: verified",
            dmabuf::dma_mode()
        ));
        Ok(())
    })();
    // Whatever happened, the host enumerates on its own again.
    let _ = ctx
        .host
        .ok(serde_json::json!({"op": "host", "auto_enumerate": true}));
    result
}
