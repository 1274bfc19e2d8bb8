// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The guest as its own USB host: imports the device the daemon exports
//! over USB/IP (its --usbip-listen, reached at the host's loopback through
//! QEMU's user networking) and hands the connection to this kernel's
//! vhci_hcd, as `usbip attach` does. The kernel's USB stack then binds its
//! own drivers (usbtest, or usbfs for a program) to the gadget.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::Error;

const VHCI: &str = "/sys/devices/platform/vhci_hcd.0";
/// The bus id the daemon exports its device as (src/usbip/mod.rs).
pub const BUSID: &str = "1-1";
/// vhci_hcd's `VDEV_ST_NULL`: a free port.
const PORT_FREE: u32 = 4;

/// What `udc-vm --usbip` put on the kernel command line: the daemon's
/// USB/IP server as the guest reaches it.
pub fn server_from_cmdline() -> Option<String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("udc.usbip="))
        .map(str::to_string)
}

/// The device record OP_REP_IMPORT returned, as far as attaching needs it.
#[derive(Debug, Clone, Copy)]
pub struct Imported {
    pub busnum: u32,
    pub devnum: u32,
    /// Linux's `enum usb_device_speed`.
    pub speed: u32,
    pub vendor: u16,
    pub product: u16,
}

/// A device attached to a vhci_hcd port; detached when dropped.
pub struct Attached {
    pub port: u32,
    pub imported: Imported,
    /// The device in sysfs (/sys/bus/usb/devices/B-P).
    pub sysfs: PathBuf,
    /// Its usbfs node (/dev/bus/usb/BBB/DDD).
    pub devnode: PathBuf,
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = detach(self.port);
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn setup_err(what: impl std::fmt::Display) -> Error {
    Error::Setup(format!("usbip: {what}"))
}

/// OP_REQ_IMPORT of the daemon's device on a new connection to `server`.
pub fn import(server: &str) -> Result<(TcpStream, Imported), Error> {
    let mut s = TcpStream::connect(server).map_err(|e| {
        setup_err(format!(
            "cannot connect to the daemon's USB/IP server at {server} ({e}): did udc-vm run with --usbip?"
        ))
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(setup_err)?;
    let mut req = vec![0x01, 0x11, 0x80, 0x03, 0, 0, 0, 0];
    let mut id = [0u8; 32];
    id[..BUSID.len()].copy_from_slice(BUSID.as_bytes());
    req.extend_from_slice(&id);
    s.write_all(&req)
        .map_err(|e| setup_err(format!("OP_REQ_IMPORT: {e}")))?;
    let mut h = [0u8; 8];
    s.read_exact(&mut h)
        .map_err(|e| setup_err(format!("OP_REP_IMPORT: {e}")))?;
    let status = be32(&h[4..]);
    if h[..4] != [0x01, 0x11, 0x00, 0x03] || status != 0 {
        return Err(setup_err(format!(
            "the server refused the import (reply {:02x?}, status {status}: {})",
            &h[..4],
            match status {
                1 => "no device: has the gadget pulled up?",
                2 => "the device is in use by another client",
                _ => "device error",
            }
        )));
    }
    let mut d = [0u8; 312];
    s.read_exact(&mut d)
        .map_err(|e| setup_err(format!("OP_REP_IMPORT's device: {e}")))?;
    s.set_read_timeout(None).map_err(setup_err)?;
    let imported = Imported {
        busnum: be32(&d[288..]),
        devnum: be32(&d[292..]),
        speed: be32(&d[296..]),
        vendor: u16::from_be_bytes([d[300], d[301]]),
        product: u16::from_be_bytes([d[302], d[303]]),
    };
    Ok((s, imported))
}

/// The first free vhci_hcd port of the root hub for `speed`: its high-speed
/// hub takes low, full and high speed devices, its SuperSpeed hub the rest.
fn free_port(status: &str, speed: u32) -> Option<u32> {
    let hub = if speed >= 5 { "ss" } else { "hs" };
    status.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 3 && f[0] == hub && f[2].parse::<u32>().ok() == Some(PORT_FREE))
            .then(|| f[1].parse().ok())
            .flatten()
    })
}

/// Imports the daemon's device from `server` and attaches it to vhci_hcd;
/// returns once the kernel has enumerated it (its usbfs node exists).
pub fn attach(server: &str) -> Result<Attached, Error> {
    if !Path::new(VHCI).exists() {
        return Err(setup_err(format!(
            "{VHCI} is missing: the guest kernel's vhci_hcd is not loaded (images/build.sh loads it where the kernel has it)"
        )));
    }
    let (stream, imported) = import(server)?;
    let status = std::fs::read_to_string(format!("{VHCI}/status"))
        .map_err(|e| setup_err(format!("{VHCI}/status: {e}")))?;
    let port = free_port(&status, imported.speed).ok_or_else(|| {
        setup_err(format!(
            "no free vhci_hcd port for speed {}:\n{status}",
            imported.speed
        ))
    })?;
    let devid = (imported.busnum << 16) | imported.devnum;
    let line = format!("{port} {} {devid} {}", stream.as_raw_fd(), imported.speed);
    std::fs::write(format!("{VHCI}/attach"), &line)
        .map_err(|e| setup_err(format!("writing {line:?} to {VHCI}/attach: {e}")))?;
    // vhci_hcd holds the socket now; our descriptor may go.
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((sysfs, devnode)) = find_device(imported.vendor, imported.product) {
            if devnode.exists() {
                return Ok(Attached {
                    port,
                    imported,
                    sysfs,
                    devnode,
                });
            }
        }
        if Instant::now() > deadline {
            let _ = detach(port);
            return Err(setup_err(format!(
                "the device ({:04x}:{:04x}) did not appear on vhci_hcd port {port} within 60 s",
                imported.vendor, imported.product
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Detaches vhci_hcd port `port` (the daemon's session ends, and its
/// built-in host takes the device back).
pub fn detach(port: u32) -> Result<(), Error> {
    std::fs::write(format!("{VHCI}/detach"), port.to_string())
        .map_err(|e| setup_err(format!("detaching port {port}: {e}")))
}

/// The USB device under vhci_hcd with this vendor and product: its sysfs
/// directory and usbfs node.
fn find_device(vendor: u16, product: u16) -> Option<(PathBuf, PathBuf)> {
    let read = |d: &Path, f: &str| {
        std::fs::read_to_string(d.join(f))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let name_of = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .unwrap_or_default()
    };
    let hubs = std::fs::read_dir(VHCI).ok()?.flatten().map(|e| e.path());
    for hub in hubs.filter(|h| name_of(h).starts_with("usb")) {
        let Ok(devs) = std::fs::read_dir(&hub) else {
            continue;
        };
        for dev in devs.flatten().map(|e| e.path()) {
            let name = name_of(&dev);
            // Devices are BUS-PORT; their interfaces have a colon.
            if !name.contains('-') || name.contains(':') {
                continue;
            }
            if read(&dev, "idVendor") != Some(format!("{vendor:04x}"))
                || read(&dev, "idProduct") != Some(format!("{product:04x}"))
            {
                continue;
            }
            let (Some(bus), Some(num)) = (read(&dev, "busnum"), read(&dev, "devnum")) else {
                continue;
            };
            let (Ok(bus), Ok(num)) = (bus.parse::<u32>(), num.parse::<u32>()) else {
                continue;
            };
            return Some((dev, PathBuf::from(format!("/dev/bus/usb/{bus:03}/{num:03}"))));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_of_the_right_hub_is_picked() {
        let status = "hub port sta spd dev      sockfd local_busid\n\
                      hs  0000 006 003 00010002 000003 3-1\n\
                      hs  0001 004 000 00000000 000000 0-0\n\
                      ss  0008 004 000 00000000 000000 0-0\n";
        assert_eq!(free_port(status, 3), Some(1));
        assert_eq!(free_port(status, 2), Some(1));
        assert_eq!(free_port(status, 5), Some(8));
        assert_eq!(free_port("hub port sta\nhs  0000 006 003\n", 3), None);
    }
}
