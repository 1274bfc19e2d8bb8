// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Descriptor builders for tests: realistic gadgets, as byte arrays.

use super::*;

pub fn device(bcd_usb: u16, mps0: u8, vid: u16, pid: u16, strings: [u8; 3]) -> Vec<u8> {
    let mut d = vec![18, DT_DEVICE];
    d.extend(bcd_usb.to_le_bytes());
    d.extend([0, 0, 0, mps0]);
    d.extend(vid.to_le_bytes());
    d.extend(pid.to_le_bytes());
    d.extend(0x0100u16.to_le_bytes());
    d.extend(strings);
    d.push(1);
    d
}

/// A configuration descriptor with wTotalLength computed from `body`.
pub fn config(value: u8, num_interfaces: u8, istr: u8, body: &[u8]) -> Vec<u8> {
    let total = (9 + body.len()) as u16;
    let mut d = vec![9, DT_CONFIG];
    d.extend(total.to_le_bytes());
    d.extend([num_interfaces, value, istr, 0x80, 50]);
    d.extend(body);
    d
}

pub fn interface(number: u8, alt: u8, neps: u8, class: [u8; 3], istr: u8) -> Vec<u8> {
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

pub fn endpoint(address: u8, attributes: u8, mps: u16, interval: u8) -> Vec<u8> {
    let [m0, m1] = mps.to_le_bytes();
    vec![7, DT_ENDPOINT, address, attributes, m0, m1, interval]
}

pub fn companion(max_burst: u8, attributes: u8, bytes_per_interval: u16) -> Vec<u8> {
    let [b0, b1] = bytes_per_interval.to_le_bytes();
    vec![6, DT_SS_ENDPOINT_COMP, max_burst, attributes, b0, b1]
}

pub fn string(s: &str) -> Vec<u8> {
    let mut d = vec![0, DT_STRING];
    for u in s.encode_utf16() {
        d.extend(u.to_le_bytes());
    }
    d[0] = d.len() as u8;
    d
}

pub fn langids(ids: &[u16]) -> Vec<u8> {
    let mut d = vec![(2 + 2 * ids.len()) as u8, DT_STRING];
    for id in ids {
        d.extend(id.to_le_bytes());
    }
    d
}

/// A FunctionFS-style device: vendor 1d6b:0105, strings 1-3, bcdUSB and
/// ep0 size as a Linux gadget reports them at `speed`.
pub fn ffs_device(speed: Speed) -> Vec<u8> {
    let (bcd, mps0) = match speed {
        Speed::Super | Speed::SuperPlus => (0x0320, 9),
        Speed::High => (0x0210, 64),
        _ => (0x0200, 64),
    };
    device(bcd, mps0, 0x1d6b, 0x0105, [1, 2, 3])
}

/// One vendor interface (string 4) with bulk IN 0x81 and bulk OUT 0x02,
/// sized for `speed`, with companions at SuperSpeed.
pub fn ffs_config(speed: Speed) -> Vec<u8> {
    let mps = match speed {
        Speed::Full => 64,
        Speed::High => 512,
        _ => 1024,
    };
    let mut body = interface(0, 0, 2, [0xff, 0, 0], 4);
    for addr in [0x81, 0x02] {
        body.extend(endpoint(addr, TRANSFER_BULK, mps, 0));
        if speed.is_superspeed() {
            body.extend(companion(15, 0, 0));
        }
    }
    config(1, 1, 0, &body)
}

/// The USB 2.0 extension (LPM) and SuperSpeed USB capabilities, as a
/// Linux composite gadget reports them.
pub fn bos() -> Vec<u8> {
    let mut caps = vec![7, DT_DEVICE_CAPABILITY, CAP_USB20_EXTENSION, 0x06, 0, 0, 0];
    caps.extend([
        10,
        DT_DEVICE_CAPABILITY,
        CAP_SUPERSPEED_USB,
        0,
        0x0e,
        0,
        1,
        0x0a,
        0xff,
        0x07,
    ]);
    let mut d = vec![5, DT_BOS];
    d.extend(((5 + caps.len()) as u16).to_le_bytes());
    d.push(2);
    d.extend(caps);
    d
}

/// A CDC-ACM-like function: an IAD over a communications interface (with
/// header, call management, ACM and union functional descriptors and an
/// interrupt notification endpoint 0x83) and a data interface with bulk
/// 0x81/0x02, at full speed.
pub fn acm_config() -> Vec<u8> {
    let mut body = vec![8, DT_INTERFACE_ASSOCIATION, 0, 2, 0x02, 0x02, 0x01, 5];
    body.extend(interface(0, 0, 1, [0x02, 0x02, 0x01], 6));
    body.extend([5, DT_CS_INTERFACE, 0x00, 0x10, 0x01]); // header, CDC 1.10
    body.extend([5, DT_CS_INTERFACE, 0x01, 0x00, 0x01]); // call management
    body.extend([4, DT_CS_INTERFACE, 0x02, 0x02]); // ACM
    body.extend([5, DT_CS_INTERFACE, 0x06, 0x00, 0x01]); // union
    body.extend(endpoint(0x83, TRANSFER_INTERRUPT, 10, 32));
    body.extend(interface(1, 0, 2, [0x0a, 0, 0], 7));
    body.extend(endpoint(0x81, TRANSFER_BULK, 64, 0));
    body.extend(endpoint(0x02, TRANSFER_BULK, 64, 0));
    config(2, 2, 0, &body)
}
