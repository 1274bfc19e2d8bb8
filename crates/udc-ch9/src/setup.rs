// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The setup packet that starts every control transfer.

use std::fmt;

use crate::descriptor::descriptor_type_label;
use crate::request::*;

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Who a control request addresses (bits 4..0 of bmRequestType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Recipient {
    Device,
    Interface,
    Endpoint,
    Other,
    /// Values 4..31, reserved by USB 2.0.
    Reserved(u8),
}

/// Which specification defines a control request (bits 6..5 of bmRequestType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum RequestKind {
    Standard,
    Class,
    Vendor,
    Reserved,
}

/// The 8 bytes that start every control transfer, in host byte order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SetupPacket {
    pub request_type: u8,
    pub request: u8,
    pub value: u16,
    pub index: u16,
    pub length: u16,
}

impl SetupPacket {
    /// Decodes the packet as it travels on the wire and in SETUP events.
    pub fn from_bytes(b: &[u8; 8]) -> SetupPacket {
        SetupPacket {
            request_type: b[0],
            request: b[1],
            value: le16(b, 2),
            index: le16(b, 4),
            length: le16(b, 6),
        }
    }

    /// Encodes the packet for the wire (little-endian fields).
    pub fn to_bytes(&self) -> [u8; 8] {
        let [v0, v1] = self.value.to_le_bytes();
        let [i0, i1] = self.index.to_le_bytes();
        let [l0, l1] = self.length.to_le_bytes();
        [self.request_type, self.request, v0, v1, i0, i1, l0, l1]
    }

    /// True when the data stage (if any) moves data to the host.
    pub fn is_in(&self) -> bool {
        self.request_type & DIR_IN != 0
    }

    /// A standard (chapter 9) request, as opposed to class or vendor.
    pub fn is_standard(&self) -> bool {
        self.request_type & TYPE_MASK == TYPE_STANDARD
    }

    /// GET_DESCRIPTOR's descriptor type (wValue's high byte).
    pub fn descriptor_type(&self) -> u8 {
        (self.value >> 8) as u8
    }

    /// GET_DESCRIPTOR's descriptor index (wValue's low byte).
    pub fn descriptor_index(&self) -> u8 {
        self.value as u8
    }

    /// Who the request addresses, which decides how wIndex is read.
    pub fn recipient(&self) -> Recipient {
        match self.request_type & RECIP_MASK {
            RECIP_DEVICE => Recipient::Device,
            RECIP_INTERFACE => Recipient::Interface,
            RECIP_ENDPOINT => Recipient::Endpoint,
            RECIP_OTHER => Recipient::Other,
            r => Recipient::Reserved(r),
        }
    }

    /// Standard requests have chapter 9 meanings; the others belong to the
    /// gadget's function.
    pub fn kind(&self) -> RequestKind {
        match self.request_type & TYPE_MASK {
            TYPE_STANDARD => RequestKind::Standard,
            TYPE_CLASS => RequestKind::Class,
            TYPE_VENDOR => RequestKind::Vendor,
            _ => RequestKind::Reserved,
        }
    }

    /// GET_DESCRIPTOR to the device; `lang` is the language ID for strings
    /// (0 otherwise) and `len` the most the host accepts.
    pub fn get_descriptor(dtype: u8, index: u8, lang: u16, len: u16) -> SetupPacket {
        SetupPacket {
            request_type: DIR_IN | TYPE_STANDARD | RECIP_DEVICE,
            request: REQ_GET_DESCRIPTOR,
            value: (u16::from(dtype) << 8) | u16::from(index),
            index: lang,
            length: len,
        }
    }

    /// SET_ADDRESS; the controller answers it, not the gadget.
    pub fn set_address(address: u8) -> SetupPacket {
        SetupPacket {
            request_type: DIR_OUT | TYPE_STANDARD | RECIP_DEVICE,
            request: REQ_SET_ADDRESS,
            value: u16::from(address),
            index: 0,
            length: 0,
        }
    }

    /// SET_CONFIGURATION; 0 returns the device to the addressed state.
    pub fn set_configuration(value: u8) -> SetupPacket {
        SetupPacket {
            request_type: DIR_OUT | TYPE_STANDARD | RECIP_DEVICE,
            request: REQ_SET_CONFIGURATION,
            value: u16::from(value),
            index: 0,
            length: 0,
        }
    }

    /// GET_STATUS of the device: self-powered (bit 0), remote wakeup (bit 1).
    pub fn get_status_device() -> SetupPacket {
        SetupPacket {
            request_type: DIR_IN | TYPE_STANDARD | RECIP_DEVICE,
            request: REQ_GET_STATUS,
            value: 0,
            index: 0,
            length: 2,
        }
    }

    /// GET_STATUS of an endpoint: bit 0 is its halt state.
    pub fn get_status_endpoint(ep: u8) -> SetupPacket {
        SetupPacket {
            request_type: DIR_IN | TYPE_STANDARD | RECIP_ENDPOINT,
            request: REQ_GET_STATUS,
            value: 0,
            index: u16::from(ep),
            length: 2,
        }
    }

    /// CLEAR_FEATURE(ENDPOINT_HALT): how a host recovers a stalled endpoint
    /// (and resets its data toggle).
    pub fn clear_halt(ep: u8) -> SetupPacket {
        SetupPacket {
            request_type: DIR_OUT | TYPE_STANDARD | RECIP_ENDPOINT,
            request: REQ_CLEAR_FEATURE,
            value: FEATURE_ENDPOINT_HALT,
            index: u16::from(ep),
            length: 0,
        }
    }

    /// SET_FEATURE(ENDPOINT_HALT): the host stalls an endpoint on purpose.
    pub fn set_halt(ep: u8) -> SetupPacket {
        SetupPacket {
            request: REQ_SET_FEATURE,
            ..SetupPacket::clear_halt(ep)
        }
    }

    fn standard_name(&self) -> Option<&'static str> {
        Some(match self.request {
            REQ_GET_STATUS => "GET_STATUS",
            REQ_CLEAR_FEATURE => "CLEAR_FEATURE",
            REQ_SET_FEATURE => "SET_FEATURE",
            REQ_SET_ADDRESS => "SET_ADDRESS",
            REQ_GET_DESCRIPTOR => "GET_DESCRIPTOR",
            REQ_SET_DESCRIPTOR => "SET_DESCRIPTOR",
            REQ_GET_CONFIGURATION => "GET_CONFIGURATION",
            REQ_SET_CONFIGURATION => "SET_CONFIGURATION",
            REQ_GET_INTERFACE => "GET_INTERFACE",
            REQ_SET_INTERFACE => "SET_INTERFACE",
            REQ_SYNCH_FRAME => "SYNCH_FRAME",
            REQ_SET_SEL => "SET_SEL",
            REQ_SET_ISOCH_DELAY => "SET_ISOCH_DELAY",
            _ => return None,
        })
    }

    fn target(&self) -> String {
        match self.recipient() {
            Recipient::Device => "device".to_string(),
            Recipient::Interface => format!("interface {}", self.index),
            Recipient::Endpoint => format!("endpoint {:#04x}", self.index),
            Recipient::Other => format!("other {}", self.index),
            Recipient::Reserved(r) => format!("recipient {r}"),
        }
    }
}

/// Names standard requests the way the USB specification does, so that log
/// lines about a failed control transfer say which request failed.
impl fmt::Display for SetupPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.kind() {
            RequestKind::Standard => self.standard_name(),
            _ => None,
        };
        let Some(name) = name else {
            let kind = match self.kind() {
                RequestKind::Standard => "standard",
                RequestKind::Class => "class",
                RequestKind::Vendor => "vendor",
                RequestKind::Reserved => "reserved-type",
            };
            let dir = if self.is_in() { "IN" } else { "OUT" };
            return write!(
                f,
                "{kind} {dir} request {:#04x} to {} (wValue {:#06x}, wIndex {:#06x}, wLength {})",
                self.request,
                self.target(),
                self.value,
                self.index,
                self.length
            );
        };
        let bytes = |n: u16| format!("{n} byte{}", if n == 1 { "" } else { "s" });
        match self.request {
            REQ_GET_DESCRIPTOR | REQ_SET_DESCRIPTOR => {
                let dtype = (self.value >> 8) as u8;
                let index = self.value as u8;
                write!(f, "{name}({} #{index}", descriptor_type_label(dtype))?;
                if self.index != 0 {
                    write!(f, ", lang {:#06x}", self.index)?;
                }
                write!(f, ", {})", bytes(self.length))
            }
            REQ_SET_ADDRESS | REQ_SET_CONFIGURATION => write!(f, "{name}({})", self.value),
            REQ_SET_INTERFACE => write!(f, "{name}(interface {}, alt {})", self.index, self.value),
            REQ_GET_INTERFACE => write!(f, "{name}(interface {})", self.index),
            REQ_GET_STATUS => write!(f, "{name}({})", self.target()),
            REQ_SET_FEATURE | REQ_CLEAR_FEATURE => {
                let feature = match (self.recipient(), self.value) {
                    (Recipient::Endpoint, FEATURE_ENDPOINT_HALT) => "ENDPOINT_HALT".to_string(),
                    (Recipient::Device, FEATURE_DEVICE_REMOTE_WAKEUP) => "DEVICE_REMOTE_WAKEUP".to_string(),
                    (Recipient::Device, FEATURE_TEST_MODE) => "TEST_MODE".to_string(),
                    (Recipient::Device, FEATURE_U1_ENABLE) => "U1_ENABLE".to_string(),
                    (Recipient::Device, FEATURE_U2_ENABLE) => "U2_ENABLE".to_string(),
                    (Recipient::Device, FEATURE_LTM_ENABLE) => "LTM_ENABLE".to_string(),
                    (_, v) => format!("feature {v}"),
                };
                match self.recipient() {
                    Recipient::Device => write!(f, "{name}({feature})"),
                    _ => write!(f, "{name}({feature}, {})", self.target()),
                }
            }
            _ => write!(f, "{name}({})", bytes(self.length)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::{DT_CONFIG, DT_STRING};

    #[test]
    fn setup_packet_round_trip_and_fields() {
        let s = SetupPacket::get_descriptor(DT_STRING, 2, 0x0409, 255);
        let b = s.to_bytes();
        assert_eq!(b, [0x80, 0x06, 0x02, 0x03, 0x09, 0x04, 0xff, 0x00]);
        assert_eq!(SetupPacket::from_bytes(&b), s);
        assert!(s.is_in());
        assert_eq!(s.recipient(), Recipient::Device);
        assert_eq!(s.kind(), RequestKind::Standard);

        let c = SetupPacket::clear_halt(0x81);
        assert_eq!(c.to_bytes(), [0x02, 0x01, 0, 0, 0x81, 0, 0, 0]);
        assert!(!c.is_in());
        assert_eq!(c.recipient(), Recipient::Endpoint);
        assert_eq!(SetupPacket::set_halt(0x81).request, REQ_SET_FEATURE);
        assert_eq!(SetupPacket::set_address(5).to_bytes(), [0, 5, 5, 0, 0, 0, 0, 0]);
        assert_eq!(
            SetupPacket::set_configuration(1).to_bytes(),
            [0, 9, 1, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            SetupPacket::get_status_device().to_bytes(),
            [0x80, 0, 0, 0, 0, 0, 2, 0]
        );
        assert_eq!(
            SetupPacket::get_status_endpoint(0x02).to_bytes(),
            [0x82, 0, 0, 0, 2, 0, 2, 0]
        );

        let v = SetupPacket::from_bytes(&[0xc1, 0x33, 0x01, 0x00, 0x02, 0x00, 0x04, 0x00]);
        assert_eq!(v.kind(), RequestKind::Vendor);
        assert_eq!(v.recipient(), Recipient::Interface);
        assert_eq!(v.value, 1);
        assert_eq!(v.index, 2);
        assert_eq!(v.length, 4);
        assert_eq!(
            SetupPacket {
                request_type: 0x21,
                ..v
            }
            .kind(),
            RequestKind::Class
        );
    }

    #[test]
    fn setup_packet_display() {
        assert_eq!(
            SetupPacket::get_descriptor(DT_CONFIG, 0, 0, 9).to_string(),
            "GET_DESCRIPTOR(CONFIG #0, 9 bytes)"
        );
        assert_eq!(
            SetupPacket::get_descriptor(DT_STRING, 2, 0x0409, 255).to_string(),
            "GET_DESCRIPTOR(STRING #2, lang 0x0409, 255 bytes)"
        );
        assert_eq!(
            SetupPacket::get_descriptor(0x22, 0, 0, 1).to_string(),
            "GET_DESCRIPTOR(type 0x22 #0, 1 byte)"
        );
        assert_eq!(SetupPacket::set_address(7).to_string(), "SET_ADDRESS(7)");
        assert_eq!(
            SetupPacket::set_configuration(1).to_string(),
            "SET_CONFIGURATION(1)"
        );
        assert_eq!(SetupPacket::get_status_device().to_string(), "GET_STATUS(device)");
        assert_eq!(
            SetupPacket::clear_halt(0x81).to_string(),
            "CLEAR_FEATURE(ENDPOINT_HALT, endpoint 0x81)"
        );
        let v = SetupPacket::from_bytes(&[0xc0, 0x33, 0, 0, 0, 0, 2, 0]);
        assert_eq!(
            v.to_string(),
            "vendor IN request 0x33 to device (wValue 0x0000, wIndex 0x0000, wLength 2)"
        );
    }
}
