// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `udc-gadget demo`: verified throughput each way, with read()/write()
//! and with FunctionFS DMABUF transfers.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::time::Instant;

use serde_json::json;

use crate::control_client::ep_str;
use crate::dmabuf::{GuestBuf, Source};
use crate::error::Error;
use crate::ffs_dmabuf;
use crate::support::{check, io_err, pattern, setup, stream_clean, verify, Ctx, Setup, IO_TIMEOUT};

/// `udc-gadget demo`: verified read/write throughput each way.
pub fn run(ctx: &mut Ctx, size: usize) -> Result<(), Error> {
    const CHUNK: usize = 1 << 20;
    let s = setup(ctx)?;
    let count = (size / CHUNK).max(1) as u64;
    let total = count * CHUNK as u64;
    println!(
        "udc-gadget: {} speed, bulk IN {:#04x} and OUT {:#04x}",
        s.speed, s.ep_in, s.ep_out
    );

    let mut f = s.g.open_ep(2)?;
    ctx.host.ok(
        json!({"op": "stream_start", "ep": ep_str(s.ep_out), "pattern": "prbs:1",
        "transfer_size": CHUNK, "depth": 4, "count": count}),
    )?;
    let mut buf = vec![0u8; CHUNK];
    let start = Instant::now();
    for k in 0..count {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::Check(format!("OUT read(): {e}")))?;
        check(n == CHUNK, || format!("OUT read() returned {n}"))?;
        verify(1, k * CHUNK as u64, &buf, "OUT")?;
    }
    let t = start.elapsed().as_secs_f64();
    let host_out = ctx.host.stream_wait(s.ep_out, IO_TIMEOUT)?;
    println!(
        "OUT (host to gadget, read()): {} MiB in {t:.2} s = {:.1} MiB/s, verified byte for byte",
        total >> 20,
        (total as f64 / (1 << 20) as f64) / t
    );

    let mut f = s.g.open_ep(1)?;
    ctx.host.ok(
        json!({"op": "stream_start", "ep": ep_str(s.ep_in), "pattern": "prbs:2",
        "transfer_size": CHUNK, "depth": 4, "count": count, "verify": true}),
    )?;
    let start = Instant::now();
    for k in 0..count {
        let data = pattern(2, k * CHUNK as u64, CHUNK);
        let n = f
            .write(&data)
            .map_err(|e| Error::Check(format!("IN write(): {e}")))?;
        check(n == CHUNK, || format!("IN write() returned {n}"))?;
    }
    let host_in = ctx.host.stream_wait(s.ep_in, IO_TIMEOUT)?;
    let t = start.elapsed().as_secs_f64();
    check(
        host_in["offset"] == total && host_in["stats"]["errors"] == 0,
        || format!("IN: the host's verifying stream reports {host_in}"),
    )?;
    println!(
        "IN (gadget to host, write()): {} MiB in {t:.2} s = {:.1} MiB/s, verified byte for byte by the host",
        total >> 20,
        (total as f64 / (1 << 20) as f64) / t
    );
    let _ = host_out;
    demo_dmabuf(ctx, &s, count)
}

/// DMABUFs in flight per direction in the demo.
const DEMO_DMABUFS: usize = 2;

/// The demo's DMABUF half: udmabufs of 1 MiB attached to each endpoint,
/// kept in flight with FUNCTIONFS_DMABUF_TRANSFER, each waited on through
/// its fence before the CPU touches it again; verified at both ends.
fn demo_dmabuf(ctx: &mut Ctx, s: &Setup, count: u64) -> Result<(), Error> {
    const CHUNK: usize = 1 << 20;
    let total = count * CHUNK as u64;
    let mib_s = |t: f64| (total as f64 / (1 << 20) as f64) / t;

    // OUT: the host streams prbs:3; the device writes each DMABUF, the CPU
    // checks it after the fence and queues it again.
    let ep_out = s.g.open_ep(2)?;
    let bufs = (0..DEMO_DMABUFS)
        .map(|_| GuestBuf::new(Source::Udmabuf, CHUNK).map_err(|e| Error::Setup(format!("udmabuf: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    for b in &bufs {
        ffs_dmabuf::attach(ep_out.as_fd(), b.fd()).map_err(io_err("DMABUF_ATTACH on OUT"))?;
    }
    ctx.host.ok(
        json!({"op": "stream_start", "ep": ep_str(s.ep_out), "pattern": "prbs:3",
        "transfer_size": CHUNK, "depth": 4, "count": count}),
    )?;
    let start = Instant::now();
    for (k, b) in bufs.iter().enumerate().take(count as usize) {
        ffs_dmabuf::transfer(ep_out.as_fd(), b.fd(), CHUNK as u64, 0)
            .map_err(io_err(&format!("OUT DMABUF {k}")))?;
    }
    for k in 0..count {
        let b = &bufs[k as usize % DEMO_DMABUFS];
        check(b.wait(libc::POLLIN, IO_TIMEOUT), || {
            format!("OUT DMABUF transfer {k}: no fence signal")
        })?;
        let data = b.read(CHUNK).map_err(io_err("DMABUF read"))?;
        verify(3, k * CHUNK as u64, &data, &format!("OUT DMABUF transfer {k}"))?;
        if k + (DEMO_DMABUFS as u64) < count {
            ffs_dmabuf::transfer(ep_out.as_fd(), b.fd(), CHUNK as u64, 0).map_err(io_err(&format!(
                "OUT DMABUF transfer {}",
                k + DEMO_DMABUFS as u64
            )))?;
        }
    }
    let t = start.elapsed().as_secs_f64();
    stream_clean(&mut ctx.host, s.ep_out, total, "OUT DMABUF")?;
    println!(
        "OUT (host to gadget, DMABUF): {} MiB in {t:.2} s = {:.1} MiB/s, {DEMO_DMABUFS} udmabufs in flight, verified byte for byte",
        total >> 20,
        mib_s(t)
    );
    for b in &bufs {
        ffs_dmabuf::detach(ep_out.as_fd(), b.fd()).map_err(io_err("DMABUF_DETACH on OUT"))?;
    }

    // IN: the CPU fills each DMABUF with prbs:4 after its last transfer's
    // fence, the device reads it, the host's stream verifies.
    let ep_in = s.g.open_ep(1)?;
    let mut bufs = bufs;
    for b in &bufs {
        ffs_dmabuf::attach(ep_in.as_fd(), b.fd()).map_err(io_err("DMABUF_ATTACH on IN"))?;
    }
    ctx.host.ok(
        json!({"op": "stream_start", "ep": ep_str(s.ep_in), "pattern": "prbs:4",
        "transfer_size": CHUNK, "depth": 4, "count": count, "verify": true}),
    )?;
    let start = Instant::now();
    for k in 0..count {
        let b = &mut bufs[k as usize % DEMO_DMABUFS];
        check(b.wait(libc::POLLOUT, IO_TIMEOUT), || {
            format!("IN DMABUF transfer {k}: buffer still busy")
        })?;
        b.write(&pattern(4, k * CHUNK as u64, CHUNK))
            .map_err(io_err("DMABUF write"))?;
        ffs_dmabuf::transfer(ep_in.as_fd(), b.fd(), CHUNK as u64, 0)
            .map_err(io_err(&format!("IN DMABUF transfer {k}")))?;
    }
    let host_in = ctx.host.stream_wait(s.ep_in, IO_TIMEOUT)?;
    let t = start.elapsed().as_secs_f64();
    check(
        host_in["offset"] == total && host_in["stats"]["errors"] == 0,
        || format!("IN DMABUF: the host's verifying stream reports {host_in}"),
    )?;
    println!(
        "IN (gadget to host, DMABUF): {} MiB in {t:.2} s = {:.1} MiB/s, {DEMO_DMABUFS} udmabufs in flight, verified byte for byte by the host",
        total >> 20,
        mib_s(t)
    );
    for b in &bufs {
        check(b.wait(libc::POLLOUT, IO_TIMEOUT), || {
            "IN DMABUF: a fence did not signal".into()
        })?;
        ffs_dmabuf::detach(ep_in.as_fd(), b.fd()).map_err(io_err("DMABUF_DETACH on IN"))?;
    }
    Ok(())
}
