// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The series on virtio-udc: DMABUF transfers, read()/write() and AIO on
//! the test gadget's endpoint files, with the daemon's traffic streams as
//! the USB host.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;

use bytes::Bytes;
use serde_json::json;

use super::measure::{check_ends, pipeline, Measured, Meter};
use super::{Dir, HOST_DEPTH, IO_TIMEOUT};
use crate::aio::Buffer;
use crate::control_client::{ep_str, ControlClient};
use crate::dmabuf::{GuestBuf, Source};
use crate::error::Error;
use crate::ffs_dmabuf;
use crate::gadget::{self, TestGadget};
use crate::support::{check, io_err, pattern, Ctx};

/// The test gadget on virtio-udc, configured by the daemon's host.
pub(super) struct Virtio<'a> {
    host: &'a mut ControlClient,
    g: TestGadget,
    ep_in: u8,
    ep_out: u8,
}

impl<'a> Virtio<'a> {
    pub(super) fn setup(ctx: &'a mut Ctx) -> Result<Virtio<'a>, Error> {
        let g = TestGadget::bind(gadget::find_udc(ctx.udc.as_deref())?)?;
        let host = &mut ctx.host;
        host.wait_configured(IO_TIMEOUT)?;
        let [ep_in, ep_out] = host.enumerated_endpoint_pair()?.map(|e| e.address);
        Ok(Virtio {
            host,
            g,
            ep_in,
            ep_out,
        })
    }

    fn ep(&self, dir: Dir) -> u8 {
        match dir {
            Dir::In => self.ep_in,
            Dir::Out => self.ep_out,
        }
    }

    /// Starts a host stream of `count` transfers of `size` on `dir`'s
    /// endpoint; IN streams verify what they receive against `pattern`.
    fn stream(&mut self, dir: Dir, pattern: &str, size: usize, count: u64) -> Result<(), Error> {
        self.host.ok(json!({
            "op": "stream_start", "ep": ep_str(self.ep(dir)), "pattern": pattern,
            "transfer_size": size, "depth": HOST_DEPTH, "count": count, "verify": true,
        }))?;
        Ok(())
    }

    /// The stream on `dir`'s endpoint ended after `bytes` with no error.
    fn stream_done(&mut self, dir: Dir, bytes: u64, what: &str) -> Result<(), Error> {
        let s = self.host.stream_wait(self.ep(dir), IO_TIMEOUT)?;
        check(
            s["offset"] == bytes && s["stats"]["errors"] == 0 && s["last_error"].is_null(),
            || format!("{what}: the host stream ended with {s}, expected {bytes} bytes and no error"),
        )
    }

    pub(super) fn dmabuf(
        &mut self,
        dir: Dir,
        size: usize,
        count: u64,
        n: usize,
        seed: u64,
    ) -> Result<Measured, Error> {
        let what = format!("DMABUF {} {} KiB", dir.name(), size >> 10);
        // Closing any file of the endpoint detaches every DMABUF on it:
        // this one stays open until they are detached.
        let ep = self.g.open_ep(dir.ffs_ep())?;
        let mut bufs = Vec::with_capacity(n);
        for _ in 0..n {
            let b = GuestBuf::new(Source::Udmabuf, size)
                .map_err(|e| Error::Setup(format!("udmabuf of {size} bytes: {e}")))?;
            ffs_dmabuf::attach(ep.as_fd(), b.fd()).map_err(io_err(&format!("{what}: DMABUF_ATTACH")))?;
            bufs.push(b);
        }
        let result = self.dmabuf_run(&ep, &mut bufs, dir, size, count, seed, &what);
        // After a failure transfers may be pending; detaching signals
        // their fences (no sync file is used, docs/kernel-bugs.md).
        for b in &bufs {
            let r = ffs_dmabuf::detach(ep.as_fd(), b.fd());
            if result.is_ok() {
                r.map_err(io_err(&format!("{what}: DMABUF_DETACH")))?;
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn dmabuf_run(
        &mut self,
        ep: &File,
        bufs: &mut [GuestBuf],
        dir: Dir,
        size: usize,
        count: u64,
        seed: u64,
        what: &str,
    ) -> Result<Measured, Error> {
        let n = bufs.len();
        let transfer = |b: &GuestBuf| {
            ffs_dmabuf::transfer(ep.as_fd(), b.fd(), size as u64, 0)
                .map_err(io_err(&format!("{what}: DMABUF_TRANSFER")))
        };
        let wait = |b: &GuestBuf| {
            check(b.wait(dir.fence_events(), IO_TIMEOUT), || {
                format!("{what}: the fence did not signal within {IO_TIMEOUT:?}")
            })
        };
        if dir == Dir::In {
            // Warm-up, verified byte for byte by the host.
            for (i, b) in bufs.iter_mut().enumerate() {
                b.write(&pattern(seed, (i * size) as u64, size))
                    .map_err(io_err(what))?;
            }
            self.stream(dir, &format!("prbs:{seed}"), size, n as u64)?;
            bufs.iter().try_for_each(transfer)?;
            bufs.iter().try_for_each(wait)?;
            self.stream_done(dir, (n * size) as u64, &format!("{what} warm-up"))?;
            let zeros = vec![0u8; size];
            for b in bufs.iter_mut() {
                b.write(&zeros).map_err(io_err(what))?;
            }
            self.stream(dir, "zeros", size, count)?;
        } else {
            self.stream(dir, &format!("prbs:{seed}"), size, count)?;
        }
        let meter = Meter::start()?;
        let (mut head, mut tail) = ([0u8; 8], [0u8; 8]);
        pipeline(
            count,
            n,
            |k| transfer(&bufs[k as usize % n]),
            |k| {
                let b = &bufs[k as usize % n];
                wait(b)?;
                if dir == Dir::Out {
                    b.read_at(0, &mut head).map_err(io_err(what))?;
                    b.read_at(size - 8, &mut tail).map_err(io_err(what))?;
                    check_ends(seed, k * size as u64, size, &head, &tail, what)?;
                }
                Ok(())
            },
        )?;
        let m = meter.stop(count * size as u64)?;
        self.stream_done(dir, count * size as u64, what)?;
        Ok(m)
    }

    pub(super) fn rw(&mut self, dir: Dir, size: usize, count: u64, seed: u64) -> Result<Measured, Error> {
        let what = format!("read/write {} {} KiB", dir.name(), size >> 10);
        let mut f = self.g.open_ep(dir.ffs_ep())?;
        let mut buf = vec![0u8; size];
        match dir {
            Dir::Out => self.stream(dir, &format!("prbs:{seed}"), size, count)?,
            Dir::In => {
                self.stream(dir, &format!("prbs:{seed}"), size, 2)?;
                for k in 0..2u64 {
                    let w = f
                        .write(&pattern(seed, k * size as u64, size))
                        .map_err(io_err(&what))?;
                    check(w == size, || format!("{what}: warm-up write() returned {w}"))?;
                }
                self.stream_done(dir, 2 * size as u64, &format!("{what} warm-up"))?;
                self.stream(dir, "zeros", size, count)?;
            }
        }
        let meter = Meter::start()?;
        for k in 0..count {
            let n = match dir {
                Dir::Out => f.read(&mut buf),
                Dir::In => f.write(&buf),
            }
            .map_err(io_err(&what))?;
            check(n == size, || format!("{what}: transfer {k} moved {n} bytes"))?;
            if dir == Dir::Out {
                check_ends(seed, k * size as u64, size, &buf[..8], &buf[size - 8..], &what)?;
            }
        }
        let m = meter.stop(count * size as u64)?;
        self.stream_done(dir, count * size as u64, &what)?;
        Ok(m)
    }

    pub(super) fn aio_out(
        &mut self,
        size: usize,
        count: u64,
        n: usize,
        seed: u64,
    ) -> Result<Measured, Error> {
        let what = format!("AIO out {} KiB", size >> 10);
        self.stream(Dir::Out, &format!("prbs:{seed}"), size, count)?;
        let meter = Meter::start()?;
        let rx = &mut self.g.rx;
        for _ in 0..count.min(n as u64) {
            rx.submit_read(size)
                .map_err(io_err(&format!("{what}: io_submit")))?;
        }
        for k in 0..count {
            let buf = rx
                .wait_read(IO_TIMEOUT)
                .map_err(io_err(&format!("{what}: read {k}")))?
                .ok_or_else(|| {
                    Error::Check(format!("{what}: read {k} did not complete within {IO_TIMEOUT:?}"))
                })?;
            check(buf.len() == size, || {
                format!("{what}: read {k} got {} bytes", buf.len())
            })?;
            check_ends(seed, k * size as u64, size, &buf[..8], &buf[size - 8..], &what)?;
            if k + (n as u64) < count {
                // The same buffer again, whole: each request must be one
                // transfer exactly, or reads would merge transfers.
                rx.submit(Buffer::Read(buf))
                    .map_err(io_err(&format!("{what}: io_submit")))?;
            }
        }
        let m = meter.stop(count * size as u64)?;
        self.stream_done(Dir::Out, count * size as u64, &what)?;
        Ok(m)
    }

    pub(super) fn aio_in(&mut self, size: usize, count: u64, seed: u64) -> Result<Measured, Error> {
        let what = format!("AIO in {} KiB", size >> 10);
        self.stream(Dir::In, &format!("prbs:{seed}"), size, 2)?;
        for k in 0..2u64 {
            self.g
                .tx
                .submit_write_waiting(Bytes::from(pattern(seed, k * size as u64, size)), IO_TIMEOUT)
                .map_err(io_err(&format!("{what}: warm-up io_submit")))?;
        }
        self.g
            .tx
            .flush(IO_TIMEOUT)
            .map_err(io_err(&format!("{what}: warm-up completions")))?;
        self.stream_done(Dir::In, 2 * size as u64, &format!("{what} warm-up"))?;
        // One zeroed buffer for every write: Bytes clones share it.
        let zeros = Bytes::from(vec![0u8; size]);
        self.stream(Dir::In, "zeros", size, count)?;
        let meter = Meter::start()?;
        for k in 0..count {
            self.g
                .tx
                .submit_write_waiting(zeros.clone(), IO_TIMEOUT)
                .map_err(io_err(&format!("{what}: io_submit {k}")))?;
        }
        self.g
            .tx
            .flush(IO_TIMEOUT)
            .map_err(io_err(&format!("{what}: completions")))?;
        let m = meter.stop(count * size as u64)?;
        self.stream_done(Dir::In, count * size as u64, &what)?;
        Ok(m)
    }
}
