// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The host's enumeration procedure, independent of how control transfers
//! reach the device.
//!
//! It follows what Linux's hub driver and USB core do after a port reset
//! (docs/virtio-udc.md section 10), so that a gadget that enumerates here
//! meets the same requests, in the same order, as on a real Linux host; and
//! it validates every descriptor (see [`crate::usb`]) so that a gadget that
//! enumerates here has descriptors a strict host accepts. Each step is logged
//! and kept in [`Enumerated::log`], because "which request did the gadget
//! get wrong" is the first question when it does not enumerate.

use std::collections::{BTreeMap, BTreeSet};

use log::{info, warn};
use serde::Serialize;
use thiserror::Error;

use crate::usb::{
    self, check_max_packet_size0, parse_bos, parse_configuration_as, parse_device_descriptor, parse_langids,
    parse_string_descriptor, Bos, Configuration, DescriptorError, DescriptorPolicy, DeviceDescriptor,
    SetupPacket, Speed,
};

/// How a control transfer failed, as the host controller reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Error)]
pub enum ControlError {
    /// The device refused the request (a protocol stall on ep0).
    #[error("STALL")]
    Stall,
    /// A stage did not complete within the host's control timeout.
    #[error("timed out")]
    Timeout,
    /// The device went away (disconnect, reset, backend shutdown).
    #[error("the device is gone (shutdown)")]
    Shutdown,
    /// Anything else the transport reports.
    #[error("{0}")]
    Other(String),
}

/// The default control pipe of the device being enumerated. Implemented by
/// the host thread over the device model and by test fakes, so that the
/// procedure itself is testable without a guest.
pub trait ControlPipe {
    /// Runs a control transfer with an IN data stage of at most
    /// `setup.length` bytes and returns the data.
    fn control_in(&mut self, setup: SetupPacket) -> Result<Vec<u8>, ControlError>;
    /// Runs a control transfer with an OUT data stage (or none, if `data`
    /// is empty).
    fn control_out(&mut self, setup: SetupPacket, data: &[u8]) -> Result<(), ControlError>;
}

/// What the host learned about the device, kept for the control socket's
/// "descriptors" and "status" answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Enumerated {
    pub speed: Speed,
    pub address: u8,
    pub device: DeviceDescriptor,
    pub configurations: Vec<Configuration>,
    /// bConfigurationValue selected with SET_CONFIGURATION.
    pub active_configuration: u8,
    pub langids: Vec<u16>,
    /// Strings read in the first language, by index.
    pub strings: BTreeMap<u8, String>,
    /// Referenced string indices the device stalled (or that could not be
    /// read for lack of language IDs); hosts tolerate these.
    pub missing_strings: Vec<u8>,
    /// Present when bcdUSB is 0x0201 or later.
    pub bos: Option<Bos>,
    /// One line per step, in order.
    pub log: Vec<String>,
}

/// Why enumeration failed; the message names the step and the request.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum EnumError {
    /// A control transfer failed (stall, timeout, disconnect).
    #[error("{step}: {request} failed: {source}")]
    Control {
        step: String,
        request: SetupPacket,
        source: ControlError,
    },
    /// The device answered, but with a malformed descriptor.
    #[error("{step}: {source}")]
    Descriptor { step: String, source: DescriptorError },
    /// The device sent more data than wLength allows.
    #[error("{step}: {request}: the device sent {got} bytes, more than the {} asked for", .request.length)]
    Overrun {
        step: String,
        request: SetupPacket,
        got: usize,
    },
    /// The host was asked to assign an address USB does not have.
    #[error("address {0} is not a USB device address (1 to 127)")]
    BadAddress(u8),
}

/// What string descriptors a host asks for in one read; Linux asks for 255.
const STRING_READ_LENGTH: u16 = 255;
/// The first device descriptor read, as Linux's "new scheme" does it.
const FIRST_DEVICE_READ_LENGTH: u16 = 64;

struct Run<'a> {
    pipe: &'a mut dyn ControlPipe,
    log: Vec<String>,
    /// The descriptor defects met so far (also when a later step fails).
    defects: Vec<String>,
}

impl Run<'_> {
    fn note(&mut self, msg: String) {
        info!("enumerate: {msg}");
        self.log.push(msg);
    }

    fn control_in(&mut self, step: &str, setup: SetupPacket) -> Result<Vec<u8>, EnumError> {
        match self.pipe.control_in(setup) {
            Ok(data) if data.len() > usize::from(setup.length) => Err(EnumError::Overrun {
                step: step.into(),
                request: setup,
                got: data.len(),
            }),
            Ok(data) => Ok(data),
            Err(source) => {
                self.note(format!("{setup}: {source}"));
                Err(EnumError::Control {
                    step: step.into(),
                    request: setup,
                    source,
                })
            }
        }
    }
}

fn descriptor_error(step: &str) -> impl FnOnce(DescriptorError) -> EnumError + '_ {
    move |source| EnumError::Descriptor {
        step: step.into(),
        source,
    }
}

fn bcd(v: u16) -> String {
    let minor = if v & 0xf != 0 {
        format!("{:x}{:x}", (v >> 4) & 0xf, v & 0xf)
    } else {
        format!("{:x}", (v >> 4) & 0xf)
    };
    format!("{:x}.{minor}", v >> 8)
}

fn describe_configuration(c: &Configuration) -> Vec<String> {
    let mut lines = vec![format!(
        "configuration {}: {} interface{}, {} bytes, bmAttributes {:#04x}, bMaxPower {}",
        c.value,
        c.num_interfaces,
        if c.num_interfaces == 1 { "" } else { "s" },
        c.total_length,
        c.attributes,
        c.max_power
    )];
    for i in &c.interfaces {
        let eps: Vec<String> = i
            .endpoints
            .iter()
            .map(|e| {
                format!(
                    "{:#04x} {} {}",
                    e.address,
                    usb::transfer_type_name(e.transfer_type()),
                    e.max_packet_size
                )
            })
            .collect();
        lines.push(format!(
            "configuration {}: interface {} alt {}: class {:#04x}/{:#04x}/{:#04x}, endpoints [{}]",
            c.value,
            i.number,
            i.alternate,
            i.class,
            i.subclass,
            i.protocol,
            eps.join(", ")
        ));
    }
    lines
}

/// The strings a device named, as read.
struct StringsRead {
    langids: Vec<u16>,
    strings: BTreeMap<u8, String>,
    missing: Vec<u8>,
}

/// The stages of an enumeration, in the order [`enumerate`] runs them.
impl Run<'_> {
    /// The start of the device descriptor at address 0, mostly for
    /// bMaxPacketSize0; a device may answer with only 8 (or 18) bytes.
    fn read_first_device_descriptor(&mut self, speed: Speed) -> Result<(), EnumError> {
        let step = "reading the device descriptor at address 0";
        let setup = SetupPacket::get_descriptor(usb::DT_DEVICE, 0, 0, FIRST_DEVICE_READ_LENGTH);
        let first = self.control_in(step, setup)?;
        let check_first = || -> Result<(), DescriptorError> {
            let context = "device descriptor".to_string();
            if first.len() >= 2 && first[1] != usb::DT_DEVICE {
                return Err(DescriptorError::WrongType {
                    context,
                    expected: usb::DT_DEVICE,
                    found: first[1],
                });
            }
            if first.len() < 8 {
                return Err(DescriptorError::Truncated {
                    context,
                    need: 8,
                    have: first.len(),
                });
            }
            check_max_packet_size0(first[7], speed)
        };
        check_first().map_err(descriptor_error(step))?;
        self.note(format!(
            "{setup}: {} bytes, bMaxPacketSize0 {}",
            first.len(),
            first[7]
        ));
        Ok(())
    }

    /// SET_ADDRESS, answered by the controller.
    fn assign_address(
        &mut self,
        address: u8,
        set_address: &mut dyn FnMut(u8) -> Result<(), ControlError>,
    ) -> Result<(), EnumError> {
        let step = format!("assigning address {address}");
        if let Err(source) = set_address(address) {
            let request = SetupPacket::set_address(address);
            self.note(format!("{request}: {source}"));
            return Err(EnumError::Control {
                step,
                request,
                source,
            });
        }
        self.note(format!("{}: ok", SetupPacket::set_address(address)));
        Ok(())
    }

    /// The whole device descriptor at the new address.
    fn read_device_descriptor(&mut self, speed: Speed) -> Result<DeviceDescriptor, EnumError> {
        let step = "reading the device descriptor";
        let setup = SetupPacket::get_descriptor(usb::DT_DEVICE, 0, 0, usb::DEVICE_DESC_SIZE as u16);
        let bytes = self.control_in(step, setup)?;
        let device = parse_device_descriptor(&bytes).map_err(descriptor_error(step))?;
        device.validate(speed).map_err(descriptor_error(step))?;
        self.note(format!(
            "{setup}: {:04x}:{:04x}, USB {}, device {}, class {:#04x}/{:#04x}/{:#04x}, {} configuration{}",
            device.id_vendor,
            device.id_product,
            bcd(device.bcd_usb),
            bcd(device.bcd_device),
            device.device_class,
            device.device_subclass,
            device.device_protocol,
            device.num_configurations,
            if device.num_configurations == 1 { "" } else { "s" }
        ));
        Ok(device)
    }

    /// The BOS, which USB 2.0 LPM and USB 3 devices must have.
    fn read_bos(&mut self, device: &DeviceDescriptor, speed: Speed) -> Result<Option<Bos>, EnumError> {
        if device.bcd_usb < 0x0201 {
            return Ok(None);
        }
        let step = format!(
            "reading the BOS descriptor (bcdUSB {:#06x} promises one)",
            device.bcd_usb
        );
        let setup = SetupPacket::get_descriptor(usb::DT_BOS, 0, 0, usb::BOS_DESC_SIZE as u16);
        let head = self.control_in(&step, setup)?;
        let total = match head.as_slice() {
            [_, t, ..] if *t != usb::DT_BOS => parse_bos(&head).map(|_| 0),
            [_, _, lo, hi, _, ..] => Ok(u16::from_le_bytes([*lo, *hi])),
            _ => Err(DescriptorError::Truncated {
                context: "BOS".into(),
                need: usb::BOS_DESC_SIZE,
                have: head.len(),
            }),
        }
        .map_err(descriptor_error(&step))?;
        let full = if usize::from(total) > head.len() {
            self.control_in(&step, SetupPacket::get_descriptor(usb::DT_BOS, 0, 0, total))?
        } else {
            head
        };
        let bos = parse_bos(&full).map_err(descriptor_error(&step))?;
        bos.validate(speed).map_err(descriptor_error(&step))?;
        let types: Vec<String> = bos
            .capabilities
            .iter()
            .map(|c| format!("{:#04x}", c.cap_type))
            .collect();
        self.note(format!(
            "{}: {} capabilities [{}]",
            SetupPacket::get_descriptor(usb::DT_BOS, 0, 0, total),
            bos.capabilities.len(),
            types.join(", ")
        ));
        Ok(Some(bos))
    }

    /// Each configuration: the 9-byte header for wTotalLength, then all.
    fn read_configurations(
        &mut self,
        count: u8,
        speed: Speed,
        policy: DescriptorPolicy,
    ) -> Result<Vec<Configuration>, EnumError> {
        let mut configurations: Vec<Configuration> = Vec::new();
        for index in 0..count {
            let step = format!("reading configuration index {index}");
            let setup = SetupPacket::get_descriptor(usb::DT_CONFIG, index, 0, usb::CONFIG_DESC_SIZE as u16);
            let head = self.control_in(&step, setup)?;
            let full = if head.len() >= usb::CONFIG_DESC_SIZE && head[1] == usb::DT_CONFIG {
                let total = u16::from_le_bytes([head[2], head[3]]);
                if usize::from(total) >= usb::CONFIG_DESC_SIZE {
                    self.note(format!("{setup}: wTotalLength {total}"));
                    self.control_in(
                        &step,
                        SetupPacket::get_descriptor(usb::DT_CONFIG, index, 0, total),
                    )?
                } else {
                    head
                }
            } else {
                head
            };
            let config = parse_configuration_as(&full, speed, policy).map_err(descriptor_error(&step))?;
            for d in &config.defects {
                // As usbcore's notice in the kernel log: the device works,
                // but a stricter host or another OS may refuse it.
                warn!("enumerate: descriptor defect: {d}");
                self.log.push(format!("descriptor defect: {d}"));
                self.defects.push(d.to_string());
            }
            if let Some(j) = configurations.iter().position(|c| c.value == config.value) {
                return Err(EnumError::Descriptor {
                    step,
                    source: DescriptorError::Invalid {
                        context: format!("configuration {}", config.value),
                        problem: format!(
                            "bConfigurationValue {} is also that of configuration index {j}",
                            config.value
                        ),
                    },
                });
            }
            for line in describe_configuration(&config) {
                self.note(line);
            }
            configurations.push(config);
        }
        Ok(configurations)
    }

    /// Strings: language IDs, then every index the descriptors name.
    fn read_strings(
        &mut self,
        device: &DeviceDescriptor,
        configurations: &[Configuration],
    ) -> Result<StringsRead, EnumError> {
        let mut wanted: BTreeSet<u8> = device.string_indices().into_iter().collect();
        for c in configurations {
            wanted.extend(c.string_indices());
        }
        let mut langids = Vec::new();
        let mut strings = BTreeMap::new();
        let mut missing_strings = Vec::new();
        if wanted.is_empty() {
            self.note("no string descriptors referenced".into());
        } else {
            let step = "reading the language IDs (string 0)";
            let setup = SetupPacket::get_descriptor(usb::DT_STRING, 0, 0, STRING_READ_LENGTH);
            match self.control_in(step, setup) {
                Ok(bytes) => {
                    langids = parse_langids(&bytes).map_err(descriptor_error(step))?;
                    let ids: Vec<String> = langids.iter().map(|l| format!("{l:#06x}")).collect();
                    self.note(format!("{setup}: languages [{}]", ids.join(", ")));
                }
                Err(EnumError::Control {
                    source: ControlError::Stall,
                    ..
                }) => {
                    warn!("enumerate: the device stalled the language IDs; its strings are missing");
                }
                Err(e) => return Err(e),
            }
            match langids.first().copied() {
                None => {
                    self.note(format!(
                        "no language IDs: strings {:?} recorded as missing",
                        wanted.iter().collect::<Vec<_>>()
                    ));
                    missing_strings.extend(wanted.iter().copied());
                }
                Some(lang) => {
                    for &index in &wanted {
                        let step = format!("reading string {index}");
                        let setup =
                            SetupPacket::get_descriptor(usb::DT_STRING, index, lang, STRING_READ_LENGTH);
                        match self.control_in(&step, setup) {
                            Ok(bytes) => {
                                let s = parse_string_descriptor(&bytes).map_err(descriptor_error(&step))?;
                                self.note(format!("{setup}: {s:?}"));
                                strings.insert(index, s);
                            }
                            Err(EnumError::Control {
                                source: ControlError::Stall,
                                ..
                            }) => {
                                warn!("enumerate: string {index} stalled; recorded as missing");
                                self.log.push(format!("string {index} recorded as missing"));
                                missing_strings.push(index);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
        }
        Ok(StringsRead {
            langids,
            strings,
            missing: missing_strings,
        })
    }

    /// SET_CONFIGURATION with the first configuration, as Linux does for a
    /// device without a more specific driver preference.
    fn select_configuration(&mut self, value: u8) -> Result<(), EnumError> {
        let setup = SetupPacket::set_configuration(value);
        let step = format!("selecting configuration {value}");
        if let Err(source) = self.pipe.control_out(setup, &[]) {
            self.note(format!("{setup}: {source}"));
            return Err(EnumError::Control {
                step,
                request: setup,
                source,
            });
        }
        self.note(format!("{setup}: ok, configured"));
        Ok(())
    }
}

/// Enumerates the device that was just reset at `speed`, as a host does on
/// plug-in: it ends with the first configuration selected. `set_address`
/// carries SET_ADDRESS separately because the controller, not the gadget,
/// answers it, and the transport may need to switch addresses around it.
pub fn enumerate(
    pipe: &mut dyn ControlPipe,
    speed: Speed,
    address: u8,
    policy: DescriptorPolicy,
    set_address: &mut dyn FnMut(u8) -> Result<(), ControlError>,
) -> Result<Enumerated, EnumError> {
    enumerate_noting_defects(pipe, speed, address, policy, set_address, &mut Vec::new())
}

/// As [`enumerate`], and the descriptor defects it met go to `defects`
/// whether it succeeds or a later step fails (a device whose defect the
/// host took may still fail SET_CONFIGURATION over it).
pub fn enumerate_noting_defects(
    pipe: &mut dyn ControlPipe,
    speed: Speed,
    address: u8,
    policy: DescriptorPolicy,
    set_address: &mut dyn FnMut(u8) -> Result<(), ControlError>,
    defects: &mut Vec<String>,
) -> Result<Enumerated, EnumError> {
    if !(1..=127).contains(&address) {
        return Err(EnumError::BadAddress(address));
    }
    let mut run = Run {
        pipe,
        log: Vec::new(),
        defects: Vec::new(),
    };
    let result = run_steps(&mut run, speed, address, policy, set_address);
    *defects = std::mem::take(&mut run.defects);
    result
}

fn run_steps(
    run: &mut Run<'_>,
    speed: Speed,
    address: u8,
    policy: DescriptorPolicy,
    set_address: &mut dyn FnMut(u8) -> Result<(), ControlError>,
) -> Result<Enumerated, EnumError> {
    run.note(format!("bus reset at {speed}"));

    run.read_first_device_descriptor(speed)?;
    run.assign_address(address, set_address)?;
    let device = run.read_device_descriptor(speed)?;
    let bos = run.read_bos(&device, speed)?;
    let configurations = run.read_configurations(device.num_configurations, speed, policy)?;
    let StringsRead {
        langids,
        strings,
        missing: missing_strings,
    } = run.read_strings(&device, &configurations)?;
    let value = configurations[0].value;
    run.select_configuration(value)?;

    Ok(Enumerated {
        speed,
        address,
        device,
        configurations,
        active_configuration: value,
        langids,
        strings,
        missing_strings,
        bos,
        log: std::mem::take(&mut run.log),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usb::fixtures::*;
    use crate::usb::{DT_BOS, DT_CONFIG, DT_DEVICE, DT_STRING, REQ_GET_DESCRIPTOR, REQ_SET_CONFIGURATION};

    /// A gadget answering GET_DESCRIPTOR from byte arrays, as a Linux
    /// composite gadget does; it records every request.
    struct FakeGadget {
        device: Vec<u8>,
        configs: Vec<Vec<u8>>,
        bos: Option<Vec<u8>>,
        /// Index 0 is the language ID list.
        strings: BTreeMap<u8, Vec<u8>>,
        /// wValues (type << 8 | index) answered with a stall.
        stall: BTreeSet<u16>,
        /// wValues that never get an answer.
        timeout: BTreeSet<u16>,
        /// Most bytes of the device descriptor sent by the next read only
        /// (a device that sends one 8-byte packet, as some full-speed
        /// devices do).
        short_device_read: Option<usize>,
        requests: Vec<SetupPacket>,
        configured: Option<u8>,
    }

    impl FakeGadget {
        fn ffs(speed: Speed) -> FakeGadget {
            let mut strings = BTreeMap::new();
            strings.insert(0, langids(&[0x0409]));
            strings.insert(1, string("Example Corp"));
            strings.insert(2, string("FunctionFS gadget"));
            strings.insert(3, string("0123456789"));
            strings.insert(4, string("vendor interface"));
            FakeGadget {
                device: ffs_device(speed),
                configs: vec![ffs_config(speed)],
                bos: (speed >= Speed::High).then(bos),
                strings,
                stall: BTreeSet::new(),
                timeout: BTreeSet::new(),
                short_device_read: None,
                requests: Vec::new(),
                configured: None,
            }
        }

        fn requests(&self) -> Vec<String> {
            self.requests.iter().map(|s| s.to_string()).collect()
        }
    }

    impl ControlPipe for FakeGadget {
        fn control_in(&mut self, setup: SetupPacket) -> Result<Vec<u8>, ControlError> {
            self.requests.push(setup);
            if self.stall.contains(&setup.value) {
                return Err(ControlError::Stall);
            }
            if self.timeout.contains(&setup.value) {
                return Err(ControlError::Timeout);
            }
            if setup.request_type != 0x80 || setup.request != REQ_GET_DESCRIPTOR {
                return Err(ControlError::Stall);
            }
            let index = setup.value as u8;
            let data = match (setup.value >> 8) as u8 {
                DT_DEVICE => {
                    let limit = self.short_device_read.take().unwrap_or(usize::MAX);
                    let n = self.device.len().min(limit);
                    Some(self.device[..n].to_vec())
                }
                DT_CONFIG => self.configs.get(usize::from(index)).cloned(),
                DT_BOS => self.bos.clone(),
                DT_STRING => {
                    if index != 0 && setup.index != 0x0409 {
                        None
                    } else {
                        self.strings.get(&index).cloned()
                    }
                }
                _ => None,
            };
            let mut data = data.ok_or(ControlError::Stall)?;
            data.truncate(usize::from(setup.length));
            Ok(data)
        }

        fn control_out(&mut self, setup: SetupPacket, data: &[u8]) -> Result<(), ControlError> {
            self.requests.push(setup);
            assert!(data.is_empty());
            if setup.request == REQ_SET_CONFIGURATION && setup.request_type == 0 {
                self.configured = Some(setup.value as u8);
                Ok(())
            } else {
                Err(ControlError::Stall)
            }
        }
    }

    fn run(g: &mut FakeGadget, speed: Speed) -> (Result<Enumerated, EnumError>, Vec<u8>) {
        let mut addresses = Vec::new();
        let r = enumerate(g, speed, 5, DescriptorPolicy::Strict, &mut |a| {
            addresses.push(a);
            Ok(())
        });
        (r, addresses)
    }

    fn wvalue(dtype: u8, index: u8) -> u16 {
        (u16::from(dtype) << 8) | u16::from(index)
    }

    #[test]
    fn enumerates_ffs_gadget_at_full_speed() {
        let mut g = FakeGadget::ffs(Speed::Full);
        let (r, addresses) = run(&mut g, Speed::Full);
        let e = r.unwrap();
        assert_eq!(addresses, vec![5]);
        assert_eq!(
            g.requests(),
            vec![
                "GET_DESCRIPTOR(DEVICE #0, 64 bytes)",
                "GET_DESCRIPTOR(DEVICE #0, 18 bytes)",
                "GET_DESCRIPTOR(CONFIG #0, 9 bytes)",
                "GET_DESCRIPTOR(CONFIG #0, 32 bytes)",
                "GET_DESCRIPTOR(STRING #0, 255 bytes)",
                "GET_DESCRIPTOR(STRING #1, lang 0x0409, 255 bytes)",
                "GET_DESCRIPTOR(STRING #2, lang 0x0409, 255 bytes)",
                "GET_DESCRIPTOR(STRING #3, lang 0x0409, 255 bytes)",
                "GET_DESCRIPTOR(STRING #4, lang 0x0409, 255 bytes)",
                "SET_CONFIGURATION(1)",
            ]
        );
        assert_eq!(g.configured, Some(1));
        assert_eq!(e.speed, Speed::Full);
        assert_eq!(e.address, 5);
        assert_eq!((e.device.id_vendor, e.device.id_product), (0x1d6b, 0x0105));
        assert_eq!(e.active_configuration, 1);
        assert_eq!(e.bos, None);
        assert_eq!(e.langids, vec![0x0409]);
        assert_eq!(e.strings[&2], "FunctionFS gadget");
        assert_eq!(e.strings[&4], "vendor interface");
        assert!(e.missing_strings.is_empty());
        assert_eq!(e.configurations[0].interfaces[0].endpoints[0].max_packet_size, 64);
        assert!(e.log.iter().any(|l| l == "SET_ADDRESS(5): ok"));
        assert!(e.log.last().unwrap().contains("SET_CONFIGURATION(1): ok"));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["speed"], "full");
        assert_eq!(json["strings"]["1"], "Example Corp");
    }

    #[test]
    fn enumerates_ffs_gadget_at_high_speed_with_bos() {
        let mut g = FakeGadget::ffs(Speed::High);
        let e = run(&mut g, Speed::High).0.unwrap();
        let r = g.requests();
        assert_eq!(r[2], "GET_DESCRIPTOR(BOS #0, 5 bytes)");
        assert_eq!(r[3], "GET_DESCRIPTOR(BOS #0, 22 bytes)");
        assert_eq!(r[4], "GET_DESCRIPTOR(CONFIG #0, 9 bytes)");
        assert_eq!(r[5], "GET_DESCRIPTOR(CONFIG #0, 32 bytes)");
        assert_eq!(e.bos.as_ref().unwrap().capabilities.len(), 2);
        assert_eq!(
            e.configurations[0].interfaces[0].endpoints[1].max_packet_size,
            512
        );
        assert_eq!(e.strings.len(), 4);
        assert_eq!(g.configured, Some(1));
    }

    #[test]
    fn enumerates_ffs_gadget_at_super_speed() {
        let mut g = FakeGadget::ffs(Speed::Super);
        let e = run(&mut g, Speed::Super).0.unwrap();
        assert_eq!(e.device.max_packet_size0, 9);
        assert_eq!(e.device.ep0_max_packet(Speed::Super), 512);
        assert!(e.bos.unwrap().capability(usb::CAP_SUPERSPEED_USB).is_some());
        let ep = &e.configurations[0].interfaces[0].endpoints[0];
        assert_eq!(ep.max_packet_size, 1024);
        assert_eq!(ep.companion.as_ref().unwrap().max_burst, 15);
        assert!(g
            .requests()
            .contains(&"GET_DESCRIPTOR(CONFIG #0, 44 bytes)".to_string()));
        assert_eq!(g.configured, Some(1));
    }

    #[test]
    fn enumerates_acm_function_with_iad_strings() {
        let mut g = FakeGadget::ffs(Speed::Full);
        g.configs = vec![acm_config()];
        for (i, s) in [(5, "CDC ACM"), (6, "CDC control"), (7, "CDC data")] {
            g.strings.insert(i, string(s));
        }
        let e = run(&mut g, Speed::Full).0.unwrap();
        assert_eq!(e.active_configuration, 2);
        assert_eq!(g.configured, Some(2));
        assert_eq!(e.strings[&5], "CDC ACM");
        assert_eq!(
            e.strings.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 3, 5, 6, 7]
        );
        assert_eq!(e.configurations[0].iads.len(), 1);
    }

    #[test]
    fn accepts_a_short_first_device_descriptor_read() {
        let mut g = FakeGadget::ffs(Speed::High);
        g.short_device_read = Some(8);
        let e = enumerate(&mut g, Speed::High, 3, DescriptorPolicy::Strict, &mut |_| Ok(())).unwrap();
        assert_eq!(e.address, 3);
        assert_eq!(
            e.log[1],
            "GET_DESCRIPTOR(DEVICE #0, 64 bytes): 8 bytes, bMaxPacketSize0 64"
        );
    }

    #[test]
    fn stall_on_device_descriptor_fails_before_set_address() {
        let mut g = FakeGadget::ffs(Speed::High);
        g.stall.insert(wvalue(DT_DEVICE, 0));
        let (r, addresses) = run(&mut g, Speed::High);
        let err = r.unwrap_err();
        assert_eq!(
            err.to_string(),
            "reading the device descriptor at address 0: GET_DESCRIPTOR(DEVICE #0, 64 bytes) failed: STALL"
        );
        assert!(matches!(
            err,
            EnumError::Control {
                source: ControlError::Stall,
                ..
            }
        ));
        assert!(addresses.is_empty());
        assert_eq!(g.configured, None);
    }

    #[test]
    fn wrong_ep0_size_fails_before_set_address() {
        let mut g = FakeGadget::ffs(Speed::High);
        let (r, addresses) = run(&mut g, Speed::Super);
        assert_eq!(
            r.unwrap_err().to_string(),
            "reading the device descriptor at address 0: device descriptor: bMaxPacketSize0 64 is wrong for SuperSpeed (must be 9, meaning 512)"
        );
        assert!(addresses.is_empty());
    }

    #[test]
    fn set_address_failure_names_the_request() {
        let mut g = FakeGadget::ffs(Speed::High);
        let r = enumerate(&mut g, Speed::High, 9, DescriptorPolicy::Strict, &mut |_| {
            Err(ControlError::Timeout)
        });
        assert_eq!(
            r.unwrap_err().to_string(),
            "assigning address 9: SET_ADDRESS(9) failed: timed out"
        );
        assert_eq!(
            enumerate(&mut g, Speed::High, 0, DescriptorPolicy::Strict, &mut |_| Ok(())).unwrap_err(),
            EnumError::BadAddress(0)
        );
    }

    #[test]
    fn malformed_config_fails_naming_the_problem() {
        // High-speed descriptors served at SuperSpeed: a classic gadget bug.
        let mut g = FakeGadget::ffs(Speed::Super);
        g.configs = vec![ffs_config(Speed::High)];
        let err = run(&mut g, Speed::Super).0.unwrap_err();
        assert_eq!(
            err.to_string(),
            "reading configuration index 0: configuration 1: interface 0 alt 0: endpoint 0x81 (bulk): wMaxPacketSize 512 is under 1024: bulk at SuperSpeed must be exactly 1024"
        );
        let EnumError::Descriptor { step, source } = err else {
            panic!("not a descriptor error: {err:?}");
        };
        assert_eq!(step, "reading configuration index 0");
        assert!(matches!(
            source,
            DescriptorError::MaxPacketSize { address: 0x81, .. }
        ));
        assert_eq!(g.configured, None);
    }

    #[test]
    fn config_with_too_small_total_length_fails() {
        let mut g = FakeGadget::ffs(Speed::High);
        g.configs[0][2] = 25; // wTotalLength covers only the first endpoint
        let err = run(&mut g, Speed::High).0.unwrap_err();
        assert_eq!(
            err.to_string(),
            "reading configuration index 0: configuration 1: interface 0 alt 0: bNumEndpoints 2 but 1 endpoint descriptor found"
        );
        assert!(g
            .requests()
            .contains(&"GET_DESCRIPTOR(CONFIG #0, 25 bytes)".to_string()));
    }

    #[test]
    fn timeout_on_config_names_the_request() {
        let mut g = FakeGadget::ffs(Speed::High);
        g.timeout.insert(wvalue(DT_CONFIG, 0));
        assert_eq!(
            run(&mut g, Speed::High).0.unwrap_err().to_string(),
            "reading configuration index 0: GET_DESCRIPTOR(CONFIG #0, 9 bytes) failed: timed out"
        );
    }

    #[test]
    fn string_stalls_are_tolerated() {
        let mut g = FakeGadget::ffs(Speed::High);
        g.stall.insert(wvalue(DT_STRING, 3));
        g.strings.remove(&4); // unanswerable: the fake stalls it too
        let e = run(&mut g, Speed::High).0.unwrap();
        assert_eq!(e.strings.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(e.missing_strings, vec![3, 4]);
        assert!(e.log.iter().any(|l| l == "string 3 recorded as missing"));
        assert_eq!(g.configured, Some(1));
    }

    #[test]
    fn langid_stall_leaves_all_strings_missing() {
        let mut g = FakeGadget::ffs(Speed::High);
        g.stall.insert(wvalue(DT_STRING, 0));
        let e = run(&mut g, Speed::High).0.unwrap();
        assert!(e.strings.is_empty());
        assert_eq!(e.missing_strings, vec![1, 2, 3, 4]);
        assert!(!g.requests().iter().any(|r| r.contains("STRING #1")));
        assert_eq!(g.configured, Some(1));
    }

    #[test]
    fn string_timeout_and_malformed_string_fail() {
        let mut g = FakeGadget::ffs(Speed::High);
        g.timeout.insert(wvalue(DT_STRING, 2));
        assert_eq!(
            run(&mut g, Speed::High).0.unwrap_err().to_string(),
            "reading string 2: GET_DESCRIPTOR(STRING #2, lang 0x0409, 255 bytes) failed: timed out"
        );
        let mut g = FakeGadget::ffs(Speed::High);
        g.strings.insert(2, vec![5, DT_STRING, b'a', 0, b'b']);
        assert!(run(&mut g, Speed::High)
            .0
            .unwrap_err()
            .to_string()
            .starts_with("reading string 2: string descriptor: bLength 5: odd"));
    }

    #[test]
    fn no_strings_referenced_reads_none() {
        let mut g = FakeGadget::ffs(Speed::Full);
        g.device[14..17].copy_from_slice(&[0, 0, 0]);
        g.configs[0][17] = 0; // iInterface
        let e = run(&mut g, Speed::Full).0.unwrap();
        assert!(e.strings.is_empty() && e.missing_strings.is_empty());
        assert!(!g.requests().iter().any(|r| r.contains("STRING")));
    }

    #[test]
    fn bos_stall_fails_when_bcd_usb_promises_one() {
        let mut g = FakeGadget::ffs(Speed::High);
        g.bos = None;
        assert_eq!(
            run(&mut g, Speed::High).0.unwrap_err().to_string(),
            "reading the BOS descriptor (bcdUSB 0x0210 promises one): GET_DESCRIPTOR(BOS #0, 5 bytes) failed: STALL"
        );
    }

    #[test]
    fn superspeed_bos_without_superspeed_capability_fails() {
        let mut g = FakeGadget::ffs(Speed::Super);
        let mut lpm_only = bos()[..12].to_vec();
        lpm_only[2] = 12;
        lpm_only[4] = 1;
        g.bos = Some(lpm_only);
        assert!(run(&mut g, Speed::Super)
            .0
            .unwrap_err()
            .to_string()
            .contains("BOS: no SuperSpeed USB device capability"));
    }

    #[test]
    fn overlong_answer_fails() {
        struct Chatty;
        impl ControlPipe for Chatty {
            fn control_in(&mut self, _: SetupPacket) -> Result<Vec<u8>, ControlError> {
                Ok(vec![0; 100])
            }
            fn control_out(&mut self, _: SetupPacket, _: &[u8]) -> Result<(), ControlError> {
                Ok(())
            }
        }
        assert_eq!(
            enumerate(&mut Chatty, Speed::High, 1, DescriptorPolicy::Strict, &mut |_| Ok(())).unwrap_err().to_string(),
            "reading the device descriptor at address 0: GET_DESCRIPTOR(DEVICE #0, 64 bytes): the device sent 100 bytes, more than the 64 asked for"
        );
    }

    #[test]
    fn set_configuration_stall_fails() {
        struct NoConfig(FakeGadget);
        impl ControlPipe for NoConfig {
            fn control_in(&mut self, setup: SetupPacket) -> Result<Vec<u8>, ControlError> {
                self.0.control_in(setup)
            }
            fn control_out(&mut self, _: SetupPacket, _: &[u8]) -> Result<(), ControlError> {
                Err(ControlError::Stall)
            }
        }
        let mut p = NoConfig(FakeGadget::ffs(Speed::High));
        assert_eq!(
            enumerate(&mut p, Speed::High, 1, DescriptorPolicy::Strict, &mut |_| Ok(()))
                .unwrap_err()
                .to_string(),
            "selecting configuration 1: SET_CONFIGURATION(1) failed: STALL"
        );
    }
}
