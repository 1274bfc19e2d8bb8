// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `--usbip`: the daemon exports the gadget over USB/IP on a loopback TCP
//! port, and the guest gets QEMU's user networking, from which the host's
//! loopback is 10.0.2.2: the guest's own vhci_hcd (`udc-gadget
//! usbip-attach`), a second VM or the host (`usbip attach -r 127.0.0.1`)
//! can import the device (docs/usbip.md).

/// The address the guest reaches the host's loopback at (slirp's host).
pub const GUEST_SEES_HOST: &str = "10.0.2.2";

/// A free TCP port on 127.0.0.1, for `--usbip` without a port.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The daemon's arguments for a server on `port`.
pub fn daemon_args(port: u16) -> Vec<String> {
    vec!["--usbip-listen".into(), format!("127.0.0.1:{port}")]
}

/// QEMU's arguments: user networking on a virtio NIC without a boot ROM
/// (no iPXE needed).
pub fn qemu_args() -> Vec<String> {
    [
        "-netdev",
        "user,id=usbipnet",
        "-device",
        "virtio-net-pci,netdev=usbipnet,romfile=",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The kernel command line word that tells the guest tool where the
/// server is.
pub fn cmdline(port: u16) -> String {
    format!("udc.usbip={GUEST_SEES_HOST}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_reaches_the_server_at_the_slirp_host() {
        assert_eq!(cmdline(3240), "udc.usbip=10.0.2.2:3240");
        assert_eq!(daemon_args(3240), ["--usbip-listen", "127.0.0.1:3240"]);
        assert!(qemu_args().join(" ").contains("virtio-net-pci,netdev=usbipnet"));
        assert_ne!(free_port().unwrap(), 0);
    }
}
