// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The binary device object store and its device capabilities.

use serde::Serialize;

use super::error::field;
use super::error::DescriptorError;
use super::read::{le16, need, split_descriptors};
use super::*;

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
