// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Endpoint descriptors and their SuperSpeed companions: the fields, and the
//! step of the configuration walk that reads them (Linux's
//! usb_parse_endpoint and usb_parse_ss_endpoint_companion). The rules they
//! must follow are in `rules`.

use serde::Serialize;

use super::error::DescriptorError;
use super::read::{le16, need, RawDescriptor};
use super::{DIR_IN, ENDPOINT_DESC_SIZE, SS_EP_COMP_DESC_SIZE};

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

/// Reads the endpoint descriptor `d` found at `offset` of configuration
/// `ctx`; which interface it belongs to is the caller's business.
pub(super) fn parse_endpoint(ctx: &str, offset: usize, d: &[u8]) -> Result<Endpoint, DescriptorError> {
    need(ctx, offset, d, ENDPOINT_DESC_SIZE)?;
    let w = le16(d, 4);
    Ok(Endpoint {
        address: d[2],
        attributes: d[3],
        w_max_packet_size: w,
        max_packet_size: w & 0x07ff,
        mult: ((w >> 11) & 3) as u8,
        interval: d[6],
        companion: None,
        extra: Vec::new(),
    })
}

/// Reads the SuperSpeed companion descriptor `d` found at `offset`.
pub(super) fn parse_companion(ctx: &str, offset: usize, d: &[u8]) -> Result<SsCompanion, DescriptorError> {
    need(ctx, offset, d, SS_EP_COMP_DESC_SIZE)?;
    Ok(SsCompanion {
        max_burst: d[2],
        attributes: d[3],
        bytes_per_interval: le16(d, 4),
    })
}
