// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The device descriptor (USB 2.0 table 9-8) and the bMaxPacketSize0 check
//! a host makes before it has the whole descriptor.

use serde::Serialize;

use super::error::{field, DescriptorError};
use super::read::le16;
use super::{Speed, DEVICE_DESC_SIZE, DT_DEVICE};

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
