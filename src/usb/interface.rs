// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Interface descriptors: one alternate setting each. The step of the
//! configuration walk that reads them, and the checks made once all are
//! read (Linux's usb_parse_interface and the interface half of
//! usb_parse_configuration).

use std::collections::BTreeSet;

use serde::Serialize;

use super::endpoint::Endpoint;
use super::error::DescriptorError;
use super::read::{need, RawDescriptor};
use super::rules::validate_endpoint;
use super::{Speed, INTERFACE_DESC_SIZE};

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

/// Reads the interface descriptor `d` found at `offset` of configuration
/// `ctx`; returns it without endpoints, and its bNumEndpoints, which the
/// endpoint descriptors that follow must match.
pub(super) fn parse_interface(
    ctx: &str,
    offset: usize,
    d: &[u8],
) -> Result<(Interface, u8), DescriptorError> {
    need(ctx, offset, d, INTERFACE_DESC_SIZE)?;
    let interface = Interface {
        number: d[2],
        alternate: d[3],
        class: d[5],
        subclass: d[6],
        protocol: d[7],
        string_index: d[8],
        endpoints: Vec::new(),
        extra: Vec::new(),
    };
    Ok((interface, d[4]))
}

/// Checks each alternate setting in descriptor order: no (interface,
/// alternate) pair twice, bNumEndpoints matching its endpoints, each
/// endpoint following the rules at `speed`, no endpoint address twice.
/// `declared_endpoints[i]` is bNumEndpoints of `interfaces[i]`. Returns the
/// (interface, alternate) pairs seen.
pub(super) fn check_alternate_settings(
    ctx: &str,
    interfaces: &[Interface],
    declared_endpoints: &[u8],
    speed: Speed,
) -> Result<BTreeSet<(u8, u8)>, DescriptorError> {
    let mut seen = BTreeSet::new();
    for (iface, &declared) in interfaces.iter().zip(declared_endpoints) {
        if !seen.insert((iface.number, iface.alternate)) {
            return Err(DescriptorError::DuplicateInterface {
                context: ctx.to_string(),
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
    Ok(seen)
}

/// Checks the interface numbers against bNumInterfaces and that each has
/// the alternate setting 0 a host selects first; returns the numbers.
pub(super) fn check_interface_numbers(
    ctx: &str,
    num_interfaces: u8,
    seen: &BTreeSet<(u8, u8)>,
) -> Result<BTreeSet<u8>, DescriptorError> {
    let numbers: BTreeSet<u8> = seen.iter().map(|&(number, _)| number).collect();
    if numbers.len() != usize::from(num_interfaces) {
        return Err(DescriptorError::InterfaceCount {
            context: ctx.to_string(),
            declared: num_interfaces,
            found: numbers.len(),
        });
    }
    if let Some(&number) = numbers.iter().find(|&&n| !seen.contains(&(n, 0))) {
        return Err(DescriptorError::NoDefaultAlternate {
            context: ctx.to_string(),
            number,
        });
    }
    Ok(numbers)
}
