// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Reading descriptor bytes: little-endian fields and the walk along
//! bLength that splits a configuration or BOS into descriptors.

use serde::Serialize;

use super::error::DescriptorError;

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

/// The little-endian u16 at `at`; the caller has checked the length.
pub(super) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
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
pub(super) fn split_descriptors<'a>(
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

/// Checks that descriptor `d` at `offset` has at least its type's `min` bytes.
pub(super) fn need(ctx: &str, offset: usize, d: &[u8], min: usize) -> Result<(), DescriptorError> {
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
