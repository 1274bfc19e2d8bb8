// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The USB descriptor parsers and the enumeration procedure. A gadget in the
//! guest writes every byte they read, so none of it may panic the daemon.
//!
//! Input: one byte of mode and speed, then either the descriptor bytes
//! (every parser runs on them) or, for the enumeration, the gadget's
//! answers to the host's control transfers in the order they are asked.

use vhost_device_udc::enumerate::{enumerate, ControlError, ControlPipe};
use vhost_device_udc::usb::{
    check_max_packet_size0, parse_bos, parse_configuration, parse_configuration_as, parse_device_descriptor,
    parse_langids, parse_string_descriptor, Configuration, DescriptorPolicy, SetupPacket, Speed,
};

use crate::Input;

pub const SPEEDS: [Speed; 5] = [
    Speed::Low,
    Speed::Full,
    Speed::High,
    Speed::Super,
    Speed::SuperPlus,
];

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let head = input.u8();
    let speed = SPEEDS[usize::from(head & 7) % SPEEDS.len()];
    if head & 0x80 == 0 {
        parse_all(input.rest(), speed);
    } else {
        let policy = if head & 0x20 != 0 {
            DescriptorPolicy::Strict
        } else {
            DescriptorPolicy::Usbcore
        };
        enumerate_scripted(&mut input, speed, head & 0x40 != 0, policy);
    }
}

/// Every parser over the same bytes, and what the daemon does with their
/// results (the log line of an error, the JSON of the control socket).
fn parse_all(bytes: &[u8], speed: Speed) {
    match parse_device_descriptor(bytes) {
        Ok(d) => {
            let _ = d.validate(speed).map_err(|e| e.to_string());
            let _ = d.ep0_max_packet(speed);
            let _ = d.string_indices();
        }
        Err(e) => drop(e.to_string()),
    }
    let strict = parse_configuration(bytes, speed);
    match &strict {
        Ok(c) => {
            // What parsing accepted describes itself consistently.
            assert!(usize::from(c.total_length) <= bytes.len());
            let _ = c.string_indices();
            for i in &c.interfaces {
                assert!(c.interface(i.number, i.alternate).is_some());
            }
            let _ = serde_json::to_string(&c).expect("a configuration serializes");
        }
        Err(e) => drop(e.to_string()),
    }
    match parse_configuration_as(bytes, speed, DescriptorPolicy::Usbcore) {
        Ok(c) => usbcore_leaves_it_usable(&c, speed),
        Err(e) => assert!(strict.is_err(), "usbcore refuses what strict takes: {e}"),
    }
    match parse_bos(bytes) {
        Ok(b) => {
            let _ = b.validate(speed).map_err(|e| e.to_string());
            let _ = serde_json::to_string(&b).expect("a BOS serializes");
        }
        Err(e) => drop(e.to_string()),
    }
    let _ = parse_string_descriptor(bytes).map_err(|e| e.to_string());
    let _ = parse_langids(bytes).map_err(|e| e.to_string());
    if let Some(&b) = bytes.first() {
        let _ = check_max_packet_size0(b, speed).map_err(|e| e.to_string());
    }
}

/// What usbcore's fix-ups leave is something a host can drive: no
/// endpoint zero, no reserved address bits, no address twice in one
/// alternate setting (nor one alternate setting twice), a companion for
/// every endpoint at SuperSpeed, and each defect said.
fn usbcore_leaves_it_usable(c: &Configuration, speed: Speed) {
    let mut alts = std::collections::BTreeSet::new();
    for i in &c.interfaces {
        assert!(alts.insert((i.number, i.alternate)), "alternate setting twice");
        let mut addresses = std::collections::BTreeSet::new();
        for ep in &i.endpoints {
            assert_ne!(ep.number(), 0, "endpoint zero kept");
            assert_eq!(ep.address & 0x70, 0, "reserved address bits kept");
            assert!(addresses.insert(ep.address), "address {:#04x} twice", ep.address);
            assert!(!speed.is_superspeed() || ep.companion.is_some(), "no companion");
        }
    }
    for d in &c.defects {
        assert!(!d.to_string().is_empty());
    }
    let _ = serde_json::to_string(c).expect("a configuration serializes");
}

/// A gadget that answers each control transfer from the input: a byte says
/// how (data, stall, timeout), then the data. The controller never lets
/// more than wLength bytes through, so neither does this pipe.
struct ScriptedGadget<'a, 'b> {
    input: &'b mut Input<'a>,
}

impl ScriptedGadget<'_, '_> {
    /// How the next transfer ends; for data, whether its length is two
    /// bytes (a configuration may be longer than 255).
    fn outcome(&mut self) -> Result<bool, ControlError> {
        if self.input.is_empty() {
            // The gadget went away: enumeration must end, not loop.
            return Err(ControlError::Shutdown);
        }
        let b = self.input.u8();
        match b % 8 {
            0 => Err(ControlError::Stall),
            1 => Err(ControlError::Timeout),
            _ => Ok(b & 0x80 != 0),
        }
    }
}

impl ControlPipe for ScriptedGadget<'_, '_> {
    fn control_in(&mut self, setup: SetupPacket) -> Result<Vec<u8>, ControlError> {
        let data = if self.outcome()? {
            self.input.long_bytes()
        } else {
            self.input.short_bytes()
        };
        Ok(data[..data.len().min(usize::from(setup.length))].to_vec())
    }

    fn control_out(&mut self, _setup: SetupPacket, _data: &[u8]) -> Result<(), ControlError> {
        self.outcome().map(|_| ())
    }
}

/// Returns whether the gadget enumerated.
fn enumerate_scripted(input: &mut Input, speed: Speed, bad_address: bool, policy: DescriptorPolicy) -> bool {
    let address = if bad_address { input.u8() } else { 1 };
    let set_address_fails = input.one_in(16);
    let mut pipe = ScriptedGadget { input };
    let mut set_address = |_a: u8| {
        if set_address_fails {
            Err(ControlError::Stall)
        } else {
            Ok(())
        }
    };
    match enumerate(&mut pipe, speed, address, policy, &mut set_address) {
        Ok(e) => {
            assert!((1..=127).contains(&e.address));
            let _ = serde_json::to_string(&e).expect("an enumeration serializes");
            true
        }
        Err(e) => {
            let text = e.to_string();
            if cfg!(test) {
                eprintln!("enumeration failed: {text}");
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The enumeration seeds are gadgets that enumerate, so the fuzzer
    /// starts from the whole procedure, not its first step.
    #[test]
    fn enumeration_seeds_enumerate() {
        let seeds = crate::seeds::for_target("descriptors");
        let mut n = 0;
        for (name, bytes) in seeds.iter().filter(|(n, _)| n.starts_with("enumerate")) {
            // Good descriptors enumerate under either policy.
            for policy in [DescriptorPolicy::Strict, DescriptorPolicy::Usbcore] {
                let mut input = Input::new(bytes);
                let head = input.u8();
                let speed = SPEEDS[usize::from(head & 7)];
                assert!(
                    enumerate_scripted(&mut input, speed, false, policy),
                    "seed {name} did not enumerate ({policy:?})"
                );
            }
            n += 1;
        }
        assert!(n >= 5);
    }
}
