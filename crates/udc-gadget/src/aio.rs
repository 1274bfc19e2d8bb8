// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Kernel AIO (io_setup, io_submit, io_getevents, io_cancel, io_destroy)
//! on one FunctionFS endpoint file: FunctionFS queues each request on the
//! UDC at io_submit, so several are in flight at once, and completes them
//! in the endpoint's FIFO order.
//!
//! The structures are those of the kernel's include/uapi/linux/aio_abi.h,
//! called through libc's raw syscall(): glibc and musl wrap POSIX AIO,
//! which runs on threads and would not queue anything on the UDC.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::Error;

#[cfg(not(target_endian = "little"))]
compile_error!("struct iocb below has the little-endian order of aio_key and aio_rw_flags");

const IOCB_CMD_PREAD: u16 = 0;
const IOCB_CMD_PWRITE: u16 = 1;

/// `struct iocb`.
#[repr(C)]
#[derive(Default)]
struct Iocb {
    /// Returned in the event's `data`: our request number.
    aio_data: u64,
    aio_key: u32,
    aio_rw_flags: i32,
    aio_lio_opcode: u16,
    aio_reqprio: i16,
    aio_fildes: u32,
    aio_buf: u64,
    aio_nbytes: u64,
    aio_offset: i64,
    aio_reserved2: u64,
    aio_flags: u32,
    aio_resfd: u32,
}

/// `struct io_event`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

const _: () = assert!(std::mem::size_of::<Iocb>() == 64);
const _: () = assert!(std::mem::size_of::<IoEvent>() == 32);

/// `aio_context_t`.
type AioContext = libc::c_ulong;

/// The memory one request reads into or writes from. It stays with the
/// request until its completion is reaped (or the context is destroyed),
/// because the kernel copies to or from it until then.
#[derive(Debug)]
pub enum Buffer {
    /// A read's buffer; the request asks for its whole length.
    Read(Vec<u8>),
    /// A write's data; clones of one `Bytes` share their memory.
    Write(Bytes),
}

impl Buffer {
    fn as_iocb_fields(&mut self) -> (u16, u64, u64) {
        match self {
            Buffer::Read(v) => (IOCB_CMD_PREAD, v.as_mut_ptr() as u64, v.len() as u64),
            Buffer::Write(b) => (IOCB_CMD_PWRITE, b.as_ptr() as u64, b.len() as u64),
        }
    }
}

/// One finished request.
#[derive(Debug)]
pub struct Completion {
    /// Bytes moved, or the error the request ended with.
    pub result: io::Result<usize>,
    pub buffer: Buffer,
}

impl Completion {
    /// A read's data, cut to the length FunctionFS filled; or its error.
    pub fn into_data(self) -> io::Result<Vec<u8>> {
        let n = self.result?;
        match self.buffer {
            Buffer::Read(mut v) => {
                v.truncate(n);
                Ok(v)
            }
            Buffer::Write(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a write completion carries no data",
            )),
        }
    }
}

/// A request in flight. Boxed: io_cancel finds a request by the address
/// of the iocb it was submitted with.
struct Request {
    iocb: Iocb,
    buffer: Buffer,
    /// The event's `res`, once reaped.
    res: Option<i64>,
}

/// An endpoint file with an AIO context of its own, at most `depth`
/// requests in flight.
pub struct AioEndpoint {
    file: File,
    ctx: AioContext,
    depth: usize,
    /// Submission order, which is the order `wait` hands completions back.
    queue: VecDeque<Box<Request>>,
    next_id: u64,
}

impl AioEndpoint {
    pub fn open(path: &Path, depth: usize) -> Result<AioEndpoint, Error> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::Setup(format!("{}: {e}", path.display())))?;
        let mut ctx: AioContext = 0;
        // SAFETY: io_setup writes the new context to the one variable.
        let r = unsafe { libc::syscall(libc::SYS_io_setup, depth as libc::c_uint, &mut ctx) };
        if r < 0 {
            return Err(Error::Setup(format!(
                "io_setup({depth}) for {}: {}",
                path.display(),
                io::Error::last_os_error()
            )));
        }
        Ok(AioEndpoint {
            file,
            ctx,
            depth,
            queue: VecDeque::new(),
            next_id: 0,
        })
    }

    pub fn is_full(&self) -> bool {
        self.queue.len() >= self.depth
    }

    /// Queues a read of `len` bytes (the endpoint must be OUT).
    pub fn submit_read(&mut self, len: usize) -> io::Result<()> {
        self.submit(Buffer::Read(vec![0; len]))
    }

    /// Queues a write of `data` (the endpoint must be IN).
    pub fn submit_write(&mut self, data: Bytes) -> io::Result<()> {
        self.submit(Buffer::Write(data))
    }

    /// Queues a write of `data`; when `depth` are in flight, first waits
    /// up to `timeout` for the oldest, whose failure is then returned.
    pub fn submit_write_waiting(&mut self, data: Bytes, timeout: Duration) -> io::Result<()> {
        if self.is_full() {
            match self.wait(timeout)? {
                Some(c) => {
                    c.result?;
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no request completed within {timeout:?}"),
                    ))
                }
            }
        }
        self.submit_write(data)
    }

    /// Queues one request; fails with EAGAIN when `depth` are in flight,
    /// so that the caller decides what to wait for.
    pub fn submit(&mut self, mut buffer: Buffer) -> io::Result<()> {
        if self.is_full() {
            return Err(io::Error::from_raw_os_error(libc::EAGAIN));
        }
        let (opcode, buf, nbytes) = buffer.as_iocb_fields();
        let id = self.next_id;
        let mut req = Box::new(Request {
            iocb: Iocb {
                aio_data: id,
                aio_lio_opcode: opcode,
                aio_fildes: self.file.as_raw_fd() as u32,
                aio_buf: buf,
                aio_nbytes: nbytes,
                ..Iocb::default()
            },
            buffer,
            res: None,
        });
        let mut iocbs = [&mut req.iocb as *mut Iocb];
        // SAFETY: one valid iocb whose buffer lives in `req`, which stays
        // in the queue (boxed, so the iocb does not move) until its
        // completion is reaped or the context is destroyed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_submit,
                self.ctx,
                1 as libc::c_long,
                iocbs.as_mut_ptr(),
            )
        };
        match r {
            1 => {
                self.next_id += 1;
                self.queue.push_back(req);
                Ok(())
            }
            0 => Err(io::Error::other("io_submit queued nothing")),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// The oldest request's completion, waiting up to `timeout` for it;
    /// `None` if it did not complete in time or nothing is in flight.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<Option<Completion>> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(front) = self.queue.front() else {
                return Ok(None);
            };
            if let Some(res) = front.res {
                let req = self.queue.pop_front().expect("the front exists");
                let result = if res < 0 {
                    Err(io::Error::from_raw_os_error(-res as i32))
                } else {
                    Ok(res as usize)
                };
                return Ok(Some(Completion {
                    result,
                    buffer: req.buffer,
                }));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.reap(left)? == 0 && left.is_zero() {
                return Ok(None);
            }
        }
    }

    /// The oldest request's data if it is a read that completed within
    /// `timeout`; `None` if it did not complete in time or nothing is in
    /// flight; its error if it failed.
    pub fn wait_read(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        self.wait(timeout)?.map(Completion::into_data).transpose()
    }

    /// Waits up to `timeout` for every request in flight; the first
    /// error among them, or TimedOut if some are still in flight.
    pub fn flush(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut first_error = None;
        while !self.queue.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.wait(left)? {
                Some(c) => {
                    if let Err(e) = c.result {
                        first_error.get_or_insert(e);
                    }
                }
                None => {
                    return Err(first_error.unwrap_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("{} requests still in flight after {timeout:?}", self.queue.len()),
                        )
                    }))
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Cancels every request in flight (FunctionFS dequeues them from the
    /// UDC) and drops their completions, waiting up to `timeout`.
    pub fn cancel_all(&mut self, timeout: Duration) -> io::Result<()> {
        for req in self.queue.iter_mut().filter(|r| r.res.is_none()) {
            let mut ev = IoEvent::default();
            // SAFETY: the iocb is the one this request was submitted with;
            // the kernel writes at most the one event. It answers
            // EINPROGRESS (the completion comes through the ring) or
            // EINVAL (already completed): both leave an event to reap.
            unsafe { libc::syscall(libc::SYS_io_cancel, self.ctx, &mut req.iocb as *mut Iocb, &mut ev) };
        }
        // Cancelled requests end with an error: only what is left counts.
        let _ = self.flush(timeout);
        if self.queue.is_empty() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} cancelled requests did not complete within {timeout:?}",
                    self.queue.len()
                ),
            ))
        }
    }

    /// Reaps the completions that arrive within `timeout` into their
    /// requests; returns how many.
    fn reap(&mut self, timeout: Duration) -> io::Result<usize> {
        let mut events = [IoEvent::default(); 16];
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: the kernel writes at most events.len() events.
        let n = unsafe {
            libc::syscall(
                libc::SYS_io_getevents,
                self.ctx,
                1 as libc::c_long,
                events.len() as libc::c_long,
                events.as_mut_ptr(),
                &ts,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EINTR) => Ok(0),
                _ => Err(e),
            };
        }
        for ev in &events[..n as usize] {
            if let Some(req) = self.queue.iter_mut().find(|r| r.iocb.aio_data == ev.data) {
                req.res = Some(ev.res);
            }
        }
        Ok(n as usize)
    }
}

impl Drop for AioEndpoint {
    fn drop(&mut self) {
        // io_destroy cancels what is in flight and returns only when the
        // kernel no longer touches any request's buffer: only then may
        // the queue's buffers go.
        // SAFETY: the context is ours and used by nothing after this.
        unsafe { libc::syscall(libc::SYS_io_destroy, self.ctx) };
    }
}
