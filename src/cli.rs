// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The daemon's command line, in the library so that its man page and
//! shell completions are generated from the same definition (xtask).

use std::path::PathBuf;

use clap::Parser;

use crate::config::ConfigArgs;
use crate::control::ControlArgs;

/// A virtual USB device controller for QEMU guests: this daemon is the USB
/// host, the cable and the controller's DMA engine. The guest's virtio_udc
/// driver registers a UDC; any gadget bound to it is enumerated here and its
/// endpoints carry real data to and from guest memory.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    long_about,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Without a command, the daemon runs.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// vhost-user socket to listen on; QEMU connects to it with
    /// `-chardev socket,path=PATH -device vhost-user-udc-pci,chardev=...`.
    #[arg(
        short = 's',
        long,
        value_name = "PATH",
        required_unless_present_any = ["socket_fd", "print_capabilities"],
        conflicts_with = "socket_fd"
    )]
    pub socket_path: Option<PathBuf>,

    /// A listening Unix socket to serve instead of --socket-path, passed
    /// open by a supervisor (vhost-user.rst's backend program conventions);
    /// the daemon owns it from then on and never removes its path.
    #[arg(long, value_name = "FD")]
    pub socket_fd: Option<i32>,

    /// Print the backend's capabilities as JSON (vhost-user.rst, as libvirt
    /// reads them) and exit; every other option is ignored.
    // main looks for it before parsing, so other options cannot fail it.
    #[arg(long)]
    pub print_capabilities: bool,

    /// Unix socket for the control protocol (docs/control-socket.md): list
    /// the device, send control requests, run transfers and streams, read
    /// statistics, change the host's behaviour.
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,

    /// Capture every transfer on the bus, as the host sees it, into this new
    /// file: usbmon's pcap format, which Wireshark and tshark read
    /// (docs/capture.md). The control socket's `capture` starts and stops
    /// one at run time.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,

    /// Data bytes kept per captured event; longer transfers are cut (their
    /// length is still recorded).
    #[arg(long, value_name = "BYTES", default_value_t = crate::capture::DEFAULT_SNAPLEN)]
    pub pcap_snaplen: u32,

    /// Export the gadget over USB/IP (docs/usbip.md) on a Unix socket
    /// (`unix:PATH`, or a path) or a TCP port on a loopback address
    /// (`127.0.0.1:3240`, or a bare port): vhci_hcd (`usbip attach`)
    /// imports it, and the built-in host stands aside while it does.
    #[arg(long, value_name = "ADDR")]
    pub usbip_listen: Option<crate::usbip::ListenAddr>,

    /// How long a DMA access waits for the front end to answer an IOTLB
    /// miss (behind a vIOMMU, docs/iommu.md) before the request fails with
    /// a DMA fault, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub iotlb_miss_timeout: u64,

    /// After the transfer queue runs dry, watch it this many microseconds
    /// for the driver's next request before sleeping until its kick (0:
    /// do not). The watching thread yields to any other that has work, so
    /// it only keeps an otherwise idle CPU awake: where waking one is slow
    /// (a host that is itself a VM), a request's round trip is shorter for
    /// it (docs/performance.md).
    #[arg(long, value_name = "US", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub poll_us: u64,

    /// Serve one vhost-user connection and exit when it ends, instead of
    /// waiting for the frontend to reconnect.
    #[arg(long)]
    pub once: bool,

    #[command(flatten)]
    pub config: ConfigArgs,

    #[command(flatten)]
    pub control: ControlArgs,

    /// Log level: error, warn, info, debug, trace (RUST_LOG overrides).
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    pub log_level: log::LevelFilter,
}

/// What `vhost-device-udc` does instead of running the daemon.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Talk to a running daemon through its control socket.
    Ctl {
        /// The daemon's --control-socket.
        #[arg(short = 'c', long, value_name = "PATH")]
        control_socket: PathBuf,
        #[command(subcommand)]
        request: CtlRequest,
    },
}

/// What `ctl` asks.
#[derive(clap::Subcommand, Debug)]
pub enum CtlRequest {
    /// The device the host enumerated, as lsusb prints it (names from
    /// /usr/share/misc/usb.ids where the usb.ids package is installed).
    Lsusb {
        /// Every descriptor, as `lsusb -v`.
        #[arg(short, long)]
        verbose: bool,
    },
    /// The daemon's status (docs/control-socket.md), as JSON.
    Status,
    /// One request of docs/control-socket.md, as a JSON line; the answer
    /// is printed.
    Raw {
        /// e.g. '{"op":"bus","action":"reset"}'
        request: String,
    },
}

/// `--print-capabilities`: what vhost-user.rst's backend program
/// conventions ask for. "udc" is this device's type; QEMU's vhost-user.json
/// does not list it yet, so a management tool that checks the type against
/// its own list will not know it.
pub fn capabilities() -> serde_json::Value {
    serde_json::json!({ "type": "udc", "features": [] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_socket_is_required_unless_capabilities_are_asked_for() {
        let e = Cli::try_parse_from(["vhost-device-udc"]).unwrap_err();
        assert!(e.to_string().contains("--socket-path"), "{e}");
        assert!(Cli::try_parse_from(["vhost-device-udc", "--print-capabilities"]).is_ok());
        let c = Cli::try_parse_from(["vhost-device-udc", "-s", "/tmp/x"]).unwrap();
        assert_eq!(c.socket_path, Some(PathBuf::from("/tmp/x")));
        let e = Cli::try_parse_from(["vhost-device-udc", "-s", "/tmp/x", "--socket-fd", "3"]).unwrap_err();
        assert!(e.to_string().contains("cannot be used with"), "{e}");
    }
}
