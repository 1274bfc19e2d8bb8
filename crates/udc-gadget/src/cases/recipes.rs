// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Cases for delay and fault injection, the race detectors and the
//! coherency modes: what docs/recipes.md shows, asserted. Each case sets the
//! injection it needs through the control channel and turns those keys off
//! again, so settings given on the command line (a seeded latency for the
//! whole catalogue) stay in force around it.

use std::fs::File;
use std::os::fd::AsFd;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::control_client::ep_str;
use crate::dmabuf::{dma_bounces, GuestBuf, Source};
use crate::error::Error;
use crate::ffs_dmabuf;
use crate::support::{
    check, clone, device_queue, io_err, join, pattern, read_thread, setup, transfer_ok, verify,
    wait_device_queue, write_thread, Ctx, Setup, IO_TIMEOUT,
};

/// `key` of endpoint `ep` in the injection grammar (`ep1in.stall`), named
/// as the daemon's `settings` name it, so a setting can be given back.
fn key(ep: u8, k: &str) -> String {
    let dir = if ep & 0x80 != 0 { "in" } else { "out" };
    format!("ep{}{dir}.{k}", ep & 0x0f)
}

/// Sets injection keys, runs `f`, and gives the keys back the values they
/// had (or turns them off) whatever `f` returned.
fn with_injection<T>(
    ctx: &mut Ctx,
    keys: &[(String, String)],
    f: impl FnOnce(&mut Ctx) -> Result<T, Error>,
) -> Result<T, Error> {
    let before = ctx.host.ok(json!({"op": "inject"}))?["settings"].clone();
    let set: serde_json::Map<String, Value> = keys.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    ctx.host.ok(json!({"op": "inject", "set": set}))?;
    let r = f(ctx);
    let restore: serde_json::Map<String, Value> = keys
        .iter()
        .map(|(k, _)| (k.clone(), before.get(k).cloned().unwrap_or(json!("off"))))
        .collect();
    let cleared = ctx.host.ok(json!({"op": "inject", "set": restore}));
    let v = r?;
    cleared?;
    Ok(v)
}

fn one(k: String, v: &str) -> Vec<(String, String)> {
    vec![(k, v.to_string())]
}

/// The daemon's race reports so far: (total, newest).
fn races(ctx: &mut Ctx) -> Result<(u64, Value), Error> {
    let (total, list) = ctx.host.races()?;
    Ok((total, list.last().cloned().unwrap_or(Value::Null)))
}

/// The errno of a failed read()/write(), or the byte count.
fn io_result<T>(h: thread::JoinHandle<std::io::Result<T>>, what: &str) -> Result<Result<T, i32>, Error> {
    match h.join() {
        Ok(Ok(v)) => Ok(Ok(v)),
        Ok(Err(e)) => Ok(Err(e.raw_os_error().unwrap_or(0))),
        Err(_) => Err(Error::Check(format!("{what}: the I/O thread panicked"))),
    }
}

fn errno_name(e: i32) -> String {
    crate::support::errno_name(e).map_or_else(|| format!("errno {e}"), String::from)
}

/// One OUT transfer of `n` bytes read by FunctionFS read(); returns the
/// read's result and the host's reply.
fn out_once(
    ctx: &mut Ctx,
    s: &Setup,
    f: &File,
    n: usize,
    seed: u64,
) -> Result<(Result<Vec<u8>, i32>, Value), Error> {
    let reader = read_thread(clone(f)?, n);
    wait_device_queue(ctx, s.ep_out, 1, "OUT request queued")?;
    let r = ctx.host.send_out(s.ep_out, &pattern(seed, 0, n), false)?;
    Ok((io_result(reader, "read")?, r))
}

/// One IN transfer of `n` bytes written by FunctionFS write().
fn in_once(
    ctx: &mut Ctx,
    s: &Setup,
    f: &File,
    n: usize,
    seed: u64,
) -> Result<(Result<usize, i32>, Value), Error> {
    let writer = write_thread(clone(f)?, pattern(seed, 0, n));
    wait_device_queue(ctx, s.ep_in, 1, "IN request queued")?;
    let (r, _) = ctx.host.read_in(s.ep_in, n)?;
    Ok((io_result(writer, "write")?, r))
}

/// Every injection switch, as a gadget sees it through FunctionFS
/// read()/write(): the errors arrive as their errnos, a short packet as a
/// short read, delays as time, a reset or disconnect as -ESHUTDOWN and a
/// new enumeration, a held completion as a write() that returns when the
/// host releases it.
pub fn faults_reach_functionfs(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let fin = s.g.open_ep(1)?;
    let fout = s.g.open_ep(2)?;
    let n = 16 * s.mps;
    let mut seen = Vec::new();
    for (k, errno, host) in [
        ("stall", libc::EPIPE, "stall"),
        ("babble", libc::EOVERFLOW, "overflow"),
        ("proto_error", libc::EPROTO, "proto"),
        ("io_error", libc::EIO, "proto"),
    ] {
        let (got, r) = with_injection(ctx, &one(key(s.ep_out, k), "next:1"), |ctx| {
            out_once(ctx, &s, &fout, n, 1)
        })?;
        check(got == Err(errno) && r["status"] == host, || {
            format!(
                "{k} on OUT: read() gave {:?} and the host {}, expected {} and {host}",
                got.as_ref().map(|v| v.len()).map_err(|e| errno_name(*e)),
                r["status"],
                errno_name(errno)
            )
        })?;
        let (got, r) = with_injection(ctx, &one(key(s.ep_in, k), "next:1"), |ctx| {
            in_once(ctx, &s, &fin, n, 2)
        })?;
        check(got == Err(errno) && r["status"] == host, || {
            format!(
                "{k} on IN: write() gave {:?} and the host {}, expected {} and {host}",
                got.map_err(errno_name),
                r["status"],
                errno_name(errno)
            )
        })?;
        seen.push(format!("{k} {}", errno_name(errno)));
    }
    // A short packet from the host: read() returns what arrived, which is
    // what the host says it sent, and the bytes are the host's.
    let (got, r) = with_injection(ctx, &one(key(s.ep_out, "short"), "next:1"), |ctx| {
        out_once(ctx, &s, &fout, n, 3)
    })?;
    let got = got.map_err(|e| Error::Check(format!("short: read() failed: {}", errno_name(e))))?;
    check(got.len() < n && r["actual"] == got.len(), || {
        format!(
            "short: read() returned {} bytes, the host sent {}",
            got.len(),
            r["actual"]
        )
    })?;
    verify(3, 0, &got, "short read")?;
    seen.push(format!("short ({} of {n} bytes)", got.len()));

    // Delays: each is at least what was asked for (64 KiB: 16 chunks of
    // 4 KiB, 65 ms at 1 MB/s).
    let m = 65536;
    let nak: Vec<(String, String)> = one(key(s.ep_out, "nak"), "next:1")
        .into_iter()
        .chain(one(key(s.ep_out, "nak_time"), "300ms"))
        .collect();
    for (keys, at_least, what) in [
        (one(key(s.ep_out, "latency"), "300ms"), 300, "latency 300ms"),
        (nak, 300, "NAK 300ms"),
        (
            one(key(s.ep_out, "chunk"), "4K,30ms"),
            30 * 15,
            "4 KiB chunks, 30ms apart",
        ),
        (one(key(s.ep_out, "bandwidth"), "1MB/s"), 60, "1 MB/s"),
        // The whole bus at USB 2.0's bulk ceiling: 1 MiB takes 19.7 ms.
        (
            one("bandwidth".into(), "high-speed"),
            19,
            "bus at high-speed, 1 MiB",
        ),
    ] {
        let len = if what.ends_with("1 MiB") { 1 << 20 } else { m };
        let start = Instant::now();
        let (got, r) = with_injection(ctx, &keys, |ctx| out_once(ctx, &s, &fout, len, 4))?;
        let took = start.elapsed();
        transfer_ok(&r, len, what)?;
        verify(
            4,
            0,
            &got.map_err(|e| Error::Check(format!("{what}: {}", errno_name(e))))?,
            what,
        )?;
        check(took >= Duration::from_millis(at_least), || {
            format!("{what}: the transfer took {took:?}, less than {at_least} ms")
        })?;
        seen.push(format!("{what} ({} ms)", took.as_millis()));
    }

    // A held completion: the data reaches the host, write() returns only
    // when the host releases it.
    let released = with_injection(ctx, &one(key(s.ep_in, "hold"), "next:1"), |ctx| {
        // The decision is made as the request is queued: after the setting.
        let writer = write_thread(clone(&fin)?, pattern(5, 0, n));
        let (r, data) = ctx.host.read_in(s.ep_in, n)?;
        transfer_ok(&r, n, "held IN")?;
        verify(5, 0, &data, "held IN")?;
        thread::sleep(Duration::from_millis(300));
        check(!writer.is_finished(), || {
            "held IN: write() returned before the release".into()
        })?;
        let handle = held_handle(ctx, s.ep_in)?;
        ctx.host
            .ok(json!({"op": "release", "ep": ep_str(s.ep_in), "handle": handle}))?;
        check(join(writer, "held IN write")? == n, || {
            "held IN: short write".into()
        })?;
        Ok(handle)
    })?;
    seen.push(format!("hold (released handle {released})"));

    // A bus reset and a disconnect in the middle of a transfer.
    for (k, ep, what) in [
        ("reset", s.ep_in, "bus reset"),
        ("disconnect", s.ep_out, "disconnect"),
    ] {
        let before = ctx.host.status()?["host"]["enumerations"].as_u64().unwrap_or(0);
        let got = with_injection(ctx, &one(key(ep, k), "next:1"), |ctx| {
            Ok(if ep == s.ep_in {
                in_once(ctx, &s, &fin, n, 6)?.0.map(|_| ())
            } else {
                out_once(ctx, &s, &fout, n, 6)?.0.map(|_| ())
            })
        })?;
        check(got == Err(libc::ESHUTDOWN), || {
            format!(
                "{what}: the transfer gave {:?}, expected ESHUTDOWN",
                got.map_err(errno_name)
            )
        })?;
        let st = ctx.host.wait_configured(IO_TIMEOUT)?;
        check(st["host"]["enumerations"].as_u64().unwrap_or(0) > before, || {
            format!("{what}: the host did not enumerate again")
        })?;
        seen.push(format!("{what} ESHUTDOWN, enumerated again"));
    }
    // And the endpoints still work.
    let (got, r) = out_once(ctx, &s, &fout, n, 7)?;
    transfer_ok(&r, n, "OUT after the faults")?;
    verify(
        7,
        0,
        &got.map_err(|e| Error::Check(errno_name(e)))?,
        "OUT after the faults",
    )?;
    ctx.notes.push(seen.join("; "));
    Ok(())
}

/// The handle of the completion the device holds on `ep`.
fn held_handle(ctx: &mut Ctx, ep: u8) -> Result<u64, Error> {
    let start = Instant::now();
    loop {
        let e = ctx.host.endpoint_status(ep)?;
        if let Some(h) = e["held_completions"][0].as_u64() {
            return Ok(h);
        }
        check(start.elapsed() < IO_TIMEOUT, || {
            format!("the device holds no completion on {ep:#04x}: {e}")
        })?;
        thread::sleep(Duration::from_millis(20));
    }
}

/// Recipe: hold a DMABUF transfer for 5 s, then detach it. The data moves
/// at once, the fence stays unsignalled for the 5 s, and DETACH makes
/// f_fs dequeue the request: the device cancels it and the fence signals.
pub fn hold_then_detach(ctx: &mut Ctx) -> Result<(), Error> {
    const SIZE: usize = 65536;
    let s = setup(ctx)?;
    let ep_in = s.g.open_ep(1)?;
    let mut buf = GuestBuf::new(Source::Udmabuf, SIZE).map_err(|e| Error::Setup(e.to_string()))?;
    buf.write(&pattern(31, 0, SIZE)).map_err(io_err("fill"))?;
    ffs_dmabuf::attach(ep_in.as_fd(), buf.fd()).map_err(io_err("DMABUF_ATTACH"))?;
    let note = with_injection(ctx, &one(key(s.ep_in, "hold"), "next:1"), |ctx| {
        ffs_dmabuf::transfer(ep_in.as_fd(), buf.fd(), SIZE as u64, 0).map_err(io_err("DMABUF_TRANSFER"))?;
        let (r, data) = ctx.host.read_in(s.ep_in, SIZE)?;
        transfer_ok(&r, SIZE, "held DMABUF IN")?;
        verify(31, 0, &data, "held DMABUF IN")?;
        let handle = held_handle(ctx, s.ep_in)?;
        let before = device_queue(ctx, s.ep_in)?;
        // The hold: the fence must not signal while the device holds it.
        check(!buf.wait(libc::POLLOUT, Duration::from_secs(5)), || {
            "the fence signalled while the device held the completion".into()
        })?;
        let start = Instant::now();
        ffs_dmabuf::detach(ep_in.as_fd(), buf.fd()).map_err(io_err("DMABUF_DETACH"))?;
        // After a detach only the DMABUF itself can be waited on safely
        // (docs/kernel-bugs.md).
        check(buf.wait(libc::POLLOUT, IO_TIMEOUT), || {
            "the fence did not signal after DETACH".into()
        })?;
        let signalled = start.elapsed();
        let after = device_queue(ctx, s.ep_in)?;
        let held_left = ctx.host.endpoint_status(s.ep_in)?["held_completions"]
            .as_array()
            .map_or(0, |h| h.len());
        check(after.1 == before.1 + 1 && held_left == 0, || {
            format!(
                "after DETACH the device ended {} requests with an error and holds {held_left} completions, expected 1 and 0",
                after.1 - before.1
            )
        })?;
        Ok(format!(
            "64 KiB DMABUF IN: the host had the data at once; the completion (handle {handle}) was held 5.0 s with the fence unsignalled; DMABUF_DETACH: the device cancelled the request and the fence signalled {} ms later",
            signalled.as_millis()
        ))
    })?;
    ctx.notes.push(note);
    Ok(())
}

/// Recipe: a reader that does not wait for the fence. With out_poison the
/// buffer holds the poison until the data really arrives: a read before
/// the fence signals sees it, a read after sees the data. Under
/// swiotlb=force the device writes a bounce buffer, which reaches the pages
/// only when f_fs syncs at completion: there an early reader sees the
/// buffer's old contents, never the poison.
pub fn poison_catches_early_reader(ctx: &mut Ctx) -> Result<(), Error> {
    const SIZE: usize = 65536;
    let bounced = dma_bounces();
    let s = setup(ctx)?;
    let ep_out = s.g.open_ep(2)?;
    let mut buf = GuestBuf::new(Source::Udmabuf, SIZE).map_err(|e| Error::Setup(e.to_string()))?;
    buf.write(&vec![0; SIZE]).map_err(io_err("fill"))?;
    ffs_dmabuf::attach(ep_out.as_fd(), buf.fd()).map_err(io_err("DMABUF_ATTACH"))?;
    let note = with_injection(ctx, &one(key(s.ep_out, "out_poison"), "300ms"), |ctx| {
        ffs_dmabuf::transfer(ep_out.as_fd(), buf.fd(), SIZE as u64, 0).map_err(io_err("DMABUF_TRANSFER"))?;
        wait_device_queue(ctx, s.ep_out, 1, "DMABUF OUT queued")?;
        // The careless reader: no wait for the fence, and no
        // DMA_BUF_IOCTL_SYNC either (SYNC_START waits for the fences).
        let early = buf.read_without_sync(SIZE);
        let poisoned = early.chunks(8).filter(|c| *c == udc_patterns::POISON).count() * 8;
        if bounced {
            check(early.iter().all(|&b| b == 0), || {
                format!(
                    "under swiotlb=force a read before the fence saw {poisoned} poison bytes and {} changed \
                     bytes, expected the buffer's old contents (the device writes a bounce buffer)",
                    early.iter().filter(|&&b| b != 0).count()
                )
            })?;
        } else {
            check(poisoned == SIZE, || {
                format!("a read before the fence saw {poisoned} of {SIZE} poison bytes, expected all")
            })?;
        }
        transfer_ok(
            &ctx.host.send_out(s.ep_out, &pattern(32, 0, SIZE), false)?,
            SIZE,
            "poisoned DMABUF OUT",
        )?;
        check(buf.wait(libc::POLLIN, IO_TIMEOUT), || {
            "the fence did not signal".into()
        })?;
        verify(
            32,
            0,
            &buf.read(SIZE).map_err(io_err("read"))?,
            "the read after the fence",
        )?;
        Ok(if bounced {
            "under swiotlb=force, a read before the fence: the buffer's old contents (the poison is in the bounce \
             buffer); after the fence: the host's data, verified"
                .to_string()
        } else {
            format!(
                "a read before the fence: {poisoned} of {SIZE} bytes were UDCPOISN; after the fence: the host's data, verified"
            )
        })
    })?;
    ffs_dmabuf::detach(ep_out.as_fd(), buf.fd()).map_err(io_err("DMABUF_DETACH"))?;
    ctx.notes.push(note);
    Ok(())
}

/// Recipe: a writer that changes an IN buffer while the device reads it.
/// The device's checksums at DMA start and end differ; the daemon reports
/// the race with the changed block. Under swiotlb=force the device reads a
/// bounce copy made when f_fs synced the buffer at TRANSFER, which the
/// writer cannot touch: no race, as on hardware behind a bounce buffer.
pub fn checksum_catches_writer(ctx: &mut Ctx) -> Result<(), Error> {
    const SIZE: usize = 65536;
    const AT: usize = 8192 + 100;
    let bounced = dma_bounces();
    let s = setup(ctx)?;
    let ep_in = s.g.open_ep(1)?;
    let mut buf = GuestBuf::new(Source::Udmabuf, SIZE).map_err(|e| Error::Setup(e.to_string()))?;
    let mut data = pattern(33, 0, SIZE);
    buf.write(&data).map_err(io_err("fill"))?;
    ffs_dmabuf::attach(ep_in.as_fd(), buf.fd()).map_err(io_err("DMABUF_ATTACH"))?;
    let (before, _) = races(ctx)?;
    if !bounced {
        ctx.expected_races += 1;
    }
    let report = with_injection(ctx, &one(key(s.ep_in, "in_checksum"), "500ms"), |ctx| {
        ffs_dmabuf::transfer(ep_in.as_fd(), buf.fd(), SIZE as u64, 0).map_err(io_err("DMABUF_TRANSFER"))?;
        ctx.host.ok(json!({
            "op": "stream_start", "ep": ep_str(s.ep_in), "pattern": "zeros", "verify": false,
            "transfer_size": SIZE, "count": 1, "depth": 1,
        }))?;
        wait_device_queue(ctx, s.ep_in, 1, "DMABUF IN queued")?;
        thread::sleep(Duration::from_millis(150));
        // The careless writer: the buffer is the device's until the fence,
        // and DMA_BUF_IOCTL_SYNC would have waited for it.
        data[AT] ^= 0xff;
        buf.write_without_sync(&data);
        check(buf.wait(libc::POLLOUT, IO_TIMEOUT), || {
            "the fence did not signal".into()
        })?;
        ctx.host.stream_wait(s.ep_in, IO_TIMEOUT)?;
        races(ctx)
    })?;
    ffs_dmabuf::detach(ep_in.as_fd(), buf.fd()).map_err(io_err("DMABUF_DETACH"))?;
    let (after, newest) = report;
    if bounced {
        check(after == before, || {
            format!(
                "under swiotlb=force the daemon reported {} races, expected none (the device reads a bounce copy)",
                after - before
            )
        })?;
        ctx.notes
            .push("under swiotlb=force: no race, the device read the bounce copy made at TRANSFER".into());
        return Ok(());
    }
    check(after == before + 1, || {
        format!("the daemon reported {} races, expected 1", after - before)
    })?;
    check(
        newest["kind"] == "in_changed_during_dma" && newest["changed_blocks"] == json!([8192]),
        || format!("race report {newest}, expected block 8192 changed"),
    )?;
    ctx.notes.push(format!(
        "the daemon reported: {}",
        newest["detail"].as_str().unwrap_or("?")
    ));
    Ok(())
}

/// The same seed gives the same injected events: a fixed sequence of
/// read()/write() transfers under random latency, stalls and short
/// packets, run twice with one seed and once with another; the daemon's
/// event digests must match and differ.
pub fn seed_reproduces_events(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let fin = s.g.open_ep(1)?;
    let fout = s.g.open_ep(2)?;
    // Whatever the command line set stays in force around the case.
    let saved = ctx.host.ok(json!({"op": "inject"}))?["settings"].clone();
    let run = |ctx: &mut Ctx, seed: u64| -> Result<(String, u64), Error> {
        ctx.host.ok(json!({"op": "inject", "clear": true}))?;
        ctx.host.ok(json!({"op": "inject", "set": {
            "seed": seed.to_string(), "latency": "0..2ms",
            key(s.ep_in, "stall"): "20%", key(s.ep_out, "short"): "20%",
        }}))?;
        for i in 0..24u64 {
            if i % 2 == 0 {
                // A stall or a short packet is one of the events compared.
                let _ = in_once(ctx, &s, &fin, 4096, i)?;
            } else {
                let _ = out_once(ctx, &s, &fout, 4096, i)?;
            }
        }
        let r = ctx.host.ok(json!({"op": "inject"}))?;
        Ok((
            r["digest"].as_str().unwrap_or("").to_string(),
            r["events"].as_u64().unwrap_or(0),
        ))
    };
    let a = run(ctx, 4242);
    let b = a.as_ref().ok().map(|_| run(ctx, 4242));
    let c = b.as_ref().map(|_| run(ctx, 4343));
    // Back to what it was.
    ctx.host.ok(json!({"op": "inject", "clear": true}))?;
    if let Some(m) = saved.as_object() {
        if m.len() > 1 {
            ctx.host.ok(json!({"op": "inject", "set": saved}))?;
        }
    }
    let (a, b, c) = (a?, b.expect("ran")?, c.expect("ran")?);
    check(a.1 > 10, || {
        format!("only {} injected events: too few to compare", a.1)
    })?;
    check(a == b, || {
        format!("seed 4242 twice: digests {a:?} and {b:?} differ")
    })?;
    check(a.0 != c.0, || {
        format!("seeds 4242 and 4343 gave the same digest {}", a.0)
    })?;
    ctx.notes.push(format!(
        "seed 4242: {} events, digest {} (twice); seed 4343: digest {}",
        a.1, a.0, c.0
    ));
    Ok(())
}

/// Both paths deliver the current data in any DMA mode. Read/write gets a
/// fresh mapping per request, synced by the UDC's map and unmap. A DMABUF
/// keeps the mapping f_fs made at ATTACH for every transfer, so f_fs must
/// sync it around each one: with dma-direct on this coherent machine the
/// sync is a no-op, under swiotlb=force it copies to and from the bounce
/// buffer. Stock f_fs 6.9 to 6.12 never syncs, so under swiotlb an IN
/// transfer sends what the buffer held at ATTACH and an OUT transfer's data
/// never reaches the pages (docs/kernel-bugs.md); the fix is
/// patches/linux/0002.
pub fn coherency_dmabuf_next_to_read_write(ctx: &mut Ctx) -> Result<(), Error> {
    const SIZE: usize = 65536;
    let mode = crate::dmabuf::dma_mode();
    let s = setup(ctx)?;
    let mut notes = vec![format!("DMA mode: {mode}")];

    // Read/write: verified both ways.
    let fin = s.g.open_ep(1)?;
    let fout = s.g.open_ep(2)?;
    let (got, r) = out_once(ctx, &s, &fout, SIZE, 41)?;
    transfer_ok(&r, SIZE, "read/write OUT")?;
    verify(
        41,
        0,
        &got.map_err(|e| Error::Check(format!("read(): {}", errno_name(e))))?,
        "read/write OUT",
    )?;
    let writer = write_thread(clone(&fin)?, pattern(42, 0, SIZE));
    let (r, data) = ctx.host.read_in(s.ep_in, SIZE)?;
    transfer_ok(&r, SIZE, "read/write IN")?;
    verify(42, 0, &data, "read/write IN")?;
    join(writer, "write")?;
    notes.push("read/write 64 KiB: verified both ways".into());

    // DMABUF IN: the CPU writes after ATTACH; what does the host get?
    let mut buf = GuestBuf::new(Source::Udmabuf, SIZE).map_err(|e| Error::Setup(e.to_string()))?;
    buf.write(&pattern(43, 0, SIZE)).map_err(io_err("fill"))?;
    ffs_dmabuf::attach(fin.as_fd(), buf.fd()).map_err(io_err("DMABUF_ATTACH"))?;
    buf.write(&pattern(44, 0, SIZE))
        .map_err(io_err("write after attach"))?;
    ffs_dmabuf::transfer(fin.as_fd(), buf.fd(), SIZE as u64, 0).map_err(io_err("DMABUF_TRANSFER"))?;
    let (r, data) = ctx.host.read_in(s.ep_in, SIZE)?;
    transfer_ok(&r, SIZE, "DMABUF IN")?;
    check(buf.wait(libc::POLLOUT, IO_TIMEOUT), || {
        "DMABUF IN: no fence".into()
    })?;
    ffs_dmabuf::detach(fin.as_fd(), buf.fd()).map_err(io_err("DMABUF_DETACH"))?;
    let current = data == pattern(44, 0, SIZE);
    let at_attach = data == pattern(43, 0, SIZE);
    notes.push(format!(
        "DMABUF IN: the host got {}",
        if current {
            "the buffer's current data"
        } else if at_attach {
            "the data the buffer held at ATTACH (stale)"
        } else {
            "neither the current data nor the data at ATTACH"
        }
    ));

    // DMABUF OUT: where is the host's data when the fence signals and
    // after DETACH? (Read with DMA_BUF_IOCTL_SYNC, except on a udmabuf
    // under swiotlb, whose sync is broken in its own way: GuestBuf.)
    let mut buf = GuestBuf::new(Source::Udmabuf, SIZE).map_err(|e| Error::Setup(e.to_string()))?;
    buf.write(&vec![0xa5; SIZE]).map_err(io_err("fill"))?;
    ffs_dmabuf::attach(fout.as_fd(), buf.fd()).map_err(io_err("DMABUF_ATTACH"))?;
    ffs_dmabuf::transfer(fout.as_fd(), buf.fd(), SIZE as u64, 0).map_err(io_err("DMABUF_TRANSFER"))?;
    let sent = pattern(45, 0, SIZE);
    transfer_ok(&ctx.host.send_out(s.ep_out, &sent, false)?, SIZE, "DMABUF OUT")?;
    check(buf.wait(libc::POLLIN, IO_TIMEOUT), || {
        "DMABUF OUT: no fence".into()
    })?;
    let at_fence = buf.read(SIZE).map_err(io_err("read"))? == sent;
    ffs_dmabuf::detach(fout.as_fd(), buf.fd()).map_err(io_err("DMABUF_DETACH"))?;
    // DETACH drops f_fs's reference; the attachment is unmapped when its
    // last transfer's cleanup work has run too, moments later: give the
    // data 2 s to appear.
    let start = Instant::now();
    let after_detach = loop {
        if buf.read(SIZE).map_err(io_err("read"))? == sent {
            break true;
        }
        if start.elapsed() > Duration::from_secs(2) {
            break false;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let has = |b: bool| if b { "the host's data" } else { "stale data" };
    notes.push(format!(
        "DMABUF OUT: at the fence the buffer holds {}, after DETACH {}",
        has(at_fence),
        has(after_detach)
    ));
    ctx.notes.extend(notes);
    check(current && at_fence && after_detach, || {
        format!(
            "DMABUF transfers under {mode} did not deliver the current data ({}{}): f_fs never syncs the DMABUF's \
             mapping around a transfer (docs/kernel-bugs.md, DMABUF transfers are never synced; fix: \
             patches/linux/0002)",
            if current { "" } else { "IN sent stale data" },
            if at_fence && after_detach {
                ""
            } else if current {
                "OUT data did not reach the buffer"
            } else {
                ", OUT data did not reach the buffer"
            }
        )
    })
}

/// Reordering, seen through DMABUF fences: the first of two OUT transfers
/// completes after the second, so its fence signals later although its
/// seqno is lower (the FIFO promise f_fs numbers its fences on, broken on
/// purpose).
pub fn reorder_breaks_fence_order(ctx: &mut Ctx) -> Result<(), Error> {
    const SIZE: usize = 65536;
    let s = setup(ctx)?;
    let ep_out = s.g.open_ep(2)?;
    let bufs = [
        GuestBuf::new(Source::Udmabuf, SIZE).map_err(|e| Error::Setup(e.to_string()))?,
        GuestBuf::new(Source::Udmabuf, SIZE).map_err(|e| Error::Setup(e.to_string()))?,
    ];
    for b in &bufs {
        ffs_dmabuf::attach(ep_out.as_fd(), b.fd()).map_err(io_err("DMABUF_ATTACH"))?;
    }
    let stamps = with_injection(ctx, &one(key(s.ep_out, "reorder"), "next:1"), |ctx| {
        let mut syncs = Vec::new();
        for b in &bufs {
            ffs_dmabuf::transfer(ep_out.as_fd(), b.fd(), SIZE as u64, 0)
                .map_err(io_err("DMABUF_TRANSFER"))?;
            syncs.push(
                b.export_sync_file(crate::dmabuf::SYNC_READ)
                    .map_err(io_err("EXPORT_SYNC_FILE"))?,
            );
        }
        for i in 0..2u64 {
            transfer_ok(
                &ctx.host.send_out(s.ep_out, &pattern(50 + i, 0, SIZE), false)?,
                SIZE,
                "reordered OUT",
            )?;
        }
        let mut stamps = Vec::new();
        for (i, (b, sync)) in bufs.iter().zip(&syncs).enumerate() {
            check(b.wait(libc::POLLIN, IO_TIMEOUT), || {
                format!("buffer {i}: no fence")
            })?;
            verify(
                50 + i as u64,
                0,
                &b.read(SIZE).map_err(io_err("read"))?,
                "reordered OUT",
            )?;
            // Read while still attached (docs/kernel-bugs.md).
            let f = crate::dmabuf::sync_file_fences(sync.as_fd()).map_err(io_err("SYNC_IOC_FILE_INFO"))?;
            check(f.len() == 1 && f[0].status == 1, || {
                format!(
                    "buffer {i}: fence status {:?}",
                    f.iter().map(|x| x.status).collect::<Vec<_>>()
                )
            })?;
            stamps.push(f[0].timestamp_ns);
        }
        Ok(stamps)
    })?;
    for b in &bufs {
        ffs_dmabuf::detach(ep_out.as_fd(), b.fd()).map_err(io_err("DMABUF_DETACH"))?;
    }
    check(stamps[0] > stamps[1], || {
        format!(
            "fence 1 signalled {} ns before fence 2: the reordering did not happen",
            stamps[1] - stamps[0]
        )
    })?;
    ctx.notes.push(format!(
        "the data of both is right; fence 2 signalled {} us before fence 1",
        (stamps[0] - stamps[1]) / 1000
    ));
    Ok(())
}
