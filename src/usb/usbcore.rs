// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! What Linux's usbcore does with a configuration that breaks the rules
//! (drivers/usb/core/config.c: usb_parse_configuration, usb_parse_interface,
//! usb_parse_endpoint, usb_parse_ss_endpoint_companion), check by check:
//! skip the endpoint or alternate setting, change a field, or accept it,
//! each time with a notice in the kernel log. The host model does the same
//! by default ([`DescriptorPolicy::Usbcore`]), so that a gadget a Linux host
//! takes is taken here too, and records each notice as a [`Defect`];
//! `--strict-descriptors` refuses the device instead (`rules`).
//!
//! The table of checks, with usbcore's behaviour beside each, is in
//! docs/descriptor-checks.md.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use super::endpoint::{Endpoint, SsCompanion};
use super::interface::Interface;
use super::*;

/// How the host model treats a configuration that breaks the rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DescriptorPolicy {
    /// As Linux's usbcore: fix up or skip what it fixes up or skips,
    /// accept the rest, and record a [`Defect`] for each.
    #[default]
    Usbcore,
    /// Refuse the device at the first rule broken, naming it.
    Strict,
}

impl std::str::FromStr for DescriptorPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "usbcore" => Ok(DescriptorPolicy::Usbcore),
            "strict" => Ok(DescriptorPolicy::Strict),
            _ => Err(format!(
                "{s:?}: say usbcore (take descriptors as Linux does) or strict (refuse)"
            )),
        }
    }
}

/// What the host did about a defect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The descriptor (endpoint, alternate setting) is left out.
    Skipped,
    /// A field was changed: to this.
    Changed(String),
    /// Used as it is; usbcore only logs it.
    Accepted,
}

/// A rule a configuration broke that the host, as usbcore, tolerated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Defect {
    /// Where: "configuration 1: interface 0 alt 0: endpoint 0x81 (bulk)".
    pub context: String,
    /// What is wrong, in the words of the field: "wMaxPacketSize 0".
    pub problem: String,
    pub action: Action,
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: ", self.context, self.problem)?;
        match &self.action {
            Action::Skipped => write!(f, "skipped"),
            Action::Changed(to) => write!(f, "changed to {to}"),
            Action::Accepted => write!(f, "accepted"),
        }
    }
}

/// Collects the defects of one configuration.
pub(super) struct Defects<'a> {
    pub list: &'a mut Vec<Defect>,
}

impl Defects<'_> {
    pub fn push(&mut self, context: &str, problem: impl Into<String>, action: Action) {
        self.list.push(Defect {
            context: context.to_string(),
            problem: problem.into(),
            action,
        });
    }
}

/// The largest wMaxPacketSize usbcore lets stand, by transfer type
/// (control, isochronous, bulk, interrupt) and speed; above it, it clamps.
fn maxpacket_max(tt: u8, speed: Speed) -> u16 {
    let table: [u16; 4] = match speed {
        Speed::Low => [8, 0, 0, 8],
        Speed::Full => [64, 1023, 64, 64],
        Speed::High => [64, 1024, 1024, 1024],
        Speed::Super | Speed::SuperPlus => [512, 1024, 1024, 1024],
    };
    table[usize::from(tt & 3)]
}

/// The position of the highest set bit, counting from 1 (the kernel's fls).
fn fls(x: u32) -> u8 {
    (32 - x.leading_zeros()) as u8
}

/// The alternate settings of a configuration as usbcore keeps them:
/// duplicates of an (interface, alternate) pair skipped, endpoints fixed up
/// or skipped, with a defect for each and for counts that disagree with
/// their declarations. `declared[i]` is bNumEndpoints of `interfaces[i]`.
pub(super) fn fix_interfaces(
    ctx: &str,
    interfaces: &mut Vec<Interface>,
    declared: &[u8],
    num_interfaces: u8,
    speed: Speed,
    defects: &mut Defects,
) {
    // Interface numbers and alternate counts, over every interface
    // descriptor (usbcore counts them before it parses any).
    let numbers: BTreeSet<u8> = interfaces.iter().map(|i| i.number).collect();
    if numbers.len() != usize::from(num_interfaces) {
        defects.push(
            ctx,
            format!(
                "{} interface{} where bNumInterfaces says {num_interfaces}",
                numbers.len(),
                if numbers.len() == 1 { "" } else { "s" }
            ),
            Action::Accepted,
        );
    }
    for n in 0..numbers.len() {
        if !numbers.contains(&(n as u8)) {
            defects.push(ctx, format!("no interface number {n}"), Action::Accepted);
        }
    }
    let mut kept: Vec<Interface> = Vec::new();
    for (mut iface, &declared) in std::mem::take(interfaces).into_iter().zip(declared) {
        let ictx = format!("{ctx}: interface {} alt {}", iface.number, iface.alternate);
        if kept
            .iter()
            .any(|k| k.number == iface.number && k.alternate == iface.alternate)
        {
            defects.push(
                &ictx,
                "a second descriptor for this alternate setting",
                Action::Skipped,
            );
            continue;
        }
        let found = iface.endpoints.len();
        let mut endpoints = Vec::new();
        for ep in std::mem::take(&mut iface.endpoints) {
            if let Some(ep) = fix_endpoint(&ictx, ep, declared, &iface, &kept, &endpoints, speed, defects) {
                endpoints.push(ep);
            }
        }
        if found != usize::from(declared) {
            defects.push(
                &ictx,
                format!("{found} endpoint descriptors where bNumEndpoints says {declared}"),
                Action::Accepted,
            );
        }
        iface.endpoints = endpoints;
        kept.push(iface);
    }
    for n in &numbers {
        let alts: BTreeSet<u8> = kept
            .iter()
            .filter(|i| i.number == *n)
            .map(|i| i.alternate)
            .collect();
        for a in 0..alts.len() {
            if !alts.contains(&(a as u8)) {
                defects.push(
                    ctx,
                    format!("interface {n} has no alternate setting {a}"),
                    Action::Accepted,
                );
            }
        }
    }
    *interfaces = kept;
}

/// Endpoint `ep` of alternate setting `iface` (which declares `declared`
/// endpoints), as usb_parse_endpoint leaves it; `None` when it skips it.
/// `kept` are the alternate settings before this one, `so_far` this one's
/// endpoints kept so far.
#[allow(clippy::too_many_arguments)]
fn fix_endpoint(
    ictx: &str,
    mut ep: Endpoint,
    declared: u8,
    iface: &Interface,
    kept: &[Interface],
    so_far: &[Endpoint],
    speed: Speed,
    defects: &mut Defects,
) -> Option<Endpoint> {
    let ectx = format!(
        "{ictx}: endpoint {:#04x} ({})",
        ep.address,
        transfer_type_name(ep.transfer_type())
    );
    if ep.number() == 0 {
        defects.push(&ectx, "an endpoint descriptor for endpoint zero", Action::Skipped);
        return None;
    }
    // Room for as many as bNumEndpoints: later ones are left out.
    if so_far.len() >= usize::from(declared) {
        defects.push(
            &ectx,
            format!("more endpoint descriptors than bNumEndpoints {declared}"),
            Action::Skipped,
        );
        return None;
    }
    let address = ep.address & (DIR_IN | 0x0f);
    if address != ep.address {
        defects.push(
            &ectx,
            format!("bEndpointAddress {:#04x} has reserved bits 6..4 set", ep.address),
            Action::Changed(format!("{address:#04x}")),
        );
        ep.address = address;
    }
    // The same address in this alternate setting, or in any setting of
    // another interface (alternates of one interface may share them); a
    // control endpoint takes its number in both directions.
    let clash = |other: &Endpoint| {
        other.address == ep.address
            || ((other.transfer_type() == TRANSFER_CONTROL || ep.transfer_type() == TRANSFER_CONTROL)
                && other.number() == ep.number())
    };
    let elsewhere = kept
        .iter()
        .filter(|k| k.number != iface.number)
        .flat_map(|k| &k.endpoints);
    if so_far.iter().chain(elsewhere).any(clash) {
        defects.push(
            &ectx,
            "the address of an endpoint already in use",
            Action::Skipped,
        );
        return None;
    }
    fix_interval(&ectx, &mut ep, speed, defects);
    if speed == Speed::Low && ep.transfer_type() == TRANSFER_BULK {
        let mps = ep.max_packet_size.min(8);
        defects.push(
            &ectx,
            "a bulk endpoint at low speed",
            Action::Changed(format!("interrupt, bInterval 1, wMaxPacketSize {mps}")),
        );
        ep.attributes = TRANSFER_INTERRUPT;
        ep.interval = 1;
        set_max_packet(&mut ep, mps, 0);
    }
    let tt = ep.transfer_type();
    if ep.w_max_packet_size == 0 && !(tt == TRANSFER_ISOCHRONOUS && iface.alternate == 0) {
        defects.push(
            &ectx,
            "wMaxPacketSize 0 (the gadget side refuses to enable such an endpoint)",
            Action::Accepted,
        );
    }
    // Extra transactions per microframe are read only for high-speed
    // periodic endpoints; anywhere else those bits make the size too big.
    let periodic = matches!(tt, TRANSFER_INTERRUPT | TRANSFER_ISOCHRONOUS);
    let (mult_bits, maxp) = if speed == Speed::High && periodic {
        (ep.w_max_packet_size & 0x1800, ep.w_max_packet_size & !0x1800)
    } else {
        (0, ep.w_max_packet_size)
    };
    let max = maxpacket_max(tt, speed);
    let maxp = if maxp > max {
        defects.push(
            &ectx,
            format!(
                "wMaxPacketSize {:#06x} is over {max}, the most usbcore takes for it at {speed}",
                ep.w_max_packet_size
            ),
            Action::Changed(max.to_string()),
        );
        set_max_packet(&mut ep, max, mult_bits);
        max
    } else {
        maxp
    };
    if speed == Speed::High && tt == TRANSFER_BULK && maxp != 512 {
        defects.push(
            &ectx,
            format!("wMaxPacketSize {maxp}: bulk at high speed must be 512"),
            Action::Accepted,
        );
    }
    if speed.is_superspeed() {
        fix_companion(&ectx, &mut ep, defects);
    }
    Some(ep)
}

/// Sets wMaxPacketSize to `mps` with `mult_bits` (bits 12..11) kept.
fn set_max_packet(ep: &mut Endpoint, mps: u16, mult_bits: u16) {
    ep.w_max_packet_size = mult_bits | mps;
    ep.max_packet_size = mps & 0x07ff;
    ep.mult = (mult_bits >> 11) as u8;
}

/// bInterval outside usbcore's range for the type and speed becomes its
/// guess: a full-speed value in frames read as high-speed, or 8 or 10 ms.
fn fix_interval(ectx: &str, ep: &mut Endpoint, speed: Speed, defects: &mut Defects) {
    let interval = ep.interval;
    let (min, max, guess) = match (ep.transfer_type(), speed) {
        (TRANSFER_INTERRUPT, Speed::High | Speed::Super | Speed::SuperPlus) => {
            let n = fls(u32::from(interval) * 8);
            (1, 16, if n == 0 { 7 } else { n })
        }
        (TRANSFER_INTERRUPT, _) => (1, 255, 10),
        (TRANSFER_ISOCHRONOUS, Speed::High) => (1, 16, 7),
        (TRANSFER_ISOCHRONOUS, _) => (1, 16, 4),
        _ => return,
    };
    if interval < min || interval > max {
        defects.push(
            ectx,
            format!("bInterval {interval} is outside {min}..={max}"),
            Action::Changed(guess.to_string()),
        );
        ep.interval = guess;
    }
}

/// The SuperSpeed companion as usb_parse_ss_endpoint_companion leaves it:
/// the minimum values when there is none, each field out of range set to
/// the nearest one allowed.
fn fix_companion(ectx: &str, ep: &mut Endpoint, defects: &mut Defects) {
    let tt = ep.transfer_type();
    let periodic = matches!(tt, TRANSFER_INTERRUPT | TRANSFER_ISOCHRONOUS);
    let Some(arrived) = ep.companion.clone() else {
        let bytes_per_interval = if periodic { ep.w_max_packet_size } else { 0 };
        defects.push(
            ectx,
            "no SuperSpeed companion descriptor",
            Action::Changed(format!(
                "bMaxBurst 0, bmAttributes 0, wBytesPerInterval {bytes_per_interval}"
            )),
        );
        ep.companion = Some(SsCompanion {
            max_burst: 0,
            attributes: 0,
            bytes_per_interval,
        });
        return;
    };
    let mut c = arrived.clone();
    if tt == TRANSFER_CONTROL && c.max_burst != 0 {
        defects.push(
            ectx,
            format!("bMaxBurst {} on a control endpoint", c.max_burst),
            Action::Changed("0".into()),
        );
        c.max_burst = 0;
    } else if c.max_burst > 15 {
        defects.push(
            ectx,
            format!("bMaxBurst {} is over 15", c.max_burst),
            Action::Changed("15".into()),
        );
        c.max_burst = 15;
    }
    let ssp_iso = tt == TRANSFER_ISOCHRONOUS && c.attributes & 0x80 != 0;
    if matches!(tt, TRANSFER_CONTROL | TRANSFER_INTERRUPT) && c.attributes != 0 {
        defects.push(
            ectx,
            format!(
                "companion bmAttributes {:#04x} must be 0 for {}",
                c.attributes,
                transfer_type_name(tt)
            ),
            Action::Changed("0".into()),
        );
        c.attributes = 0;
    } else if tt == TRANSFER_BULK && c.attributes > 16 {
        defects.push(
            ectx,
            format!(
                "companion bmAttributes {:#04x}: more than 2^16 streams",
                c.attributes
            ),
            Action::Changed("16".into()),
        );
        c.attributes = 16;
    } else if tt == TRANSFER_ISOCHRONOUS && !ssp_iso && c.attributes & 3 == 3 {
        defects.push(
            ectx,
            format!("companion bmAttributes {:#04x}: Mult 3 is reserved", c.attributes),
            Action::Changed("2".into()),
        );
        c.attributes = 2;
    }
    // usbcore computes the limit from the companion as it arrived, not as
    // it fixed it.
    let maxp = u32::from(ep.max_packet_size);
    let burst = u32::from(arrived.max_burst) + 1;
    let max_tx = match tt {
        TRANSFER_ISOCHRONOUS => burst * (u32::from(arrived.attributes & 3) + 1) * maxp,
        TRANSFER_INTERRUPT => maxp * burst,
        _ => 999_999,
    };
    let bpi = u32::from(c.bytes_per_interval);
    if bpi > max_tx || (tt == TRANSFER_INTERRUPT && ep.is_in() && bpi < maxp) {
        defects.push(
            ectx,
            format!(
                "wBytesPerInterval {bpi} does not fit wMaxPacketSize {maxp} and bMaxBurst {}",
                arrived.max_burst
            ),
            Action::Changed(max_tx.to_string()),
        );
        c.bytes_per_interval = max_tx.min(u32::from(u16::MAX)) as u16;
    }
    ep.companion = Some(c);
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    /// One interface (0, alt 0) holding `eps`, as usbcore would take it.
    fn usbcore(speed: Speed, eps: &[Vec<u8>]) -> Configuration {
        let neps = eps.iter().filter(|e| e[1] == DT_ENDPOINT).count() as u8;
        let mut body = interface(0, 0, neps, [0xff, 0, 0], 0);
        for e in eps {
            body.extend(e);
        }
        parse_configuration_as(&config(1, 1, 0, &body), speed, DescriptorPolicy::Usbcore).unwrap()
    }

    fn defects(c: &Configuration) -> Vec<String> {
        c.defects.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn maxpacket_is_clamped_to_usbcore_s_table_and_zero_is_kept() {
        let c = usbcore(Speed::Full, &[endpoint(0x81, 2, 0, 0), endpoint(0x02, 2, 512, 0)]);
        let eps = &c.interfaces[0].endpoints;
        assert_eq!((eps[0].max_packet_size, eps[1].max_packet_size), (0, 64));
        assert_eq!(
            defects(&c),
            [
                "configuration 1: interface 0 alt 0: endpoint 0x81 (bulk): wMaxPacketSize 0 (the gadget side refuses to enable such an endpoint): accepted",
                "configuration 1: interface 0 alt 0: endpoint 0x02 (bulk): wMaxPacketSize 0x0200 is over 64, the most usbcore takes for it at full speed: changed to 64",
            ]
        );
        // A high-speed interrupt endpoint keeps its extra transactions.
        let c = usbcore(Speed::High, &[endpoint(0x81, 3, 0x1000 | 1100, 4)]);
        let ep = &c.interfaces[0].endpoints[0];
        assert_eq!(
            (ep.mult, ep.max_packet_size, ep.w_max_packet_size),
            (2, 1024, 0x1400)
        );
        // Bulk at SuperSpeed under 1024 is no notice for usbcore.
        assert!(
            usbcore(Speed::Super, &[endpoint(0x81, 2, 512, 0), companion(0, 0, 0)])
                .defects
                .is_empty()
        );
    }

    #[test]
    fn b_interval_out_of_range_becomes_usbcore_s_guess() {
        // A full-speed period (32 frames) in a high-speed interrupt
        // endpoint: read as 32 ms, 2^(9-1) microframes.
        let c = usbcore(
            Speed::High,
            &[endpoint(0x81, 3, 64, 32), endpoint(0x82, 3, 64, 0)],
        );
        let eps = &c.interfaces[0].endpoints;
        assert_eq!((eps[0].interval, eps[1].interval), (9, 7));
        let c = usbcore(
            Speed::Full,
            &[endpoint(0x81, 3, 64, 0), endpoint(0x82, 1, 64, 17)],
        );
        let eps = &c.interfaces[0].endpoints;
        assert_eq!((eps[0].interval, eps[1].interval), (10, 4));
        assert!(defects(&c)[1].ends_with("bInterval 17 is outside 1..=16: changed to 4"));
    }

    #[test]
    fn endpoint_zero_extra_and_duplicate_endpoints_are_skipped() {
        let mut body = interface(0, 0, 2, [0xff, 0, 0], 0);
        for e in [
            endpoint(0x80, 2, 64, 0),
            endpoint(0x81, 2, 64, 0),
            endpoint(0x81, 2, 64, 0),
            endpoint(0x92, 2, 64, 0),
            endpoint(0x83, 2, 64, 0),
        ] {
            body.extend(e);
        }
        body.extend(interface(1, 0, 1, [0xff, 0, 0], 0));
        body.extend(endpoint(0x81, 2, 64, 0));
        let c =
            parse_configuration_as(&config(1, 2, 0, &body), Speed::Full, DescriptorPolicy::Usbcore).unwrap();
        let addrs: Vec<Vec<u8>> = c
            .interfaces
            .iter()
            .map(|i| i.endpoints.iter().map(|e| e.address).collect())
            .collect();
        // bNumEndpoints 2: room for two kept ones (0x81, and 0x92 as
        // 0x82), none for 0x83; the second interface may not reuse 0x81.
        assert_eq!(addrs, [vec![0x81, 0x82], vec![]]);
        let want = [
            "interface 0 alt 0: endpoint 0x80 (bulk): an endpoint descriptor for endpoint zero: skipped",
            "interface 0 alt 0: endpoint 0x81 (bulk): the address of an endpoint already in use: skipped",
            "interface 0 alt 0: endpoint 0x92 (bulk): bEndpointAddress 0x92 has reserved bits 6..4 set: changed to 0x82",
            "interface 0 alt 0: endpoint 0x83 (bulk): more endpoint descriptors than bNumEndpoints 2: skipped",
            "interface 0 alt 0: 5 endpoint descriptors where bNumEndpoints says 2: accepted",
            "interface 1 alt 0: endpoint 0x81 (bulk): the address of an endpoint already in use: skipped",
        ];
        let d = defects(&c);
        assert_eq!(d.len(), want.len(), "{d:?}");
        for (d, w) in d.iter().zip(want) {
            assert_eq!(d.strip_prefix("configuration 1: "), Some(w));
        }
        // Strict mode refuses the same bytes.
        assert!(
            parse_configuration_as(&config(1, 2, 0, &body), Speed::Full, DescriptorPolicy::Strict).is_err()
        );
    }

    #[test]
    fn low_speed_bulk_becomes_interrupt_and_reserved_address_bits_are_cleared() {
        let c = usbcore(Speed::Low, &[endpoint(0xa1, 2, 64, 0)]);
        let ep = &c.interfaces[0].endpoints[0];
        assert_eq!(
            (ep.address, ep.transfer_type(), ep.interval, ep.max_packet_size),
            (0x81, TRANSFER_INTERRUPT, 1, 8)
        );
        let d = defects(&c);
        assert!(
            d[0].ends_with("bEndpointAddress 0xa1 has reserved bits 6..4 set: changed to 0x81"),
            "{d:?}"
        );
        assert!(
            d[1].ends_with(
                "a bulk endpoint at low speed: changed to interrupt, bInterval 1, wMaxPacketSize 8"
            ),
            "{d:?}"
        );
    }

    #[test]
    fn companions_get_usbcore_s_minimum_or_nearest_values() {
        let c = usbcore(
            Speed::Super,
            &[
                endpoint(0x81, 3, 1024, 4),
                endpoint(0x02, 2, 1024, 0),
                companion(20, 17, 0),
                endpoint(0x83, 3, 1024, 4),
                companion(1, 0, 9000),
            ],
        );
        let cs: Vec<SsCompanion> = c.interfaces[0]
            .endpoints
            .iter()
            .map(|e| e.companion.clone().unwrap())
            .collect();
        assert_eq!(
            (cs[0].max_burst, cs[0].bytes_per_interval),
            (0, 1024),
            "none: the minimum values"
        );
        assert_eq!((cs[1].max_burst, cs[1].attributes), (15, 16));
        assert_eq!(
            cs[2].bytes_per_interval, 2048,
            "interrupt: wMaxPacketSize x (bMaxBurst + 1)"
        );
        assert_eq!(c.defects.len(), 4, "{:?}", defects(&c));
    }

    #[test]
    fn a_second_descriptor_for_an_alternate_setting_is_skipped() {
        let mut body = interface(0, 0, 1, [0xff, 0, 0], 0);
        body.extend(endpoint(0x81, 2, 64, 0));
        body.extend(interface(0, 0, 1, [0xfe, 0, 0], 0));
        body.extend(endpoint(0x82, 2, 64, 0));
        body.extend(interface(0, 2, 0, [0xff, 0, 0], 0));
        let c =
            parse_configuration_as(&config(1, 1, 0, &body), Speed::Full, DescriptorPolicy::Usbcore).unwrap();
        assert_eq!(c.interfaces.len(), 2);
        assert_eq!(c.interfaces[0].class, 0xff, "the first one is kept");
        let d = defects(&c);
        assert!(
            d[0].ends_with("interface 0 alt 0: a second descriptor for this alternate setting: skipped"),
            "{d:?}"
        );
        assert!(
            d[1].ends_with("interface 0 has no alternate setting 1: accepted"),
            "{d:?}"
        );
    }
}
