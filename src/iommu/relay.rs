// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The vhost-user relay: sits between the front end (QEMU) and
//! vhost-user-backend's request handler and carries the parts of the
//! protocol the released crates do not (rust-vmm/vhost#312).
//!
//! Every message passes through unchanged except:
//! - VHOST_USER_IOTLB_MSG: applied to the [`DeviceIommu`] and acked here;
//!   the crate would refuse it.
//! - SET_BACKEND_REQ_FD: the back-end channel is the IOMMU's, for misses;
//!   BACKEND_REQ is offered in GET_PROTOCOL_FEATURES' reply and taken out of
//!   SET_PROTOCOL_FEATURES, so the crate never knows of it.
//! - SET_VRING_ADDR once ACCESS_PLATFORM is negotiated: its addresses are
//!   IOVAs, which the crate would try to find in the memory table. It gets
//!   a placeholder that is (the first region's user address), and once it
//!   took it (a GET_FEATURES the relay sends right after is answered), the
//!   rings are pointed at the IOVAs through [`RingAddresses`]; only then
//!   is the front end acked.
//! - SET_MEM_TABLE, ADD/REM_MEM_REG, RESET_OWNER and RESET_DEVICE are read
//!   on the way (the IOMMU maps user addresses to guest-physical ones, and
//!   forgets its mappings on a reset).
//!
//! No thread of the relay ever waits for the front end to answer a miss:
//! QEMU sends the UPDATE that answers one on this connection and waits for
//! its ack before it answers the miss.

use std::collections::VecDeque;
use std::fs::DirBuilder;
use std::io;
use std::net::Shutdown;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use log::{debug, warn};

use super::message::{
    frontend_req as req, parse_mem_table, parse_single_region, read_message, write_message, Message,
    ReadError, FLAG_NEED_REPLY, PROTOCOL_F_BACKEND_REQ, PROTOCOL_F_REPLY_ACK, VIRTIO_F_ACCESS_PLATFORM,
};
use super::DeviceIommu;

/// Where the device's rings are when their addresses are IOVAs.
pub trait RingAddresses: Send + Sync {
    /// Queue `index`'s descriptor table, available and used rings are at
    /// these IOVAs.
    fn set_ring_iovas(&self, index: u32, desc: u64, avail: u64, used: u64);
}

/// What to do with the crate's next reply to a request.
#[derive(Debug)]
enum Pending {
    /// Pass it on.
    Forward,
    /// Offer BACKEND_REQ in it (GET_PROTOCOL_FEATURES).
    OfferBackendReq,
    /// The relay's own GET_FEATURES after a rewritten SET_VRING_ADDR: the
    /// crate has taken the placeholder; point the ring at its IOVAs, ack
    /// the front end if it asked, and drop the reply.
    RingIovas {
        index: u32,
        desc: u64,
        avail: u64,
        used: u64,
        ack: bool,
    },
}

struct Shared {
    to_frontend: Mutex<UnixStream>,
    /// Replies expected from the crate to GET_FEATURES and
    /// GET_PROTOCOL_FEATURES, in order, with what to do with them.
    pending: Mutex<VecDeque<(u32, Pending)>>,
    reply_ack: AtomicBool,
    iova_mode: AtomicBool,
    /// User address of the first memory region: a ring address the crate
    /// accepts while the real ones are IOVAs.
    placeholder: AtomicU64,
    iommu: DeviceIommu,
    rings: Arc<dyn RingAddresses>,
}

/// The relay's two threads: front end to crate, crate to front end.
pub struct Relay {
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Relays between `frontend` (QEMU's connection) and `backend` (the
    /// crate's end of a private socket).
    pub fn start(
        frontend: UnixStream,
        backend: UnixStream,
        iommu: DeviceIommu,
        rings: Arc<dyn RingAddresses>,
    ) -> io::Result<Relay> {
        let shared = Arc::new(Shared {
            to_frontend: Mutex::new(frontend.try_clone()?),
            pending: Mutex::new(VecDeque::new()),
            reply_ack: AtomicBool::new(false),
            iova_mode: AtomicBool::new(false),
            placeholder: AtomicU64::new(0),
            iommu,
            rings,
        });
        let down = {
            let shared = shared.clone();
            let backend = backend.try_clone()?;
            std::thread::Builder::new()
                .name("vhost-user-relay-fe".into())
                .spawn(move || frontend_to_crate(&shared, &frontend, &backend))?
        };
        let up = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("vhost-user-relay-be".into())
                .spawn(move || crate_to_frontend(&shared, &backend))?
        };
        Ok(Relay {
            threads: vec![down, up],
        })
    }

    /// Waits for both directions to end.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn send_frontend(shared: &Shared, msg: &Message) -> io::Result<()> {
    let sock = shared.to_frontend.lock().unwrap_or_else(|e| e.into_inner());
    write_message(&sock, msg)
}

fn frontend_to_crate(shared: &Shared, frontend: &UnixStream, backend: &UnixStream) {
    loop {
        let msg = match read_message(frontend) {
            Ok(m) => m,
            Err(ReadError::Closed) => break,
            Err(e) => {
                warn!("vhost-user: reading the front end failed: {e}");
                break;
            }
        };
        match handle_frontend_message(shared, msg, backend) {
            Ok(()) => {}
            Err(e) => {
                debug!("vhost-user relay: the request handler's side closed: {e}");
                break;
            }
        }
    }
    // The crate sees the front end go; the miss channel goes with it.
    let _ = backend.shutdown(Shutdown::Both);
    let _ = frontend.shutdown(Shutdown::Both);
    shared.iommu.close_channel();
}

fn push_pending(shared: &Shared, request: u32, p: Pending) {
    shared
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push_back((request, p));
}

fn handle_frontend_message(shared: &Shared, mut msg: Message, backend: &UnixStream) -> io::Result<()> {
    let h = msg.header;
    match h.request {
        req::IOTLB_MSG => {
            let status = match shared.iommu.apply(&msg.payload) {
                Ok(()) => 0,
                Err(e) => {
                    warn!("vhost-user: {e}: refused");
                    1
                }
            };
            if h.needs_reply() {
                // A front end gone is seen by the other direction.
                let _ = send_frontend(shared, &Message::ack(req::IOTLB_MSG, status));
            }
            return Ok(());
        }
        req::SET_BACKEND_REQ_FD => {
            let status = match msg.fds.pop() {
                Some(fd) => {
                    shared
                        .iommu
                        .set_channel(UnixStream::from(fd), shared.reply_ack.load(Ordering::Relaxed));
                    0
                }
                None => {
                    warn!("vhost-user: SET_BACKEND_REQ_FD without a descriptor: refused");
                    1
                }
            };
            if h.needs_reply() {
                let _ = send_frontend(shared, &Message::ack(req::SET_BACKEND_REQ_FD, status));
            }
            return Ok(());
        }
        req::GET_FEATURES => push_pending(shared, h.request, Pending::Forward),
        req::GET_PROTOCOL_FEATURES => push_pending(shared, h.request, Pending::OfferBackendReq),
        req::SET_PROTOCOL_FEATURES => {
            if let Some(f) = msg.u64_payload() {
                shared
                    .reply_ack
                    .store(f & PROTOCOL_F_REPLY_ACK != 0, Ordering::Relaxed);
                msg.set_u64_payload(f & !PROTOCOL_F_BACKEND_REQ);
            }
        }
        req::SET_FEATURES => {
            if let Some(f) = msg.u64_payload() {
                shared
                    .iova_mode
                    .store(f & VIRTIO_F_ACCESS_PLATFORM != 0, Ordering::Relaxed);
            }
        }
        req::SET_MEM_TABLE => {
            if let Some(regions) = parse_mem_table(&msg.payload) {
                shared
                    .placeholder
                    .store(regions.first().map_or(0, |r| r.uaddr), Ordering::Relaxed);
                shared.iommu.set_regions(regions);
            }
        }
        req::ADD_MEM_REG => {
            if let Some(r) = parse_single_region(&msg.payload) {
                let _ = shared
                    .placeholder
                    .compare_exchange(0, r.uaddr, Ordering::Relaxed, Ordering::Relaxed);
                shared.iommu.add_region(r);
            }
        }
        req::REM_MEM_REG => {
            if let Some(r) = parse_single_region(&msg.payload) {
                shared.iommu.remove_region(r);
            }
        }
        req::RESET_OWNER | req::RESET_DEVICE => shared.iommu.reset(),
        req::SET_VRING_ADDR => {
            let placeholder = shared.placeholder.load(Ordering::Relaxed);
            if shared.iova_mode.load(Ordering::Relaxed) && placeholder != 0 && msg.payload.len() >= 40 {
                return rewrite_vring_addr(shared, msg, placeholder, backend);
            }
        }
        _ => {}
    }
    write_message(backend, &msg)
}

/// SET_VRING_ADDR with IOVAs: see the module's comment.
fn rewrite_vring_addr(
    shared: &Shared,
    mut msg: Message,
    placeholder: u64,
    backend: &UnixStream,
) -> io::Result<()> {
    let word = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let index = u32::from_le_bytes(msg.payload[0..4].try_into().expect("4 bytes"));
    // Layout: index, flags (u32 each), then descriptor, used, available
    // and log addresses.
    let (desc, used, avail) = (
        word(&msg.payload, 8),
        word(&msg.payload, 16),
        word(&msg.payload, 24),
    );
    for at in [8, 16, 24] {
        msg.payload[at..at + 8].copy_from_slice(&placeholder.to_le_bytes());
    }
    let ack = msg.header.needs_reply();
    msg.header.flags &= !FLAG_NEED_REPLY;
    debug!("vhost-user: queue {index} rings at IOVAs desc {desc:#x} avail {avail:#x} used {used:#x}");
    write_message(backend, &msg)?;
    push_pending(
        shared,
        req::GET_FEATURES,
        Pending::RingIovas {
            index,
            desc,
            avail,
            used,
            ack,
        },
    );
    write_message(backend, &Message::new(req::GET_FEATURES, 0, Vec::new()))
}

fn crate_to_frontend(shared: &Shared, backend: &UnixStream) {
    loop {
        let mut msg = match read_message(backend) {
            Ok(m) => m,
            Err(ReadError::Closed) => break,
            Err(e) => {
                warn!("vhost-user: reading the request handler's reply failed: {e}");
                break;
            }
        };
        let r = msg.header.request;
        if msg.header.is_reply() && matches!(r, req::GET_FEATURES | req::GET_PROTOCOL_FEATURES) {
            let p = {
                let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
                pending
                    .iter()
                    .position(|(q, _)| *q == r)
                    .and_then(|i| pending.remove(i))
                    .map(|(_, p)| p)
            };
            match p {
                Some(Pending::OfferBackendReq) => {
                    if let Some(f) = msg.u64_payload() {
                        msg.set_u64_payload(f | PROTOCOL_F_BACKEND_REQ);
                    }
                }
                Some(Pending::RingIovas {
                    index,
                    desc,
                    avail,
                    used,
                    ack,
                }) => {
                    shared.rings.set_ring_iovas(index, desc, avail, used);
                    if ack && send_frontend(shared, &Message::ack(req::SET_VRING_ADDR, 0)).is_err() {
                        break;
                    }
                    continue;
                }
                Some(Pending::Forward) | None => {}
            }
        }
        if send_frontend(shared, &msg).is_err() {
            break;
        }
    }
    let sock = shared.to_frontend.lock().unwrap_or_else(|e| e.into_inner());
    let _ = sock.shutdown(Shutdown::Both);
    let _ = backend.shutdown(Shutdown::Both);
}

/// A socket in a directory only this user can enter, for the crate to
/// accept the relay's connection on; removed when dropped.
pub struct PrivateSocket {
    dir: PathBuf,
    pub listener: UnixListener,
}

impl PrivateSocket {
    pub fn new() -> io::Result<PrivateSocket> {
        let base = std::env::temp_dir();
        let mut n = 0u32;
        loop {
            let dir = base.join(format!("vhost-device-udc.{}.{n}", std::process::id()));
            match DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    let listener = match UnixListener::bind(dir.join("relay.sock")) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = std::fs::remove_dir(&dir);
                            return Err(e);
                        }
                    };
                    return Ok(PrivateSocket { dir, listener });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Connects to the listener (before anyone accepts: the backlog holds it).
    pub fn connect(&self) -> io::Result<UnixStream> {
        UnixStream::connect(self.dir.join("relay.sock"))
    }
}

impl Drop for PrivateSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("relay.sock"));
        let _ = std::fs::remove_dir(&self.dir);
    }
}
