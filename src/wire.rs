// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The virtio-udc wire format, as docs/virtio-udc.md defines it.
//!
//! Every structure is `#[repr(C)]` with explicit little-endian fields and named
//! reserved bytes, so its size and field offsets are exactly the spec's tables;
//! `tests/wire_spec.rs` checks that against the Markdown.

use vm_memory::{ByteValued, Le16, Le32, Le64};

/// Virtio device ID of virtio-udc (provisional; docs/virtio-udc.md, section 1).
pub const VIRTIO_ID_UDC: u32 = 63;
/// PCI device ID a modern virtio-pci transport uses for [`VIRTIO_ID_UDC`].
pub const VIRTIO_PCI_DEVICE_ID_UDC: u16 = 0x1040 + VIRTIO_ID_UDC as u16;

/// Virtqueue indices (section 3).
pub const CONTROLQ: u16 = 0;
pub const EVENTQ: u16 = 1;
pub const XFERQ: u16 = 2;
pub const NUM_QUEUES: usize = 3;

/// Configuration flags (section 4).
pub const VIRTIO_UDC_CONFIG_F_SG: u32 = 1 << 0;
pub const VIRTIO_UDC_CONFIG_F_REMOTE_WAKEUP: u32 = 1 << 1;

/// Smallest `max_segments` a device with scatter-gather may advertise.
pub const MIN_SG_SEGMENTS: u32 = 16384;
/// Entries in the configuration space's endpoint array.
pub const MAX_EPS: usize = 30;
/// Most valid endpoint entries: ep0 and 29 others. (vhost-user carries at
/// most 256 bytes of configuration space, so not all 30 of ep1-15 IN/OUT.)
pub const MAX_VALID_EPS: usize = 30;

/// Endpoint capability bits (section 4).
pub const VIRTIO_UDC_EP_CAP_CONTROL: u8 = 1 << 0;
pub const VIRTIO_UDC_EP_CAP_ISO: u8 = 1 << 1;
pub const VIRTIO_UDC_EP_CAP_BULK: u8 = 1 << 2;
pub const VIRTIO_UDC_EP_CAP_INT: u8 = 1 << 3;

/// Speeds: Linux's `enum usb_device_speed` values (section 4).
pub const VIRTIO_UDC_SPEED_UNKNOWN: u8 = 0;
pub const VIRTIO_UDC_SPEED_LOW: u8 = 1;
pub const VIRTIO_UDC_SPEED_FULL: u8 = 2;
pub const VIRTIO_UDC_SPEED_HIGH: u8 = 3;
pub const VIRTIO_UDC_SPEED_SUPER: u8 = 5;
pub const VIRTIO_UDC_SPEED_SUPER_PLUS: u8 = 6;

/// Transfer opcode and flags (section 5).
pub const VIRTIO_UDC_XFER_OP_TRANSFER: u16 = 0x0001;
pub const VIRTIO_UDC_XFER_F_ZERO: u8 = 1 << 0;
pub const VIRTIO_UDC_XFER_F_ALL: u8 = VIRTIO_UDC_XFER_F_ZERO;

/// Command opcodes (section 6).
pub const VIRTIO_UDC_CMD_PULLUP: u16 = 0x0001;
pub const VIRTIO_UDC_CMD_EP_ENABLE: u16 = 0x0002;
pub const VIRTIO_UDC_CMD_EP_DISABLE: u16 = 0x0003;
pub const VIRTIO_UDC_CMD_EP_SET_HALT: u16 = 0x0004;
pub const VIRTIO_UDC_CMD_EP_FIFO_STATUS: u16 = 0x0005;
pub const VIRTIO_UDC_CMD_EP_FIFO_FLUSH: u16 = 0x0006;
pub const VIRTIO_UDC_CMD_XFER_CANCEL: u16 = 0x0007;
pub const VIRTIO_UDC_CMD_GET_FRAME: u16 = 0x0008;
pub const VIRTIO_UDC_CMD_WAKEUP: u16 = 0x0009;
pub const VIRTIO_UDC_CMD_SET_SELFPOWERED: u16 = 0x000a;

/// Event types (section 7).
pub const VIRTIO_UDC_EVT_BUS_RESET: u16 = 0x0001;
pub const VIRTIO_UDC_EVT_SETUP: u16 = 0x0002;
pub const VIRTIO_UDC_EVT_SUSPEND: u16 = 0x0003;
pub const VIRTIO_UDC_EVT_RESUME: u16 = 0x0004;
pub const VIRTIO_UDC_EVT_DISCONNECT: u16 = 0x0005;
pub const VIRTIO_UDC_EVT_ADDRESS: u16 = 0x0006;
pub const VIRTIO_UDC_EVT_EP_HALT: u16 = 0x0007;

/// Status codes (section 8).
pub const VIRTIO_UDC_S_OK: u32 = 0;
pub const VIRTIO_UDC_S_SHUTDOWN: u32 = 1;
pub const VIRTIO_UDC_S_CANCELLED: u32 = 2;
pub const VIRTIO_UDC_S_STALL: u32 = 3;
pub const VIRTIO_UDC_S_OVERFLOW: u32 = 4;
pub const VIRTIO_UDC_S_PROTO: u32 = 5;
pub const VIRTIO_UDC_S_DMA_FAULT: u32 = 6;
pub const VIRTIO_UDC_S_INVALID: u32 = 7;
pub const VIRTIO_UDC_S_UNSUPPORTED: u32 = 8;
pub const VIRTIO_UDC_S_BUSY: u32 = 9;
pub const VIRTIO_UDC_S_NOT_FOUND: u32 = 10;

/// USB transfer types, as in bmAttributes and the EP_ENABLE `ep_type` field
/// (chapter 9's numbers, named as the wire format names them).
pub const USB_XFER_CONTROL: u8 = udc_ch9::TRANSFER_CONTROL;
pub const USB_XFER_ISO: u8 = udc_ch9::TRANSFER_ISOCHRONOUS;
pub const USB_XFER_BULK: u8 = udc_ch9::TRANSFER_BULK;
pub const USB_XFER_INT: u8 = udc_ch9::TRANSFER_INTERRUPT;

/// Bit 7 of an endpoint address: IN (device to host).
pub const USB_DIR_IN: u8 = udc_ch9::DIR_IN;

/// A status code as a value, with its name and Linux errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Status {
    Ok = VIRTIO_UDC_S_OK,
    Shutdown = VIRTIO_UDC_S_SHUTDOWN,
    Cancelled = VIRTIO_UDC_S_CANCELLED,
    Stall = VIRTIO_UDC_S_STALL,
    Overflow = VIRTIO_UDC_S_OVERFLOW,
    Proto = VIRTIO_UDC_S_PROTO,
    DmaFault = VIRTIO_UDC_S_DMA_FAULT,
    Invalid = VIRTIO_UDC_S_INVALID,
    Unsupported = VIRTIO_UDC_S_UNSUPPORTED,
    Busy = VIRTIO_UDC_S_BUSY,
    NotFound = VIRTIO_UDC_S_NOT_FOUND,
}

impl Status {
    pub const ALL: [Status; 11] = [
        Status::Ok,
        Status::Shutdown,
        Status::Cancelled,
        Status::Stall,
        Status::Overflow,
        Status::Proto,
        Status::DmaFault,
        Status::Invalid,
        Status::Unsupported,
        Status::Busy,
        Status::NotFound,
    ];

    /// Decodes a wire value; `None` for values the spec does not define.
    pub fn from_wire(v: u32) -> Option<Status> {
        Status::ALL.iter().copied().find(|s| *s as u32 == v)
    }

    /// The spec's name, e.g. `VIRTIO_UDC_S_STALL`.
    pub fn spec_name(self) -> &'static str {
        match self {
            Status::Ok => "VIRTIO_UDC_S_OK",
            Status::Shutdown => "VIRTIO_UDC_S_SHUTDOWN",
            Status::Cancelled => "VIRTIO_UDC_S_CANCELLED",
            Status::Stall => "VIRTIO_UDC_S_STALL",
            Status::Overflow => "VIRTIO_UDC_S_OVERFLOW",
            Status::Proto => "VIRTIO_UDC_S_PROTO",
            Status::DmaFault => "VIRTIO_UDC_S_DMA_FAULT",
            Status::Invalid => "VIRTIO_UDC_S_INVALID",
            Status::Unsupported => "VIRTIO_UDC_S_UNSUPPORTED",
            Status::Busy => "VIRTIO_UDC_S_BUSY",
            Status::NotFound => "VIRTIO_UDC_S_NOT_FOUND",
        }
    }

    /// The (negative) Linux errno a driver reports for this status.
    pub fn errno(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::Shutdown => -libc::ESHUTDOWN,
            Status::Cancelled => -libc::ECONNRESET,
            Status::Stall => -libc::EPIPE,
            Status::Overflow => -libc::EOVERFLOW,
            Status::Proto => -libc::EPROTO,
            Status::DmaFault => -libc::EIO,
            Status::Invalid => -libc::EINVAL,
            Status::Unsupported => -libc::EOPNOTSUPP,
            Status::Busy => -libc::EAGAIN,
            Status::NotFound => -libc::EINVAL,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.spec_name())
    }
}

/// `struct virtio_udc_ep_cap` (section 4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VirtioUdcEpCap {
    pub addr: u8,
    pub caps: u8,
    pub max_packet_limit: Le16,
    pub max_streams: Le16,
    pub reserved: Le16,
}

/// `struct virtio_udc_config` (section 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct VirtioUdcConfig {
    pub flags: Le32,
    pub max_segments: Le32,
    pub max_speed: u8,
    pub num_eps: u8,
    pub reserved: Le16,
    pub reserved2: Le32,
    pub eps: [VirtioUdcEpCap; MAX_EPS],
}

impl Default for VirtioUdcConfig {
    fn default() -> Self {
        VirtioUdcConfig {
            flags: Le32::from(0),
            max_segments: Le32::from(0),
            max_speed: 0,
            num_eps: 0,
            reserved: Le16::from(0),
            reserved2: Le32::from(0),
            eps: [VirtioUdcEpCap::default(); MAX_EPS],
        }
    }
}

/// `struct virtio_udc_xfer_req` (section 5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VirtioUdcXferReq {
    pub opcode: Le16,
    pub ep: u8,
    pub flags: u8,
    pub length: Le32,
    pub num_segs: Le32,
    pub reserved: Le32,
    pub tag: Le64,
}

/// `struct virtio_udc_seg` (section 5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VirtioUdcSeg {
    pub addr: Le64,
    pub len: Le32,
    pub reserved: Le32,
}

/// `struct virtio_udc_xfer_status` (section 5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VirtioUdcXferStatus {
    pub status: Le32,
    pub actual: Le32,
}

/// `struct virtio_udc_ctrl_req` (section 6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VirtioUdcCtrlReq {
    pub opcode: Le16,
    pub ep: u8,
    pub ep_type: u8,
    pub value: Le32,
    pub max_packet: Le16,
    pub interval: u8,
    pub max_burst: u8,
    pub mult: u8,
    pub reserved: [u8; 3],
    pub tag: Le64,
}

/// `struct virtio_udc_ctrl_resp` (section 6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VirtioUdcCtrlResp {
    pub status: Le32,
    pub value: Le32,
}

/// `struct virtio_udc_event` (section 7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VirtioUdcEvent {
    pub type_: Le16,
    pub ep: u8,
    pub reserved: u8,
    pub value: Le32,
    pub setup: [u8; 8],
}

// SAFETY: all of these are repr(C) aggregates of plain integers (or arrays of
// them) with no padding, so any byte pattern is a valid value.
unsafe impl ByteValued for VirtioUdcEpCap {}
unsafe impl ByteValued for VirtioUdcConfig {}
unsafe impl ByteValued for VirtioUdcXferReq {}
unsafe impl ByteValued for VirtioUdcSeg {}
unsafe impl ByteValued for VirtioUdcXferStatus {}
unsafe impl ByteValued for VirtioUdcCtrlReq {}
unsafe impl ByteValued for VirtioUdcCtrlResp {}
unsafe impl ByteValued for VirtioUdcEvent {}

pub const XFER_REQ_SIZE: usize = std::mem::size_of::<VirtioUdcXferReq>();
pub const SEG_SIZE: usize = std::mem::size_of::<VirtioUdcSeg>();
pub const XFER_STATUS_SIZE: usize = std::mem::size_of::<VirtioUdcXferStatus>();
pub const CTRL_REQ_SIZE: usize = std::mem::size_of::<VirtioUdcCtrlReq>();
pub const CTRL_RESP_SIZE: usize = std::mem::size_of::<VirtioUdcCtrlResp>();
pub const EVENT_SIZE: usize = std::mem::size_of::<VirtioUdcEvent>();
pub const CONFIG_SIZE: usize = std::mem::size_of::<VirtioUdcConfig>();

// The spec's sizes, checked at compile time as well as against the Markdown.
const _: () = assert!(XFER_REQ_SIZE == 24);
const _: () = assert!(SEG_SIZE == 16);
const _: () = assert!(XFER_STATUS_SIZE == 8);
const _: () = assert!(CTRL_REQ_SIZE == 24);
const _: () = assert!(CTRL_RESP_SIZE == 8);
const _: () = assert!(EVENT_SIZE == 16);
const _: () = assert!(std::mem::size_of::<VirtioUdcEpCap>() == 8);
const _: () = assert!(CONFIG_SIZE == 256);

/// Reads a `ByteValued` structure from the start of `bytes`, if long enough.
pub fn read_struct<T: ByteValued + Default>(bytes: &[u8]) -> Option<T> {
    let n = std::mem::size_of::<T>();
    if bytes.len() < n {
        return None;
    }
    let mut v = T::default();
    v.as_mut_slice().copy_from_slice(&bytes[..n]);
    Some(v)
}

/// True if `addr` is an IN endpoint address.
pub fn ep_is_in(addr: u8) -> bool {
    addr & USB_DIR_IN != 0
}

/// Endpoint number (0-15) of an endpoint address.
pub fn ep_num(addr: u8) -> u8 {
    addr & 0x0f
}

/// Human-readable endpoint name, Linux style: `ep0`, `ep1in`, `ep2out`.
pub fn ep_name(addr: u8) -> String {
    EpAddress(addr).to_string()
}

/// Endpoint addresses are chapter 9's; the wire carries them as they are.
pub use udc_ch9::{EpAddress, ParseEpAddressError};

/// ep0's max packet size at a given speed (section 4).
pub fn ep0_max_packet(speed: u8) -> u16 {
    match speed {
        VIRTIO_UDC_SPEED_LOW => 8,
        VIRTIO_UDC_SPEED_SUPER | VIRTIO_UDC_SPEED_SUPER_PLUS => 512,
        _ => 64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_and_maps_to_errno() {
        for s in Status::ALL {
            assert_eq!(Status::from_wire(s as u32), Some(s));
        }
        assert_eq!(Status::from_wire(11), None);
        assert_eq!(Status::Stall.errno(), -libc::EPIPE);
        assert_eq!(Status::DmaFault.errno(), -libc::EIO);
        assert_eq!(Status::Cancelled.errno(), -libc::ECONNRESET);
    }

    #[test]
    fn pci_id_is_last_bound_by_linux() {
        assert_eq!(VIRTIO_PCI_DEVICE_ID_UDC, 0x107f);
    }

    #[test]
    fn ep_names() {
        assert_eq!(ep_name(0x00), "ep0");
        assert_eq!(ep_name(0x80), "ep0");
        assert_eq!(ep_name(0x81), "ep1in");
        assert_eq!(ep_name(0x02), "ep2out");
    }

    #[test]
    fn read_struct_needs_enough_bytes() {
        assert!(read_struct::<VirtioUdcXferReq>(&[0u8; 23]).is_none());
        let mut b = [0u8; 24];
        b[0] = 1;
        b[2] = 0x81;
        b[4] = 0x10;
        let r = read_struct::<VirtioUdcXferReq>(&b).unwrap();
        assert_eq!(u16::from(r.opcode), 1);
        assert_eq!(r.ep, 0x81);
        assert_eq!(u32::from(r.length), 16);
    }
}
