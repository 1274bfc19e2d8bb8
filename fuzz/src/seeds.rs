// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Meaningful starting inputs for each target: real descriptor sets, a
//! gadget that enumerates, valid chains and device sessions, the control
//! socket's documented requests. `udc-fuzz-seeds` writes them into
//! fuzz/corpus/TARGET/; AFL grows the corpus from there.

/// The seeds of `target`, named.
pub fn for_target(target: &str) -> Vec<(String, Vec<u8>)> {
    match target {
        "descriptors" => descriptors(),
        "device_ops" => crate::device_ops::seeds(),
        "chain" => crate::chain::seeds(),
        "control_line" => crate::control_line::seeds(),
        _ => Vec::new(),
    }
}

// ---- USB descriptors, as a Linux gadget sends them ----

const DT_DEVICE: u8 = 1;
const DT_CONFIG: u8 = 2;
const DT_STRING: u8 = 3;
const DT_INTERFACE: u8 = 4;
const DT_ENDPOINT: u8 = 5;
const DT_BOS: u8 = 15;
const DT_DEVICE_CAPABILITY: u8 = 16;
const DT_IAD: u8 = 11;
const DT_CS_INTERFACE: u8 = 0x24;
const DT_SS_ENDPOINT_COMP: u8 = 48;

/// Speeds in the order of [`crate::descriptors::SPEEDS`].
const LOW: u8 = 0;
const FULL: u8 = 1;
const HIGH: u8 = 2;
const SUPER: u8 = 3;

pub fn device_desc(bcd_usb: u16, mps0: u8, num_configs: u8) -> Vec<u8> {
    let mut d = vec![18, DT_DEVICE];
    d.extend(bcd_usb.to_le_bytes());
    d.extend([0, 0, 0, mps0]);
    d.extend(0x1d6bu16.to_le_bytes());
    d.extend(0x0105u16.to_le_bytes());
    d.extend(0x0100u16.to_le_bytes());
    d.extend([1, 2, 3, num_configs]);
    d
}

fn config_desc(value: u8, num_interfaces: u8, body: &[u8]) -> Vec<u8> {
    let mut d = vec![9, DT_CONFIG];
    d.extend(((9 + body.len()) as u16).to_le_bytes());
    d.extend([num_interfaces, value, 0, 0x80, 50]);
    d.extend(body);
    d
}

fn interface_desc(number: u8, alt: u8, neps: u8, class: [u8; 3], istr: u8) -> Vec<u8> {
    vec![
        9,
        DT_INTERFACE,
        number,
        alt,
        neps,
        class[0],
        class[1],
        class[2],
        istr,
    ]
}

fn endpoint_desc(address: u8, attributes: u8, mps: u16, interval: u8) -> Vec<u8> {
    let [m0, m1] = mps.to_le_bytes();
    vec![7, DT_ENDPOINT, address, attributes, m0, m1, interval]
}

fn string_desc(s: &str) -> Vec<u8> {
    let mut d = vec![0, DT_STRING];
    for u in s.encode_utf16() {
        d.extend(u.to_le_bytes());
    }
    d[0] = d.len() as u8;
    d
}

fn langids_desc() -> Vec<u8> {
    vec![4, DT_STRING, 0x09, 0x04]
}

/// A FunctionFS gadget: one vendor interface, bulk 0x81 and 0x02, sized
/// for the speed, with companions at SuperSpeed.
pub fn ffs_config(speed: u8) -> Vec<u8> {
    let mps = match speed {
        LOW | FULL => 64,
        HIGH => 512,
        _ => 1024,
    };
    let mut body = interface_desc(0, 0, 2, [0xff, 0, 0], 4);
    for addr in [0x81, 0x02] {
        // Low speed has no bulk: interrupt endpoints of 8 bytes instead.
        if speed == LOW {
            body.extend(endpoint_desc(addr, 3, 8, 10));
            continue;
        }
        body.extend(endpoint_desc(addr, 2, mps, 0));
        if speed >= SUPER {
            body.extend([6, DT_SS_ENDPOINT_COMP, 15, 0, 0, 0]);
        }
    }
    config_desc(1, 1, &body)
}

/// CDC-ACM: an IAD, a communications interface with functional
/// descriptors and an interrupt endpoint, a data interface with two bulk.
fn acm_config() -> Vec<u8> {
    let mut body = vec![8, DT_IAD, 0, 2, 0x02, 0x02, 0x01, 5];
    body.extend(interface_desc(0, 0, 1, [0x02, 0x02, 0x01], 6));
    body.extend([5, DT_CS_INTERFACE, 0x00, 0x10, 0x01]);
    body.extend([5, DT_CS_INTERFACE, 0x01, 0x00, 0x01]);
    body.extend([4, DT_CS_INTERFACE, 0x02, 0x02]);
    body.extend([5, DT_CS_INTERFACE, 0x06, 0x00, 0x01]);
    body.extend(endpoint_desc(0x83, 3, 10, 32));
    body.extend(interface_desc(1, 0, 2, [0x0a, 0, 0], 7));
    body.extend(endpoint_desc(0x81, 2, 64, 0));
    body.extend(endpoint_desc(0x02, 2, 64, 0));
    config_desc(2, 2, &body)
}

/// An interface with an alternate setting carrying isochronous endpoints.
fn iso_alt_config(speed: u8) -> Vec<u8> {
    let mut body = interface_desc(0, 0, 0, [0xff, 0, 0], 0);
    body.extend(interface_desc(0, 1, 2, [0xff, 0, 0], 0));
    let (mps, interval) = if speed >= HIGH { (0x1400, 1) } else { (1023, 1) };
    body.extend(endpoint_desc(0x81, 0x05, mps, interval));
    if speed >= SUPER {
        body.extend([6, DT_SS_ENDPOINT_COMP, 0, 0, 0, 0x0c]);
    }
    body.extend(endpoint_desc(0x02, 0x01, mps, interval));
    if speed >= SUPER {
        body.extend([6, DT_SS_ENDPOINT_COMP, 0, 0, 0, 0x0c]);
    }
    config_desc(1, 1, &body)
}

fn bos_desc() -> Vec<u8> {
    let mut caps = vec![7, DT_DEVICE_CAPABILITY, 2, 0x06, 0, 0, 0];
    caps.extend([10, DT_DEVICE_CAPABILITY, 3, 0, 0x0e, 0, 1, 0x0a, 0xff, 0x07]);
    let mut d = vec![5, DT_BOS];
    d.extend(((5 + caps.len()) as u16).to_le_bytes());
    d.push(2);
    d.extend(caps);
    d
}

fn bcd_and_mps0(speed: u8) -> (u16, u8) {
    match speed {
        LOW => (0x0200, 8),
        FULL => (0x0200, 64),
        HIGH => (0x0210, 64),
        _ => (0x0320, 9),
    }
}

/// One answer of the scripted gadget: ok with data (a two-byte length
/// when it does not fit one).
fn answer(out: &mut Vec<u8>, data: &[u8]) {
    if data.len() > 255 {
        out.push(0x82);
        out.extend((data.len() as u16).to_le_bytes());
    } else {
        out.push(2);
        out.push(data.len() as u8);
    }
    out.extend(data);
}

/// A whole enumeration as the procedure asks for it: device descriptor
/// twice, BOS (from USB 2.01), each configuration's head and whole, the
/// language IDs and the strings, then SET_CONFIGURATION.
fn enumeration_script(speed: u8, configs: &[Vec<u8>]) -> Vec<u8> {
    let (bcd, mps0) = bcd_and_mps0(speed);
    let dev = device_desc(bcd, mps0, configs.len() as u8);
    let mut s = vec![0x80 | speed, 1];
    answer(&mut s, &dev);
    answer(&mut s, &dev);
    if bcd >= 0x0201 {
        let bos = bos_desc();
        answer(&mut s, &bos[..5]);
        answer(&mut s, &bos);
    }
    for c in configs {
        answer(&mut s, &c[..9]);
        answer(&mut s, c);
    }
    answer(&mut s, &langids_desc());
    for text in [
        "Linux Foundation",
        "virtio-udc fuzz",
        "0123456789",
        "ffs",
        "acm",
        "control",
        "data",
    ] {
        answer(&mut s, &string_desc(text));
    }
    s.push(2); // SET_CONFIGURATION: ok
    s
}

fn descriptors() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    let names = ["low", "full", "high", "super"];
    for speed in [LOW, FULL, HIGH, SUPER] {
        let name = names[usize::from(speed)];
        let (bcd, mps0) = bcd_and_mps0(speed);
        let with = |bytes: Vec<u8>| [vec![speed], bytes].concat();
        v.push((format!("device-{name}"), with(device_desc(bcd, mps0, 1))));
        v.push((format!("ffs-config-{name}"), with(ffs_config(speed))));
        v.push((format!("iso-alt-config-{name}"), with(iso_alt_config(speed))));
        v.push((
            format!("enumerate-ffs-{name}"),
            enumeration_script(speed, &[ffs_config(speed)]),
        ));
    }
    v.push(("acm-config-full".into(), [vec![FULL], acm_config()].concat()));
    v.push(("bos-super".into(), [vec![SUPER], bos_desc()].concat()));
    v.push(("string".into(), [vec![HIGH], string_desc("virtio-udc")].concat()));
    v.push(("langids".into(), [vec![HIGH], langids_desc()].concat()));
    v.push((
        "enumerate-ffs-and-acm-full".into(),
        enumeration_script(FULL, &[ffs_config(FULL), acm_config()]),
    ));
    v
}
