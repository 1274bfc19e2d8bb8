// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Decoded events and the chapter 9 numbers the fake driver and gadget need.

use vhost_device_udc::wire::{self, VirtioUdcEvent};

/// Chapter 9's numbers and the setup packet: one definition for the daemon,
/// this fake driver and the guest tool.
pub use udc_ch9::{descriptor::*, request::*, SetupPacket};

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
    let mut d = vec![(2 + 2 * units.len()) as u8, DT_STRING];
    for u in units {
        d.extend_from_slice(&u.to_le_bytes());
    }
    d
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
        assert_eq!(s.request, REQ_GET_DESCRIPTOR);
        assert_eq!(s.descriptor_type(), DT_DEVICE);
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
