// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The device side of usbtest's "user mode" tests with FunctionFS DMABUF
//! transfers: the test gadget as 0525:a4a4 (which usbtest binds as a
//! generic bulk device, the role tools/usb/ffs-test.c plays), its bulk IN
//! endpoint sending and its bulk OUT endpoint receiving through
//! FUNCTIONFS_DMABUF_TRANSFER on udmabufs, in usbtest's mod63 pattern, each
//! OUT transfer checked byte for byte. The host side is the kernel's
//! usbtest driven by the unmodified testusb (crate::usbtest).

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use usb_gadget::Id;

use crate::dmabuf::{self, GuestBuf, Source};
use crate::error::Error;
use crate::ffs_dmabuf;
use crate::gadget::TestGadget;

/// usbtest's "Linux user mode test driver" ids (um_info).
pub const USER_MODE_ID: (u16, u16) = (0x0525, 0xa4a4);

/// usbtest's data with `pattern=1`: each transfer counts 0..62 per byte,
/// starting again at every packet.
pub fn mod63(len: usize, max_packet: usize) -> Vec<u8> {
    (0..len).map(|i| ((i % max_packet) % 63) as u8).collect()
}

/// What the device side saw; read when the tests are over.
#[derive(Default)]
pub struct Counts {
    pub in_transfers: AtomicU64,
    pub out_transfers: AtomicU64,
    pub out_bytes: AtomicU64,
    /// Transfers that ended with an error: usbtest selects the interface's
    /// alternate setting before each test, and SET_INTERFACE makes f_fs
    /// disable and enable the endpoints, ending what is queued on them.
    pub cancelled: AtomicU64,
    /// OUT transfers whose data was not usbtest's pattern, and other
    /// failures, one line each (the first few).
    pub problems: Mutex<Vec<String>>,
}

impl Counts {
    fn problem(&self, p: String) {
        let mut v = self.problems.lock().unwrap();
        if v.len() < 8 {
            v.push(p);
        }
    }
}

/// The gadget and its two DMABUF loops, stopped and detached when dropped.
pub struct FfsDmabufDevice {
    pub gadget: TestGadget,
    pub counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    loops: Vec<JoinHandle<()>>,
}

impl FfsDmabufDevice {
    /// Binds the test gadget as usbtest's user-mode device to `udc`; the
    /// loops start once the host has configured it ([`Self::start`]).
    pub fn bind(udc: usb_gadget::Udc) -> Result<FfsDmabufDevice, Error> {
        let gadget = TestGadget::bind_as(udc, Id::new(USER_MODE_ID.0, USER_MODE_ID.1))?;
        Ok(FfsDmabufDevice {
            gadget,
            counts: Arc::default(),
            stop: Arc::default(),
            loops: Vec::new(),
        })
    }

    /// Starts the IN and OUT loops: transfers of `size` bytes at packet
    /// size `max_packet`.
    pub fn start(&mut self, size: usize, max_packet: usize) -> Result<(), Error> {
        let data = mod63(size, max_packet);
        for (ep, is_in) in [(1u32, true), (2u32, false)] {
            let file = self.gadget.open_ep(ep)?;
            let (stop, counts, want) = (self.stop.clone(), self.counts.clone(), data.clone());
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            // The buffer lives on its loop's thread (its mapping is not Send).
            let t = thread::Builder::new()
                .name(format!("ffs-dmabuf-ep{ep}"))
                .spawn(move || {
                    // A udmabuf is whole pages; the transfers use its start.
                    let mut buf = match GuestBuf::new(Source::Udmabuf, want.len().next_multiple_of(4096)) {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("udmabuf of {} bytes: {e}", want.len())));
                            return;
                        }
                    };
                    if is_in {
                        if let Err(e) = buf.write(&want) {
                            let _ = ready_tx.send(Err(format!("filling the IN buffer: {e}")));
                            return;
                        }
                    }
                    if let Err(e) = ffs_dmabuf::attach(file.as_fd(), buf.fd()) {
                        let _ = ready_tx.send(Err(format!("DMABUF_ATTACH on ep{ep}: {e}")));
                        return;
                    }
                    let _ = ready_tx.send(Ok(()));
                    run_loop(&file, &mut buf, is_in, &want, &stop, &counts);
                    let _ = ffs_dmabuf::detach(file.as_fd(), buf.fd());
                })
                .map_err(|e| Error::Setup(format!("starting the ep{ep} loop: {e}")))?;
            self.loops.push(t);
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Error::Setup(e)),
                Err(_) => return Err(Error::Setup(format!("the ep{ep} loop ended before it started"))),
            }
        }
        Ok(())
    }
}

impl Drop for FfsDmabufDevice {
    fn drop(&mut self) {
        // The loops see the stop within a wait step and detach their
        // buffers (which cancels a transfer still queued) while the gadget
        // is bound: a DMABUF ioctl after the UDC is gone dereferences NULL
        // in stock f_fs (docs/kernel-bugs.md, the lifecycle matrix).
        self.stop.store(true, Ordering::SeqCst);
        for t in self.loops.drain(..) {
            let _ = t.join();
        }
    }
}

/// One endpoint's loop: a transfer of the whole buffer, its fence, and for
/// OUT the data checked, until stopped.
fn run_loop(
    file: &std::fs::File,
    buf: &mut GuestBuf,
    is_in: bool,
    want: &[u8],
    stop: &AtomicBool,
    counts: &Counts,
) {
    let dir = if is_in { "IN" } else { "OUT" };
    let (event, done) = if is_in {
        (libc::POLLOUT, &counts.in_transfers)
    } else {
        (libc::POLLIN, &counts.out_transfers)
    };
    let poison = vec![0xa5u8; want.len()];
    while !stop.load(Ordering::SeqCst) {
        // OUT: what the device does not write must not pass for data.
        if !is_in {
            if let Err(e) = buf.write(&poison) {
                counts.problem(format!("OUT: clearing the buffer: {e}"));
                return;
            }
        }
        if let Err(e) = ffs_dmabuf::transfer(file.as_fd(), buf.fd(), want.len() as u64, 0) {
            if !stop.load(Ordering::SeqCst) {
                counts.problem(format!("{dir}: DMABUF_TRANSFER failed: {e}"));
            }
            return;
        }
        // The transfer's fence, to tell how it ended: readers of the
        // buffer wait for an OUT transfer's write, writers for an IN
        // transfer's read.
        let sync = match buf.export_sync_file(if is_in {
            dmabuf::SYNC_WRITE
        } else {
            dmabuf::SYNC_READ
        }) {
            Ok(s) => s,
            Err(e) => {
                counts.problem(format!("{dir}: EXPORT_SYNC_FILE: {e}"));
                return;
            }
        };
        // The host decides when a transfer happens: wait in short steps so
        // that a stop is seen.
        while !buf.wait(event, Duration::from_millis(200)) {
            if stop.load(Ordering::SeqCst) {
                return;
            }
        }
        match dmabuf::sync_file_fences(sync.as_fd()) {
            Ok(f) if f.iter().any(|x| x.status < 0) => {
                counts.cancelled.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                counts.problem(format!("{dir}: SYNC_IOC_FILE_INFO: {e}"));
                return;
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
        if !is_in {
            match buf.read(want.len()) {
                Ok(got) if got == want => {
                    counts.out_bytes.fetch_add(got.len() as u64, Ordering::Relaxed);
                }
                Ok(got) => {
                    let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
                    counts.problem(format!(
                        "OUT transfer {}: byte {at} is {:#04x}, usbtest's pattern has {:#04x}",
                        done.load(Ordering::Relaxed),
                        got[at],
                        want[at]
                    ));
                }
                Err(e) => counts.problem(format!("OUT: reading the buffer: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_restarts_every_packet() {
        let d = mod63(1100, 512);
        assert_eq!(d[62], 62);
        assert_eq!(d[63], 0);
        assert_eq!(d[511], (511 % 63) as u8);
        assert_eq!(d[512], 0, "a new packet starts at 0");
        assert_eq!(d[1099], ((1099 % 512) % 63) as u8);
    }
}
