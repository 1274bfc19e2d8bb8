// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! What a descriptor can get wrong, said so that the log line alone is enough
//! to fix it.

use std::fmt;

use serde::Serialize;
use thiserror::Error;

use super::{descriptor_type_label as dt_name, transfer_type_name, Speed};

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

/// "s" unless there is exactly one.
pub(super) fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// A field with a value the specification forbids.
pub(super) fn field(
    context: &str,
    name: &str,
    value: impl fmt::Display,
    problem: impl Into<String>,
) -> DescriptorError {
    DescriptorError::Field {
        context: context.to_string(),
        field: name.to_string(),
        value: value.to_string(),
        problem: problem.into(),
    }
}
