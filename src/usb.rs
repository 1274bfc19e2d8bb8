// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! USB chapter 9 as the host sees it: setup packets, descriptors, and the
//! checks a host applies to what a gadget sends.
//!
//! The host model is the only USB host a virtio-udc gadget ever meets, so it
//! must be at least as strict as Linux's, and say more: every
//! [`DescriptorError`] names the configuration, interface, endpoint and field
//! at fault and the rule it breaks, so that a gadget developer can fix the
//! descriptor from the log line alone. Written from USB 2.0 and USB 3.2
//! chapter 9; the numbering follows Linux's `include/uapi/linux/usb/ch9.h`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

// Standard requests (bRequest), USB 2.0 table 9-4 and USB 3.2 table 9-5.
/// GET_STATUS: device, interface or endpoint status bits.
pub const REQ_GET_STATUS: u8 = 0x00;
/// CLEAR_FEATURE: clears ENDPOINT_HALT or DEVICE_REMOTE_WAKEUP.
pub const REQ_CLEAR_FEATURE: u8 = 0x01;
/// SET_FEATURE: halts an endpoint, arms remote wakeup, enters test modes.
pub const REQ_SET_FEATURE: u8 = 0x03;
/// SET_ADDRESS: moves the device from the default address to its own.
pub const REQ_SET_ADDRESS: u8 = 0x05;
/// GET_DESCRIPTOR: wValue is the type (high byte) and index (low byte).
pub const REQ_GET_DESCRIPTOR: u8 = 0x06;
/// SET_DESCRIPTOR: rarely implemented; listed so it can be named in logs.
pub const REQ_SET_DESCRIPTOR: u8 = 0x07;
/// GET_CONFIGURATION: the active bConfigurationValue (0: unconfigured).
pub const REQ_GET_CONFIGURATION: u8 = 0x08;
/// SET_CONFIGURATION: selects a configuration; 0 unconfigures.
pub const REQ_SET_CONFIGURATION: u8 = 0x09;
/// GET_INTERFACE: the alternate setting of one interface.
pub const REQ_GET_INTERFACE: u8 = 0x0a;
/// SET_INTERFACE: selects an alternate setting.
pub const REQ_SET_INTERFACE: u8 = 0x0b;
/// SYNCH_FRAME: isochronous frame pattern synchronisation.
pub const REQ_SYNCH_FRAME: u8 = 0x0c;
/// SET_SEL (SuperSpeed): system exit latencies for U1/U2.
pub const REQ_SET_SEL: u8 = 0x30;
/// SET_ISOCH_DELAY (SuperSpeed): the host's isochronous delay.
pub const REQ_SET_ISOCH_DELAY: u8 = 0x31;

// bmRequestType fields.
/// Direction bit of bmRequestType: device to host.
pub const DIR_IN: u8 = 0x80;
/// Direction bit of bmRequestType: host to device.
pub const DIR_OUT: u8 = 0x00;
/// The type bits (6..5) of bmRequestType.
pub const TYPE_MASK: u8 = 0x60;
/// Type: a chapter 9 request, answered by the device framework.
pub const TYPE_STANDARD: u8 = 0x00;
/// Type: defined by the interface's class specification.
pub const TYPE_CLASS: u8 = 0x20;
/// Type: vendor defined; what FunctionFS gadgets usually use.
pub const TYPE_VENDOR: u8 = 0x40;
/// The recipient bits (4..0) of bmRequestType.
pub const RECIP_MASK: u8 = 0x1f;
/// Recipient: the device.
pub const RECIP_DEVICE: u8 = 0x00;
/// Recipient: the interface in wIndex.
pub const RECIP_INTERFACE: u8 = 0x01;
/// Recipient: the endpoint in wIndex.
pub const RECIP_ENDPOINT: u8 = 0x02;
/// Recipient: other (hub ports and the like).
pub const RECIP_OTHER: u8 = 0x03;

// Descriptor types (bDescriptorType).
/// Device descriptor, 18 bytes.
pub const DT_DEVICE: u8 = 1;
/// Configuration descriptor, 9 bytes followed by its interfaces.
pub const DT_CONFIG: u8 = 2;
/// String descriptor; index 0 lists the language IDs.
pub const DT_STRING: u8 = 3;
/// Interface descriptor, 9 bytes, one per alternate setting.
pub const DT_INTERFACE: u8 = 4;
/// Endpoint descriptor, 7 bytes (9 in audio class 1.0).
pub const DT_ENDPOINT: u8 = 5;
/// Device qualifier: the other speed's device descriptor fields.
pub const DT_DEVICE_QUALIFIER: u8 = 6;
/// Other-speed configuration descriptor.
pub const DT_OTHER_SPEED_CONFIG: u8 = 7;
/// Interface power descriptor (obsolete).
pub const DT_INTERFACE_POWER: u8 = 8;
/// On-The-Go descriptor.
pub const DT_OTG: u8 = 9;
/// Debug descriptor.
pub const DT_DEBUG: u8 = 10;
/// Interface association descriptor: groups interfaces into one function.
pub const DT_INTERFACE_ASSOCIATION: u8 = 11;
/// Binary device object store, the root of the device capabilities.
pub const DT_BOS: u8 = 15;
/// One device capability inside the BOS.
pub const DT_DEVICE_CAPABILITY: u8 = 16;
/// SuperSpeed endpoint companion, which must follow each endpoint at SuperSpeed.
pub const DT_SS_ENDPOINT_COMP: u8 = 48;
/// SuperSpeedPlus isochronous endpoint companion.
pub const DT_SSP_ISOC_ENDPOINT_COMP: u8 = 49;
/// Class-specific interface descriptor (CDC, audio, video...).
pub const DT_CS_INTERFACE: u8 = 0x24;
/// Class-specific endpoint descriptor.
pub const DT_CS_ENDPOINT: u8 = 0x25;

/// Size of a device descriptor.
pub const DEVICE_DESC_SIZE: usize = 18;
/// Size of a configuration descriptor's header.
pub const CONFIG_DESC_SIZE: usize = 9;
/// Size of an interface descriptor.
pub const INTERFACE_DESC_SIZE: usize = 9;
/// Minimum size of an endpoint descriptor.
pub const ENDPOINT_DESC_SIZE: usize = 7;
/// Size of an interface association descriptor.
pub const IAD_DESC_SIZE: usize = 8;
/// Size of a SuperSpeed endpoint companion descriptor.
pub const SS_EP_COMP_DESC_SIZE: usize = 6;
/// Size of a BOS descriptor's header.
pub const BOS_DESC_SIZE: usize = 5;

// Device capability types (bDevCapabilityType), USB 3.2 table 9-14.
/// USB 2.0 extension (LPM support).
pub const CAP_USB20_EXTENSION: u8 = 0x02;
/// SuperSpeed USB: speeds supported and U1/U2 exit latencies.
pub const CAP_SUPERSPEED_USB: u8 = 0x03;
/// Container ID: a UUID shared by all of a device's instances.
pub const CAP_CONTAINER_ID: u8 = 0x04;
/// SuperSpeedPlus: the sublink speed attributes.
pub const CAP_SUPERSPEED_PLUS: u8 = 0x0a;

// Feature selectors (wValue of SET_FEATURE / CLEAR_FEATURE).
/// Endpoint feature: halt (stall) the endpoint.
pub const FEATURE_ENDPOINT_HALT: u16 = 0;
/// Device feature: allow the device to wake the host.
pub const FEATURE_DEVICE_REMOTE_WAKEUP: u16 = 1;
/// Device feature: electrical test modes (high speed).
pub const FEATURE_TEST_MODE: u16 = 2;
/// Device feature (SuperSpeed): allow U1 entry.
pub const FEATURE_U1_ENABLE: u16 = 48;
/// Device feature (SuperSpeed): allow U2 entry.
pub const FEATURE_U2_ENABLE: u16 = 49;
/// Device feature (SuperSpeed): latency tolerance messages.
pub const FEATURE_LTM_ENABLE: u16 = 50;

// Transfer types: bits 1..0 of an endpoint's bmAttributes.
/// Control transfers.
pub const TRANSFER_CONTROL: u8 = 0;
/// Isochronous transfers.
pub const TRANSFER_ISOCHRONOUS: u8 = 1;
/// Bulk transfers.
pub const TRANSFER_BULK: u8 = 2;
/// Interrupt transfers.
pub const TRANSFER_INTERRUPT: u8 = 3;

/// The transfer type's name as error messages use it.
pub fn transfer_type_name(t: u8) -> &'static str {
    match t & 3 {
        TRANSFER_CONTROL => "control",
        TRANSFER_ISOCHRONOUS => "isochronous",
        TRANSFER_BULK => "bulk",
        _ => "interrupt",
    }
}

/// Short name of a descriptor type, as in "GET_DESCRIPTOR(CONFIG #0, 9 bytes)";
/// `None` for types this host has no name for.
pub fn descriptor_type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        DT_DEVICE => "DEVICE",
        DT_CONFIG => "CONFIG",
        DT_STRING => "STRING",
        DT_INTERFACE => "INTERFACE",
        DT_ENDPOINT => "ENDPOINT",
        DT_DEVICE_QUALIFIER => "DEVICE_QUALIFIER",
        DT_OTHER_SPEED_CONFIG => "OTHER_SPEED_CONFIG",
        DT_INTERFACE_POWER => "INTERFACE_POWER",
        DT_OTG => "OTG",
        DT_DEBUG => "DEBUG",
        DT_INTERFACE_ASSOCIATION => "IAD",
        DT_BOS => "BOS",
        DT_DEVICE_CAPABILITY => "DEVICE_CAPABILITY",
        DT_SS_ENDPOINT_COMP => "SS_ENDPOINT_COMP",
        DT_SSP_ISOC_ENDPOINT_COMP => "SSP_ISOC_ENDPOINT_COMP",
        0x21 => "HID",
        DT_CS_INTERFACE => "CS_INTERFACE",
        DT_CS_ENDPOINT => "CS_ENDPOINT",
        _ => return None,
    })
}

fn dt_name(t: u8) -> String {
    match descriptor_type_name(t) {
        Some(n) => n.to_string(),
        None => format!("type {t:#04x}"),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Bus speed. The order is meaningful (`Full < High < Super`): the bus runs
/// at the lower of the host's and the device's speeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Speed {
    Low,
    Full,
    High,
    Super,
    SuperPlus,
}

impl Speed {
    /// Decodes a speed from the device's config space and BUS_RESET events,
    /// which carry Linux's `enum usb_device_speed`; `None` for UNKNOWN (0),
    /// wireless (4) and anything newer than this host knows.
    pub fn from_wire(v: u8) -> Option<Speed> {
        match v {
            1 => Some(Speed::Low),
            2 => Some(Speed::Full),
            3 => Some(Speed::High),
            5 => Some(Speed::Super),
            6 => Some(Speed::SuperPlus),
            _ => None,
        }
    }

    /// The `enum usb_device_speed` value the guest's driver expects.
    pub fn to_wire(self) -> u8 {
        match self {
            Speed::Low => 1,
            Speed::Full => 2,
            Speed::High => 3,
            Speed::Super => 5,
            Speed::SuperPlus => 6,
        }
    }

    /// The name [`FromStr`] accepts, for configuration files and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Speed::Low => "low",
            Speed::Full => "full",
            Speed::High => "high",
            Speed::Super => "super",
            Speed::SuperPlus => "super-plus",
        }
    }

    /// ep0's packet size in bytes, which the host needs before it has the
    /// whole device descriptor.
    pub fn ep0_max_packet(self) -> u16 {
        match self {
            Speed::Low => 8,
            Speed::Full | Speed::High => 64,
            Speed::Super | Speed::SuperPlus => 512,
        }
    }

    /// SuperSpeed and faster: endpoints need companion descriptors and
    /// bMaxPacketSize0 is an exponent.
    pub fn is_superspeed(self) -> bool {
        self >= Speed::Super
    }
}

/// Prose, as in "wMaxPacketSize 1024 is over 512, the limit for bulk at
/// high speed"; use [`Speed::name`] for the machine-readable form.
impl fmt::Display for Speed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Speed::Low => "low speed",
            Speed::Full => "full speed",
            Speed::High => "high speed",
            Speed::Super => "SuperSpeed",
            Speed::SuperPlus => "SuperSpeedPlus",
        })
    }
}

/// A speed name that is not one of those [`Speed::name`] produces.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown speed {0:?}: use low, full, high, super or super-plus")]
pub struct ParseSpeedError(pub String);

impl FromStr for Speed {
    type Err = ParseSpeedError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "low" => Ok(Speed::Low),
            "full" => Ok(Speed::Full),
            "high" => Ok(Speed::High),
            "super" => Ok(Speed::Super),
            "super-plus" | "superplus" | "super_plus" => Ok(Speed::SuperPlus),
            _ => Err(ParseSpeedError(s.to_string())),
        }
    }
}

/// Who a control request addresses (bits 4..0 of bmRequestType).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recipient {
    Device,
    Interface,
    Endpoint,
    Other,
    /// Values 4..31, reserved by USB 2.0.
    Reserved(u8),
}

/// Which specification defines a control request (bits 6..5 of bmRequestType).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestKind {
    Standard,
    Class,
    Vendor,
    Reserved,
}

/// The 8 bytes that start every control transfer, in host byte order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
        let bytes = |n: u16| format!("{n} byte{}", plural(usize::from(n)));
        match self.request {
            REQ_GET_DESCRIPTOR | REQ_SET_DESCRIPTOR => {
                let dtype = (self.value >> 8) as u8;
                let index = self.value as u8;
                write!(f, "{name}({} #{index}", dt_name(dtype))?;
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

/// Why a descriptor is malformed. Every message starts with where the problem
/// is ("configuration 1: interface 0 alt 0: endpoint 0x81 (bulk)") and ends
/// with the rule it breaks, because the gadget developer reading it has only
/// the log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Error)]
pub enum DescriptorError {
    /// Fewer bytes than the descriptor's fixed size.
    #[error("{context}: truncated: {have} byte{} where {need} are needed", plural(*.have))]
    Truncated {
        context: String,
        need: usize,
        have: usize,
    },
    /// bLength 0 or 1, which would make a descriptor walk loop or stop.
    #[error(
        "{context}: descriptor at offset {offset}: bLength {length} (every descriptor is at least 2 bytes)"
    )]
    BadLength {
        context: String,
        offset: usize,
        length: u8,
    },
    /// bLength smaller than the descriptor type's fixed fields.
    #[error("{context}: {} descriptor at offset {offset}: bLength {length} is less than its {min} bytes", dt_name(*.descriptor_type))]
    TooShort {
        context: String,
        offset: usize,
        descriptor_type: u8,
        length: u8,
        min: usize,
    },
    /// The device answered with a different descriptor than asked for.
    #[error("{context}: bDescriptorType {found} ({}) where {expected} ({}) was expected", dt_name(*.found), dt_name(*.expected))]
    WrongType {
        context: String,
        expected: u8,
        found: u8,
    },
    /// The device sent fewer bytes than its own wTotalLength.
    #[error("{context}: wTotalLength {declared} but only {received} bytes arrived")]
    ShortRead {
        context: String,
        declared: u16,
        received: usize,
    },
    /// wTotalLength disagrees with the bLengths of the descriptors it covers.
    #[error("{context}: wTotalLength {declared} but the descriptors add up to {}{actual} bytes", if *.at_least { "at least " } else { "" })]
    TotalLength {
        context: String,
        declared: u16,
        actual: usize,
        at_least: bool,
    },
    /// bNumInterfaces disagrees with the interface numbers present.
    #[error("{context}: bNumInterfaces {declared} but {found} interface{} found", plural(*.found))]
    InterfaceCount {
        context: String,
        declared: u8,
        found: usize,
    },
    /// bNumEndpoints disagrees with the endpoint descriptors that follow.
    #[error("{context}: bNumEndpoints {declared} but {found} endpoint descriptor{} found", plural(*.found))]
    EndpointCount {
        context: String,
        declared: u8,
        found: usize,
    },
    /// A descriptor where the structure does not allow it.
    #[error("{context}: {} descriptor at offset {offset} is out of place: {why}", dt_name(*.descriptor_type))]
    Misplaced {
        context: String,
        offset: usize,
        descriptor_type: u8,
        why: String,
    },
    /// An endpoint descriptor for endpoint number 0.
    #[error("{context}: endpoint {address:#04x}: endpoint number 0 is the default control pipe, which has no endpoint descriptor")]
    EndpointZero { context: String, address: u8 },
    /// The same endpoint address twice in one alternate setting.
    #[error("{context}: endpoint {address:#04x} appears twice in this alternate setting")]
    DuplicateEndpoint { context: String, address: u8 },
    /// The same (interface, alternate setting) pair twice.
    #[error("{context}: interface {number} alt {alternate} appears twice")]
    DuplicateInterface {
        context: String,
        number: u8,
        alternate: u8,
    },
    /// An interface without the alternate setting a host selects first.
    #[error("{context}: interface {number} has no alternate setting 0, which the host selects by default")]
    NoDefaultAlternate { context: String, number: u8 },
    /// wMaxPacketSize breaks the rule for its transfer type and speed.
    #[error("{context}: endpoint {address:#04x} ({}): wMaxPacketSize {size} {rule}", transfer_type_name(*.transfer_type))]
    MaxPacketSize {
        context: String,
        address: u8,
        transfer_type: u8,
        size: u16,
        rule: String,
    },
    /// bInterval out of range for a periodic endpoint at this speed.
    #[error("{context}: endpoint {address:#04x} ({}): bInterval {interval} {rule}", transfer_type_name(*.transfer_type))]
    Interval {
        context: String,
        address: u8,
        transfer_type: u8,
        interval: u8,
        rule: String,
    },
    /// An endpoint without the companion descriptor SuperSpeed requires.
    #[error("{context}: endpoint {address:#04x} ({}) has no SuperSpeed companion descriptor at {speed}", transfer_type_name(*.transfer_type))]
    MissingCompanion {
        context: String,
        address: u8,
        transfer_type: u8,
        speed: Speed,
    },
    /// A SuperSpeed companion whose fields break USB 3.2 9.6.7.
    #[error("{context}: endpoint {address:#04x} ({}): SuperSpeed companion: {problem}", transfer_type_name(*.transfer_type))]
    Companion {
        context: String,
        address: u8,
        transfer_type: u8,
        problem: String,
    },
    /// ep0's packet size does not match the bus speed.
    #[error("device descriptor: bMaxPacketSize0 {value} is wrong for {speed} (must be {rule})")]
    MaxPacketSize0 { value: u8, speed: Speed, rule: String },
    /// bcdUSB claims an older USB version than the bus speed implies.
    #[error("device descriptor: bcdUSB {bcd_usb:#06x} is too low for {speed} (must be at least {min:#06x})")]
    BcdUsb { bcd_usb: u16, speed: Speed, min: u16 },
    /// Any other field with a value the specification forbids.
    #[error("{context}: {field} {value}: {problem}")]
    Field {
        context: String,
        field: String,
        value: String,
        problem: String,
    },
    /// A structural problem that is not about one field.
    #[error("{context}: {problem}")]
    Invalid { context: String, problem: String },
}

fn field(context: &str, name: &str, value: impl fmt::Display, problem: impl Into<String>) -> DescriptorError {
    DescriptorError::Field {
        context: context.to_string(),
        field: name.to_string(),
        value: value.to_string(),
        problem: problem.into(),
    }
}

/// The 18-byte device descriptor, field by field (USB 2.0 table 9-8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceDescriptor {
    pub length: u8,
    pub descriptor_type: u8,
    pub bcd_usb: u16,
    pub device_class: u8,
    pub device_subclass: u8,
    pub device_protocol: u8,
    /// The raw field: a byte count below SuperSpeed, an exponent (9) at it.
    pub max_packet_size0: u8,
    pub id_vendor: u16,
    pub id_product: u16,
    pub bcd_device: u16,
    pub i_manufacturer: u8,
    pub i_product: u8,
    pub i_serial_number: u8,
    pub num_configurations: u8,
}

impl DeviceDescriptor {
    /// Checks what depends on the bus speed, which the bytes alone cannot
    /// tell: ep0's packet size and the minimum bcdUSB.
    pub fn validate(&self, speed: Speed) -> Result<(), DescriptorError> {
        check_max_packet_size0(self.max_packet_size0, speed)?;
        let min = match speed {
            Speed::Low | Speed::Full => 0x0100,
            Speed::High => 0x0200,
            Speed::Super | Speed::SuperPlus => 0x0300,
        };
        if self.bcd_usb < min {
            return Err(DescriptorError::BcdUsb {
                bcd_usb: self.bcd_usb,
                speed,
                min,
            });
        }
        Ok(())
    }

    /// ep0's packet size in bytes at `speed`: the field is an exponent at
    /// SuperSpeed and a byte count below, even in a USB 3 device.
    pub fn ep0_max_packet(&self, speed: Speed) -> u32 {
        if speed.is_superspeed() {
            1u32.checked_shl(u32::from(self.max_packet_size0)).unwrap_or(0)
        } else {
            u32::from(self.max_packet_size0)
        }
    }

    /// The non-zero string indices the device descriptor names, which a host
    /// reads to show the manufacturer, product and serial number.
    pub fn string_indices(&self) -> Vec<u8> {
        [self.i_manufacturer, self.i_product, self.i_serial_number]
            .into_iter()
            .filter(|&i| i != 0)
            .collect()
    }
}

/// Checks bMaxPacketSize0 on its own, because a host reads it from the first
/// 8 bytes of the device descriptor before it has the rest.
pub fn check_max_packet_size0(value: u8, speed: Speed) -> Result<(), DescriptorError> {
    let (ok, rule) = match speed {
        Speed::Low => (value == 8, "8"),
        Speed::Full => (matches!(value, 8 | 16 | 32 | 64), "8, 16, 32 or 64"),
        Speed::High => (value == 64, "64"),
        Speed::Super | Speed::SuperPlus => (value == 9, "9, meaning 512"),
    };
    if ok {
        Ok(())
    } else {
        Err(DescriptorError::MaxPacketSize0 {
            value,
            speed,
            rule: rule.to_string(),
        })
    }
}

/// Parses a device descriptor; speed-dependent checks are in
/// [`DeviceDescriptor::validate`].
pub fn parse_device_descriptor(bytes: &[u8]) -> Result<DeviceDescriptor, DescriptorError> {
    let ctx = "device descriptor";
    if bytes.len() >= 2 && bytes[1] != DT_DEVICE {
        return Err(DescriptorError::WrongType {
            context: ctx.into(),
            expected: DT_DEVICE,
            found: bytes[1],
        });
    }
    if bytes.len() < DEVICE_DESC_SIZE {
        return Err(DescriptorError::Truncated {
            context: ctx.into(),
            need: DEVICE_DESC_SIZE,
            have: bytes.len(),
        });
    }
    if usize::from(bytes[0]) != DEVICE_DESC_SIZE {
        return Err(field(
            ctx,
            "bLength",
            bytes[0],
            "a device descriptor is exactly 18 bytes",
        ));
    }
    let d = DeviceDescriptor {
        length: bytes[0],
        descriptor_type: bytes[1],
        bcd_usb: le16(bytes, 2),
        device_class: bytes[4],
        device_subclass: bytes[5],
        device_protocol: bytes[6],
        max_packet_size0: bytes[7],
        id_vendor: le16(bytes, 8),
        id_product: le16(bytes, 10),
        bcd_device: le16(bytes, 12),
        i_manufacturer: bytes[14],
        i_product: bytes[15],
        i_serial_number: bytes[16],
        num_configurations: bytes[17],
    };
    if d.num_configurations == 0 {
        return Err(field(
            ctx,
            "bNumConfigurations",
            0,
            "a device needs at least one configuration",
        ));
    }
    Ok(d)
}

/// A descriptor this host does not interpret (class-specific ones, mostly),
/// kept so that tools can show it and class drivers could parse it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RawDescriptor {
    /// Offset inside the configuration (or BOS) it came from.
    pub offset: usize,
    pub descriptor_type: u8,
    /// The whole descriptor, bLength and bDescriptorType included.
    pub bytes: Vec<u8>,
}

/// The SuperSpeed endpoint companion's fields (USB 3.2 table 9-27).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SsCompanion {
    /// Packets per burst minus one (0..15).
    pub max_burst: u8,
    /// MaxStreams for bulk, Mult for isochronous, 0 otherwise.
    pub attributes: u8,
    /// Bytes per service interval that a periodic endpoint reserves.
    pub bytes_per_interval: u16,
}

/// One endpoint descriptor with the descriptors that belong to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// Direction (bit 7) and number (bits 3..0).
    pub address: u8,
    /// Transfer type in bits 1..0, iso sync/usage types above.
    pub attributes: u8,
    /// The raw wMaxPacketSize, kept to report reserved bits.
    pub w_max_packet_size: u16,
    /// Bits 10..0 of wMaxPacketSize: bytes per packet.
    pub max_packet_size: u16,
    /// Bits 12..11 of wMaxPacketSize: extra transactions per microframe
    /// (high-speed periodic endpoints only).
    pub mult: u8,
    pub interval: u8,
    /// Present at SuperSpeed, where every endpoint needs one.
    pub companion: Option<SsCompanion>,
    /// Descriptors between this endpoint and the next endpoint or interface
    /// (CS_ENDPOINT, SSP isochronous companions...).
    pub extra: Vec<RawDescriptor>,
}

impl Endpoint {
    /// One of the TRANSFER_* values.
    pub fn transfer_type(&self) -> u8 {
        self.attributes & 3
    }

    /// The endpoint number without the direction bit.
    pub fn number(&self) -> u8 {
        self.address & 0x0f
    }

    /// True for IN (device to host) endpoints.
    pub fn is_in(&self) -> bool {
        self.address & DIR_IN != 0
    }
}

/// One alternate setting of one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    pub number: u8,
    pub alternate: u8,
    pub class: u8,
    pub subclass: u8,
    pub protocol: u8,
    pub string_index: u8,
    pub endpoints: Vec<Endpoint>,
    /// Descriptors between this interface and its first endpoint, such as
    /// CDC functional descriptors, kept raw.
    pub extra: Vec<RawDescriptor>,
}

/// An interface association: interfaces that form one function, which a host
/// binds to one driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Iad {
    pub first_interface: u8,
    pub interface_count: u8,
    pub function_class: u8,
    pub function_subclass: u8,
    pub function_protocol: u8,
    pub string_index: u8,
}

/// A parsed, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Configuration {
    /// bConfigurationValue: what SET_CONFIGURATION takes.
    pub value: u8,
    pub attributes: u8,
    /// In 2 mA units (8 mA at SuperSpeed).
    pub max_power: u8,
    pub string_index: u8,
    /// bNumInterfaces as declared.
    pub num_interfaces: u8,
    /// Every alternate setting of every interface, in descriptor order.
    pub interfaces: Vec<Interface>,
    pub iads: Vec<Iad>,
    /// Descriptors before the first interface that are not IADs.
    pub extra: Vec<RawDescriptor>,
    pub total_length: u16,
    /// The wTotalLength bytes as received.
    pub raw: Vec<u8>,
}

impl Configuration {
    /// Looks up one alternate setting, as SET_INTERFACE selects it.
    pub fn interface(&self, number: u8, alternate: u8) -> Option<&Interface> {
        self.interfaces
            .iter()
            .find(|i| i.number == number && i.alternate == alternate)
    }

    /// The non-zero string indices the configuration names (its own, its
    /// interfaces' and its IADs'), which a host reads after the descriptors.
    pub fn string_indices(&self) -> Vec<u8> {
        let mut v = vec![self.string_index];
        v.extend(self.interfaces.iter().map(|i| i.string_index));
        v.extend(self.iads.iter().map(|a| a.string_index));
        v.retain(|&i| i != 0);
        v
    }
}

enum Stop {
    /// The walk reached the end of the bytes exactly.
    Clean,
    /// bLength 0 or 1 at this offset.
    BadLength { offset: usize, length: u8 },
    /// A descriptor at this offset runs past the end of the bytes.
    Overrun { offset: usize, length: usize },
}

/// Follows bLength from `start` until the bytes end or a descriptor is
/// malformed; returns the descriptors, where the walk stopped and why.
fn walk(bytes: &[u8], start: usize) -> (Vec<(usize, &[u8])>, usize, Stop) {
    let mut out = Vec::new();
    let mut offset = start;
    while offset < bytes.len() {
        let length = bytes[offset];
        if length < 2 {
            return (out, offset, Stop::BadLength { offset, length });
        }
        let end = offset + usize::from(length);
        if end > bytes.len() {
            let length = usize::from(length);
            return (out, offset, Stop::Overrun { offset, length });
        }
        out.push((offset, &bytes[offset..end]));
        offset = end;
    }
    (out, offset, Stop::Clean)
}

/// Splits the descriptors after a header of `start` bytes, checking that
/// their bLengths add up to `total` (wTotalLength). `bytes` may hold more
/// than `total`, in which case the walk continues to say by how much
/// wTotalLength is off.
fn split_descriptors<'a>(
    ctx: &str,
    bytes: &'a [u8],
    start: usize,
    total: usize,
) -> Result<Vec<(usize, &'a [u8])>, DescriptorError> {
    let (descs, end, stop) = walk(bytes, start);
    if end == total {
        return Ok(descs);
    }
    let declared = total as u16;
    if end > total {
        return Err(DescriptorError::TotalLength {
            context: ctx.into(),
            declared,
            actual: end,
            at_least: matches!(stop, Stop::Overrun { .. }),
        });
    }
    match stop {
        Stop::BadLength { offset, length } => Err(DescriptorError::BadLength {
            context: ctx.into(),
            offset,
            length,
        }),
        Stop::Overrun { offset, length } => Err(DescriptorError::TotalLength {
            context: ctx.into(),
            declared,
            actual: offset + length,
            at_least: true,
        }),
        // end < total <= bytes.len(), so the walk cannot have ended cleanly.
        Stop::Clean => Err(DescriptorError::ShortRead {
            context: ctx.into(),
            declared,
            received: end,
        }),
    }
}

fn need(ctx: &str, offset: usize, d: &[u8], min: usize) -> Result<(), DescriptorError> {
    if d.len() < min {
        return Err(DescriptorError::TooShort {
            context: ctx.into(),
            offset,
            descriptor_type: d[1],
            length: d[0],
            min,
        });
    }
    Ok(())
}

/// Parses and validates a whole configuration (wTotalLength bytes) as it
/// would run at `speed`; the first rule broken is the error.
pub fn parse_configuration(bytes: &[u8], speed: Speed) -> Result<Configuration, DescriptorError> {
    let head = "configuration descriptor";
    if bytes.len() >= 2 && bytes[1] != DT_CONFIG {
        return Err(DescriptorError::WrongType {
            context: head.into(),
            expected: DT_CONFIG,
            found: bytes[1],
        });
    }
    if bytes.len() < CONFIG_DESC_SIZE {
        return Err(DescriptorError::Truncated {
            context: head.into(),
            need: CONFIG_DESC_SIZE,
            have: bytes.len(),
        });
    }
    let header_len = usize::from(bytes[0]);
    if header_len < CONFIG_DESC_SIZE {
        return Err(DescriptorError::TooShort {
            context: head.into(),
            offset: 0,
            descriptor_type: DT_CONFIG,
            length: bytes[0],
            min: CONFIG_DESC_SIZE,
        });
    }
    let value = bytes[5];
    let ctx = format!("configuration {value}");
    let total = le16(bytes, 2);
    if usize::from(total) < header_len {
        return Err(field(
            &ctx,
            "wTotalLength",
            total,
            format!("less than the configuration descriptor's own bLength {header_len}"),
        ));
    }
    if bytes.len() < usize::from(total) {
        return Err(DescriptorError::ShortRead {
            context: ctx,
            declared: total,
            received: bytes.len(),
        });
    }
    if value == 0 {
        return Err(field(
            &ctx,
            "bConfigurationValue",
            0,
            "reserved, as SET_CONFIGURATION(0) means unconfigured",
        ));
    }
    let descs = split_descriptors(&ctx, bytes, header_len, usize::from(total))?;

    let mut cfg = Configuration {
        value,
        attributes: bytes[7],
        max_power: bytes[8],
        string_index: bytes[6],
        num_interfaces: bytes[4],
        interfaces: Vec::new(),
        iads: Vec::new(),
        extra: Vec::new(),
        total_length: total,
        raw: bytes[..usize::from(total)].to_vec(),
    };
    // bNumEndpoints of each entry of cfg.interfaces.
    let mut declared_eps = Vec::new();
    let mut iad_offsets = Vec::new();
    let mut prev_type = DT_CONFIG;
    for (offset, d) in descs {
        let dtype = d[1];
        match dtype {
            DT_INTERFACE => {
                need(&ctx, offset, d, INTERFACE_DESC_SIZE)?;
                declared_eps.push(d[4]);
                cfg.interfaces.push(Interface {
                    number: d[2],
                    alternate: d[3],
                    class: d[5],
                    subclass: d[6],
                    protocol: d[7],
                    string_index: d[8],
                    endpoints: Vec::new(),
                    extra: Vec::new(),
                });
            }
            DT_ENDPOINT => {
                need(&ctx, offset, d, ENDPOINT_DESC_SIZE)?;
                let Some(iface) = cfg.interfaces.last_mut() else {
                    return Err(DescriptorError::Misplaced {
                        context: ctx,
                        offset,
                        descriptor_type: dtype,
                        why: "it comes before any interface descriptor".into(),
                    });
                };
                let w = le16(d, 4);
                iface.endpoints.push(Endpoint {
                    address: d[2],
                    attributes: d[3],
                    w_max_packet_size: w,
                    max_packet_size: w & 0x07ff,
                    mult: ((w >> 11) & 3) as u8,
                    interval: d[6],
                    companion: None,
                    extra: Vec::new(),
                });
            }
            // Below SuperSpeed a host ignores companions (Linux keeps them
            // as endpoint extras); they fall through to the raw case.
            DT_SS_ENDPOINT_COMP if speed.is_superspeed() => {
                need(&ctx, offset, d, SS_EP_COMP_DESC_SIZE)?;
                let ep = cfg
                    .interfaces
                    .last_mut()
                    .and_then(|i| i.endpoints.last_mut())
                    .filter(|ep| prev_type == DT_ENDPOINT && ep.companion.is_none());
                let Some(ep) = ep else {
                    return Err(DescriptorError::Misplaced {
                        context: ctx,
                        offset,
                        descriptor_type: dtype,
                        why: "a SuperSpeed companion must directly follow its endpoint descriptor".into(),
                    });
                };
                ep.companion = Some(SsCompanion {
                    max_burst: d[2],
                    attributes: d[3],
                    bytes_per_interval: le16(d, 4),
                });
            }
            DT_INTERFACE_ASSOCIATION => {
                need(&ctx, offset, d, IAD_DESC_SIZE)?;
                iad_offsets.push(offset);
                cfg.iads.push(Iad {
                    first_interface: d[2],
                    interface_count: d[3],
                    function_class: d[4],
                    function_subclass: d[5],
                    function_protocol: d[6],
                    string_index: d[7],
                });
            }
            DT_DEVICE
            | DT_CONFIG
            | DT_STRING
            | DT_DEVICE_QUALIFIER
            | DT_OTHER_SPEED_CONFIG
            | DT_BOS
            | DT_DEVICE_CAPABILITY => {
                return Err(DescriptorError::Misplaced {
                    context: ctx,
                    offset,
                    descriptor_type: dtype,
                    why: format!(
                        "a {} descriptor does not belong inside a configuration",
                        dt_name(dtype)
                    ),
                });
            }
            _ => {
                let raw = RawDescriptor {
                    offset,
                    descriptor_type: dtype,
                    bytes: d.to_vec(),
                };
                match cfg.interfaces.last_mut() {
                    Some(iface) => match iface.endpoints.last_mut() {
                        Some(ep) => ep.extra.push(raw),
                        None => iface.extra.push(raw),
                    },
                    None => cfg.extra.push(raw),
                }
            }
        }
        prev_type = dtype;
    }

    let mut seen = BTreeSet::new();
    for (iface, &declared) in cfg.interfaces.iter().zip(&declared_eps) {
        if !seen.insert((iface.number, iface.alternate)) {
            return Err(DescriptorError::DuplicateInterface {
                context: ctx,
                number: iface.number,
                alternate: iface.alternate,
            });
        }
        let ictx = format!("{ctx}: interface {} alt {}", iface.number, iface.alternate);
        if usize::from(declared) != iface.endpoints.len() {
            return Err(DescriptorError::EndpointCount {
                context: ictx,
                declared,
                found: iface.endpoints.len(),
            });
        }
        let mut addresses = BTreeSet::new();
        for ep in &iface.endpoints {
            validate_endpoint(&ictx, ep, speed)?;
            if !addresses.insert(ep.address) {
                return Err(DescriptorError::DuplicateEndpoint {
                    context: ictx,
                    address: ep.address,
                });
            }
        }
    }
    let numbers: BTreeSet<u8> = cfg.interfaces.iter().map(|i| i.number).collect();
    if numbers.len() != usize::from(cfg.num_interfaces) {
        return Err(DescriptorError::InterfaceCount {
            context: ctx,
            declared: cfg.num_interfaces,
            found: numbers.len(),
        });
    }
    if let Some(&number) = numbers.iter().find(|&&n| !seen.contains(&(n, 0))) {
        return Err(DescriptorError::NoDefaultAlternate { context: ctx, number });
    }
    for (iad, offset) in cfg.iads.iter().zip(iad_offsets) {
        let what = format!(
            "interface association at offset {offset} (bFirstInterface {}, bInterfaceCount {})",
            iad.first_interface, iad.interface_count
        );
        if iad.interface_count == 0 {
            return Err(DescriptorError::Invalid {
                context: ctx,
                problem: format!("{what} groups no interface"),
            });
        }
        let first = u16::from(iad.first_interface);
        let last = first + u16::from(iad.interface_count);
        if let Some(n) = (first..last).find(|&n| n > 255 || !numbers.contains(&(n as u8))) {
            return Err(DescriptorError::Invalid {
                context: ctx,
                problem: format!("{what} names interface {n}, which does not exist"),
            });
        }
    }
    Ok(cfg)
}

/// The wMaxPacketSize rule for a transfer type at a speed, as the end of a
/// sentence starting "wMaxPacketSize N"; `None` if `mps` is allowed.
fn max_packet_rule(tt: u8, mps: u16, speed: Speed) -> Option<String> {
    let kind = transfer_type_name(tt);
    let exactly = |want: u16| -> Option<String> {
        if mps > want {
            Some(format!("is over {want}, the limit for {kind} at {speed}"))
        } else if mps < want {
            Some(format!(
                "is under {want}: {kind} at {speed} must be exactly {want}"
            ))
        } else {
            None
        }
    };
    let at_most = |limit: u16| -> Option<String> {
        (mps > limit).then(|| format!("is over {limit}, the limit for {kind} at {speed}"))
    };
    match (tt, speed) {
        (TRANSFER_CONTROL | TRANSFER_BULK, Speed::Full) => (!matches!(mps, 8 | 16 | 32 | 64))
            .then(|| format!("is not 8, 16, 32 or 64, the sizes {kind} allows at {speed}")),
        (TRANSFER_CONTROL, Speed::Low) => exactly(8),
        (TRANSFER_CONTROL, Speed::High) => exactly(64),
        (TRANSFER_CONTROL, _) => exactly(512),
        (TRANSFER_BULK, Speed::High) => exactly(512),
        (TRANSFER_BULK, _) => exactly(1024),
        (TRANSFER_INTERRUPT, _) if mps == 0 => {
            Some("is too small: an interrupt endpoint must carry at least 1 byte".to_string())
        }
        (TRANSFER_INTERRUPT, Speed::Low) => at_most(8),
        (TRANSFER_INTERRUPT, Speed::Full) => at_most(64),
        (TRANSFER_INTERRUPT, _) => at_most(1024),
        (_, Speed::Low | Speed::Full) => at_most(1023),
        (_, _) => at_most(1024),
    }
}

/// The bInterval rule for periodic endpoints, as the end of a sentence
/// starting "bInterval N"; `None` if allowed or not periodic.
fn interval_rule(tt: u8, interval: u8, speed: Speed) -> Option<String> {
    let kind = transfer_type_name(tt);
    let (max, unit) = match (tt, speed) {
        (TRANSFER_INTERRUPT, Speed::Low | Speed::Full) => (255, "a period of bInterval frames"),
        (TRANSFER_ISOCHRONOUS, Speed::Low | Speed::Full) => (16, "a period of 2^(bInterval-1) frames"),
        (TRANSFER_INTERRUPT | TRANSFER_ISOCHRONOUS, _) => (16, "a period of 2^(bInterval-1) microframes"),
        _ => return None,
    };
    (interval == 0 || interval > max)
        .then(|| format!("is out of range: {kind} at {speed} needs 1 to {max} ({unit})"))
}

fn validate_endpoint(ictx: &str, ep: &Endpoint, speed: Speed) -> Result<(), DescriptorError> {
    let tt = ep.transfer_type();
    let kind = transfer_type_name(tt);
    let ectx = format!("{ictx}: endpoint {:#04x} ({kind})", ep.address);
    if ep.number() == 0 {
        return Err(DescriptorError::EndpointZero {
            context: ictx.into(),
            address: ep.address,
        });
    }
    if ep.address & 0x70 != 0 {
        return Err(field(
            &ectx,
            "bEndpointAddress",
            format!("{:#04x}", ep.address),
            "bits 6..4 are reserved and must be zero",
        ));
    }
    if speed == Speed::Low && matches!(tt, TRANSFER_BULK | TRANSFER_ISOCHRONOUS) {
        return Err(DescriptorError::Invalid {
            context: ectx,
            problem: format!("{kind} endpoints do not exist at low speed"),
        });
    }
    let raw = format!("{:#06x}", ep.w_max_packet_size);
    if ep.w_max_packet_size & 0xe000 != 0 {
        return Err(field(
            &ectx,
            "wMaxPacketSize",
            raw,
            "bits 15..13 are reserved and must be zero",
        ));
    }
    if ep.mult != 0 {
        let periodic = matches!(tt, TRANSFER_INTERRUPT | TRANSFER_ISOCHRONOUS);
        let problem = match speed {
            Speed::High if periodic && ep.mult == 3 => Some(
                "bits 12..11 are 3, which is reserved (at most 2 additional transactions per microframe)"
                    .to_string(),
            ),
            Speed::High if periodic => None,
            Speed::High => Some(format!(
                "bits 12..11 (additional transactions per microframe) must be zero for {kind}"
            )),
            Speed::Super | Speed::SuperPlus => Some(format!(
                "bits 12..11 must be zero at {speed}, where bursts are set in the companion descriptor"
            )),
            Speed::Low | Speed::Full => Some(format!(
                "bits 12..11 (additional transactions per microframe) must be zero at {speed}"
            )),
        };
        if let Some(problem) = problem {
            return Err(field(&ectx, "wMaxPacketSize", raw, problem));
        }
    }
    if let Some(rule) = max_packet_rule(tt, ep.max_packet_size, speed) {
        return Err(DescriptorError::MaxPacketSize {
            context: ictx.into(),
            address: ep.address,
            transfer_type: tt,
            size: ep.max_packet_size,
            rule,
        });
    }
    if let Some(rule) = interval_rule(tt, ep.interval, speed) {
        return Err(DescriptorError::Interval {
            context: ictx.into(),
            address: ep.address,
            transfer_type: tt,
            interval: ep.interval,
            rule,
        });
    }
    if speed.is_superspeed() {
        let Some(c) = &ep.companion else {
            return Err(DescriptorError::MissingCompanion {
                context: ictx.into(),
                address: ep.address,
                transfer_type: tt,
                speed,
            });
        };
        if let Some(problem) = companion_problem(tt, ep.max_packet_size, c) {
            return Err(DescriptorError::Companion {
                context: ictx.into(),
                address: ep.address,
                transfer_type: tt,
                problem,
            });
        }
    }
    Ok(())
}

fn companion_problem(tt: u8, mps: u16, c: &SsCompanion) -> Option<String> {
    let kind = transfer_type_name(tt);
    let attrs = c.attributes;
    if tt == TRANSFER_CONTROL && c.max_burst != 0 {
        return Some(format!("bMaxBurst {} must be 0 for control", c.max_burst));
    }
    if c.max_burst > 15 {
        return Some(format!(
            "bMaxBurst {} is over 15 (16 packets per burst)",
            c.max_burst
        ));
    }
    let ssp_iso = tt == TRANSFER_ISOCHRONOUS && attrs & 0x80 != 0;
    match tt {
        TRANSFER_CONTROL | TRANSFER_INTERRUPT if attrs != 0 => {
            return Some(format!("bmAttributes {attrs:#04x} must be 0 for {kind}"));
        }
        TRANSFER_BULK if attrs & 0xe0 != 0 => {
            return Some(format!(
                "bmAttributes {attrs:#04x}: bits 7..5 are reserved and must be zero"
            ));
        }
        TRANSFER_BULK if attrs & 0x1f > 16 => {
            return Some(format!(
                "bmAttributes {attrs:#04x}: MaxStreams {} is over 16 (2^16 streams)",
                attrs & 0x1f
            ));
        }
        TRANSFER_ISOCHRONOUS if !ssp_iso && attrs & 3 == 3 => {
            return Some(format!(
                "bmAttributes {attrs:#04x}: Mult 3 is reserved (at most 2, meaning 3 bursts per service interval)"
            ));
        }
        _ => {}
    }
    if matches!(tt, TRANSFER_INTERRUPT | TRANSFER_ISOCHRONOUS) && !ssp_iso {
        if c.max_burst > 0 && mps != 1024 {
            return Some(format!(
                "bMaxBurst {} needs wMaxPacketSize 1024, not {mps}",
                c.max_burst
            ));
        }
        let mult = if tt == TRANSFER_ISOCHRONOUS {
            u32::from(attrs & 3)
        } else {
            0
        };
        let max = u32::from(mps) * (u32::from(c.max_burst) + 1) * (mult + 1);
        if u32::from(c.bytes_per_interval) > max {
            let mult_text = if tt == TRANSFER_ISOCHRONOUS {
                format!(" x (Mult {mult} + 1)")
            } else {
                String::new()
            };
            return Some(format!(
                "wBytesPerInterval {} is over {max}, what wMaxPacketSize {mps} x (bMaxBurst {} + 1){mult_text} can carry",
                c.bytes_per_interval, c.max_burst
            ));
        }
    }
    None
}

fn string_header(ctx: &str, bytes: &[u8]) -> Result<usize, DescriptorError> {
    if bytes.len() < 2 {
        return Err(DescriptorError::Truncated {
            context: ctx.into(),
            need: 2,
            have: bytes.len(),
        });
    }
    let length = bytes[0];
    if length < 2 {
        return Err(DescriptorError::BadLength {
            context: ctx.into(),
            offset: 0,
            length,
        });
    }
    if bytes[1] != DT_STRING {
        return Err(DescriptorError::WrongType {
            context: ctx.into(),
            expected: DT_STRING,
            found: bytes[1],
        });
    }
    if length & 1 != 0 {
        return Err(field(
            ctx,
            "bLength",
            length,
            "odd, but a string descriptor holds 2-byte UTF-16 code units",
        ));
    }
    if bytes.len() < usize::from(length) {
        return Err(DescriptorError::Truncated {
            context: ctx.into(),
            need: usize::from(length),
            have: bytes.len(),
        });
    }
    Ok(usize::from(length))
}

/// Decodes a string descriptor (UTF-16LE); bytes after bLength are ignored,
/// as the host asks for 255 bytes without knowing the length.
pub fn parse_string_descriptor(bytes: &[u8]) -> Result<String, DescriptorError> {
    let ctx = "string descriptor";
    let len = string_header(ctx, bytes)?;
    let units: Vec<u16> = bytes[2..len]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).map_err(|_| {
        let at = units
            .iter()
            .position(|u| (0xd800..0xe000).contains(u))
            .unwrap_or(0);
        DescriptorError::Invalid {
            context: ctx.into(),
            problem: format!(
                "not valid UTF-16LE: unpaired surrogate {:#06x} at code unit {at}",
                units.get(at).copied().unwrap_or(0)
            ),
        }
    })
}

/// Decodes string descriptor 0, the language IDs every other string read
/// needs in wIndex.
pub fn parse_langids(bytes: &[u8]) -> Result<Vec<u16>, DescriptorError> {
    let len = string_header("string descriptor 0 (language IDs)", bytes)?;
    Ok(bytes[2..len]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect())
}

/// One capability from the BOS: the type and the bytes after the 3-byte
/// header, uninterpreted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceCapability {
    pub cap_type: u8,
    pub data: Vec<u8>,
}

/// The BOS descriptor set, which tells a host about LPM and SuperSpeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bos {
    pub total_length: u16,
    pub capabilities: Vec<DeviceCapability>,
}

impl Bos {
    /// Finds a capability by bDevCapabilityType.
    pub fn capability(&self, cap_type: u8) -> Option<&DeviceCapability> {
        self.capabilities.iter().find(|c| c.cap_type == cap_type)
    }

    /// A SuperSpeed device must advertise its SuperSpeed (and SuperSpeedPlus)
    /// capability, or hosts cannot manage its link power states.
    pub fn validate(&self, speed: Speed) -> Result<(), DescriptorError> {
        let missing = |what: &str, cap: u8| DescriptorError::Invalid {
            context: "BOS".into(),
            problem: format!(
                "no {what} device capability (type {cap:#04x}), which a device at {speed} must have"
            ),
        };
        if speed.is_superspeed() && self.capability(CAP_SUPERSPEED_USB).is_none() {
            return Err(missing("SuperSpeed USB", CAP_SUPERSPEED_USB));
        }
        if speed == Speed::SuperPlus && self.capability(CAP_SUPERSPEED_PLUS).is_none() {
            return Err(missing("SuperSpeedPlus", CAP_SUPERSPEED_PLUS));
        }
        Ok(())
    }
}

/// Parses a whole BOS (wTotalLength bytes) and checks the lengths of the
/// capabilities this host knows.
pub fn parse_bos(bytes: &[u8]) -> Result<Bos, DescriptorError> {
    let ctx = "BOS";
    if bytes.len() >= 2 && bytes[1] != DT_BOS {
        return Err(DescriptorError::WrongType {
            context: ctx.into(),
            expected: DT_BOS,
            found: bytes[1],
        });
    }
    if bytes.len() < BOS_DESC_SIZE {
        return Err(DescriptorError::Truncated {
            context: ctx.into(),
            need: BOS_DESC_SIZE,
            have: bytes.len(),
        });
    }
    let header_len = usize::from(bytes[0]);
    if header_len < BOS_DESC_SIZE {
        return Err(DescriptorError::TooShort {
            context: ctx.into(),
            offset: 0,
            descriptor_type: DT_BOS,
            length: bytes[0],
            min: BOS_DESC_SIZE,
        });
    }
    let total = le16(bytes, 2);
    if usize::from(total) < header_len {
        return Err(field(
            ctx,
            "wTotalLength",
            total,
            format!("less than the BOS descriptor's own bLength {header_len}"),
        ));
    }
    if bytes.len() < usize::from(total) {
        return Err(DescriptorError::ShortRead {
            context: ctx.into(),
            declared: total,
            received: bytes.len(),
        });
    }
    let declared = bytes[4];
    let descs = split_descriptors(ctx, bytes, header_len, usize::from(total))?;
    let mut capabilities = Vec::new();
    for (offset, d) in descs {
        if d[1] != DT_DEVICE_CAPABILITY {
            return Err(DescriptorError::Misplaced {
                context: ctx.into(),
                offset,
                descriptor_type: d[1],
                why: "a BOS holds only DEVICE_CAPABILITY descriptors".into(),
            });
        }
        need(ctx, offset, d, 3)?;
        let cap_type = d[2];
        let expect = match cap_type {
            CAP_USB20_EXTENSION => Some((7, "USB 2.0 extension")),
            CAP_SUPERSPEED_USB => Some((10, "SuperSpeed USB")),
            CAP_CONTAINER_ID => Some((20, "container ID")),
            CAP_SUPERSPEED_PLUS if d.len() >= 5 => {
                Some((12 + 4 * (usize::from(d[4] & 0x1f) + 1), "SuperSpeedPlus"))
            }
            CAP_SUPERSPEED_PLUS => Some((12, "SuperSpeedPlus")),
            _ => None,
        };
        if let Some((size, name)) = expect {
            if d.len() != size {
                return Err(DescriptorError::Invalid {
                    context: ctx.into(),
                    problem: format!(
                        "{name} capability at offset {offset}: bLength {} where it must be {size}",
                        d.len()
                    ),
                });
            }
        }
        capabilities.push(DeviceCapability {
            cap_type,
            data: d[3..].to_vec(),
        });
    }
    if capabilities.len() != usize::from(declared) {
        return Err(DescriptorError::Invalid {
            context: ctx.into(),
            problem: format!(
                "bNumDeviceCaps {declared} but {} capabilit{} found",
                capabilities.len(),
                if capabilities.len() == 1 { "y" } else { "ies" }
            ),
        });
    }
    Ok(Bos {
        total_length: total,
        capabilities,
    })
}

/// Descriptor builders for tests: realistic gadgets, as byte arrays.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub fn device(bcd_usb: u16, mps0: u8, vid: u16, pid: u16, strings: [u8; 3]) -> Vec<u8> {
        let mut d = vec![18, DT_DEVICE];
        d.extend(bcd_usb.to_le_bytes());
        d.extend([0, 0, 0, mps0]);
        d.extend(vid.to_le_bytes());
        d.extend(pid.to_le_bytes());
        d.extend(0x0100u16.to_le_bytes());
        d.extend(strings);
        d.push(1);
        d
    }

    /// A configuration descriptor with wTotalLength computed from `body`.
    pub fn config(value: u8, num_interfaces: u8, istr: u8, body: &[u8]) -> Vec<u8> {
        let total = (9 + body.len()) as u16;
        let mut d = vec![9, DT_CONFIG];
        d.extend(total.to_le_bytes());
        d.extend([num_interfaces, value, istr, 0x80, 50]);
        d.extend(body);
        d
    }

    pub fn interface(number: u8, alt: u8, neps: u8, class: [u8; 3], istr: u8) -> Vec<u8> {
        vec![
            9,
            DT_INTERFACE,
            number,
            alt,
            neps,
            class[0],
            class[1],
            class[2],
            istr,
        ]
    }

    pub fn endpoint(address: u8, attributes: u8, mps: u16, interval: u8) -> Vec<u8> {
        let [m0, m1] = mps.to_le_bytes();
        vec![7, DT_ENDPOINT, address, attributes, m0, m1, interval]
    }

    pub fn companion(max_burst: u8, attributes: u8, bytes_per_interval: u16) -> Vec<u8> {
        let [b0, b1] = bytes_per_interval.to_le_bytes();
        vec![6, DT_SS_ENDPOINT_COMP, max_burst, attributes, b0, b1]
    }

    pub fn string(s: &str) -> Vec<u8> {
        let mut d = vec![0, DT_STRING];
        for u in s.encode_utf16() {
            d.extend(u.to_le_bytes());
        }
        d[0] = d.len() as u8;
        d
    }

    pub fn langids(ids: &[u16]) -> Vec<u8> {
        let mut d = vec![(2 + 2 * ids.len()) as u8, DT_STRING];
        for id in ids {
            d.extend(id.to_le_bytes());
        }
        d
    }

    /// A FunctionFS-style device: vendor 1d6b:0105, strings 1-3, bcdUSB and
    /// ep0 size as a Linux gadget reports them at `speed`.
    pub fn ffs_device(speed: Speed) -> Vec<u8> {
        let (bcd, mps0) = match speed {
            Speed::Super | Speed::SuperPlus => (0x0320, 9),
            Speed::High => (0x0210, 64),
            _ => (0x0200, 64),
        };
        device(bcd, mps0, 0x1d6b, 0x0105, [1, 2, 3])
    }

    /// One vendor interface (string 4) with bulk IN 0x81 and bulk OUT 0x02,
    /// sized for `speed`, with companions at SuperSpeed.
    pub fn ffs_config(speed: Speed) -> Vec<u8> {
        let mps = match speed {
            Speed::Full => 64,
            Speed::High => 512,
            _ => 1024,
        };
        let mut body = interface(0, 0, 2, [0xff, 0, 0], 4);
        for addr in [0x81, 0x02] {
            body.extend(endpoint(addr, TRANSFER_BULK, mps, 0));
            if speed.is_superspeed() {
                body.extend(companion(15, 0, 0));
            }
        }
        config(1, 1, 0, &body)
    }

    /// The USB 2.0 extension (LPM) and SuperSpeed USB capabilities, as a
    /// Linux composite gadget reports them.
    pub fn bos() -> Vec<u8> {
        let mut caps = vec![7, DT_DEVICE_CAPABILITY, CAP_USB20_EXTENSION, 0x06, 0, 0, 0];
        caps.extend([
            10,
            DT_DEVICE_CAPABILITY,
            CAP_SUPERSPEED_USB,
            0,
            0x0e,
            0,
            1,
            0x0a,
            0xff,
            0x07,
        ]);
        let mut d = vec![5, DT_BOS];
        d.extend(((5 + caps.len()) as u16).to_le_bytes());
        d.push(2);
        d.extend(caps);
        d
    }

    /// A CDC-ACM-like function: an IAD over a communications interface (with
    /// header, call management, ACM and union functional descriptors and an
    /// interrupt notification endpoint 0x83) and a data interface with bulk
    /// 0x81/0x02, at full speed.
    pub fn acm_config() -> Vec<u8> {
        let mut body = vec![8, DT_INTERFACE_ASSOCIATION, 0, 2, 0x02, 0x02, 0x01, 5];
        body.extend(interface(0, 0, 1, [0x02, 0x02, 0x01], 6));
        body.extend([5, DT_CS_INTERFACE, 0x00, 0x10, 0x01]); // header, CDC 1.10
        body.extend([5, DT_CS_INTERFACE, 0x01, 0x00, 0x01]); // call management
        body.extend([4, DT_CS_INTERFACE, 0x02, 0x02]); // ACM
        body.extend([5, DT_CS_INTERFACE, 0x06, 0x00, 0x01]); // union
        body.extend(endpoint(0x83, TRANSFER_INTERRUPT, 10, 32));
        body.extend(interface(1, 0, 2, [0x0a, 0, 0], 7));
        body.extend(endpoint(0x81, TRANSFER_BULK, 64, 0));
        body.extend(endpoint(0x02, TRANSFER_BULK, 64, 0));
        config(2, 2, 0, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    /// The full-speed FunctionFS configuration written out by hand, to check
    /// the builders against real bytes.
    const FFS_FS_CONFIG: [u8; 32] = [
        0x09, 0x02, 0x20, 0x00, 0x01, 0x01, 0x00, 0x80, 0x32, // config 1, 32 bytes
        0x09, 0x04, 0x00, 0x00, 0x02, 0xff, 0x00, 0x00, 0x04, // interface 0, vendor
        0x07, 0x05, 0x81, 0x02, 0x40, 0x00, 0x00, // bulk IN 0x81, 64
        0x07, 0x05, 0x02, 0x02, 0x40, 0x00, 0x00, // bulk OUT 0x02, 64
    ];

    fn err_text(r: Result<Configuration, DescriptorError>) -> String {
        r.expect_err("configuration should be rejected").to_string()
    }

    /// Replaces the endpoint descriptor of `addr` in a configuration.
    fn patch_ep(cfg: &mut [u8], addr: u8, f: impl Fn(&mut [u8])) {
        let mut off = 0;
        while off < cfg.len() {
            let len = usize::from(cfg[off]);
            if cfg[off + 1] == DT_ENDPOINT && cfg[off + 2] == addr {
                f(&mut cfg[off..off + len]);
                return;
            }
            off += len;
        }
        panic!("no endpoint {addr:#x}");
    }

    fn set_mps(d: &mut [u8], mps: u16) {
        d[4..6].copy_from_slice(&mps.to_le_bytes());
    }

    #[test]
    fn speed_wire_names_and_order() {
        for s in [
            Speed::Low,
            Speed::Full,
            Speed::High,
            Speed::Super,
            Speed::SuperPlus,
        ] {
            assert_eq!(Speed::from_wire(s.to_wire()), Some(s));
            assert_eq!(s.name().parse::<Speed>(), Ok(s));
        }
        assert_eq!(Speed::High.to_wire(), 3);
        assert_eq!(Speed::Super.to_wire(), 5);
        assert_eq!(Speed::from_wire(0), None);
        assert_eq!(Speed::from_wire(4), None);
        assert_eq!("Super-Plus".parse::<Speed>(), Ok(Speed::SuperPlus));
        assert!("warp".parse::<Speed>().unwrap_err().to_string().contains("warp"));
        assert!(Speed::Full < Speed::High && Speed::High < Speed::Super);
        assert_eq!(Speed::Super.to_string(), "SuperSpeed");
        assert_eq!(
            serde_json::to_string(&Speed::SuperPlus).unwrap(),
            "\"super-plus\""
        );
        assert_eq!(Speed::Super.ep0_max_packet(), 512);
    }

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

    #[test]
    fn device_descriptor_parses_all_fields() {
        let d = parse_device_descriptor(&ffs_device(Speed::High)).unwrap();
        assert_eq!(
            d,
            DeviceDescriptor {
                length: 18,
                descriptor_type: DT_DEVICE,
                bcd_usb: 0x0210,
                device_class: 0,
                device_subclass: 0,
                device_protocol: 0,
                max_packet_size0: 64,
                id_vendor: 0x1d6b,
                id_product: 0x0105,
                bcd_device: 0x0100,
                i_manufacturer: 1,
                i_product: 2,
                i_serial_number: 3,
                num_configurations: 1,
            }
        );
        assert_eq!(d.string_indices(), vec![1, 2, 3]);
        d.validate(Speed::High).unwrap();
        d.validate(Speed::Full).unwrap();
        let ss = parse_device_descriptor(&ffs_device(Speed::Super)).unwrap();
        ss.validate(Speed::Super).unwrap();
        assert_eq!(ss.ep0_max_packet(Speed::Super), 512);
        assert_eq!(d.ep0_max_packet(Speed::High), 64);
    }

    #[test]
    fn device_descriptor_truncated_and_wrong_type() {
        let d = ffs_device(Speed::High);
        assert_eq!(
            parse_device_descriptor(&d[..8]).unwrap_err().to_string(),
            "device descriptor: truncated: 8 bytes where 18 are needed"
        );
        let cfg = ffs_config(Speed::High);
        assert_eq!(
            parse_device_descriptor(&cfg).unwrap_err().to_string(),
            "device descriptor: bDescriptorType 2 (CONFIG) where 1 (DEVICE) was expected"
        );
        let mut bad = d.clone();
        bad[0] = 17;
        assert!(parse_device_descriptor(&bad)
            .unwrap_err()
            .to_string()
            .contains("bLength 17: a device descriptor is exactly 18 bytes"));
        let mut none = d;
        none[17] = 0;
        assert!(parse_device_descriptor(&none)
            .unwrap_err()
            .to_string()
            .contains("bNumConfigurations 0"));
    }

    #[test]
    fn device_descriptor_ep0_size_per_speed() {
        let hs = parse_device_descriptor(&ffs_device(Speed::High)).unwrap();
        assert_eq!(
            hs.validate(Speed::Super).unwrap_err().to_string(),
            "device descriptor: bMaxPacketSize0 64 is wrong for SuperSpeed (must be 9, meaning 512)"
        );
        let mut fs = hs.clone();
        fs.max_packet_size0 = 8;
        fs.validate(Speed::Full).unwrap();
        assert_eq!(
            fs.validate(Speed::High).unwrap_err().to_string(),
            "device descriptor: bMaxPacketSize0 8 is wrong for high speed (must be 64)"
        );
        fs.max_packet_size0 = 12;
        assert!(fs
            .validate(Speed::Full)
            .unwrap_err()
            .to_string()
            .contains("must be 8, 16, 32 or 64"));
    }

    #[test]
    fn device_descriptor_bcd_usb_per_speed() {
        let mut d = parse_device_descriptor(&ffs_device(Speed::High)).unwrap();
        d.max_packet_size0 = 9;
        assert_eq!(
            d.validate(Speed::Super).unwrap_err().to_string(),
            "device descriptor: bcdUSB 0x0210 is too low for SuperSpeed (must be at least 0x0300)"
        );
        let mut old = parse_device_descriptor(&ffs_device(Speed::Full)).unwrap();
        old.bcd_usb = 0x0110;
        old.validate(Speed::Full).unwrap();
        assert_eq!(
            old.validate(Speed::High).unwrap_err().to_string(),
            "device descriptor: bcdUSB 0x0110 is too low for high speed (must be at least 0x0200)"
        );
    }

    #[test]
    fn ffs_config_fixture_matches_hand_written_bytes() {
        assert_eq!(ffs_config(Speed::Full), FFS_FS_CONFIG);
    }

    #[test]
    fn ffs_config_parses_at_full_high_and_super_speed() {
        let fs = parse_configuration(&FFS_FS_CONFIG, Speed::Full).unwrap();
        assert_eq!(fs.value, 1);
        assert_eq!(fs.total_length, 32);
        assert_eq!(fs.raw, FFS_FS_CONFIG);
        assert_eq!(fs.max_power, 50);
        assert_eq!(fs.interfaces.len(), 1);
        let i = &fs.interfaces[0];
        assert_eq!((i.number, i.alternate, i.class, i.string_index), (0, 0, 0xff, 4));
        assert_eq!(i.endpoints.len(), 2);
        assert_eq!(i.endpoints[0].address, 0x81);
        assert_eq!(i.endpoints[0].transfer_type(), TRANSFER_BULK);
        assert_eq!(i.endpoints[0].max_packet_size, 64);
        assert!(i.endpoints[0].is_in());
        assert!(!i.endpoints[1].is_in());
        assert_eq!(fs.string_indices(), vec![4]);
        assert!(fs.interface(0, 0).is_some() && fs.interface(0, 1).is_none());

        let hs = parse_configuration(&ffs_config(Speed::High), Speed::High).unwrap();
        assert_eq!(hs.interfaces[0].endpoints[1].max_packet_size, 512);
        assert_eq!(hs.interfaces[0].endpoints[1].companion, None);

        let ss = parse_configuration(&ffs_config(Speed::Super), Speed::Super).unwrap();
        assert_eq!(ss.total_length, 44);
        let ep = &ss.interfaces[0].endpoints[0];
        assert_eq!(ep.max_packet_size, 1024);
        assert_eq!(
            ep.companion,
            Some(SsCompanion {
                max_burst: 15,
                attributes: 0,
                bytes_per_interval: 0
            })
        );
        // The SuperSpeed descriptors are valid at SuperSpeedPlus too.
        parse_configuration(&ffs_config(Speed::Super), Speed::SuperPlus).unwrap();
    }

    #[test]
    fn acm_config_keeps_iad_and_class_descriptors() {
        let c = parse_configuration(&acm_config(), Speed::Full).unwrap();
        assert_eq!(c.value, 2);
        assert_eq!(
            c.iads,
            vec![Iad {
                first_interface: 0,
                interface_count: 2,
                function_class: 2,
                function_subclass: 2,
                function_protocol: 1,
                string_index: 5
            }]
        );
        let comm = c.interface(0, 0).unwrap();
        assert_eq!(comm.extra.len(), 4);
        assert!(comm.extra.iter().all(|d| d.descriptor_type == DT_CS_INTERFACE));
        assert_eq!(comm.extra[0].offset, 26);
        assert_eq!(comm.extra[3].bytes, vec![5, DT_CS_INTERFACE, 0x06, 0x00, 0x01]);
        assert_eq!(comm.endpoints[0].transfer_type(), TRANSFER_INTERRUPT);
        assert_eq!(comm.endpoints[0].interval, 32);
        assert_eq!(c.interface(1, 0).unwrap().endpoints.len(), 2);
        assert_eq!(c.string_indices(), vec![6, 7, 5]);
        assert!(serde_json::to_value(&c).is_ok());
    }

    #[test]
    fn class_endpoint_descriptors_attach_to_their_endpoint() {
        let mut body = interface(0, 0, 0, [1, 1, 0], 0);
        body.extend(interface(1, 0, 0, [1, 2, 0], 0));
        body.extend(interface(1, 1, 1, [1, 2, 0], 0));
        body.extend([7, DT_CS_INTERFACE, 0x01, 0x01, 0x01, 0x01, 0x00]);
        body.extend(endpoint(0x01, 0x09, 192, 1)); // iso adaptive OUT
        body.extend([7, DT_CS_ENDPOINT, 0x01, 0x01, 0x01, 0x01, 0x00]);
        let c = parse_configuration(&config(1, 2, 0, &body), Speed::Full).unwrap();
        let alt1 = c.interface(1, 1).unwrap();
        assert_eq!(alt1.extra.len(), 1);
        assert_eq!(alt1.endpoints[0].extra[0].descriptor_type, DT_CS_ENDPOINT);
        assert_eq!(alt1.endpoints[0].transfer_type(), TRANSFER_ISOCHRONOUS);
    }

    #[test]
    fn config_total_length_too_small() {
        // wTotalLength says 32, but a third endpoint makes the set 39 bytes.
        let mut body = interface(0, 0, 3, [0xff, 0, 0], 0);
        body.extend(endpoint(0x81, TRANSFER_BULK, 512, 0));
        body.extend(endpoint(0x02, TRANSFER_BULK, 512, 0));
        body.extend(endpoint(0x83, TRANSFER_INTERRUPT, 8, 4));
        let mut c = config(1, 1, 0, &body);
        c[2] = 32;
        assert_eq!(
            err_text(parse_configuration(&c, Speed::High)),
            "configuration 1: wTotalLength 32 but the descriptors add up to 39 bytes"
        );
        // What the host sees after asking for exactly wTotalLength bytes.
        let cut = &c[..32];
        assert_eq!(
            err_text(parse_configuration(cut, Speed::High)),
            "configuration 1: interface 0 alt 0: bNumEndpoints 3 but 2 endpoint descriptors found"
        );
    }

    #[test]
    fn config_descriptor_crossing_total_length() {
        let mut c = ffs_config(Speed::High);
        c[2] = 30; // the last endpoint (offset 25, 7 bytes) crosses it
        assert_eq!(
            err_text(parse_configuration(&c[..30], Speed::High)),
            "configuration 1: wTotalLength 30 but the descriptors add up to at least 32 bytes"
        );
    }

    #[test]
    fn config_short_read() {
        let c = ffs_config(Speed::High);
        assert_eq!(
            err_text(parse_configuration(&c[..20], Speed::High)),
            "configuration 1: wTotalLength 32 but only 20 bytes arrived"
        );
        assert_eq!(
            err_text(parse_configuration(&c[..5], Speed::High)),
            "configuration descriptor: truncated: 5 bytes where 9 are needed"
        );
    }

    #[test]
    fn config_zero_blength() {
        let mut c = ffs_config(Speed::High);
        c[18] = 0;
        assert_eq!(
            err_text(parse_configuration(&c, Speed::High)),
            "configuration 1: descriptor at offset 18: bLength 0 (every descriptor is at least 2 bytes)"
        );
    }

    #[test]
    fn config_short_interface_descriptor() {
        let mut body = vec![7, DT_INTERFACE, 0, 0, 0, 0xff, 0];
        body.extend(interface(0, 0, 0, [0xff, 0, 0], 0));
        assert_eq!(
            err_text(parse_configuration(&config(1, 1, 0, &body), Speed::High)),
            "configuration 1: INTERFACE descriptor at offset 9: bLength 7 is less than its 9 bytes"
        );
    }

    #[test]
    fn config_wrong_type_and_zero_value() {
        assert!(
            err_text(parse_configuration(&ffs_device(Speed::High), Speed::High))
                .contains("bDescriptorType 1 (DEVICE) where 2 (CONFIG) was expected")
        );
        let mut c = ffs_config(Speed::High);
        c[5] = 0;
        assert_eq!(
            err_text(parse_configuration(&c, Speed::High)),
            "configuration 0: bConfigurationValue 0: reserved, as SET_CONFIGURATION(0) means unconfigured"
        );
    }

    #[test]
    fn config_interface_count_mismatch() {
        let mut c = ffs_config(Speed::High);
        c[4] = 2;
        assert_eq!(
            err_text(parse_configuration(&c, Speed::High)),
            "configuration 1: bNumInterfaces 2 but 1 interface found"
        );
    }

    #[test]
    fn config_endpoint_count_mismatch() {
        let mut body = interface(0, 0, 1, [0xff, 0, 0], 0);
        body.extend(endpoint(0x81, TRANSFER_BULK, 512, 0));
        body.extend(endpoint(0x02, TRANSFER_BULK, 512, 0));
        assert_eq!(
            err_text(parse_configuration(&config(1, 1, 0, &body), Speed::High)),
            "configuration 1: interface 0 alt 0: bNumEndpoints 1 but 2 endpoint descriptors found"
        );
    }

    #[test]
    fn config_bulk_max_packet_per_speed() {
        let mut c = ffs_config(Speed::High);
        patch_ep(&mut c, 0x81, |d| set_mps(d, 1024));
        assert_eq!(
            err_text(parse_configuration(&c, Speed::High)),
            "configuration 1: interface 0 alt 0: endpoint 0x81 (bulk): wMaxPacketSize 1024 is over 512, the limit for bulk at high speed"
        );
        let mut c = ffs_config(Speed::High);
        patch_ep(&mut c, 0x02, |d| set_mps(d, 64));
        assert_eq!(
            err_text(parse_configuration(&c, Speed::High)),
            "configuration 1: interface 0 alt 0: endpoint 0x02 (bulk): wMaxPacketSize 64 is under 512: bulk at high speed must be exactly 512"
        );
        // The high-speed descriptors are wrong at full speed.
        assert!(
            err_text(parse_configuration(&ffs_config(Speed::High), Speed::Full))
                .contains("wMaxPacketSize 512 is not 8, 16, 32 or 64, the sizes bulk allows at full speed")
        );
        let mut c = ffs_config(Speed::Super);
        patch_ep(&mut c, 0x81, |d| set_mps(d, 512));
        assert!(err_text(parse_configuration(&c, Speed::Super))
            .contains("wMaxPacketSize 512 is under 1024: bulk at SuperSpeed must be exactly 1024"));
    }

    #[test]
    fn config_interrupt_and_iso_max_packet_limits() {
        let periodic = |addr: u8, tt: u8, mps: u16, interval: u8| {
            let mut body = interface(0, 0, 1, [0xff, 0, 0], 0);
            body.extend(endpoint(addr, tt, mps, interval));
            config(1, 1, 0, &body)
        };
        parse_configuration(&periodic(0x81, TRANSFER_INTERRUPT, 64, 10), Speed::Full).unwrap();
        assert!(err_text(parse_configuration(
            &periodic(0x81, TRANSFER_INTERRUPT, 65, 10),
            Speed::Full
        ))
        .contains(
            "endpoint 0x81 (interrupt): wMaxPacketSize 65 is over 64, the limit for interrupt at full speed"
        ));
        parse_configuration(&periodic(0x81, TRANSFER_INTERRUPT, 1024, 4), Speed::High).unwrap();
        assert!(err_text(parse_configuration(
            &periodic(0x81, TRANSFER_INTERRUPT, 0, 4),
            Speed::High
        ))
        .contains("wMaxPacketSize 0 is too small: an interrupt endpoint must carry at least 1 byte"));
        parse_configuration(&periodic(0x81, TRANSFER_ISOCHRONOUS, 1023, 1), Speed::Full).unwrap();
        assert!(err_text(parse_configuration(&periodic(0x81, TRANSFER_ISOCHRONOUS, 1024, 1), Speed::Full))
            .contains("endpoint 0x81 (isochronous): wMaxPacketSize 1024 is over 1023, the limit for isochronous at full speed"));
        parse_configuration(&periodic(0x81, TRANSFER_ISOCHRONOUS, 1024, 1), Speed::High).unwrap();
        // High-bandwidth: 2 extra transactions is fine, 3 is reserved.
        parse_configuration(
            &periodic(0x81, TRANSFER_ISOCHRONOUS, 1024 | (2 << 11), 1),
            Speed::High,
        )
        .unwrap();
        assert!(err_text(parse_configuration(
            &periodic(0x81, TRANSFER_ISOCHRONOUS, 1024 | (3 << 11), 1),
            Speed::High
        ))
        .contains("wMaxPacketSize 0x1c00: bits 12..11 are 3, which is reserved"));
        assert!(err_text(parse_configuration(
            &periodic(0x81, TRANSFER_BULK, 512 | (1 << 11), 0),
            Speed::High
        ))
        .contains("bits 12..11 (additional transactions per microframe) must be zero for bulk"));
        parse_configuration(&periodic(0x81, TRANSFER_INTERRUPT, 8, 10), Speed::Low).unwrap();
        assert!(err_text(parse_configuration(
            &periodic(0x81, TRANSFER_BULK, 8, 0),
            Speed::Low
        ))
        .contains("bulk endpoints do not exist at low speed"));
    }

    #[test]
    fn config_control_and_low_speed_endpoints() {
        let one = |tt: u8, mps: u16, interval: u8| {
            let mut body = interface(0, 0, 1, [0xff, 0, 0], 0);
            body.extend(endpoint(0x01, tt, mps, interval));
            config(1, 1, 0, &body)
        };
        parse_configuration(&one(TRANSFER_CONTROL, 64, 0), Speed::High).unwrap();
        assert!(err_text(parse_configuration(&one(TRANSFER_CONTROL, 32, 0), Speed::High))
            .contains("endpoint 0x01 (control): wMaxPacketSize 32 is under 64: control at high speed must be exactly 64"));
        parse_configuration(&one(TRANSFER_INTERRUPT, 8, 10), Speed::Low).unwrap();
        assert!(
            err_text(parse_configuration(&one(TRANSFER_INTERRUPT, 16, 10), Speed::Low))
                .contains("wMaxPacketSize 16 is over 8, the limit for interrupt at low speed")
        );
        let mut short = one(TRANSFER_BULK, 512, 0);
        short[18] = 6;
        short.remove(24);
        short[2] = 24;
        assert!(err_text(parse_configuration(&short, Speed::High))
            .contains("ENDPOINT descriptor at offset 18: bLength 6 is less than its 7 bytes"));
    }

    #[test]
    fn config_interval_out_of_range() {
        let periodic = |tt: u8, interval: u8| {
            let mut body = interface(0, 0, 1, [0xff, 0, 0], 0);
            body.extend(endpoint(0x83, tt, 8, interval));
            config(1, 1, 0, &body)
        };
        assert_eq!(
            err_text(parse_configuration(&periodic(TRANSFER_INTERRUPT, 0), Speed::Full)),
            "configuration 1: interface 0 alt 0: endpoint 0x83 (interrupt): bInterval 0 is out of range: interrupt at full speed needs 1 to 255 (a period of bInterval frames)"
        );
        parse_configuration(&periodic(TRANSFER_INTERRUPT, 255), Speed::Full).unwrap();
        assert_eq!(
            err_text(parse_configuration(&periodic(TRANSFER_INTERRUPT, 32), Speed::High)),
            "configuration 1: interface 0 alt 0: endpoint 0x83 (interrupt): bInterval 32 is out of range: interrupt at high speed needs 1 to 16 (a period of 2^(bInterval-1) microframes)"
        );
        assert!(err_text(parse_configuration(
            &periodic(TRANSFER_ISOCHRONOUS, 17),
            Speed::Full
        ))
        .contains("bInterval 17 is out of range: isochronous at full speed needs 1 to 16"));
        // Bulk ignores bInterval at full speed.
        let mut c = ffs_config(Speed::Full);
        patch_ep(&mut c, 0x81, |d| d[6] = 200);
        parse_configuration(&c, Speed::Full).unwrap();
    }

    #[test]
    fn config_duplicate_endpoint_address() {
        let mut c = ffs_config(Speed::High);
        patch_ep(&mut c, 0x02, |d| d[2] = 0x81);
        assert_eq!(
            err_text(parse_configuration(&c, Speed::High)),
            "configuration 1: interface 0 alt 0: endpoint 0x81 appears twice in this alternate setting"
        );
        // The same address in two alternate settings is normal.
        let mut body = interface(0, 0, 1, [0xff, 0, 0], 0);
        body.extend(endpoint(0x81, TRANSFER_BULK, 512, 0));
        body.extend(interface(0, 1, 1, [0xff, 0, 0], 0));
        body.extend(endpoint(0x81, TRANSFER_BULK, 512, 0));
        let c = parse_configuration(&config(1, 1, 0, &body), Speed::High).unwrap();
        assert_eq!(c.interfaces.len(), 2);
    }

    #[test]
    fn config_endpoint_number_zero() {
        let mut c = ffs_config(Speed::High);
        patch_ep(&mut c, 0x81, |d| d[2] = 0x80);
        assert_eq!(
            err_text(parse_configuration(&c, Speed::High)),
            "configuration 1: interface 0 alt 0: endpoint 0x80: endpoint number 0 is the default control pipe, which has no endpoint descriptor"
        );
    }

    #[test]
    fn config_missing_superspeed_companion() {
        // High-speed descriptors with the size fixed up: still no companions.
        let mut c = ffs_config(Speed::High);
        patch_ep(&mut c, 0x81, |d| set_mps(d, 1024));
        patch_ep(&mut c, 0x02, |d| set_mps(d, 1024));
        assert_eq!(
            err_text(parse_configuration(&c, Speed::Super)),
            "configuration 1: interface 0 alt 0: endpoint 0x81 (bulk) has no SuperSpeed companion descriptor at SuperSpeed"
        );
    }

    #[test]
    fn config_companion_rules() {
        let ss = |tt: u8, mps: u16, interval: u8, comp: Vec<u8>| {
            let mut body = interface(0, 0, 1, [0xff, 0, 0], 0);
            body.extend(endpoint(0x81, tt, mps, interval));
            body.extend(comp);
            config(1, 1, 0, &body)
        };
        parse_configuration(
            &ss(TRANSFER_INTERRUPT, 1024, 4, companion(1, 0, 2048)),
            Speed::Super,
        )
        .unwrap();
        assert!(err_text(parse_configuration(
            &ss(TRANSFER_INTERRUPT, 1024, 4, companion(0, 0, 2048)),
            Speed::Super
        ))
        .contains("SuperSpeed companion: wBytesPerInterval 2048 is over 1024"));
        assert!(err_text(parse_configuration(
            &ss(TRANSFER_INTERRUPT, 512, 4, companion(1, 0, 1024)),
            Speed::Super
        ))
        .contains("bMaxBurst 1 needs wMaxPacketSize 1024, not 512"));
        assert!(err_text(parse_configuration(
            &ss(TRANSFER_BULK, 1024, 0, companion(16, 0, 0)),
            Speed::Super
        ))
        .contains("endpoint 0x81 (bulk): SuperSpeed companion: bMaxBurst 16 is over 15"));
        assert!(err_text(parse_configuration(
            &ss(TRANSFER_BULK, 1024, 0, companion(0, 17, 0)),
            Speed::Super
        ))
        .contains("MaxStreams 17 is over 16"));
        parse_configuration(
            &ss(TRANSFER_ISOCHRONOUS, 1024, 1, companion(3, 2, 12288)),
            Speed::Super,
        )
        .unwrap();
        assert!(err_text(parse_configuration(
            &ss(TRANSFER_ISOCHRONOUS, 1024, 1, companion(3, 3, 1024)),
            Speed::Super
        ))
        .contains("Mult 3 is reserved"));
        // A companion must follow its endpoint directly.
        let mut body = interface(0, 0, 1, [0xff, 0, 0], 0);
        body.extend(companion(0, 0, 0));
        body.extend(endpoint(0x81, TRANSFER_BULK, 1024, 0));
        assert!(
            err_text(parse_configuration(&config(1, 1, 0, &body), Speed::Super))
                .contains("SS_ENDPOINT_COMP descriptor at offset 18 is out of place")
        );
        // Below SuperSpeed a companion is kept raw, not interpreted.
        let c = parse_configuration(&ss(TRANSFER_BULK, 512, 0, companion(15, 0, 0)), Speed::High).unwrap();
        assert_eq!(
            c.interfaces[0].endpoints[0].extra[0].descriptor_type,
            DT_SS_ENDPOINT_COMP
        );
    }

    #[test]
    fn config_structure_errors() {
        // An endpoint before any interface.
        let body = endpoint(0x81, TRANSFER_BULK, 512, 0);
        assert!(
            err_text(parse_configuration(&config(1, 0, 0, &body), Speed::High)).contains(
                "ENDPOINT descriptor at offset 9 is out of place: it comes before any interface descriptor"
            )
        );
        // Interface 1 with only alternate setting 1.
        let mut body = interface(0, 0, 0, [0xff, 0, 0], 0);
        body.extend(interface(1, 1, 0, [0xff, 0, 0], 0));
        assert_eq!(
            err_text(parse_configuration(&config(1, 2, 0, &body), Speed::High)),
            "configuration 1: interface 1 has no alternate setting 0, which the host selects by default"
        );
        // The same alternate setting twice.
        let mut body = interface(0, 0, 0, [0xff, 0, 0], 0);
        body.extend(interface(0, 0, 0, [0xff, 0, 0], 0));
        assert_eq!(
            err_text(parse_configuration(&config(1, 1, 0, &body), Speed::High)),
            "configuration 1: interface 0 alt 0 appears twice"
        );
        // An IAD naming an interface that does not exist.
        let mut c = acm_config();
        c[12] = 3; // bInterfaceCount
        assert_eq!(
            err_text(parse_configuration(&c, Speed::Full)),
            "configuration 2: interface association at offset 9 (bFirstInterface 0, bInterfaceCount 3) names interface 2, which does not exist"
        );
        // A device descriptor inside a configuration.
        let mut body = interface(0, 0, 0, [0xff, 0, 0], 0);
        body.extend(ffs_device(Speed::High));
        assert!(
            err_text(parse_configuration(&config(1, 1, 0, &body), Speed::High))
                .contains("DEVICE descriptor at offset 18 is out of place")
        );
    }

    #[test]
    fn config_reserved_bits() {
        let mut c = ffs_config(Speed::High);
        patch_ep(&mut c, 0x81, |d| d[2] = 0x91);
        assert!(err_text(parse_configuration(&c, Speed::High))
            .contains("endpoint 0x91 (bulk): bEndpointAddress 0x91: bits 6..4 are reserved"));
        let mut c = ffs_config(Speed::High);
        patch_ep(&mut c, 0x81, |d| set_mps(d, 0x2000 | 512));
        assert!(err_text(parse_configuration(&c, Speed::High))
            .contains("wMaxPacketSize 0x2200: bits 15..13 are reserved"));
    }

    #[test]
    fn string_descriptors() {
        assert_eq!(
            parse_string_descriptor(&string("Gadget \u{e9}\u{1f600}")).unwrap(),
            "Gadget \u{e9}\u{1f600}"
        );
        assert_eq!(parse_string_descriptor(&string("")).unwrap(), "");
        // Trailing bytes beyond bLength (a 255-byte buffer) are ignored.
        let mut padded = string("abc");
        padded.extend([0xaa; 10]);
        assert_eq!(parse_string_descriptor(&padded).unwrap(), "abc");
        let s = string("abc");
        assert_eq!(
            parse_string_descriptor(&s[..5]).unwrap_err().to_string(),
            "string descriptor: truncated: 5 bytes where 8 are needed"
        );
        let mut odd = s.clone();
        odd[0] = 7;
        assert!(parse_string_descriptor(&odd)
            .unwrap_err()
            .to_string()
            .contains("bLength 7: odd, but"));
        let mut wrong = s;
        wrong[1] = DT_CONFIG;
        assert!(parse_string_descriptor(&wrong)
            .unwrap_err()
            .to_string()
            .contains("bDescriptorType 2 (CONFIG) where 3 (STRING) was expected"));
        let lone = [4, DT_STRING, 0x00, 0xd8];
        assert!(parse_string_descriptor(&lone)
            .unwrap_err()
            .to_string()
            .contains("unpaired surrogate 0xd800 at code unit 0"));
        assert!(parse_string_descriptor(&[0, DT_STRING])
            .unwrap_err()
            .to_string()
            .contains("bLength 0"));
    }

    #[test]
    fn langid_descriptor() {
        assert_eq!(parse_langids(&langids(&[0x0409])).unwrap(), vec![0x0409]);
        assert_eq!(
            parse_langids(&langids(&[0x0409, 0x0407])).unwrap(),
            vec![0x0409, 0x0407]
        );
        assert_eq!(parse_langids(&langids(&[])).unwrap(), Vec::<u16>::new());
        assert!(parse_langids(&[4, DT_STRING, 9])
            .unwrap_err()
            .to_string()
            .starts_with("string descriptor 0 (language IDs): truncated"));
    }

    #[test]
    fn bos_parses_capabilities() {
        let b = parse_bos(&bos()).unwrap();
        assert_eq!(b.total_length, 22);
        assert_eq!(b.capabilities.len(), 2);
        assert_eq!(
            b.capabilities[0],
            DeviceCapability {
                cap_type: CAP_USB20_EXTENSION,
                data: vec![0x06, 0, 0, 0]
            }
        );
        assert_eq!(b.capability(CAP_SUPERSPEED_USB).unwrap().data.len(), 7);
        b.validate(Speed::Super).unwrap();
        assert!(b
            .validate(Speed::SuperPlus)
            .unwrap_err()
            .to_string()
            .contains("no SuperSpeedPlus device capability"));
    }

    #[test]
    fn bos_errors() {
        let good = bos();
        let mut n = good.clone();
        n[4] = 3;
        assert_eq!(
            parse_bos(&n).unwrap_err().to_string(),
            "BOS: bNumDeviceCaps 3 but 2 capabilities found"
        );
        assert_eq!(
            parse_bos(&good[..12]).unwrap_err().to_string(),
            "BOS: wTotalLength 22 but only 12 bytes arrived"
        );
        let mut short = good.clone();
        short[5] = 6; // USB 2.0 extension with bLength 6
        assert_eq!(
            parse_bos(&short).unwrap_err().to_string(),
            "BOS: descriptor at offset 11: bLength 0 (every descriptor is at least 2 bytes)"
        );
        let mut ss_only = vec![5, DT_BOS, 15, 0, 1];
        ss_only.extend(&good[12..]);
        let b = parse_bos(&ss_only).unwrap();
        b.validate(Speed::Super).unwrap();
        let mut lpm_only = good[..12].to_vec();
        lpm_only[2] = 12;
        lpm_only[4] = 1;
        assert_eq!(
            parse_bos(&lpm_only)
                .unwrap()
                .validate(Speed::Super)
                .unwrap_err()
                .to_string(),
            "BOS: no SuperSpeed USB device capability (type 0x03), which a device at SuperSpeed must have"
        );
        let mut wrong_cap = good.clone();
        wrong_cap[12] = 9; // SuperSpeed USB capability with bLength 9, padded by the next
        wrong_cap[2] = 21;
        assert!(parse_bos(&wrong_cap[..21])
            .unwrap_err()
            .to_string()
            .contains("SuperSpeed USB capability at offset 12: bLength 9 where it must be 10"));
    }

    #[test]
    fn errors_serialize() {
        let e = parse_configuration(&FFS_FS_CONFIG, Speed::High).unwrap_err();
        let v = serde_json::to_value(&e).unwrap();
        assert!(v.get("MaxPacketSize").is_some());
    }
}
