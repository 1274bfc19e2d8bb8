// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! USB chapter 9 bits the fake driver and gadget need, and decoded events.

use vhost_device_udc::wire::{self, VirtioUdcEvent};

/// bmRequestType direction bit.
pub const USB_DIR_IN: u8 = 0x80;
/// bmRequestType type field values.
pub const USB_TYPE_MASK: u8 = 0x60;
pub const USB_TYPE_STANDARD: u8 = 0x00;
pub const USB_TYPE_CLASS: u8 = 0x20;
pub const USB_TYPE_VENDOR: u8 = 0x40;
/// bmRequestType recipient values.
pub const USB_RECIP_MASK: u8 = 0x1f;
pub const USB_RECIP_DEVICE: u8 = 0x00;
pub const USB_RECIP_INTERFACE: u8 = 0x01;
pub const USB_RECIP_ENDPOINT: u8 = 0x02;

/// Standard requests.
pub const USB_REQ_GET_STATUS: u8 = 0x00;
pub const USB_REQ_CLEAR_FEATURE: u8 = 0x01;
pub const USB_REQ_SET_FEATURE: u8 = 0x03;
pub const USB_REQ_SET_ADDRESS: u8 = 0x05;
pub const USB_REQ_GET_DESCRIPTOR: u8 = 0x06;
pub const USB_REQ_SET_DESCRIPTOR: u8 = 0x07;
pub const USB_REQ_GET_CONFIGURATION: u8 = 0x08;
pub const USB_REQ_SET_CONFIGURATION: u8 = 0x09;
pub const USB_REQ_GET_INTERFACE: u8 = 0x0a;
pub const USB_REQ_SET_INTERFACE: u8 = 0x0b;
pub const USB_REQ_SET_SEL: u8 = 0x30;
pub const USB_REQ_SET_ISOCH_DELAY: u8 = 0x31;

/// Descriptor types.
pub const USB_DT_DEVICE: u8 = 0x01;
pub const USB_DT_CONFIG: u8 = 0x02;
pub const USB_DT_STRING: u8 = 0x03;
pub const USB_DT_INTERFACE: u8 = 0x04;
pub const USB_DT_ENDPOINT: u8 = 0x05;
pub const USB_DT_DEVICE_QUALIFIER: u8 = 0x06;
pub const USB_DT_OTHER_SPEED_CONFIG: u8 = 0x07;
pub const USB_DT_BOS: u8 = 0x0f;
pub const USB_DT_DEVICE_CAPABILITY: u8 = 0x10;
pub const USB_DT_SS_ENDPOINT_COMP: u8 = 0x30;

/// Device capability types in a BOS.
pub const USB_CAP_TYPE_EXT: u8 = 0x02;
pub const USB_SS_CAP_TYPE: u8 = 0x03;

/// The SETUP packet type is the daemon's own (one definition for both sides).
pub use vhost_device_udc::usb::SetupPacket;

/// A decoded eventq event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    BusReset {
        speed: u8,
    },
    Setup(SetupPacket),
    Suspend,
    Resume,
    Disconnect,
    Address(u32),
    EpHalt {
        ep: u8,
        halted: bool,
    },
    /// A type the spec does not define (the raw event).
    Unknown(VirtioUdcEvent),
}

impl From<&VirtioUdcEvent> for Event {
    fn from(e: &VirtioUdcEvent) -> Self {
        let value = u32::from(e.value);
        match u16::from(e.type_) {
            wire::VIRTIO_UDC_EVT_BUS_RESET => Event::BusReset { speed: value as u8 },
            wire::VIRTIO_UDC_EVT_SETUP => Event::Setup(SetupPacket::from_bytes(&e.setup)),
            wire::VIRTIO_UDC_EVT_SUSPEND => Event::Suspend,
            wire::VIRTIO_UDC_EVT_RESUME => Event::Resume,
            wire::VIRTIO_UDC_EVT_DISCONNECT => Event::Disconnect,
            wire::VIRTIO_UDC_EVT_ADDRESS => Event::Address(value),
            wire::VIRTIO_UDC_EVT_EP_HALT => Event::EpHalt {
                ep: e.ep,
                halted: value != 0,
            },
            _ => Event::Unknown(*e),
        }
    }
}

impl From<VirtioUdcEvent> for Event {
    fn from(e: VirtioUdcEvent) -> Self {
        Event::from(&e)
    }
}

/// A USB string descriptor for `s` (UTF-16LE), truncated to 126 code units.
pub fn string_descriptor(s: &str) -> Vec<u8> {
    let units: Vec<u16> = s.encode_utf16().take(126).collect();
    let mut d = vec![(2 + 2 * units.len()) as u8, USB_DT_STRING];
    for u in units {
        d.extend_from_slice(&u.to_le_bytes());
    }
    d
}

/// Human-readable speed name.
pub fn speed_name(speed: u8) -> &'static str {
    match speed {
        wire::VIRTIO_UDC_SPEED_LOW => "low",
        wire::VIRTIO_UDC_SPEED_FULL => "full",
        wire::VIRTIO_UDC_SPEED_HIGH => "high",
        wire::VIRTIO_UDC_SPEED_SUPER => "super",
        wire::VIRTIO_UDC_SPEED_SUPER_PLUS => "super-plus",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Le16, Le32};

    #[test]
    fn setup_packet_round_trip() {
        let b = [0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x40, 0x00];
        let s = SetupPacket::from_bytes(&b);
        assert!(s.is_in() && s.is_standard());
        assert_eq!(s.request, USB_REQ_GET_DESCRIPTOR);
        assert_eq!(s.descriptor_type(), USB_DT_DEVICE);
        assert_eq!(s.length, 64);
        assert_eq!(s.to_bytes(), b);
    }

    #[test]
    fn events_decode() {
        let e = VirtioUdcEvent {
            type_: Le16::from(wire::VIRTIO_UDC_EVT_EP_HALT),
            ep: 0x81,
            value: Le32::from(1),
            ..Default::default()
        };
        assert_eq!(
            Event::from(&e),
            Event::EpHalt {
                ep: 0x81,
                halted: true
            }
        );
        let e = VirtioUdcEvent {
            type_: Le16::from(99),
            ..Default::default()
        };
        assert!(matches!(Event::from(e), Event::Unknown(_)));
    }

    #[test]
    fn string_descriptors() {
        assert_eq!(string_descriptor("ab"), vec![6, 3, b'a', 0, b'b', 0]);
        assert_eq!(string_descriptor(&"x".repeat(300)).len(), 254);
    }
}
