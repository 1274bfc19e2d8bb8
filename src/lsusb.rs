// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The enumerated device as `lsusb` and `lsusb -v` print a device, so a
//! developer reads what the host saw the way they read a real host's view
//! (`vhost-device-udc ctl lsusb [-v]`).
//!
//! Names come from usb.ids (the `usb.ids` package's /usr/share/misc/usb.ids)
//! when it is there; without it the numbers stand alone, as lsusb prints
//! them for an unknown device.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::enumerate::Enumerated;
use crate::usb::{Configuration, Endpoint, Interface};

/// Where Debian's `usb.ids` package puts the list.
pub const USB_IDS: &str = "/usr/share/misc/usb.ids";

/// Vendor, product and class names from a usb.ids file.
#[derive(Debug, Default)]
pub struct UsbIds {
    vendors: HashMap<u16, String>,
    products: HashMap<(u16, u16), String>,
    classes: HashMap<u8, String>,
}

impl UsbIds {
    /// The system's list, or none (names left out) when it cannot be read.
    pub fn system() -> UsbIds {
        Self::load(Path::new(USB_IDS)).unwrap_or_default()
    }

    pub fn load(path: &Path) -> std::io::Result<UsbIds> {
        // usb.ids is mostly UTF-8 with some Latin-1 names: lossy is enough.
        let bytes = std::fs::read(path)?;
        Ok(Self::parse(&String::from_utf8_lossy(&bytes)))
    }

    /// usb.ids' format: `vvvv  name` for a vendor, a tab and `pppp  name`
    /// for each of its products, `C cc  name` for a class; other sections
    /// (subclasses, languages, HID usages) are not needed here.
    pub fn parse(text: &str) -> UsbIds {
        let mut ids = UsbIds::default();
        let mut vendor = None;
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("C ") {
                vendor = None;
                if let Some((code, name)) = split_id(rest).and_then(|(c, n)| Some((u8::try_from(c).ok()?, n)))
                {
                    ids.classes.insert(code, name);
                }
            } else if let Some(rest) = line.strip_prefix('\t') {
                if rest.starts_with('\t') {
                    continue;
                }
                if let (Some(v), Some((p, name))) = (vendor, split_id(rest)) {
                    ids.products.insert((v, p), name);
                }
            } else {
                vendor = split_id(line).map(|(v, name)| {
                    ids.vendors.insert(v, name);
                    v
                });
            }
        }
        ids
    }

    fn vendor(&self, v: u16) -> &str {
        self.vendors.get(&v).map_or("", String::as_str)
    }

    fn product(&self, v: u16, p: u16) -> &str {
        self.products.get(&(v, p)).map_or("", String::as_str)
    }

    fn class(&self, c: u8) -> &str {
        match c {
            0 => "[unknown]",
            _ => self.classes.get(&c).map_or("", String::as_str),
        }
    }
}

/// `hhhh  name` (a hexadecimal id, two spaces, the name).
fn split_id(s: &str) -> Option<(u16, String)> {
    let (id, name) = s.split_once("  ")?;
    Some((u16::from_str_radix(id.trim(), 16).ok()?, name.trim().to_string()))
}

/// `lsusb`'s one line, or with `verbose` its `-v` block.
pub fn render(e: &Enumerated, verbose: bool, ids: &UsbIds) -> String {
    let d = &e.device;
    let string = |i: u8| e.strings.get(&i).map_or("", String::as_str);
    let vendor_name = match ids.vendor(d.id_vendor) {
        "" => string(d.i_manufacturer),
        n => n,
    };
    let product_name = match ids.product(d.id_vendor, d.id_product) {
        "" => string(d.i_product),
        n => n,
    };
    let mut o = format!(
        "Bus 001 Device {:03}: ID {:04x}:{:04x} {vendor_name} {product_name}\n",
        e.address, d.id_vendor, d.id_product
    )
    .replace("  \n", "\n")
    .replace(" \n", "\n");
    if !verbose {
        return o;
    }
    let bcd = |v: u16| format!("{:x}.{:02x}", v >> 8, v & 0xff);
    let _ = writeln!(o, "Device Descriptor:");
    field(&mut o, 2, "bLength", &d.length.to_string(), "");
    field(&mut o, 2, "bDescriptorType", &d.descriptor_type.to_string(), "");
    field(&mut o, 2, "bcdUSB", &bcd(d.bcd_usb), "");
    field(
        &mut o,
        2,
        "bDeviceClass",
        &d.device_class.to_string(),
        ids.class(d.device_class),
    );
    field(&mut o, 2, "bDeviceSubClass", &d.device_subclass.to_string(), "");
    field(&mut o, 2, "bDeviceProtocol", &d.device_protocol.to_string(), "");
    field(&mut o, 2, "bMaxPacketSize0", &d.max_packet_size0.to_string(), "");
    field(
        &mut o,
        2,
        "idVendor",
        &format!("0x{:04x}", d.id_vendor),
        ids.vendor(d.id_vendor),
    );
    field(
        &mut o,
        2,
        "idProduct",
        &format!("0x{:04x}", d.id_product),
        ids.product(d.id_vendor, d.id_product),
    );
    field(&mut o, 2, "bcdDevice", &bcd(d.bcd_device), "");
    field(
        &mut o,
        2,
        "iManufacturer",
        &d.i_manufacturer.to_string(),
        string(d.i_manufacturer),
    );
    field(
        &mut o,
        2,
        "iProduct",
        &d.i_product.to_string(),
        string(d.i_product),
    );
    field(
        &mut o,
        2,
        "iSerial",
        &d.i_serial_number.to_string(),
        string(d.i_serial_number),
    );
    field(
        &mut o,
        2,
        "bNumConfigurations",
        &d.num_configurations.to_string(),
        "",
    );
    for c in &e.configurations {
        configuration(&mut o, c, e, ids);
    }
    let _ = writeln!(o, "Device Status:     0x0000\n  (Bus Powered)");
    o
}

fn configuration(o: &mut String, c: &Configuration, e: &Enumerated, ids: &UsbIds) {
    let string = |i: u8| e.strings.get(&i).map_or("", String::as_str);
    let _ = writeln!(o, "  Configuration Descriptor:");
    field(o, 4, "bLength", "9", "");
    field(o, 4, "bDescriptorType", "2", "");
    field(o, 4, "wTotalLength", &format!("0x{:04x}", c.total_length), "");
    field(o, 4, "bNumInterfaces", &c.num_interfaces.to_string(), "");
    field(o, 4, "bConfigurationValue", &c.value.to_string(), "");
    field(
        o,
        4,
        "iConfiguration",
        &c.string_index.to_string(),
        string(c.string_index),
    );
    field(o, 4, "bmAttributes", &format!("0x{:02x}", c.attributes), "");
    if c.attributes & 0x40 != 0 {
        let _ = writeln!(o, "      Self Powered");
    } else {
        let _ = writeln!(o, "      (Bus Powered)");
    }
    if c.attributes & 0x20 != 0 {
        let _ = writeln!(o, "      Remote Wakeup");
    }
    // Units of 2 mA, 8 mA at SuperSpeed.
    let unit = if e.speed == crate::usb::Speed::Super { 8 } else { 2 };
    field(
        o,
        4,
        "MaxPower",
        &format!("{}mA", u32::from(c.max_power) * unit),
        "",
    );
    for i in &c.interfaces {
        interface(o, i, e, ids);
    }
}

fn interface(o: &mut String, i: &Interface, e: &Enumerated, ids: &UsbIds) {
    let string = |n: u8| e.strings.get(&n).map_or("", String::as_str);
    let _ = writeln!(o, "    Interface Descriptor:");
    field(o, 6, "bLength", "9", "");
    field(o, 6, "bDescriptorType", "4", "");
    field(o, 6, "bInterfaceNumber", &i.number.to_string(), "");
    field(o, 6, "bAlternateSetting", &i.alternate.to_string(), "");
    field(o, 6, "bNumEndpoints", &i.endpoints.len().to_string(), "");
    field(o, 6, "bInterfaceClass", &i.class.to_string(), ids.class(i.class));
    field(o, 6, "bInterfaceSubClass", &i.subclass.to_string(), "");
    field(o, 6, "bInterfaceProtocol", &i.protocol.to_string(), "");
    field(
        o,
        6,
        "iInterface",
        &i.string_index.to_string(),
        string(i.string_index),
    );
    for ep in &i.endpoints {
        endpoint(o, ep);
    }
}

fn endpoint(o: &mut String, ep: &Endpoint) {
    let dir = if ep.address & 0x80 != 0 { "IN" } else { "OUT" };
    let _ = writeln!(o, "      Endpoint Descriptor:");
    field(o, 8, "bLength", "7", "");
    field(o, 8, "bDescriptorType", "5", "");
    field(
        o,
        8,
        "bEndpointAddress",
        &format!("0x{:02x}", ep.address),
        &format!("EP {} {dir}", ep.address & 0x0f),
    );
    field(o, 8, "bmAttributes", &ep.attributes.to_string(), "");
    let ty = ["Control", "Isochronous", "Bulk", "Interrupt"][usize::from(ep.attributes & 3)];
    let _ = writeln!(o, "          Transfer Type            {ty}");
    let sync = ["None", "Asynchronous", "Adaptive", "Synchronous"][usize::from((ep.attributes >> 2) & 3)];
    let _ = writeln!(o, "          Synch Type               {sync}");
    let usage =
        ["Data", "Feedback", "Implicit feedback Data", "(reserved)"][usize::from((ep.attributes >> 4) & 3)];
    let _ = writeln!(o, "          Usage Type               {usage}");
    field(
        o,
        8,
        "wMaxPacketSize",
        &format!("0x{:04x}", ep.w_max_packet_size),
        &format!("{}x {} bytes", u16::from(ep.mult) + 1, ep.max_packet_size),
    );
    field(o, 8, "bInterval", &ep.interval.to_string(), "");
    if let Some(c) = &ep.companion {
        field(o, 8, "bMaxBurst", &c.max_burst.to_string(), "");
    }
}

/// One `name value [meaning]` line, laid out as lsusb lays them out: the
/// value right-aligned 25 columns after the indent.
fn field(o: &mut String, indent: usize, name: &str, value: &str, meaning: &str) {
    let width = 25usize.saturating_sub(name.len()).max(value.len() + 1);
    let line = format!("{:indent$}{name}{value:>width$} {meaning}", "");
    let _ = writeln!(o, "{}", line.trim_end());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usb_ids_give_vendor_product_and_class_names() {
        let ids = UsbIds::parse(
            "# comment\n1d6b  Linux Foundation\n\t0104  Multifunction Composite Gadget\n\t\t0001  an interface\n\
             1d6c  Other\nC 08  Mass Storage\n\t06  SCSI\nC ff  Vendor Specific Class\n",
        );
        assert_eq!(ids.vendor(0x1d6b), "Linux Foundation");
        assert_eq!(ids.product(0x1d6b, 0x0104), "Multifunction Composite Gadget");
        assert_eq!(ids.product(0x1d6c, 0x0104), "");
        assert_eq!(ids.class(0xff), "Vendor Specific Class");
        assert_eq!(ids.class(8), "Mass Storage");
        assert_eq!(ids.class(0), "[unknown]");
    }

    #[test]
    fn fields_line_up_as_lsusb_s() {
        let mut o = String::new();
        field(&mut o, 2, "idVendor", "0x1d6b", "Linux Foundation");
        field(&mut o, 2, "bLength", "18", "");
        assert_eq!(
            o,
            "  idVendor           0x1d6b Linux Foundation\n  bLength                18\n"
        );
    }
}
