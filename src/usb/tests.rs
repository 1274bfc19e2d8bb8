// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The host's descriptor checks, rule by rule, on realistic gadgets.

use super::fixtures::*;
use super::*;

/// The full-speed FunctionFS configuration written out by hand, to check
/// the builders against real bytes.
const FFS_FS_CONFIG: [u8; 32] = [
    0x09, 0x02, 0x20, 0x00, 0x01, 0x01, 0x00, 0x80, 0x32, // config 1, 32 bytes
    0x09, 0x04, 0x00, 0x00, 0x02, 0xff, 0x00, 0x00, 0x04, // interface 0, vendor
    0x07, 0x05, 0x81, 0x02, 0x40, 0x00, 0x00, // bulk IN 0x81, 64
    0x07, 0x05, 0x02, 0x02, 0x40, 0x00, 0x00, // bulk OUT 0x02, 64
];

fn err_text(r: Result<Configuration, DescriptorError>) -> String {
    r.expect_err("configuration should be rejected").to_string()
}

/// Replaces the endpoint descriptor of `addr` in a configuration.
fn patch_ep(cfg: &mut [u8], addr: u8, f: impl Fn(&mut [u8])) {
    let mut off = 0;
    while off < cfg.len() {
        let len = usize::from(cfg[off]);
        if cfg[off + 1] == DT_ENDPOINT && cfg[off + 2] == addr {
            f(&mut cfg[off..off + len]);
            return;
        }
        off += len;
    }
    panic!("no endpoint {addr:#x}");
}

fn set_mps(d: &mut [u8], mps: u16) {
    d[4..6].copy_from_slice(&mps.to_le_bytes());
}

#[test]
fn speed_serializes_as_its_name() {
    assert_eq!(
        serde_json::to_string(&Speed::SuperPlus).unwrap(),
        "\"super-plus\""
    );
}

#[test]
fn device_descriptor_parses_all_fields() {
    let d = parse_device_descriptor(&ffs_device(Speed::High)).unwrap();
    assert_eq!(
        d,
        DeviceDescriptor {
            length: 18,
            descriptor_type: DT_DEVICE,
            bcd_usb: 0x0210,
            device_class: 0,
            device_subclass: 0,
            device_protocol: 0,
            max_packet_size0: 64,
            id_vendor: 0x1d6b,
            id_product: 0x0105,
            bcd_device: 0x0100,
            i_manufacturer: 1,
            i_product: 2,
            i_serial_number: 3,
            num_configurations: 1,
        }
    );
    assert_eq!(d.string_indices(), vec![1, 2, 3]);
    d.validate(Speed::High).unwrap();
    d.validate(Speed::Full).unwrap();
    let ss = parse_device_descriptor(&ffs_device(Speed::Super)).unwrap();
    ss.validate(Speed::Super).unwrap();
    assert_eq!(ss.ep0_max_packet(Speed::Super), 512);
    assert_eq!(d.ep0_max_packet(Speed::High), 64);
}

#[test]
fn device_descriptor_truncated_and_wrong_type() {
    let d = ffs_device(Speed::High);
    assert_eq!(
        parse_device_descriptor(&d[..8]).unwrap_err().to_string(),
        "device descriptor: truncated: 8 bytes where 18 are needed"
    );
    let cfg = ffs_config(Speed::High);
    assert_eq!(
        parse_device_descriptor(&cfg).unwrap_err().to_string(),
        "device descriptor: bDescriptorType 2 (CONFIG) where 1 (DEVICE) was expected"
    );
    let mut bad = d.clone();
    bad[0] = 17;
    assert!(parse_device_descriptor(&bad)
        .unwrap_err()
        .to_string()
        .contains("bLength 17: a device descriptor is exactly 18 bytes"));
    let mut none = d;
    none[17] = 0;
    assert!(parse_device_descriptor(&none)
        .unwrap_err()
        .to_string()
        .contains("bNumConfigurations 0"));
}

#[test]
fn device_descriptor_ep0_size_per_speed() {
    let hs = parse_device_descriptor(&ffs_device(Speed::High)).unwrap();
    assert_eq!(
        hs.validate(Speed::Super).unwrap_err().to_string(),
        "device descriptor: bMaxPacketSize0 64 is wrong for SuperSpeed (must be 9, meaning 512)"
    );
    let mut fs = hs.clone();
    fs.max_packet_size0 = 8;
    fs.validate(Speed::Full).unwrap();
    assert_eq!(
        fs.validate(Speed::High).unwrap_err().to_string(),
        "device descriptor: bMaxPacketSize0 8 is wrong for high speed (must be 64)"
    );
    fs.max_packet_size0 = 12;
    assert!(fs
        .validate(Speed::Full)
        .unwrap_err()
        .to_string()
        .contains("must be 8, 16, 32 or 64"));
}

#[test]
fn device_descriptor_bcd_usb_per_speed() {
    let mut d = parse_device_descriptor(&ffs_device(Speed::High)).unwrap();
    d.max_packet_size0 = 9;
    assert_eq!(
        d.validate(Speed::Super).unwrap_err().to_string(),
        "device descriptor: bcdUSB 0x0210 is too low for SuperSpeed (must be at least 0x0300)"
    );
    let mut old = parse_device_descriptor(&ffs_device(Speed::Full)).unwrap();
    old.bcd_usb = 0x0110;
    old.validate(Speed::Full).unwrap();
    assert_eq!(
        old.validate(Speed::High).unwrap_err().to_string(),
        "device descriptor: bcdUSB 0x0110 is too low for high speed (must be at least 0x0200)"
    );
}

#[test]
fn ffs_config_fixture_matches_hand_written_bytes() {
    assert_eq!(ffs_config(Speed::Full), FFS_FS_CONFIG);
}

#[test]
fn ffs_config_parses_at_full_high_and_super_speed() {
    let fs = parse_configuration(&FFS_FS_CONFIG, Speed::Full).unwrap();
    assert_eq!(fs.value, 1);
    assert_eq!(fs.total_length, 32);
    assert_eq!(fs.raw, FFS_FS_CONFIG);
    assert_eq!(fs.max_power, 50);
    assert_eq!(fs.interfaces.len(), 1);
    let i = &fs.interfaces[0];
    assert_eq!((i.number, i.alternate, i.class, i.string_index), (0, 0, 0xff, 4));
    assert_eq!(i.endpoints.len(), 2);
    assert_eq!(i.endpoints[0].address, 0x81);
    assert_eq!(i.endpoints[0].transfer_type(), TRANSFER_BULK);
    assert_eq!(i.endpoints[0].max_packet_size, 64);
    assert!(i.endpoints[0].is_in());
    assert!(!i.endpoints[1].is_in());
    assert_eq!(fs.string_indices(), vec![4]);
    assert!(fs.interface(0, 0).is_some() && fs.interface(0, 1).is_none());

    let hs = parse_configuration(&ffs_config(Speed::High), Speed::High).unwrap();
    assert_eq!(hs.interfaces[0].endpoints[1].max_packet_size, 512);
    assert_eq!(hs.interfaces[0].endpoints[1].companion, None);

    let ss = parse_configuration(&ffs_config(Speed::Super), Speed::Super).unwrap();
    assert_eq!(ss.total_length, 44);
    let ep = &ss.interfaces[0].endpoints[0];
    assert_eq!(ep.max_packet_size, 1024);
    assert_eq!(
        ep.companion,
        Some(SsCompanion {
            max_burst: 15,
            attributes: 0,
            bytes_per_interval: 0
        })
    );
    // The SuperSpeed descriptors are valid at SuperSpeedPlus too.
    parse_configuration(&ffs_config(Speed::Super), Speed::SuperPlus).unwrap();
}

#[test]
fn acm_config_keeps_iad_and_class_descriptors() {
    let c = parse_configuration(&acm_config(), Speed::Full).unwrap();
    assert_eq!(c.value, 2);
    assert_eq!(
        c.iads,
        vec![Iad {
            first_interface: 0,
            interface_count: 2,
            function_class: 2,
            function_subclass: 2,
            function_protocol: 1,
            string_index: 5
        }]
    );
    let comm = c.interface(0, 0).unwrap();
    assert_eq!(comm.extra.len(), 4);
    assert!(comm.extra.iter().all(|d| d.descriptor_type == DT_CS_INTERFACE));
    assert_eq!(comm.extra[0].offset, 26);
    assert_eq!(comm.extra[3].bytes, vec![5, DT_CS_INTERFACE, 0x06, 0x00, 0x01]);
    assert_eq!(comm.endpoints[0].transfer_type(), TRANSFER_INTERRUPT);
    assert_eq!(comm.endpoints[0].interval, 32);
    assert_eq!(c.interface(1, 0).unwrap().endpoints.len(), 2);
    assert_eq!(c.string_indices(), vec![6, 7, 5]);
    assert!(serde_json::to_value(&c).is_ok());
}

#[test]
fn class_endpoint_descriptors_attach_to_their_endpoint() {
    let mut body = interface(0, 0, 0, [1, 1, 0], 0);
    body.extend(interface(1, 0, 0, [1, 2, 0], 0));
    body.extend(interface(1, 1, 1, [1, 2, 0], 0));
    body.extend([7, DT_CS_INTERFACE, 0x01, 0x01, 0x01, 0x01, 0x00]);
    body.extend(endpoint(0x01, 0x09, 192, 1)); // iso adaptive OUT
    body.extend([7, DT_CS_ENDPOINT, 0x01, 0x01, 0x01, 0x01, 0x00]);
    let c = parse_configuration(&config(1, 2, 0, &body), Speed::Full).unwrap();
    let alt1 = c.interface(1, 1).unwrap();
    assert_eq!(alt1.extra.len(), 1);
    assert_eq!(alt1.endpoints[0].extra[0].descriptor_type, DT_CS_ENDPOINT);
    assert_eq!(alt1.endpoints[0].transfer_type(), TRANSFER_ISOCHRONOUS);
}

#[test]
fn config_total_length_too_small() {
    // wTotalLength says 32, but a third endpoint makes the set 39 bytes.
    let mut body = interface(0, 0, 3, [0xff, 0, 0], 0);
    body.extend(endpoint(0x81, TRANSFER_BULK, 512, 0));
    body.extend(endpoint(0x02, TRANSFER_BULK, 512, 0));
    body.extend(endpoint(0x83, TRANSFER_INTERRUPT, 8, 4));
    let mut c = config(1, 1, 0, &body);
    c[2] = 32;
    assert_eq!(
        err_text(parse_configuration(&c, Speed::High)),
        "configuration 1: wTotalLength 32 but the descriptors add up to 39 bytes"
    );
    // What the host sees after asking for exactly wTotalLength bytes.
    let cut = &c[..32];
    assert_eq!(
        err_text(parse_configuration(cut, Speed::High)),
        "configuration 1: interface 0 alt 0: bNumEndpoints 3 but 2 endpoint descriptors found"
    );
}

#[test]
fn config_descriptor_crossing_total_length() {
    let mut c = ffs_config(Speed::High);
    c[2] = 30; // the last endpoint (offset 25, 7 bytes) crosses it
    assert_eq!(
        err_text(parse_configuration(&c[..30], Speed::High)),
        "configuration 1: wTotalLength 30 but the descriptors add up to at least 32 bytes"
    );
}

#[test]
fn config_short_read() {
    let c = ffs_config(Speed::High);
    assert_eq!(
        err_text(parse_configuration(&c[..20], Speed::High)),
        "configuration 1: wTotalLength 32 but only 20 bytes arrived"
    );
    assert_eq!(
        err_text(parse_configuration(&c[..5], Speed::High)),
        "configuration descriptor: truncated: 5 bytes where 9 are needed"
    );
}

#[test]
fn config_zero_blength() {
    let mut c = ffs_config(Speed::High);
    c[18] = 0;
    assert_eq!(
        err_text(parse_configuration(&c, Speed::High)),
        "configuration 1: descriptor at offset 18: bLength 0 (every descriptor is at least 2 bytes)"
    );
}

#[test]
fn config_short_interface_descriptor() {
    let mut body = vec![7, DT_INTERFACE, 0, 0, 0, 0xff, 0];
    body.extend(interface(0, 0, 0, [0xff, 0, 0], 0));
    assert_eq!(
        err_text(parse_configuration(&config(1, 1, 0, &body), Speed::High)),
        "configuration 1: INTERFACE descriptor at offset 9: bLength 7 is less than its 9 bytes"
    );
}

#[test]
fn config_wrong_type_and_zero_value() {
    assert!(
        err_text(parse_configuration(&ffs_device(Speed::High), Speed::High))
            .contains("bDescriptorType 1 (DEVICE) where 2 (CONFIG) was expected")
    );
    let mut c = ffs_config(Speed::High);
    c[5] = 0;
    assert_eq!(
        err_text(parse_configuration(&c, Speed::High)),
        "configuration 0: bConfigurationValue 0: reserved, as SET_CONFIGURATION(0) means unconfigured"
    );
}

#[test]
fn config_interface_count_mismatch() {
    let mut c = ffs_config(Speed::High);
    c[4] = 2;
    assert_eq!(
        err_text(parse_configuration(&c, Speed::High)),
        "configuration 1: bNumInterfaces 2 but 1 interface found"
    );
}

#[test]
fn config_endpoint_count_mismatch() {
    let mut body = interface(0, 0, 1, [0xff, 0, 0], 0);
    body.extend(endpoint(0x81, TRANSFER_BULK, 512, 0));
    body.extend(endpoint(0x02, TRANSFER_BULK, 512, 0));
    assert_eq!(
        err_text(parse_configuration(&config(1, 1, 0, &body), Speed::High)),
        "configuration 1: interface 0 alt 0: bNumEndpoints 1 but 2 endpoint descriptors found"
    );
}

#[test]
fn config_bulk_max_packet_per_speed() {
    let mut c = ffs_config(Speed::High);
    patch_ep(&mut c, 0x81, |d| set_mps(d, 1024));
    assert_eq!(
        err_text(parse_configuration(&c, Speed::High)),
        "configuration 1: interface 0 alt 0: endpoint 0x81 (bulk): wMaxPacketSize 1024 is over 512, the limit for bulk at high speed"
    );
    let mut c = ffs_config(Speed::High);
    patch_ep(&mut c, 0x02, |d| set_mps(d, 64));
    assert_eq!(
        err_text(parse_configuration(&c, Speed::High)),
        "configuration 1: interface 0 alt 0: endpoint 0x02 (bulk): wMaxPacketSize 64 is under 512: bulk at high speed must be exactly 512"
    );
    // The high-speed descriptors are wrong at full speed.
    assert!(
        err_text(parse_configuration(&ffs_config(Speed::High), Speed::Full))
            .contains("wMaxPacketSize 512 is not 8, 16, 32 or 64, the sizes bulk allows at full speed")
    );
    let mut c = ffs_config(Speed::Super);
    patch_ep(&mut c, 0x81, |d| set_mps(d, 512));
    assert!(err_text(parse_configuration(&c, Speed::Super))
        .contains("wMaxPacketSize 512 is under 1024: bulk at SuperSpeed must be exactly 1024"));
}

#[test]
fn config_interrupt_and_iso_max_packet_limits() {
    let periodic = |addr: u8, tt: u8, mps: u16, interval: u8| {
        let mut body = interface(0, 0, 1, [0xff, 0, 0], 0);
        body.extend(endpoint(addr, tt, mps, interval));
        config(1, 1, 0, &body)
    };
    parse_configuration(&periodic(0x81, TRANSFER_INTERRUPT, 64, 10), Speed::Full).unwrap();
    assert!(err_text(parse_configuration(
        &periodic(0x81, TRANSFER_INTERRUPT, 65, 10),
        Speed::Full
    ))
    .contains(
        "endpoint 0x81 (interrupt): wMaxPacketSize 65 is over 64, the limit for interrupt at full speed"
    ));
    parse_configuration(&periodic(0x81, TRANSFER_INTERRUPT, 1024, 4), Speed::High).unwrap();
    assert!(err_text(parse_configuration(
        &periodic(0x81, TRANSFER_INTERRUPT, 0, 4),
        Speed::High
    ))
    .contains("wMaxPacketSize 0 is too small: an interrupt endpoint must carry at least 1 byte"));
    parse_configuration(&periodic(0x81, TRANSFER_ISOCHRONOUS, 1023, 1), Speed::Full).unwrap();
    assert!(err_text(parse_configuration(&periodic(0x81, TRANSFER_ISOCHRONOUS, 1024, 1), Speed::Full))
        .contains("endpoint 0x81 (isochronous): wMaxPacketSize 1024 is over 1023, the limit for isochronous at full speed"));
    parse_configuration(&periodic(0x81, TRANSFER_ISOCHRONOUS, 1024, 1), Speed::High).unwrap();
    // High-bandwidth: 2 extra transactions is fine, 3 is reserved.
    parse_configuration(
        &periodic(0x81, TRANSFER_ISOCHRONOUS, 1024 | (2 << 11), 1),
        Speed::High,
    )
    .unwrap();
    assert!(err_text(parse_configuration(
        &periodic(0x81, TRANSFER_ISOCHRONOUS, 1024 | (3 << 11), 1),
        Speed::High
    ))
    .contains("wMaxPacketSize 0x1c00: bits 12..11 are 3, which is reserved"));
    assert!(err_text(parse_configuration(
        &periodic(0x81, TRANSFER_BULK, 512 | (1 << 11), 0),
        Speed::High
    ))
    .contains("bits 12..11 (additional transactions per microframe) must be zero for bulk"));
    parse_configuration(&periodic(0x81, TRANSFER_INTERRUPT, 8, 10), Speed::Low).unwrap();
    assert!(err_text(parse_configuration(
        &periodic(0x81, TRANSFER_BULK, 8, 0),
        Speed::Low
    ))
    .contains("bulk endpoints do not exist at low speed"));
}

#[test]
fn config_control_and_low_speed_endpoints() {
    let one = |tt: u8, mps: u16, interval: u8| {
        let mut body = interface(0, 0, 1, [0xff, 0, 0], 0);
        body.extend(endpoint(0x01, tt, mps, interval));
        config(1, 1, 0, &body)
    };
    parse_configuration(&one(TRANSFER_CONTROL, 64, 0), Speed::High).unwrap();
    assert!(err_text(parse_configuration(&one(TRANSFER_CONTROL, 32, 0), Speed::High))
        .contains("endpoint 0x01 (control): wMaxPacketSize 32 is under 64: control at high speed must be exactly 64"));
    parse_configuration(&one(TRANSFER_INTERRUPT, 8, 10), Speed::Low).unwrap();
    assert!(
        err_text(parse_configuration(&one(TRANSFER_INTERRUPT, 16, 10), Speed::Low))
            .contains("wMaxPacketSize 16 is over 8, the limit for interrupt at low speed")
    );
    let mut short = one(TRANSFER_BULK, 512, 0);
    short[18] = 6;
    short.remove(24);
    short[2] = 24;
    assert!(err_text(parse_configuration(&short, Speed::High))
        .contains("ENDPOINT descriptor at offset 18: bLength 6 is less than its 7 bytes"));
}

#[test]
fn config_interval_out_of_range() {
    let periodic = |tt: u8, interval: u8| {
        let mut body = interface(0, 0, 1, [0xff, 0, 0], 0);
        body.extend(endpoint(0x83, tt, 8, interval));
        config(1, 1, 0, &body)
    };
    assert_eq!(
        err_text(parse_configuration(&periodic(TRANSFER_INTERRUPT, 0), Speed::Full)),
        "configuration 1: interface 0 alt 0: endpoint 0x83 (interrupt): bInterval 0 is out of range: interrupt at full speed needs 1 to 255 (a period of bInterval frames)"
    );
    parse_configuration(&periodic(TRANSFER_INTERRUPT, 255), Speed::Full).unwrap();
    assert_eq!(
        err_text(parse_configuration(&periodic(TRANSFER_INTERRUPT, 32), Speed::High)),
        "configuration 1: interface 0 alt 0: endpoint 0x83 (interrupt): bInterval 32 is out of range: interrupt at high speed needs 1 to 16 (a period of 2^(bInterval-1) microframes)"
    );
    assert!(err_text(parse_configuration(
        &periodic(TRANSFER_ISOCHRONOUS, 17),
        Speed::Full
    ))
    .contains("bInterval 17 is out of range: isochronous at full speed needs 1 to 16"));
    // Bulk ignores bInterval at full speed.
    let mut c = ffs_config(Speed::Full);
    patch_ep(&mut c, 0x81, |d| d[6] = 200);
    parse_configuration(&c, Speed::Full).unwrap();
}

#[test]
fn config_duplicate_endpoint_address() {
    let mut c = ffs_config(Speed::High);
    patch_ep(&mut c, 0x02, |d| d[2] = 0x81);
    assert_eq!(
        err_text(parse_configuration(&c, Speed::High)),
        "configuration 1: interface 0 alt 0: endpoint 0x81 appears twice in this alternate setting"
    );
    // The same address in two alternate settings is normal.
    let mut body = interface(0, 0, 1, [0xff, 0, 0], 0);
    body.extend(endpoint(0x81, TRANSFER_BULK, 512, 0));
    body.extend(interface(0, 1, 1, [0xff, 0, 0], 0));
    body.extend(endpoint(0x81, TRANSFER_BULK, 512, 0));
    let c = parse_configuration(&config(1, 1, 0, &body), Speed::High).unwrap();
    assert_eq!(c.interfaces.len(), 2);
}

#[test]
fn config_endpoint_number_zero() {
    let mut c = ffs_config(Speed::High);
    patch_ep(&mut c, 0x81, |d| d[2] = 0x80);
    assert_eq!(
        err_text(parse_configuration(&c, Speed::High)),
        "configuration 1: interface 0 alt 0: endpoint 0x80: endpoint number 0 is the default control pipe, which has no endpoint descriptor"
    );
}

#[test]
fn config_missing_superspeed_companion() {
    // High-speed descriptors with the size fixed up: still no companions.
    let mut c = ffs_config(Speed::High);
    patch_ep(&mut c, 0x81, |d| set_mps(d, 1024));
    patch_ep(&mut c, 0x02, |d| set_mps(d, 1024));
    assert_eq!(
        err_text(parse_configuration(&c, Speed::Super)),
        "configuration 1: interface 0 alt 0: endpoint 0x81 (bulk) has no SuperSpeed companion descriptor at SuperSpeed"
    );
}

#[test]
fn config_companion_rules() {
    let ss = |tt: u8, mps: u16, interval: u8, comp: Vec<u8>| {
        let mut body = interface(0, 0, 1, [0xff, 0, 0], 0);
        body.extend(endpoint(0x81, tt, mps, interval));
        body.extend(comp);
        config(1, 1, 0, &body)
    };
    parse_configuration(
        &ss(TRANSFER_INTERRUPT, 1024, 4, companion(1, 0, 2048)),
        Speed::Super,
    )
    .unwrap();
    assert!(err_text(parse_configuration(
        &ss(TRANSFER_INTERRUPT, 1024, 4, companion(0, 0, 2048)),
        Speed::Super
    ))
    .contains("SuperSpeed companion: wBytesPerInterval 2048 is over 1024"));
    assert!(err_text(parse_configuration(
        &ss(TRANSFER_INTERRUPT, 512, 4, companion(1, 0, 1024)),
        Speed::Super
    ))
    .contains("bMaxBurst 1 needs wMaxPacketSize 1024, not 512"));
    assert!(err_text(parse_configuration(
        &ss(TRANSFER_BULK, 1024, 0, companion(16, 0, 0)),
        Speed::Super
    ))
    .contains("endpoint 0x81 (bulk): SuperSpeed companion: bMaxBurst 16 is over 15"));
    assert!(err_text(parse_configuration(
        &ss(TRANSFER_BULK, 1024, 0, companion(0, 17, 0)),
        Speed::Super
    ))
    .contains("MaxStreams 17 is over 16"));
    parse_configuration(
        &ss(TRANSFER_ISOCHRONOUS, 1024, 1, companion(3, 2, 12288)),
        Speed::Super,
    )
    .unwrap();
    assert!(err_text(parse_configuration(
        &ss(TRANSFER_ISOCHRONOUS, 1024, 1, companion(3, 3, 1024)),
        Speed::Super
    ))
    .contains("Mult 3 is reserved"));
    // A companion must follow its endpoint directly.
    let mut body = interface(0, 0, 1, [0xff, 0, 0], 0);
    body.extend(companion(0, 0, 0));
    body.extend(endpoint(0x81, TRANSFER_BULK, 1024, 0));
    assert!(
        err_text(parse_configuration(&config(1, 1, 0, &body), Speed::Super))
            .contains("SS_ENDPOINT_COMP descriptor at offset 18 is out of place")
    );
    // Below SuperSpeed a companion is kept raw, not interpreted.
    let c = parse_configuration(&ss(TRANSFER_BULK, 512, 0, companion(15, 0, 0)), Speed::High).unwrap();
    assert_eq!(
        c.interfaces[0].endpoints[0].extra[0].descriptor_type,
        DT_SS_ENDPOINT_COMP
    );
}

#[test]
fn config_structure_errors() {
    // An endpoint before any interface.
    let body = endpoint(0x81, TRANSFER_BULK, 512, 0);
    assert!(
        err_text(parse_configuration(&config(1, 0, 0, &body), Speed::High)).contains(
            "ENDPOINT descriptor at offset 9 is out of place: it comes before any interface descriptor"
        )
    );
    // Interface 1 with only alternate setting 1.
    let mut body = interface(0, 0, 0, [0xff, 0, 0], 0);
    body.extend(interface(1, 1, 0, [0xff, 0, 0], 0));
    assert_eq!(
        err_text(parse_configuration(&config(1, 2, 0, &body), Speed::High)),
        "configuration 1: interface 1 has no alternate setting 0, which the host selects by default"
    );
    // The same alternate setting twice.
    let mut body = interface(0, 0, 0, [0xff, 0, 0], 0);
    body.extend(interface(0, 0, 0, [0xff, 0, 0], 0));
    assert_eq!(
        err_text(parse_configuration(&config(1, 1, 0, &body), Speed::High)),
        "configuration 1: interface 0 alt 0 appears twice"
    );
    // An IAD naming an interface that does not exist.
    let mut c = acm_config();
    c[12] = 3; // bInterfaceCount
    assert_eq!(
        err_text(parse_configuration(&c, Speed::Full)),
        "configuration 2: interface association at offset 9 (bFirstInterface 0, bInterfaceCount 3) names interface 2, which does not exist"
    );
    // A device descriptor inside a configuration.
    let mut body = interface(0, 0, 0, [0xff, 0, 0], 0);
    body.extend(ffs_device(Speed::High));
    assert!(
        err_text(parse_configuration(&config(1, 1, 0, &body), Speed::High))
            .contains("DEVICE descriptor at offset 18 is out of place")
    );
}

#[test]
fn config_reserved_bits() {
    let mut c = ffs_config(Speed::High);
    patch_ep(&mut c, 0x81, |d| d[2] = 0x91);
    assert!(err_text(parse_configuration(&c, Speed::High))
        .contains("endpoint 0x91 (bulk): bEndpointAddress 0x91: bits 6..4 are reserved"));
    let mut c = ffs_config(Speed::High);
    patch_ep(&mut c, 0x81, |d| set_mps(d, 0x2000 | 512));
    assert!(err_text(parse_configuration(&c, Speed::High))
        .contains("wMaxPacketSize 0x2200: bits 15..13 are reserved"));
}

#[test]
fn string_descriptors() {
    assert_eq!(
        parse_string_descriptor(&string("Gadget \u{e9}\u{1f600}")).unwrap(),
        "Gadget \u{e9}\u{1f600}"
    );
    assert_eq!(parse_string_descriptor(&string("")).unwrap(), "");
    // Trailing bytes beyond bLength (a 255-byte buffer) are ignored.
    let mut padded = string("abc");
    padded.extend([0xaa; 10]);
    assert_eq!(parse_string_descriptor(&padded).unwrap(), "abc");
    let s = string("abc");
    assert_eq!(
        parse_string_descriptor(&s[..5]).unwrap_err().to_string(),
        "string descriptor: truncated: 5 bytes where 8 are needed"
    );
    let mut odd = s.clone();
    odd[0] = 7;
    assert!(parse_string_descriptor(&odd)
        .unwrap_err()
        .to_string()
        .contains("bLength 7: odd, but"));
    let mut wrong = s;
    wrong[1] = DT_CONFIG;
    assert!(parse_string_descriptor(&wrong)
        .unwrap_err()
        .to_string()
        .contains("bDescriptorType 2 (CONFIG) where 3 (STRING) was expected"));
    let lone = [4, DT_STRING, 0x00, 0xd8];
    assert!(parse_string_descriptor(&lone)
        .unwrap_err()
        .to_string()
        .contains("unpaired surrogate 0xd800 at code unit 0"));
    assert!(parse_string_descriptor(&[0, DT_STRING])
        .unwrap_err()
        .to_string()
        .contains("bLength 0"));
}

#[test]
fn langid_descriptor() {
    assert_eq!(parse_langids(&langids(&[0x0409])).unwrap(), vec![0x0409]);
    assert_eq!(
        parse_langids(&langids(&[0x0409, 0x0407])).unwrap(),
        vec![0x0409, 0x0407]
    );
    assert_eq!(parse_langids(&langids(&[])).unwrap(), Vec::<u16>::new());
    assert!(parse_langids(&[4, DT_STRING, 9])
        .unwrap_err()
        .to_string()
        .starts_with("string descriptor 0 (language IDs): truncated"));
}

#[test]
fn bos_parses_capabilities() {
    let b = parse_bos(&bos()).unwrap();
    assert_eq!(b.total_length, 22);
    assert_eq!(b.capabilities.len(), 2);
    assert_eq!(
        b.capabilities[0],
        DeviceCapability {
            cap_type: CAP_USB20_EXTENSION,
            data: vec![0x06, 0, 0, 0]
        }
    );
    assert_eq!(b.capability(CAP_SUPERSPEED_USB).unwrap().data.len(), 7);
    b.validate(Speed::Super).unwrap();
    assert!(b
        .validate(Speed::SuperPlus)
        .unwrap_err()
        .to_string()
        .contains("no SuperSpeedPlus device capability"));
}

#[test]
fn bos_errors() {
    let good = bos();
    let mut n = good.clone();
    n[4] = 3;
    assert_eq!(
        parse_bos(&n).unwrap_err().to_string(),
        "BOS: bNumDeviceCaps 3 but 2 capabilities found"
    );
    assert_eq!(
        parse_bos(&good[..12]).unwrap_err().to_string(),
        "BOS: wTotalLength 22 but only 12 bytes arrived"
    );
    let mut short = good.clone();
    short[5] = 6; // USB 2.0 extension with bLength 6
    assert_eq!(
        parse_bos(&short).unwrap_err().to_string(),
        "BOS: descriptor at offset 11: bLength 0 (every descriptor is at least 2 bytes)"
    );
    let mut ss_only = vec![5, DT_BOS, 15, 0, 1];
    ss_only.extend(&good[12..]);
    let b = parse_bos(&ss_only).unwrap();
    b.validate(Speed::Super).unwrap();
    let mut lpm_only = good[..12].to_vec();
    lpm_only[2] = 12;
    lpm_only[4] = 1;
    assert_eq!(
        parse_bos(&lpm_only)
            .unwrap()
            .validate(Speed::Super)
            .unwrap_err()
            .to_string(),
        "BOS: no SuperSpeed USB device capability (type 0x03), which a device at SuperSpeed must have"
    );
    let mut wrong_cap = good.clone();
    wrong_cap[12] = 9; // SuperSpeed USB capability with bLength 9, padded by the next
    wrong_cap[2] = 21;
    assert!(parse_bos(&wrong_cap[..21])
        .unwrap_err()
        .to_string()
        .contains("SuperSpeed USB capability at offset 12: bLength 9 where it must be 10"));
}

#[test]
fn errors_serialize() {
    let e = parse_configuration(&FFS_FS_CONFIG, Speed::High).unwrap_err();
    let v = serde_json::to_value(&e).unwrap();
    assert!(v.get("MaxPacketSize").is_some());
}
