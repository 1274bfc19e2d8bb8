// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! String descriptors: UTF-16LE strings and string 0's language IDs.

use super::error::{field, DescriptorError};
use super::DT_STRING;

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
