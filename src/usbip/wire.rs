// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The USB/IP wire format (the kernel's
//! Documentation/usb/usbip_protocol.rst, as vhci_hcd and usbip(8) speak
//! it): the OP_* messages before an import and the USBIP_* headers after.
//! Every field is big-endian. Pure encoding and decoding: nothing here
//! touches a socket or the device.

use crate::usb::Speed;

/// The protocol version every OP_* message carries.
pub const USBIP_VERSION: u16 = 0x0111;

pub const OP_REQ_DEVLIST: u16 = 0x8005;
pub const OP_REP_DEVLIST: u16 = 0x0005;
pub const OP_REQ_IMPORT: u16 = 0x8003;
pub const OP_REP_IMPORT: u16 = 0x0003;

/// OP_* status values (usbip's userspace `enum usbip_op_status`).
pub const ST_OK: u32 = 0;
/// The device is not available (gone, or not this busid).
pub const ST_NA: u32 = 1;
/// Another client has imported it.
pub const ST_DEV_BUSY: u32 = 2;
/// The device is in an error state.
pub const ST_DEV_ERR: u32 = 3;

pub const USBIP_CMD_SUBMIT: u32 = 1;
pub const USBIP_CMD_UNLINK: u32 = 2;
pub const USBIP_RET_SUBMIT: u32 = 3;
pub const USBIP_RET_UNLINK: u32 = 4;

pub const USBIP_DIR_OUT: u32 = 0;
pub const USBIP_DIR_IN: u32 = 1;

/// The OP_* common header: version, code, status.
pub const OP_HEADER_LEN: usize = 8;
/// Every USBIP_* message starts with 48 bytes: the basic header (20) and
/// the command's own fields, padded.
pub const HEADER_LEN: usize = 48;
/// `struct usbip_usb_device`: the device part of OP_REP_DEVLIST and
/// OP_REP_IMPORT.
pub const DEVICE_LEN: usize = 312;
/// Each interface in OP_REP_DEVLIST: class, subclass, protocol, padding.
pub const INTERFACE_LEN: usize = 4;
/// `struct usbip_iso_packet_descriptor`.
pub const ISO_DESC_LEN: usize = 16;
/// The bus id field of OP_REQ_IMPORT and the device record.
pub const BUSID_LEN: usize = 32;
const PATH_LEN: usize = 256;

/// URB transfer flags the server acts on (include/linux/usb.h).
pub const URB_SHORT_NOT_OK: u32 = 0x0001;
pub const URB_ZERO_PACKET: u32 = 0x0040;

/// Linux errno values a RET_SUBMIT or RET_UNLINK carries, negated.
pub mod errno {
    pub const EIO: i32 = 5;
    pub const ENOMEM: i32 = 12;
    pub const EINVAL: i32 = 22;
    pub const EPIPE: i32 = 32;
    pub const EPROTO: i32 = 71;
    pub const EOVERFLOW: i32 = 75;
    pub const EREMOTEIO: i32 = 121;
    pub const ECONNRESET: i32 = 104;
    pub const ESHUTDOWN: i32 = 108;
    pub const ETIMEDOUT: i32 = 110;
}

/// Why bytes from a client are not a USB/IP message this server takes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("USB/IP version {0:#06x}; this server speaks {USBIP_VERSION:#06x}")]
    Version(u16),
    #[error("operation code {0:#06x} is not OP_REQ_DEVLIST or OP_REQ_IMPORT")]
    OpCode(u16),
    #[error("command {0} is not CMD_SUBMIT or CMD_UNLINK")]
    Command(u32),
    #[error("direction {0} is neither 0 (out) nor 1 (in)")]
    Direction(u32),
    #[error("endpoint number {0} is beyond 15")]
    Endpoint(u32),
    #[error("transfer_buffer_length {0} is negative or above the server's limit of {1} bytes")]
    Length(i32, usize),
    #[error("number_of_packets {0} is negative or above the server's limit of {1}")]
    Packets(i32, usize),
    #[error("the bus id is not NUL-terminated text")]
    BusId,
}

/// The OP_* common header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpHeader {
    pub version: u16,
    pub code: u16,
    pub status: u32,
}

impl OpHeader {
    pub fn parse(b: &[u8; OP_HEADER_LEN]) -> Result<OpHeader, WireError> {
        let h = OpHeader {
            version: be16(&b[0..]),
            code: be16(&b[2..]),
            status: be32(&b[4..]),
        };
        if h.version != USBIP_VERSION {
            return Err(WireError::Version(h.version));
        }
        if h.code != OP_REQ_DEVLIST && h.code != OP_REQ_IMPORT {
            return Err(WireError::OpCode(h.code));
        }
        Ok(h)
    }

    pub fn reply(code: u16, status: u32) -> [u8; OP_HEADER_LEN] {
        let mut b = [0u8; OP_HEADER_LEN];
        b[0..2].copy_from_slice(&USBIP_VERSION.to_be_bytes());
        b[2..4].copy_from_slice(&code.to_be_bytes());
        b[4..8].copy_from_slice(&status.to_be_bytes());
        b
    }
}

/// The bus id of OP_REQ_IMPORT: text up to the first NUL.
pub fn parse_busid(b: &[u8; BUSID_LEN]) -> Result<String, WireError> {
    let end = b.iter().position(|&c| c == 0).ok_or(WireError::BusId)?;
    std::str::from_utf8(&b[..end])
        .map(str::to_string)
        .map_err(|_| WireError::BusId)
}

/// An interface as OP_REP_DEVLIST lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub class: u8,
    pub subclass: u8,
    pub protocol: u8,
}

/// `struct usbip_usb_device`: what a client learns of the device before it
/// imports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub path: String,
    pub busid: String,
    pub busnum: u32,
    pub devnum: u32,
    pub speed: Speed,
    pub id_vendor: u16,
    pub id_product: u16,
    pub bcd_device: u16,
    pub device_class: u8,
    pub device_subclass: u8,
    pub device_protocol: u8,
    pub configuration_value: u8,
    pub num_configurations: u8,
    pub interfaces: Vec<InterfaceInfo>,
}

impl DeviceInfo {
    /// The 312-byte device record (OP_REP_IMPORT sends only this).
    pub fn encode_device(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(DEVICE_LEN);
        put_text(&mut b, &self.path, PATH_LEN);
        put_text(&mut b, &self.busid, BUSID_LEN);
        b.extend_from_slice(&self.busnum.to_be_bytes());
        b.extend_from_slice(&self.devnum.to_be_bytes());
        b.extend_from_slice(&u32::from(self.speed.to_wire()).to_be_bytes());
        b.extend_from_slice(&self.id_vendor.to_be_bytes());
        b.extend_from_slice(&self.id_product.to_be_bytes());
        b.extend_from_slice(&self.bcd_device.to_be_bytes());
        b.extend_from_slice(&[
            self.device_class,
            self.device_subclass,
            self.device_protocol,
            self.configuration_value,
            self.num_configurations,
            self.interfaces.len() as u8,
        ]);
        debug_assert_eq!(b.len(), DEVICE_LEN);
        b
    }

    /// The device record followed by its interfaces (OP_REP_DEVLIST).
    pub fn encode_with_interfaces(&self) -> Vec<u8> {
        let mut b = self.encode_device();
        for i in &self.interfaces {
            b.extend_from_slice(&[i.class, i.subclass, i.protocol, 0]);
        }
        b
    }
}

/// Text in a fixed-size, NUL-padded field (cut to leave one NUL).
fn put_text(b: &mut Vec<u8>, s: &str, len: usize) {
    let bytes = s.as_bytes();
    let n = bytes.len().min(len - 1);
    b.extend_from_slice(&bytes[..n]);
    b.resize(b.len() + len - n, 0);
}

/// A checked USBIP_CMD_SUBMIT header; its OUT data and ISO descriptors
/// follow on the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmdSubmit {
    pub seqnum: u32,
    pub devid: u32,
    /// The endpoint address, direction bit included (0x00 or 0x80 for ep0).
    pub ep: u8,
    pub transfer_flags: u32,
    pub length: usize,
    pub start_frame: i32,
    /// Isochronous packets; 0 for every other transfer type.
    pub packets: usize,
    pub interval: i32,
    pub setup: [u8; 8],
}

impl CmdSubmit {
    pub fn is_in(&self) -> bool {
        self.ep & 0x80 != 0
    }

    /// Bytes of OUT data that follow the header.
    pub fn out_len(&self) -> usize {
        if self.is_in() {
            0
        } else {
            self.length
        }
    }
}

/// A checked USBIP_CMD_UNLINK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmdUnlink {
    pub seqnum: u32,
    /// The seqnum of the CMD_SUBMIT to cancel.
    pub victim: u32,
}

/// A command from an importing client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    Submit(CmdSubmit),
    Unlink(CmdUnlink),
}

/// Decodes a 48-byte command header; lengths above `max_len` bytes or
/// `max_packets` ISO packets are refused (a client may not make the server
/// allocate what it likes).
pub fn parse_cmd(b: &[u8; HEADER_LEN], max_len: usize, max_packets: usize) -> Result<Cmd, WireError> {
    let command = be32(&b[0..]);
    let seqnum = be32(&b[4..]);
    let devid = be32(&b[8..]);
    let direction = be32(&b[12..]);
    let ep = be32(&b[16..]);
    match command {
        USBIP_CMD_SUBMIT => {
            if direction > USBIP_DIR_IN {
                return Err(WireError::Direction(direction));
            }
            if ep > 15 {
                return Err(WireError::Endpoint(ep));
            }
            let length = be32(&b[24..]) as i32;
            if length < 0 || length as usize > max_len {
                return Err(WireError::Length(length, max_len));
            }
            // Linux sends 0 for a transfer that is not isochronous; the
            // protocol document allows 0xffffffff for the same.
            let packets = match be32(&b[32..]) as i32 {
                -1 => 0,
                n if n < 0 || n as usize > max_packets => return Err(WireError::Packets(n, max_packets)),
                n => n as usize,
            };
            let mut setup = [0u8; 8];
            setup.copy_from_slice(&b[40..48]);
            Ok(Cmd::Submit(CmdSubmit {
                seqnum,
                devid,
                ep: ep as u8 | if direction == USBIP_DIR_IN { 0x80 } else { 0 },
                transfer_flags: be32(&b[20..]),
                length: length as usize,
                start_frame: be32(&b[28..]) as i32,
                packets,
                interval: be32(&b[36..]) as i32,
                setup,
            }))
        }
        USBIP_CMD_UNLINK => Ok(Cmd::Unlink(CmdUnlink {
            seqnum,
            victim: be32(&b[20..]),
        })),
        other => Err(WireError::Command(other)),
    }
}

/// One ISO packet's descriptor, both ways.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IsoPacket {
    pub offset: u32,
    pub length: u32,
    pub actual_length: u32,
    pub status: i32,
}

impl IsoPacket {
    pub fn parse(b: &[u8]) -> IsoPacket {
        IsoPacket {
            offset: be32(&b[0..]),
            length: be32(&b[4..]),
            actual_length: be32(&b[8..]),
            status: be32(&b[12..]) as i32,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
        out.extend_from_slice(&self.actual_length.to_be_bytes());
        out.extend_from_slice(&self.status.to_be_bytes());
    }
}

/// The 48-byte USBIP_RET_SUBMIT header. The basic header's devid,
/// direction and ep are 0 in a reply, as the protocol document says.
pub fn ret_submit(
    seqnum: u32,
    status: i32,
    actual: u32,
    start_frame: i32,
    packets: u32,
    errors: u32,
) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..4].copy_from_slice(&USBIP_RET_SUBMIT.to_be_bytes());
    b[4..8].copy_from_slice(&seqnum.to_be_bytes());
    b[20..24].copy_from_slice(&status.to_be_bytes());
    b[24..28].copy_from_slice(&actual.to_be_bytes());
    b[28..32].copy_from_slice(&start_frame.to_be_bytes());
    b[32..36].copy_from_slice(&packets.to_be_bytes());
    b[36..40].copy_from_slice(&errors.to_be_bytes());
    b
}

/// The 48-byte USBIP_RET_UNLINK: `status` is -ECONNRESET when the
/// transfer was cancelled, 0 when it had already completed.
pub fn ret_unlink(seqnum: u32, status: i32) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..4].copy_from_slice(&USBIP_RET_UNLINK.to_be_bytes());
    b[4..8].copy_from_slice(&seqnum.to_be_bytes());
    b[20..24].copy_from_slice(&status.to_be_bytes());
    b
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit_header(dir: u32, ep: u32, len: i32, packets: i32) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&USBIP_CMD_SUBMIT.to_be_bytes());
        b[4..8].copy_from_slice(&7u32.to_be_bytes());
        b[8..12].copy_from_slice(&0x0001_0002u32.to_be_bytes());
        b[12..16].copy_from_slice(&dir.to_be_bytes());
        b[16..20].copy_from_slice(&ep.to_be_bytes());
        b[20..24].copy_from_slice(&URB_ZERO_PACKET.to_be_bytes());
        b[24..28].copy_from_slice(&len.to_be_bytes());
        b[32..36].copy_from_slice(&packets.to_be_bytes());
        b[40..48].copy_from_slice(&[0x80, 6, 0, 1, 0, 0, 18, 0]);
        b
    }

    #[test]
    fn a_submit_header_decodes_with_its_direction_in_the_address() {
        let Cmd::Submit(s) = parse_cmd(&submit_header(1, 0, 18, 0), 1 << 20, 64).unwrap() else {
            panic!("not a submit");
        };
        assert_eq!(
            (s.seqnum, s.devid, s.ep, s.length, s.packets),
            (7, 0x0001_0002, 0x80, 18, 0)
        );
        assert_eq!(s.transfer_flags, URB_ZERO_PACKET);
        assert_eq!(s.setup, [0x80, 6, 0, 1, 0, 0, 18, 0]);
        assert_eq!(s.out_len(), 0);
        let Cmd::Submit(o) = parse_cmd(&submit_header(0, 2, 512, -1), 1 << 20, 64).unwrap() else {
            panic!("not a submit");
        };
        assert_eq!((o.ep, o.out_len(), o.packets), (0x02, 512, 0));
    }

    #[test]
    fn bad_headers_are_named() {
        let lim = 1 << 20;
        assert_eq!(
            parse_cmd(&submit_header(2, 1, 0, 0), lim, 8),
            Err(WireError::Direction(2))
        );
        assert_eq!(
            parse_cmd(&submit_header(1, 16, 0, 0), lim, 8),
            Err(WireError::Endpoint(16))
        );
        assert_eq!(
            parse_cmd(&submit_header(1, 1, -5, 0), lim, 8),
            Err(WireError::Length(-5, lim))
        );
        assert_eq!(
            parse_cmd(&submit_header(1, 1, lim as i32 + 1, 0), lim, 8),
            Err(WireError::Length(lim as i32 + 1, lim))
        );
        assert_eq!(
            parse_cmd(&submit_header(1, 1, 8, 9), lim, 8),
            Err(WireError::Packets(9, 8))
        );
        assert_eq!(
            parse_cmd(&submit_header(1, 1, 8, -2), lim, 8),
            Err(WireError::Packets(-2, 8))
        );
        let mut b = submit_header(1, 1, 0, 0);
        b[0..4].copy_from_slice(&9u32.to_be_bytes());
        assert_eq!(parse_cmd(&b, lim, 8), Err(WireError::Command(9)));
    }

    #[test]
    fn an_unlink_names_its_victim() {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&USBIP_CMD_UNLINK.to_be_bytes());
        b[4..8].copy_from_slice(&11u32.to_be_bytes());
        b[20..24].copy_from_slice(&5u32.to_be_bytes());
        assert_eq!(
            parse_cmd(&b, 0, 0),
            Ok(Cmd::Unlink(CmdUnlink {
                seqnum: 11,
                victim: 5
            }))
        );
    }

    #[test]
    fn op_headers_check_version_and_code() {
        let mut b = OpHeader::reply(OP_REQ_DEVLIST, 0);
        assert_eq!(OpHeader::parse(&b).unwrap().code, OP_REQ_DEVLIST);
        b[1] = 0x10;
        assert_eq!(OpHeader::parse(&b), Err(WireError::Version(0x0110)));
        let b = OpHeader::reply(0x1234, 0);
        assert_eq!(OpHeader::parse(&b), Err(WireError::OpCode(0x1234)));
    }

    #[test]
    fn the_device_record_has_the_kernel_layout() {
        let d = DeviceInfo {
            path: "/sys/devices/virtio-udc/usb1/1-1".into(),
            busid: "1-1".into(),
            busnum: 1,
            devnum: 2,
            speed: Speed::High,
            id_vendor: 0x1d6b,
            id_product: 0x0104,
            bcd_device: 0x0612,
            device_class: 0xef,
            device_subclass: 2,
            device_protocol: 1,
            configuration_value: 1,
            num_configurations: 1,
            interfaces: vec![InterfaceInfo {
                class: 0xff,
                subclass: 0,
                protocol: 0,
            }],
        };
        let b = d.encode_with_interfaces();
        assert_eq!(b.len(), DEVICE_LEN + INTERFACE_LEN);
        assert_eq!(&b[256..260], b"1-1\0");
        assert_eq!(be32(&b[288..]), 1);
        assert_eq!(be32(&b[292..]), 2);
        assert_eq!(be32(&b[296..]), 3, "USB_SPEED_HIGH");
        assert_eq!(be16(&b[300..]), 0x1d6b);
        assert_eq!(be16(&b[302..]), 0x0104);
        assert_eq!(be16(&b[304..]), 0x0612);
        assert_eq!(&b[306..312], &[0xef, 2, 1, 1, 1, 1]);
        assert_eq!(&b[312..316], &[0xff, 0, 0, 0]);
    }

    #[test]
    fn ret_submit_puts_status_and_length_where_vhci_reads_them() {
        let b = ret_submit(9, -errno::EPIPE, 100, 0, 0, 0);
        assert_eq!(be32(&b[0..]), USBIP_RET_SUBMIT);
        assert_eq!(be32(&b[4..]), 9);
        assert_eq!(be32(&b[20..]) as i32, -32);
        assert_eq!(be32(&b[24..]), 100);
        let u = ret_unlink(10, -errno::ECONNRESET);
        assert_eq!(
            (be32(&u[0..]), be32(&u[4..]), be32(&u[20..]) as i32),
            (USBIP_RET_UNLINK, 10, -104)
        );
    }

    #[test]
    fn busids_are_nul_terminated_text() {
        let mut b = [0u8; BUSID_LEN];
        b[..3].copy_from_slice(b"1-1");
        assert_eq!(parse_busid(&b).unwrap(), "1-1");
        assert_eq!(parse_busid(&[b'x'; BUSID_LEN]), Err(WireError::BusId));
    }
}
