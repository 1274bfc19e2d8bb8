// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Descriptor and capability types, descriptor sizes and transfer types,
//! with the names log lines give them.

// Descriptor types (bDescriptorType).
/// Device descriptor, 18 bytes.
pub const DT_DEVICE: u8 = 1;
/// Configuration descriptor, 9 bytes followed by its interfaces.
pub const DT_CONFIG: u8 = 2;
/// String descriptor; index 0 lists the language IDs.
pub const DT_STRING: u8 = 3;
/// Interface descriptor, 9 bytes, one per alternate setting.
pub const DT_INTERFACE: u8 = 4;
/// Endpoint descriptor, 7 bytes (9 in audio class 1.0).
pub const DT_ENDPOINT: u8 = 5;
/// Device qualifier: the other speed's device descriptor fields.
pub const DT_DEVICE_QUALIFIER: u8 = 6;
/// Other-speed configuration descriptor.
pub const DT_OTHER_SPEED_CONFIG: u8 = 7;
/// Interface power descriptor (obsolete).
pub const DT_INTERFACE_POWER: u8 = 8;
/// On-The-Go descriptor.
pub const DT_OTG: u8 = 9;
/// Debug descriptor.
pub const DT_DEBUG: u8 = 10;
/// Interface association descriptor: groups interfaces into one function.
pub const DT_INTERFACE_ASSOCIATION: u8 = 11;
/// Binary device object store, the root of the device capabilities.
pub const DT_BOS: u8 = 15;
/// One device capability inside the BOS.
pub const DT_DEVICE_CAPABILITY: u8 = 16;
/// SuperSpeed endpoint companion, which must follow each endpoint at SuperSpeed.
pub const DT_SS_ENDPOINT_COMP: u8 = 48;
/// SuperSpeedPlus isochronous endpoint companion.
pub const DT_SSP_ISOC_ENDPOINT_COMP: u8 = 49;
/// Class-specific interface descriptor (CDC, audio, video...).
pub const DT_CS_INTERFACE: u8 = 0x24;
/// Class-specific endpoint descriptor.
pub const DT_CS_ENDPOINT: u8 = 0x25;

/// Size of a device descriptor.
pub const DEVICE_DESC_SIZE: usize = 18;
/// Size of a configuration descriptor's header.
pub const CONFIG_DESC_SIZE: usize = 9;
/// Size of an interface descriptor.
pub const INTERFACE_DESC_SIZE: usize = 9;
/// Minimum size of an endpoint descriptor.
pub const ENDPOINT_DESC_SIZE: usize = 7;
/// Size of an interface association descriptor.
pub const IAD_DESC_SIZE: usize = 8;
/// Size of a SuperSpeed endpoint companion descriptor.
pub const SS_EP_COMP_DESC_SIZE: usize = 6;
/// Size of a BOS descriptor's header.
pub const BOS_DESC_SIZE: usize = 5;

// Device capability types (bDevCapabilityType), USB 3.2 table 9-14.
/// USB 2.0 extension (LPM support).
pub const CAP_USB20_EXTENSION: u8 = 0x02;
/// SuperSpeed USB: speeds supported and U1/U2 exit latencies.
pub const CAP_SUPERSPEED_USB: u8 = 0x03;
/// Container ID: a UUID shared by all of a device's instances.
pub const CAP_CONTAINER_ID: u8 = 0x04;
/// SuperSpeedPlus: the sublink speed attributes.
pub const CAP_SUPERSPEED_PLUS: u8 = 0x0a;

// Transfer types: bits 1..0 of an endpoint's bmAttributes.
/// Control transfers.
pub const TRANSFER_CONTROL: u8 = 0;
/// Isochronous transfers.
pub const TRANSFER_ISOCHRONOUS: u8 = 1;
/// Bulk transfers.
pub const TRANSFER_BULK: u8 = 2;
/// Interrupt transfers.
pub const TRANSFER_INTERRUPT: u8 = 3;

/// The transfer type's name as error messages use it.
pub fn transfer_type_name(t: u8) -> &'static str {
    match t & 3 {
        TRANSFER_CONTROL => "control",
        TRANSFER_ISOCHRONOUS => "isochronous",
        TRANSFER_BULK => "bulk",
        _ => "interrupt",
    }
}

/// Short name of a descriptor type, as in "GET_DESCRIPTOR(CONFIG #0, 9 bytes)";
/// `None` for types this host has no name for.
pub fn descriptor_type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        DT_DEVICE => "DEVICE",
        DT_CONFIG => "CONFIG",
        DT_STRING => "STRING",
        DT_INTERFACE => "INTERFACE",
        DT_ENDPOINT => "ENDPOINT",
        DT_DEVICE_QUALIFIER => "DEVICE_QUALIFIER",
        DT_OTHER_SPEED_CONFIG => "OTHER_SPEED_CONFIG",
        DT_INTERFACE_POWER => "INTERFACE_POWER",
        DT_OTG => "OTG",
        DT_DEBUG => "DEBUG",
        DT_INTERFACE_ASSOCIATION => "IAD",
        DT_BOS => "BOS",
        DT_DEVICE_CAPABILITY => "DEVICE_CAPABILITY",
        DT_SS_ENDPOINT_COMP => "SS_ENDPOINT_COMP",
        DT_SSP_ISOC_ENDPOINT_COMP => "SSP_ISOC_ENDPOINT_COMP",
        0x21 => "HID",
        DT_CS_INTERFACE => "CS_INTERFACE",
        DT_CS_ENDPOINT => "CS_ENDPOINT",
        _ => return None,
    })
}

/// A descriptor type's name for prose: its short name, or its number when
/// it has none ("type 0x42").
pub fn descriptor_type_label(t: u8) -> String {
    match descriptor_type_name(t) {
        Some(n) => n.to_string(),
        None => format!("type {t:#04x}"),
    }
}
