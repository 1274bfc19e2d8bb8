// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Parsing and checking of requests from the driver.
//!
//! These are pure functions over the bytes the driver wrote and a view of the
//! guest's memory map: no device state, no I/O. That keeps the one place where
//! untrusted input becomes typed values small and testable with random input
//! (see the property tests below and in tests/).

use std::fmt;

use vm_memory::{GuestAddress, GuestMemory, Permissions};

use crate::wire::*;

/// One piece of a transfer's buffer, already checked against guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Segment {
    pub addr: u64,
    pub len: u32,
}

/// A transfer request that passed every check the spec lists in section 5
/// (apart from endpoint state, which belongs to the device model).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XferRequest {
    pub ep: u8,
    pub flags: u8,
    pub length: u32,
    pub tag: u64,
    /// The segments that carry the first `length` bytes: zero-length
    /// segments dropped and the last one trimmed to the transfer's end.
    pub segments: Vec<Segment>,
}

impl XferRequest {
    pub fn is_in(&self) -> bool {
        ep_is_in(self.ep)
    }

    pub fn zero(&self) -> bool {
        self.flags & VIRTIO_UDC_XFER_F_ZERO != 0
    }
}

/// Why a request was refused: the status to report and a reason for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub status: Status,
    pub reason: String,
}

impl Rejected {
    pub fn new(status: Status, reason: impl Into<String>) -> Self {
        Rejected {
            status,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.reason)
    }
}

/// Largest readable part a transfer request can need with `max_segments`.
/// Chain readers stop copying there, so a driver cannot make the device
/// allocate more than this.
pub fn max_xfer_readable(max_segments: u32) -> usize {
    XFER_REQ_SIZE + SEG_SIZE * max_segments as usize
}

/// Which guest memory access a transfer needs: the device reads an IN
/// transfer's buffer and writes an OUT transfer's buffer.
pub fn access_for(ep: u8) -> Permissions {
    if ep_is_in(ep) {
        Permissions::Read
    } else {
        Permissions::Write
    }
}

/// Checks that `[addr, addr + len)` lies inside guest memory with `access`.
pub fn check_dma_range<M: GuestMemory + ?Sized>(
    mem: &M,
    addr: u64,
    len: u64,
    access: Permissions,
) -> Result<(), Rejected> {
    if addr.checked_add(len).is_none() {
        return Err(Rejected::new(
            Status::DmaFault,
            format!("segment {addr:#x}+{len:#x} wraps around the address space"),
        ));
    }
    let Ok(count) = usize::try_from(len) else {
        return Err(Rejected::new(Status::DmaFault, "segment too long"));
    };
    if len > 0 && !mem.check_range(GuestAddress(addr), count, access) {
        return Err(Rejected::new(
            Status::DmaFault,
            format!("segment {addr:#x}+{len:#x} is not inside guest memory"),
        ));
    }
    Ok(())
}

/// Parses and checks a transfer request from the readable bytes of its chain.
///
/// `is_endpoint` says whether an endpoint address exists in the device's
/// configuration space. The checks run in the order of the spec's table, so
/// the status for a request that is wrong in several ways is well defined.
///
/// `mem` is guest memory when segment addresses are guest-physical; `None`
/// when they are I/O virtual addresses (behind an IOMMU), which are checked
/// when the device accesses them, as an IOMMU checks them.
pub fn parse_xfer<M: GuestMemory + ?Sized>(
    readable: &[u8],
    max_segments: u32,
    is_endpoint: impl Fn(u8) -> bool,
    mem: Option<&M>,
) -> Result<XferRequest, Rejected> {
    let Some(hdr) = read_struct::<VirtioUdcXferReq>(readable) else {
        return Err(Rejected::new(
            Status::Invalid,
            format!(
                "transfer header truncated: {} readable bytes, need {XFER_REQ_SIZE}",
                readable.len()
            ),
        ));
    };
    let opcode = u16::from(hdr.opcode);
    if opcode != VIRTIO_UDC_XFER_OP_TRANSFER {
        return Err(Rejected::new(
            Status::Unsupported,
            format!("unknown transfer opcode {opcode:#06x}"),
        ));
    }
    if hdr.flags & !VIRTIO_UDC_XFER_F_ALL != 0 {
        return Err(Rejected::new(
            Status::Invalid,
            format!("reserved transfer flags set: {:#04x}", hdr.flags),
        ));
    }
    let length = u32::from(hdr.length);
    let num_segs = u32::from(hdr.num_segs);
    if num_segs > max_segments {
        return Err(Rejected::new(
            Status::Invalid,
            format!("{num_segs} segments, the device accepts at most {max_segments}"),
        ));
    }
    if num_segs == 0 && length != 0 {
        return Err(Rejected::new(
            Status::Invalid,
            format!("no segments for a {length}-byte transfer"),
        ));
    }
    let need = XFER_REQ_SIZE + SEG_SIZE * num_segs as usize;
    if readable.len() < need {
        return Err(Rejected::new(
            Status::Invalid,
            format!(
                "segment list truncated: {num_segs} segments need {need} readable bytes, chain has {}",
                readable.len()
            ),
        ));
    }
    let raw_segs = readable[XFER_REQ_SIZE..need].chunks_exact(SEG_SIZE).map(|b| {
        let s = read_struct::<VirtioUdcSeg>(b).expect("chunk is SEG_SIZE bytes");
        (u64::from(s.addr), u32::from(s.len))
    });
    let total: u64 = raw_segs.clone().map(|(_, l)| u64::from(l)).sum();
    if total < u64::from(length) {
        return Err(Rejected::new(
            Status::Invalid,
            format!("segments hold {total} bytes, less than the transfer length {length}"),
        ));
    }
    if !is_endpoint(hdr.ep) {
        return Err(Rejected::new(
            Status::Invalid,
            format!("endpoint {:#04x} does not exist", hdr.ep),
        ));
    }

    let access = access_for(hdr.ep);
    let mut segments = Vec::with_capacity(num_segs as usize);
    let mut left = length;
    for (i, (addr, len)) in raw_segs.enumerate() {
        if left == 0 {
            break;
        }
        if len == 0 {
            continue;
        }
        let used = len.min(left);
        let checked = match mem {
            Some(mem) => check_dma_range(mem, addr, u64::from(used), access),
            None if addr.checked_add(u64::from(used)).is_none() => Err(Rejected::new(
                Status::DmaFault,
                format!("segment {addr:#x}+{used:#x} wraps around the address space"),
            )),
            None => Ok(()),
        };
        checked.map_err(|r| Rejected::new(r.status, format!("segment {i}: {}", r.reason)))?;
        segments.push(Segment { addr, len: used });
        left -= used;
    }
    Ok(XferRequest {
        ep: hdr.ep,
        flags: hdr.flags,
        length,
        tag: u64::from(hdr.tag),
        segments,
    })
}

/// A command from the controlq, decoded (section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Pullup(bool),
    EpEnable(EpEnable),
    EpDisable { ep: u8 },
    EpSetHalt { ep: u8, halt: HaltRequest },
    EpFifoStatus { ep: u8 },
    EpFifoFlush { ep: u8 },
    XferCancel { ep: u8, tag: u64 },
    GetFrame,
    Wakeup,
    SetSelfPowered(bool),
}

/// EP_ENABLE's arguments: the endpoint descriptor as the gadget chose it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EpEnable {
    pub ep: u8,
    pub ep_type: u8,
    pub max_packet: u16,
    pub interval: u8,
    pub max_burst: u8,
    pub mult: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaltRequest {
    Clear,
    Halt,
    Wedge,
}

/// Decodes a command from the readable bytes of its chain.
pub fn parse_command(readable: &[u8]) -> Result<Command, Rejected> {
    let Some(req) = read_struct::<VirtioUdcCtrlReq>(readable) else {
        return Err(Rejected::new(
            Status::Invalid,
            format!(
                "command truncated: {} readable bytes, need {CTRL_REQ_SIZE}",
                readable.len()
            ),
        ));
    };
    let value = u32::from(req.value);
    let ep = req.ep;
    let bool_arg = |name: &str| match value {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(Rejected::new(
            Status::Invalid,
            format!("{name}: value {v} is neither 0 nor 1"),
        )),
    };
    let cmd = match u16::from(req.opcode) {
        VIRTIO_UDC_CMD_PULLUP => Command::Pullup(bool_arg("PULLUP")?),
        VIRTIO_UDC_CMD_EP_ENABLE => Command::EpEnable(EpEnable {
            ep,
            ep_type: req.ep_type,
            max_packet: u16::from(req.max_packet),
            interval: req.interval,
            max_burst: req.max_burst,
            mult: req.mult,
        }),
        VIRTIO_UDC_CMD_EP_DISABLE => Command::EpDisable { ep },
        VIRTIO_UDC_CMD_EP_SET_HALT => Command::EpSetHalt {
            ep,
            halt: match value {
                0 => HaltRequest::Clear,
                1 => HaltRequest::Halt,
                2 => HaltRequest::Wedge,
                v => {
                    return Err(Rejected::new(
                        Status::Invalid,
                        format!("EP_SET_HALT: value {v} is not 0, 1 or 2"),
                    ))
                }
            },
        },
        VIRTIO_UDC_CMD_EP_FIFO_STATUS => Command::EpFifoStatus { ep },
        VIRTIO_UDC_CMD_EP_FIFO_FLUSH => Command::EpFifoFlush { ep },
        VIRTIO_UDC_CMD_XFER_CANCEL => Command::XferCancel {
            ep,
            tag: u64::from(req.tag),
        },
        VIRTIO_UDC_CMD_GET_FRAME => Command::GetFrame,
        VIRTIO_UDC_CMD_WAKEUP => Command::Wakeup,
        VIRTIO_UDC_CMD_SET_SELFPOWERED => Command::SetSelfPowered(bool_arg("SET_SELFPOWERED")?),
        op => {
            return Err(Rejected::new(
                Status::Unsupported,
                format!("unknown command opcode {op:#06x}"),
            ))
        }
    };
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{ByteValued, GuestMemoryMmap, Le16, Le32, Le64};

    fn mem() -> GuestMemoryMmap<()> {
        // Two regions with a hole between them, as a real guest has below 4 GiB.
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000), (GuestAddress(0x20_0000), 0x10_0000)])
            .unwrap()
    }

    fn req(ep: u8, length: u32, segs: &[(u64, u32)]) -> Vec<u8> {
        let hdr = VirtioUdcXferReq {
            opcode: Le16::from(VIRTIO_UDC_XFER_OP_TRANSFER),
            ep,
            flags: 0,
            length: Le32::from(length),
            num_segs: Le32::from(segs.len() as u32),
            reserved: Le32::from(0),
            tag: Le64::from(7),
        };
        let mut v = hdr.as_slice().to_vec();
        for &(addr, len) in segs {
            let s = VirtioUdcSeg {
                addr: Le64::from(addr),
                len: Le32::from(len),
                reserved: Le32::from(0),
            };
            v.extend_from_slice(s.as_slice());
        }
        v
    }

    fn any_ep(_: u8) -> bool {
        true
    }

    #[test]
    fn good_request_is_trimmed_to_length() {
        let m = mem();
        let r = parse_xfer(
            &req(0x81, 100, &[(0x1000, 0), (0x2000, 60), (0x3000, 4096)]),
            16,
            any_ep,
            Some(&m),
        )
        .unwrap();
        assert_eq!(r.tag, 7);
        assert_eq!(
            r.segments,
            vec![
                Segment {
                    addr: 0x2000,
                    len: 60
                },
                Segment {
                    addr: 0x3000,
                    len: 40
                }
            ]
        );
    }

    #[test]
    fn segment_past_transfer_end_is_not_checked() {
        // FunctionFS's last sg entry may run past the transfer; only the used
        // part must be inside guest memory.
        let m = mem();
        let r = parse_xfer(&req(0x02, 16, &[(0xf_fff0, 0x100)]), 16, any_ep, Some(&m)).unwrap();
        assert_eq!(
            r.segments,
            vec![Segment {
                addr: 0xf_fff0,
                len: 16
            }]
        );
    }

    #[test]
    fn each_check_has_its_status() {
        let m = mem();
        let cases: Vec<(Vec<u8>, Status)> = vec![
            (vec![0u8; 23], Status::Invalid),
            (
                {
                    let mut r = req(0x81, 0, &[]);
                    r[0] = 9;
                    r
                },
                Status::Unsupported,
            ),
            (
                {
                    let mut r = req(0x81, 0, &[]);
                    r[3] = 0x80;
                    r
                },
                Status::Invalid,
            ),
            (req(0x81, 4, &[(0, 1); 17]), Status::Invalid),
            (req(0x81, 4, &[]), Status::Invalid),
            (req(0x81, 4, &[(0, 4)])[..30].to_vec(), Status::Invalid),
            (req(0x81, 8, &[(0, 4)]), Status::Invalid),
            (req(0x81, 8, &[(0x10_0000, 8)]), Status::DmaFault),
            (req(0x81, 8, &[(0xf_fffc, 8)]), Status::DmaFault),
            (req(0x81, 8, &[(u64::MAX - 3, 8)]), Status::DmaFault),
        ];
        for (i, (bytes, want)) in cases.into_iter().enumerate() {
            let got = parse_xfer(&bytes, 16, any_ep, Some(&m)).unwrap_err();
            assert_eq!(got.status, want, "case {i}: {got}");
        }
        let got = parse_xfer(&req(0x85, 0, &[]), 16, |ep| ep != 0x85, Some(&m)).unwrap_err();
        assert_eq!(got.status, Status::Invalid);
    }

    #[test]
    fn zero_length_transfer_needs_no_segments() {
        let m = mem();
        let r = parse_xfer(&req(0x81, 0, &[]), 16, any_ep, Some(&m)).unwrap();
        assert!(r.segments.is_empty());
    }

    #[test]
    fn commands_decode() {
        let mut c = VirtioUdcCtrlReq {
            opcode: Le16::from(VIRTIO_UDC_CMD_EP_ENABLE),
            ep: 0x81,
            ep_type: USB_XFER_BULK,
            max_packet: Le16::from(512),
            ..Default::default()
        };
        assert_eq!(
            parse_command(c.as_slice()).unwrap(),
            Command::EpEnable(EpEnable {
                ep: 0x81,
                ep_type: 2,
                max_packet: 512,
                interval: 0,
                max_burst: 0,
                mult: 0
            })
        );
        c.opcode = Le16::from(VIRTIO_UDC_CMD_EP_SET_HALT);
        c.value = Le32::from(3);
        assert_eq!(parse_command(c.as_slice()).unwrap_err().status, Status::Invalid);
        c.opcode = Le16::from(0x77);
        assert_eq!(
            parse_command(c.as_slice()).unwrap_err().status,
            Status::Unsupported
        );
        assert_eq!(parse_command(&[1, 0, 0]).unwrap_err().status, Status::Invalid);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
                let m = mem();
                let _ = parse_xfer(&bytes, 16384, |_| true, Some(&m));
                let _ = parse_command(&bytes);
            }

            #[test]
            fn accepted_segments_are_inside_guest_memory(
                ep in any::<u8>(),
                length in 0u32..0x40_0000,
                segs in proptest::collection::vec((prop_oneof![0u64..0x40_0000, any::<u64>()], any::<u32>()), 0..40),
            ) {
                let m = mem();
                let bytes = req(ep, length, &segs);
                if let Ok(r) = parse_xfer(&bytes, 16384, |_| true, Some(&m)) {
                    let mut sum = 0u64;
                    for s in &r.segments {
                        prop_assert!(s.len > 0);
                        prop_assert!(m.check_range(GuestAddress(s.addr), s.len as usize, access_for(ep)));
                        sum += u64::from(s.len);
                    }
                    prop_assert_eq!(sum, u64::from(length));
                }
            }
        }
    }
}
