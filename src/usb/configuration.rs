// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Configuration descriptors: the header, the walk that hands each
//! descriptor to its step (interface, endpoint, companion, association or
//! raw), and the checks made once the whole configuration is read. The
//! shape follows Linux's usb_parse_configuration in drivers/usb/core/config.c.

use std::collections::BTreeSet;

use serde::Serialize;

use super::endpoint::{parse_companion, parse_endpoint};
use super::error::{field, DescriptorError};
use super::interface::{check_alternate_settings, check_interface_numbers, parse_interface, Interface};
use super::read::{le16, need, split_descriptors, RawDescriptor};
use super::usbcore::{self, Action, Defect, DescriptorPolicy};
use super::*;

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
    /// What broke the rules and how the host took it, as usbcore would
    /// ([`DescriptorPolicy::Usbcore`]); empty in strict mode, which refuses.
    pub defects: Vec<Defect>,
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

/// Parses and validates a whole configuration (wTotalLength bytes) as it
/// would run at `speed`; the first rule broken is the error.
pub fn parse_configuration(bytes: &[u8], speed: Speed) -> Result<Configuration, DescriptorError> {
    parse_configuration_as(bytes, speed, DescriptorPolicy::Strict)
}

/// Parses a whole configuration as it would run at `speed`, taking what
/// breaks the rules as `policy` says: refused, or as usbcore takes it
/// (with [`Configuration::defects`]). What usbcore refuses too (a header
/// or descriptor lengths it cannot walk) is an error either way.
pub fn parse_configuration_as(
    bytes: &[u8],
    speed: Speed,
    policy: DescriptorPolicy,
) -> Result<Configuration, DescriptorError> {
    let (cfg, header_len) = parse_header(bytes)?;
    let ctx = format!("configuration {}", cfg.value);
    let descs = split_descriptors(&ctx, bytes, header_len, usize::from(cfg.total_length))?;
    let mut walk = ConfigurationWalk {
        ctx,
        speed,
        policy,
        cfg,
        declared_endpoints: Vec::new(),
        iad_offsets: Vec::new(),
        prev_type: DT_CONFIG,
    };
    for (offset, d) in descs {
        walk.add(offset, d)?;
    }
    walk.finish()
}

/// Reads the configuration descriptor's own 9 bytes and checks them against
/// what arrived; returns the configuration without its interfaces, and the
/// header's bLength, where the descriptors it contains start.
fn parse_header(bytes: &[u8]) -> Result<(Configuration, usize), DescriptorError> {
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
    let cfg = Configuration {
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
        defects: Vec::new(),
    };
    Ok((cfg, header_len))
}

/// The configuration as its descriptors are read in order: each goes to the
/// interface or endpoint it follows.
struct ConfigurationWalk {
    ctx: String,
    speed: Speed,
    policy: DescriptorPolicy,
    cfg: Configuration,
    /// bNumEndpoints of each entry of `cfg.interfaces`.
    declared_endpoints: Vec<u8>,
    /// Where each entry of `cfg.iads` was, for its error messages.
    iad_offsets: Vec<usize>,
    /// The previous descriptor's type: a companion must follow its endpoint.
    prev_type: u8,
}

impl ConfigurationWalk {
    /// Takes the descriptor `d` found at `offset`.
    fn add(&mut self, offset: usize, d: &[u8]) -> Result<(), DescriptorError> {
        let dtype = d[1];
        match dtype {
            DT_INTERFACE => {
                let (interface, declared) = parse_interface(&self.ctx, offset, d)?;
                self.declared_endpoints.push(declared);
                self.cfg.interfaces.push(interface);
            }
            DT_ENDPOINT => {
                let ep = parse_endpoint(&self.ctx, offset, d)?;
                let Some(iface) = self.cfg.interfaces.last_mut() else {
                    let why = "it comes before any interface descriptor";
                    return self.tolerate(offset, d, why, Action::Skipped);
                };
                iface.endpoints.push(ep);
            }
            // Below SuperSpeed a host ignores companions (Linux keeps them
            // as endpoint extras); they fall through to the raw case.
            DT_SS_ENDPOINT_COMP if self.speed.is_superspeed() => {
                let companion = parse_companion(&self.ctx, offset, d)?;
                let follows_endpoint = self.prev_type == DT_ENDPOINT;
                let ep = self
                    .cfg
                    .interfaces
                    .last_mut()
                    .and_then(|i| i.endpoints.last_mut())
                    .filter(|ep| follows_endpoint && ep.companion.is_none());
                let Some(ep) = ep else {
                    let why = "a SuperSpeed companion must directly follow its endpoint descriptor";
                    return self.tolerate(offset, d, why, Action::Accepted);
                };
                ep.companion = Some(companion);
            }
            DT_INTERFACE_ASSOCIATION => {
                need(&self.ctx, offset, d, IAD_DESC_SIZE)?;
                self.iad_offsets.push(offset);
                self.cfg.iads.push(Iad {
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
                let why = format!(
                    "a {} descriptor does not belong inside a configuration",
                    descriptor_type_label(dtype)
                );
                // usbcore skips a device or configuration descriptor there
                // and keeps the others as class-specific extras.
                let action = if matches!(dtype, DT_DEVICE | DT_CONFIG) {
                    Action::Skipped
                } else {
                    Action::Accepted
                };
                return self.tolerate(offset, d, &why, action);
            }
            _ => self.add_raw(offset, d),
        }
        self.prev_type = dtype;
        Ok(())
    }

    /// Keeps a descriptor this host does not interpret with the endpoint,
    /// interface or configuration it follows.
    fn add_raw(&mut self, offset: usize, d: &[u8]) {
        let raw = RawDescriptor {
            offset,
            descriptor_type: d[1],
            bytes: d.to_vec(),
        };
        match self.cfg.interfaces.last_mut() {
            Some(iface) => match iface.endpoints.last_mut() {
                Some(ep) => ep.extra.push(raw),
                None => iface.extra.push(raw),
            },
            None => self.cfg.extra.push(raw),
        }
    }

    /// A descriptor out of place: an error in strict mode; as usbcore, a
    /// defect, the descriptor left out or kept as an extra.
    fn tolerate(
        &mut self,
        offset: usize,
        d: &[u8],
        why: &str,
        action: Action,
    ) -> Result<(), DescriptorError> {
        let error = self.misplaced(offset, d[1], why);
        if self.policy == DescriptorPolicy::Strict {
            return Err(error);
        }
        self.cfg.defects.push(Defect {
            context: self.ctx.clone(),
            problem: format!(
                "{} descriptor at offset {offset}: {why}",
                descriptor_type_label(d[1])
            ),
            action: action.clone(),
        });
        if action != Action::Skipped {
            self.add_raw(offset, d);
        }
        self.prev_type = d[1];
        Ok(())
    }

    fn misplaced(&self, offset: usize, descriptor_type: u8, why: &str) -> DescriptorError {
        DescriptorError::Misplaced {
            context: self.ctx.clone(),
            offset,
            descriptor_type,
            why: why.to_string(),
        }
    }

    /// The checks that need the whole configuration: alternate settings and
    /// their endpoints, interface numbers, then interface associations.
    fn finish(mut self) -> Result<Configuration, DescriptorError> {
        let ctx = &self.ctx;
        if self.policy == DescriptorPolicy::Strict {
            let seen =
                check_alternate_settings(ctx, &self.cfg.interfaces, &self.declared_endpoints, self.speed)?;
            let numbers = check_interface_numbers(ctx, self.cfg.num_interfaces, &seen)?;
            check_associations(ctx, &self.cfg.iads, &self.iad_offsets, &numbers)?;
            return Ok(self.cfg);
        }
        let mut defects = std::mem::take(&mut self.cfg.defects);
        usbcore::fix_interfaces(
            ctx,
            &mut self.cfg.interfaces,
            &self.declared_endpoints,
            self.cfg.num_interfaces,
            self.speed,
            &mut usbcore::Defects { list: &mut defects },
        );
        // usbcore keeps interface associations as they are; a driver that
        // reads a bad one copes or fails on its own.
        let numbers = self.cfg.interfaces.iter().map(|i| i.number).collect();
        if let Err(e) = check_associations(ctx, &self.cfg.iads, &self.iad_offsets, &numbers) {
            let problem = e.to_string();
            let problem = problem
                .strip_prefix(&format!("{ctx}: "))
                .unwrap_or(&problem)
                .to_string();
            defects.push(Defect {
                context: ctx.clone(),
                problem,
                action: Action::Accepted,
            });
        }
        self.cfg.defects = defects;
        Ok(self.cfg)
    }
}

/// Each interface association groups at least one interface, and only
/// interfaces that exist.
fn check_associations(
    ctx: &str,
    iads: &[Iad],
    offsets: &[usize],
    numbers: &BTreeSet<u8>,
) -> Result<(), DescriptorError> {
    for (iad, offset) in iads.iter().zip(offsets) {
        let what = format!(
            "interface association at offset {offset} (bFirstInterface {}, bInterfaceCount {})",
            iad.first_interface, iad.interface_count
        );
        if iad.interface_count == 0 {
            return Err(DescriptorError::Invalid {
                context: ctx.to_string(),
                problem: format!("{what} groups no interface"),
            });
        }
        let first = u16::from(iad.first_interface);
        let last = first + u16::from(iad.interface_count);
        if let Some(n) = (first..last).find(|&n| n > 255 || !numbers.contains(&(n as u8))) {
            return Err(DescriptorError::Invalid {
                context: ctx.to_string(),
                problem: format!("{what} names interface {n}, which does not exist"),
            });
        }
    }
    Ok(())
}
