// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The FunctionFS DMABUF catalogue (docs/vm-tier.md): attach, transfer and
//! detach of udmabufs and dma-heap buffers on both endpoints, FIFO and
//! fence order, the documented errors, detach and close with transfers
//! pending, the endpoint going away mid-transfer, DMABUFs and read()
//! queued together, and the refusal without scatter-gather.

use std::os::fd::AsFd;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::dmabuf::{self, GuestBuf, Source};
use crate::error::Error;
use crate::ffs_dmabuf;
use crate::support::{
    check, clone, expect_errno, io_err, join, open_nonblock, pattern, read_thread, round_trip, setup,
    stream_clean, transfer_ok, verify, wait_cancelled, wait_device_queue, Ctx, Setup, CONFIGURE_TIMEOUT,
    IO_TIMEOUT, MAX_SOCKET_TRANSFER,
};

/// One DMABUF transfer each way: attach, transfer, wait on the fence,
/// check the data at the other end, detach.
pub(crate) fn dmabuf_pair(
    ctx: &mut Ctx,
    s: &Setup,
    buf: &mut GuestBuf,
    size: usize,
    seed: u64,
) -> Result<(), Error> {
    let what = format!("{} {} KiB", buf.source.name(), size >> 10);
    let ep_in = s.g.open_ep(1)?;
    let ep_out = s.g.open_ep(2)?;
    // IN: the CPU fills the buffer, the device reads it.
    buf.write(&pattern(seed, 0, size)).map_err(io_err(&what))?;
    ffs_dmabuf::attach(ep_in.as_fd(), buf.fd()).map_err(io_err(&format!("{what}: DMABUF_ATTACH on IN")))?;
    if size > MAX_SOCKET_TRANSFER {
        ctx.host.stream_start(s.ep_in, &format!("prbs:{seed}"), size, 1)?;
    }
    ffs_dmabuf::transfer(ep_in.as_fd(), buf.fd(), size as u64, 0)
        .map_err(io_err(&format!("{what}: DMABUF_TRANSFER on IN")))?;
    if size > MAX_SOCKET_TRANSFER {
        stream_clean(&mut ctx.host, s.ep_in, size as u64, &format!("{what} IN"))?;
    } else {
        let (r, data) = ctx.host.read_in(s.ep_in, size)?;
        transfer_ok(&r, size, &format!("{what} IN"))?;
        verify(seed, 0, &data, &format!("{what} IN"))?;
    }
    check(buf.wait(libc::POLLOUT, IO_TIMEOUT), || {
        format!("{what} IN: the fence did not signal")
    })?;
    ffs_dmabuf::detach(ep_in.as_fd(), buf.fd()).map_err(io_err(&format!("{what}: DMABUF_DETACH on IN")))?;

    // OUT: the device writes the buffer; the CPU reads it after the fence.
    buf.write(&vec![0xa5; size]).map_err(io_err(&what))?;
    ffs_dmabuf::attach(ep_out.as_fd(), buf.fd()).map_err(io_err(&format!("{what}: DMABUF_ATTACH on OUT")))?;
    ffs_dmabuf::transfer(ep_out.as_fd(), buf.fd(), size as u64, 0)
        .map_err(io_err(&format!("{what}: DMABUF_TRANSFER on OUT")))?;
    if size > MAX_SOCKET_TRANSFER {
        ctx.host
            .stream_start(s.ep_out, &format!("prbs:{}", seed + 1), size, 1)?;
        stream_clean(&mut ctx.host, s.ep_out, size as u64, &format!("{what} OUT"))?;
    } else {
        transfer_ok(
            &ctx.host.send_out(s.ep_out, &pattern(seed + 1, 0, size), false)?,
            size,
            &format!("{what} OUT"),
        )?;
    }
    check(buf.wait(libc::POLLIN, IO_TIMEOUT), || {
        format!("{what} OUT: the fence did not signal")
    })?;
    verify(
        seed + 1,
        0,
        &buf.read(size).map_err(io_err(&what))?,
        &format!("{what} OUT"),
    )?;
    ffs_dmabuf::detach(ep_out.as_fd(), buf.fd()).map_err(io_err(&format!("{what}: DMABUF_DETACH on OUT")))?;
    Ok(())
}

/// Catalogue 1: attach, transfer, detach both ways, 4 KiB to 64 MiB, with
/// udmabufs (one segment per page) and dma-heap buffers (few segments).
///
/// Under swiotlb=force a dma-heap buffer of 1 MiB or more cannot be
/// attached: the system heap hands out 1 MiB segments and swiotlb maps at
/// most 256 KiB at once, so the heap's map_dma_buf fails and ATTACH with it
/// (EIO; docs/kernel-bugs.md). The case asserts exactly that there.
pub(crate) fn dmabuf_sizes(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let bounced = dmabuf::dma_bounces();
    let mut seed = 11_000;
    let mut refused = Vec::new();
    for source in [Source::Udmabuf, Source::Heap] {
        for size in [4096usize, 65536, 1 << 20, 16 << 20, 64 << 20] {
            let mut buf = GuestBuf::new(source, size)
                .map_err(|e| Error::Setup(format!("{} of {size} bytes: {e}", source.name())))?;
            if bounced && source == Source::Heap && size >= 1 << 20 {
                for n in [1, 2] {
                    let ep = s.g.open_ep(n)?;
                    expect_errno(
                        ffs_dmabuf::attach(ep.as_fd(), buf.fd()),
                        libc::EIO,
                        &format!(
                            "DMABUF_ATTACH of a {} MiB dma-heap buffer under swiotlb=force",
                            size >> 20
                        ),
                    )?;
                }
                refused.push(format!("{} MiB", size >> 20));
                continue;
            }
            dmabuf_pair(ctx, &s, &mut buf, size, seed)?;
            seed += 2;
        }
    }
    ctx.notes
        .push("udmabuf and dma-heap, 4 KiB to 64 MiB, both ways".into());
    if !refused.is_empty() {
        ctx.notes.push(format!(
            "under swiotlb=force, dma-heap buffers of {} refused at ATTACH with EIO (1 MiB heap segments, 256 KiB swiotlb mappings)",
            refused.join(", ")
        ));
    }
    Ok(())
}

/// Catalogue 2: DMABUFs queued on one endpoint complete in FIFO order and
/// their fences signal in seqno order (sync-file timestamps).
pub(crate) fn dmabuf_fifo(ctx: &mut Ctx) -> Result<(), Error> {
    const N: usize = 6;
    const SIZE: usize = 256 << 10;
    let s = setup(ctx)?;
    let ep_out = s.g.open_ep(2)?;
    let mut bufs = Vec::new();
    let mut syncs = Vec::new();
    for i in 0..N {
        let source = if i % 2 == 0 { Source::Udmabuf } else { Source::Heap };
        let b = GuestBuf::new(source, SIZE).map_err(|e| Error::Setup(e.to_string()))?;
        ffs_dmabuf::attach(ep_out.as_fd(), b.fd()).map_err(io_err("DMABUF_ATTACH"))?;
        ffs_dmabuf::transfer(ep_out.as_fd(), b.fd(), SIZE as u64, 0).map_err(io_err("DMABUF_TRANSFER"))?;
        // Readers wait for the device's write fence: this sync file holds it.
        syncs.push(
            b.export_sync_file(dmabuf::SYNC_READ)
                .map_err(io_err("EXPORT_SYNC_FILE"))?,
        );
        bufs.push(b);
    }
    ctx.host.stream_start(s.ep_out, "prbs:12000", SIZE, N as u64)?;
    stream_clean(&mut ctx.host, s.ep_out, (N * SIZE) as u64, "DMABUF FIFO")?;
    let mut last = 0u64;
    for (i, (b, sync)) in bufs.iter().zip(&syncs).enumerate() {
        check(b.wait(libc::POLLIN, IO_TIMEOUT), || {
            format!("buffer {i}: the fence did not signal")
        })?;
        verify(
            12_000,
            (i * SIZE) as u64,
            &b.read(SIZE).map_err(io_err("read"))?,
            &format!("buffer {i} (FIFO)"),
        )?;
        let f = dmabuf::sync_file_fences(sync.as_fd()).map_err(io_err("SYNC_IOC_FILE_INFO"))?;
        check(f.len() == 1 && f[0].status == 1, || {
            format!(
                "buffer {i}: fence status {:?}, expected one fence signalled without error",
                f.iter().map(|x| x.status).collect::<Vec<_>>()
            )
        })?;
        check(f[0].timestamp_ns >= last, || {
            format!("buffer {i}: its fence signalled before buffer {}'s", i - 1)
        })?;
        last = f[0].timestamp_ns;
        ffs_dmabuf::detach(ep_out.as_fd(), b.fd()).map_err(io_err("DMABUF_DETACH"))?;
    }
    ctx.notes.push(format!(
        "{N} DMABUFs of {} KiB: data and fences in queue order",
        SIZE >> 10
    ));
    Ok(())
}

/// Catalogue 5, 6, 7 and 3: the documented errors, an O_NONBLOCK transfer
/// on a busy DMABUF, and a detach with a transfer pending, whose fence then
/// signals with an error.
pub(crate) fn dmabuf_errors(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let ep_out = s.g.open_ep(2)?;
    let b = GuestBuf::new(Source::Udmabuf, 65536).map_err(|e| Error::Setup(e.to_string()))?;
    let never = GuestBuf::new(Source::Heap, 4096).map_err(|e| Error::Setup(e.to_string()))?;
    let fd = ep_out.as_fd();
    expect_errno(
        ffs_dmabuf::transfer(fd, b.fd(), 4096, 0),
        libc::EPERM,
        "transfer on an unattached DMABUF",
    )?;
    expect_errno(
        ffs_dmabuf::detach(fd, never.fd()),
        libc::EPERM,
        "detach of a DMABUF never attached",
    )?;
    ffs_dmabuf::attach(fd, b.fd()).map_err(io_err("DMABUF_ATTACH"))?;
    expect_errno(
        ffs_dmabuf::transfer(fd, b.fd(), 0, 0),
        libc::EINVAL,
        "transfer of length 0",
    )?;
    expect_errno(
        ffs_dmabuf::transfer(fd, b.fd(), 65537, 0),
        libc::EINVAL,
        "transfer longer than the DMABUF",
    )?;
    expect_errno(
        ffs_dmabuf::transfer(fd, b.fd(), 4096, 0x8000_0000),
        libc::EINVAL,
        "transfer with unknown flags",
    )?;

    // A transfer the host never serves keeps the DMABUF busy.
    ffs_dmabuf::transfer(fd, b.fd(), 65536, 0).map_err(io_err("DMABUF_TRANSFER"))?;
    let nb = open_nonblock(&s, 2)?;
    let start = Instant::now();
    expect_errno(
        ffs_dmabuf::transfer(nb.as_fd(), b.fd(), 65536, 0),
        libc::EBUSY,
        "O_NONBLOCK transfer on a busy DMABUF",
    )?;
    check(start.elapsed() < Duration::from_secs(1), || {
        format!("the O_NONBLOCK transfer blocked for {:?}", start.elapsed())
    })?;

    // Detach with the transfer pending: the device sees the request
    // cancelled and the fence signals (poll on the DMABUF). No sync file
    // here: f_fs (6.9 to at least 6.12) keeps the fence's spinlock in the
    // attachment it frees on detach, so reading a sync file's status, or
    // closing one that was polled, after detach touches freed memory and
    // can spin forever (docs/kernel-bugs.md). Fence error status is
    // checked while attached, in dmabuf-endpoint-disabled-mid-transfer.
    let queued = wait_device_queue(ctx, s.ep_out, 1, "before detach")?;
    ffs_dmabuf::detach(fd, b.fd()).map_err(io_err("DMABUF_DETACH with a transfer pending"))?;
    check(b.wait(libc::POLLIN, IO_TIMEOUT), || {
        "the pending transfer's fence did not signal after detach".into()
    })?;
    wait_cancelled(ctx, s.ep_out, queued, 1, "after detach")?;
    ctx.notes
        .push("detach with a transfer pending: cancelled at the device, fence signalled".into());
    expect_errno(ffs_dmabuf::detach(fd, b.fd()), libc::EPERM, "second detach")?;
    // The endpoint still works.
    round_trip(ctx, &s, 12_100)?;
    Ok(())
}

/// Catalogue 8: on a controller without scatter-gather FunctionFS refuses
/// to attach a DMABUF (-EPERM), and read()/write() still work.
pub(crate) fn dmabuf_without_sg(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let ep_in = s.g.open_ep(1)?;
    let ep_out = s.g.open_ep(2)?;
    for (source, size) in [(Source::Udmabuf, 65536), (Source::Heap, 1 << 20)] {
        let b = GuestBuf::new(source, size).map_err(|e| Error::Setup(e.to_string()))?;
        for (f, dir) in [(&ep_in, "IN"), (&ep_out, "OUT")] {
            expect_errno(
                ffs_dmabuf::attach(f.as_fd(), b.fd()),
                libc::EPERM,
                &format!(
                    "DMABUF_ATTACH of a {} on {dir} without scatter-gather",
                    source.name()
                ),
            )?;
        }
    }
    ctx.notes
        .push("DMABUF_ATTACH: EPERM on both endpoints, udmabuf and dma-heap".into());
    round_trip(ctx, &s, 13_500)?;
    Ok(())
}

/// Catalogue 4: closing the endpoint file with DMABUF transfers pending
/// signals every fence.
pub(crate) fn dmabuf_close_pending(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let ep_in = s.g.open_ep(1)?;
    let mut bufs = Vec::new();
    for _ in 0..3 {
        let b = GuestBuf::new(Source::Udmabuf, 65536).map_err(|e| Error::Setup(e.to_string()))?;
        ffs_dmabuf::attach(ep_in.as_fd(), b.fd()).map_err(io_err("DMABUF_ATTACH"))?;
        ffs_dmabuf::transfer(ep_in.as_fd(), b.fd(), 65536, 0).map_err(io_err("DMABUF_TRANSFER"))?;
        bufs.push(b);
    }
    let queued = wait_device_queue(ctx, s.ep_in, 3, "before close")?;
    // Closing detaches every DMABUF; as after a detach, only the DMABUF
    // itself can be waited on safely (docs/kernel-bugs.md).
    drop(ep_in);
    for (i, b) in bufs.iter().enumerate() {
        check(b.wait(libc::POLLOUT, IO_TIMEOUT), || {
            format!("buffer {i}: no fence signal after close")
        })?;
    }
    wait_cancelled(ctx, s.ep_in, queued, 3, "after close")?;
    ctx.notes
        .push("3 pending IN transfers: every fence signalled on close".into());
    round_trip(ctx, &s, 13_000)?;
    Ok(())
}

/// Catalogue 9: the endpoint goes away under a pending DMABUF transfer (the
/// host's SET_CONFIGURATION 0, a bus reset, a disconnect): the fence signals
/// with an error, and after the host configures the device again DMABUF
/// transfers work.
pub(crate) fn dmabuf_disabled(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let ep_out = s.g.open_ep(2)?;
    // Open for the whole case: closing any file of an endpoint detaches
    // every DMABUF attached to it (docs/kernel-bugs.md).
    let nb = open_nonblock(&s, 2)?;
    let events: [(&str, Value); 3] = [
        (
            "SET_CONFIGURATION 0",
            json!({"op": "control", "request_type": 0, "request": 9, "value": 0}),
        ),
        ("bus reset", json!({"op": "bus", "action": "reset"})),
        ("disconnect", json!({"op": "bus", "action": "disconnect"})),
    ];
    for (k, (what, req)) in events.into_iter().enumerate() {
        let mut b = GuestBuf::new(Source::Udmabuf, 65536).map_err(|e| Error::Setup(e.to_string()))?;
        ffs_dmabuf::attach(ep_out.as_fd(), b.fd()).map_err(io_err("DMABUF_ATTACH"))?;
        ffs_dmabuf::transfer(ep_out.as_fd(), b.fd(), 65536, 0).map_err(io_err("DMABUF_TRANSFER"))?;
        let sync = b
            .export_sync_file(dmabuf::SYNC_READ)
            .map_err(io_err("EXPORT_SYNC_FILE"))?;
        ctx.host.ok(req)?;
        check(b.wait(libc::POLLIN, IO_TIMEOUT), || {
            format!("{what}: the pending fence did not signal")
        })?;
        // Still attached: the fence's status can be read (docs/kernel-bugs.md).
        let f = dmabuf::sync_file_fences(sync.as_fd()).map_err(io_err("SYNC_IOC_FILE_INFO"))?;
        drop(sync);
        check(f.len() == 1 && f[0].status == -libc::ESHUTDOWN, || {
            format!(
                "{what}: fence status {:?}, expected -ESHUTDOWN (the endpoint was disabled)",
                f.iter().map(|x| x.status).collect::<Vec<_>>()
            )
        })?;
        ctx.notes
            .push(format!("{what}: the fence signalled with -ESHUTDOWN"));
        // Until the host configures the device again the endpoint is gone:
        // a non-blocking transfer fails at once. (After a bus reset the host
        // enumerates again by itself, so there is no window to test.)
        let reconnect = match what {
            "SET_CONFIGURATION 0" => {
                Some(json!({"op": "control", "request_type": 0, "request": 9, "value": 1}))
            }
            "disconnect" => Some(json!({"op": "bus", "action": "connect"})),
            _ => None,
        };
        if let Some(again) = reconnect {
            if what == "disconnect" {
                // The device ends the pending request before the guest has
                // handled the disconnect event: the fence can signal while
                // the endpoint is still enabled. Wait for the gadget to see
                // the cable gone.
                let start = Instant::now();
                while !matches!(s.g.udc.state(), Ok(usb_gadget::UdcState::NotAttached)) {
                    check(start.elapsed() < IO_TIMEOUT, || {
                        format!("the UDC state is {:?} long after the disconnect", s.g.udc.state())
                    })?;
                    thread::sleep(Duration::from_millis(20));
                }
            }
            expect_errno(
                ffs_dmabuf::transfer(nb.as_fd(), b.fd(), 65536, 0),
                libc::EAGAIN,
                &format!("O_NONBLOCK transfer after {what}"),
            )?;
            ctx.host.ok(again)?;
        }
        ctx.host.wait_configured(CONFIGURE_TIMEOUT)?;
        // The same DMABUF works again once the host has configured the device.
        ffs_dmabuf::detach(ep_out.as_fd(), b.fd()).map_err(io_err("DMABUF_DETACH"))?;
        dmabuf_pair(ctx, &s, &mut b, 65536, 13_100 + 2 * k as u64)?;
    }
    Ok(())
}

/// Catalogue 10: read()s and DMABUF transfers queued on one endpoint
/// complete in the order they were queued.
pub(crate) fn dmabuf_mixed(ctx: &mut Ctx) -> Result<(), Error> {
    const SIZE: usize = 16384;
    let s = setup(ctx)?;
    let ep_out = s.g.open_ep(2)?;
    let a = GuestBuf::new(Source::Udmabuf, SIZE).map_err(|e| Error::Setup(e.to_string()))?;
    let b = GuestBuf::new(Source::Heap, SIZE).map_err(|e| Error::Setup(e.to_string()))?;
    ffs_dmabuf::attach(ep_out.as_fd(), a.fd()).map_err(io_err("DMABUF_ATTACH"))?;
    ffs_dmabuf::attach(ep_out.as_fd(), b.fd()).map_err(io_err("DMABUF_ATTACH"))?;
    // Queue: DMABUF a, then a read(), then DMABUF b.
    ffs_dmabuf::transfer(ep_out.as_fd(), a.fd(), SIZE as u64, 0).map_err(io_err("DMABUF_TRANSFER a"))?;
    let reader = read_thread(clone(&ep_out)?, SIZE);
    thread::sleep(Duration::from_millis(300));
    ffs_dmabuf::transfer(ep_out.as_fd(), b.fd(), SIZE as u64, 0).map_err(io_err("DMABUF_TRANSFER b"))?;
    ctx.host.stream_start(s.ep_out, "prbs:14000", SIZE, 3)?;
    stream_clean(&mut ctx.host, s.ep_out, 3 * SIZE as u64, "mixed OUT")?;
    let got = join(reader, "read() between the DMABUFs")?;
    check(
        a.wait(libc::POLLIN, IO_TIMEOUT) && b.wait(libc::POLLIN, IO_TIMEOUT),
        || "a fence did not signal".into(),
    )?;
    verify(
        14_000,
        0,
        &a.read(SIZE).map_err(io_err("read a"))?,
        "first (DMABUF a)",
    )?;
    verify(14_000, SIZE as u64, &got, "second (read())")?;
    verify(
        14_000,
        2 * SIZE as u64,
        &b.read(SIZE).map_err(io_err("read b"))?,
        "third (DMABUF b)",
    )?;
    ffs_dmabuf::detach(ep_out.as_fd(), a.fd()).map_err(io_err("DMABUF_DETACH"))?;
    ffs_dmabuf::detach(ep_out.as_fd(), b.fd()).map_err(io_err("DMABUF_DETACH"))?;
    Ok(())
}
