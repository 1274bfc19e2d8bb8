// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The part of the vhost-user wire protocol the relay reads and writes
//! itself: message framing with passed file descriptors, the request codes
//! it acts on, IOTLB messages and memory-table payloads
//! (docs/interop/vhost-user.rst in QEMU is the reference).

use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Bytes of a message header: request, flags, payload size (u32 each).
pub const HEADER_SIZE: usize = 12;
/// Largest payload the relay accepts (vhost-user's own limit is 4 KiB for
/// every message the relay passes through, the memory table included).
pub const MAX_PAYLOAD: usize = 4096;
/// Most file descriptors one message carries (VHOST_MEMORY_BASELINE_NREGIONS).
pub const MAX_FDS: usize = 8;

/// Front-end requests the relay looks at.
pub mod frontend_req {
    pub const GET_FEATURES: u32 = 1;
    pub const SET_FEATURES: u32 = 2;
    pub const RESET_OWNER: u32 = 4;
    pub const SET_MEM_TABLE: u32 = 5;
    pub const SET_VRING_ADDR: u32 = 9;
    pub const GET_PROTOCOL_FEATURES: u32 = 15;
    pub const SET_PROTOCOL_FEATURES: u32 = 16;
    pub const SET_BACKEND_REQ_FD: u32 = 21;
    pub const IOTLB_MSG: u32 = 22;
    pub const RESET_DEVICE: u32 = 34;
    pub const ADD_MEM_REG: u32 = 37;
    pub const REM_MEM_REG: u32 = 38;
}

/// Back-end requests (on the back-end channel) the relay sends.
pub mod backend_req {
    pub const IOTLB_MSG: u32 = 1;
}

/// Header flags.
pub const FLAG_VERSION: u32 = 0x1;
pub const FLAG_REPLY: u32 = 0x4;
pub const FLAG_NEED_REPLY: u32 = 0x8;

/// VHOST_USER_PROTOCOL_F_REPLY_ACK.
pub const PROTOCOL_F_REPLY_ACK: u64 = 1 << 3;
/// VHOST_USER_PROTOCOL_F_BACKEND_REQ. There is no protocol bit for IOTLB
/// messages: a front end sends them once ACCESS_PLATFORM is negotiated.
pub const PROTOCOL_F_BACKEND_REQ: u64 = 1 << 5;
/// VIRTIO_F_ACCESS_PLATFORM as a feature-word mask.
pub const VIRTIO_F_ACCESS_PLATFORM: u64 = 1 << 33;

/// `struct vhost_iotlb_msg` access permissions.
pub const ACCESS_RO: u8 = 1;
pub const ACCESS_WO: u8 = 2;
pub const ACCESS_RW: u8 = 3;
/// `struct vhost_iotlb_msg` types.
pub const IOTLB_MISS: u8 = 1;
pub const IOTLB_UPDATE: u8 = 2;
pub const IOTLB_INVALIDATE: u8 = 3;
pub const IOTLB_ACCESS_FAIL: u8 = 4;
/// Bytes of `struct vhost_iotlb_msg`.
pub const IOTLB_MSG_SIZE: usize = 32;

/// A message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub request: u32,
    pub flags: u32,
    pub size: u32,
}

impl Header {
    pub fn to_bytes(self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(&self.request.to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.size.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Self {
        let word = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Header {
            request: word(0),
            flags: word(4),
            size: word(8),
        }
    }

    pub fn needs_reply(&self) -> bool {
        self.flags & FLAG_NEED_REPLY != 0
    }

    pub fn is_reply(&self) -> bool {
        self.flags & FLAG_REPLY != 0
    }
}

/// One message with the descriptors that came with it.
#[derive(Debug)]
pub struct Message {
    pub header: Header,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

impl Message {
    pub fn new(request: u32, flags: u32, payload: Vec<u8>) -> Self {
        Message {
            header: Header {
                request,
                flags: FLAG_VERSION | flags,
                size: payload.len() as u32,
            },
            payload,
            fds: Vec::new(),
        }
    }

    /// The reply with a u64 status (REPLY_ACK: 0 for success).
    pub fn ack(request: u32, status: u64) -> Self {
        Message::new(request, FLAG_REPLY, status.to_le_bytes().to_vec())
    }

    /// The payload as one u64 (features, acks), if it is one.
    pub fn u64_payload(&self) -> Option<u64> {
        Some(u64::from_le_bytes(self.payload.get(..8)?.try_into().ok()?))
    }

    pub fn set_u64_payload(&mut self, v: u64) {
        self.payload = v.to_le_bytes().to_vec();
        self.header.size = 8;
    }
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the peer closed the connection")]
    Closed,
    #[error("payload of {0} bytes is over the {MAX_PAYLOAD}-byte limit")]
    TooLong(u32),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads one message: the header with any passed descriptors, then the
/// payload.
pub fn read_message(sock: &UnixStream) -> Result<Message, ReadError> {
    let mut head = [0u8; HEADER_SIZE];
    let mut fds = Vec::new();
    let mut got = 0;
    while got < HEADER_SIZE {
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut head[got..])];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| ReadError::Io(e.into()))?;
        let n = msg.bytes;
        for c in msg.cmsgs().map_err(|e| ReadError::Io(e.into()))? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: the kernel just installed these descriptors in
                // this process for us; nothing else owns them.
                fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        if n == 0 {
            return Err(ReadError::Closed);
        }
        got += n;
    }
    let header = Header::from_bytes(&head);
    if header.size as usize > MAX_PAYLOAD {
        return Err(ReadError::TooLong(header.size));
    }
    let mut payload = vec![0u8; header.size as usize];
    (&*sock).read_exact(&mut payload).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ReadError::Closed,
        _ => ReadError::Io(e),
    })?;
    Ok(Message { header, payload, fds })
}

/// Writes one message, its descriptors attached to the header.
pub fn write_message(sock: &UnixStream, msg: &Message) -> io::Result<()> {
    let head = msg.header.to_bytes();
    let raw: Vec<RawFd> = msg.fds.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [IoSlice::new(&head), IoSlice::new(&msg.payload)];
    let total = HEADER_SIZE + msg.payload.len();
    let cmsgs: Vec<ControlMessage> = if raw.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    let sent = sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    if sent < total {
        // The descriptors went with the first bytes; the rest is plain.
        let mut all = Vec::with_capacity(total);
        all.extend_from_slice(&head);
        all.extend_from_slice(&msg.payload);
        io::Write::write_all(&mut &*sock, &all[sent..])?;
    }
    Ok(())
}

/// `struct vhost_iotlb_msg`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IotlbMsg {
    pub iova: u64,
    pub size: u64,
    pub uaddr: u64,
    pub perm: u8,
    pub kind: u8,
}

impl IotlbMsg {
    pub fn to_bytes(self) -> Vec<u8> {
        let mut b = vec![0u8; IOTLB_MSG_SIZE];
        b[0..8].copy_from_slice(&self.iova.to_le_bytes());
        b[8..16].copy_from_slice(&self.size.to_le_bytes());
        b[16..24].copy_from_slice(&self.uaddr.to_le_bytes());
        b[24] = self.perm;
        b[25] = self.kind;
        b
    }

    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < IOTLB_MSG_SIZE {
            return None;
        }
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Some(IotlbMsg {
            iova: word(0),
            size: word(8),
            uaddr: word(16),
            perm: b[24],
            kind: b[25],
        })
    }
}

/// One region of a memory table: where the front end maps it (`uaddr`),
/// and which guest-physical range it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRegion {
    pub gpa: u64,
    pub size: u64,
    pub uaddr: u64,
}

impl MemRegion {
    fn parse(b: &[u8]) -> Option<Self> {
        let word = |i: usize| -> Option<u64> { Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?)) };
        Some(MemRegion {
            gpa: word(0)?,
            size: word(8)?,
            uaddr: word(16)?,
        })
    }
}

/// Bytes of `VhostUserMemoryRegion` (gpa, size, uaddr, mmap offset).
const REGION_SIZE: usize = 32;

/// The regions of a SET_MEM_TABLE payload (u32 count, u32 padding,
/// regions).
pub fn parse_mem_table(b: &[u8]) -> Option<Vec<MemRegion>> {
    let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
    if n > MAX_FDS {
        return None;
    }
    (0..n)
        .map(|i| MemRegion::parse(b.get(8 + i * REGION_SIZE..8 + (i + 1) * REGION_SIZE)?))
        .collect()
}

/// The region of an ADD_MEM_REG or REM_MEM_REG payload (u64 padding, region).
pub fn parse_single_region(b: &[u8]) -> Option<MemRegion> {
    MemRegion::parse(b.get(8..8 + REGION_SIZE)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            request: frontend_req::IOTLB_MSG,
            flags: FLAG_VERSION | FLAG_NEED_REPLY,
            size: 32,
        };
        assert_eq!(Header::from_bytes(&h.to_bytes()), h);
        assert!(h.needs_reply() && !h.is_reply());
    }

    #[test]
    fn iotlb_msg_layout_matches_the_kernel_struct() {
        let m = IotlbMsg {
            iova: 0x1122_3344_5566_7788,
            size: 0x1000,
            uaddr: 0x7f00_0000_0000,
            perm: ACCESS_WO,
            kind: IOTLB_UPDATE,
        };
        let b = m.to_bytes();
        assert_eq!(b.len(), IOTLB_MSG_SIZE);
        assert_eq!(&b[0..8], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!((b[24], b[25]), (ACCESS_WO, IOTLB_UPDATE));
        assert_eq!(IotlbMsg::parse(&b), Some(m));
        assert_eq!(IotlbMsg::parse(&b[..31]), None);
    }

    #[test]
    fn messages_and_descriptors_cross_a_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let (keep, passed) = UnixStream::pair().unwrap();
        let mut m = Message::new(frontend_req::SET_MEM_TABLE, FLAG_NEED_REPLY, vec![7u8; 40]);
        m.fds.push(OwnedFd::from(passed));
        write_message(&a, &m).unwrap();
        let got = read_message(&b).unwrap();
        assert_eq!(got.header, m.header);
        assert_eq!(got.payload, m.payload);
        assert_eq!(got.fds.len(), 1);
        // The passed descriptor is the same socket.
        let passed = UnixStream::from(got.fds.into_iter().next().unwrap());
        io::Write::write_all(&mut &passed, b"x").unwrap();
        let mut c = [0u8; 1];
        (&keep).read_exact(&mut c).unwrap();
        assert_eq!(&c, b"x");
        drop(a);
        assert!(matches!(read_message(&b), Err(ReadError::Closed)));
    }

    #[test]
    fn memory_tables_parse() {
        let mut b = vec![0u8; 8 + 2 * REGION_SIZE];
        b[0] = 2;
        for (i, r) in [(0u64, 0x1000u64, 0x7000u64), (0x10_0000, 0x2000, 0x9000)]
            .iter()
            .enumerate()
        {
            let at = 8 + i * REGION_SIZE;
            b[at..at + 8].copy_from_slice(&r.0.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&r.1.to_le_bytes());
            b[at + 16..at + 24].copy_from_slice(&r.2.to_le_bytes());
        }
        let t = parse_mem_table(&b).unwrap();
        assert_eq!(
            t[1],
            MemRegion {
                gpa: 0x10_0000,
                size: 0x2000,
                uaddr: 0x9000
            }
        );
        assert_eq!(parse_mem_table(&b[..40]), None);
        assert_eq!(parse_single_region(&b[..40]).unwrap().uaddr, 0x7000);
    }
}
