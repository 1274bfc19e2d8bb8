// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! udc-gadget: the guest side of virtio-udc's VM tier (docs/vm-tier.md).
//!
//! Sets up a FunctionFS gadget through configfs, moves data on its bulk
//! endpoints with read()/write() and with AIO, and checks every byte with
//! the patterns the host uses. It reaches the USB host side (the daemon's
//! control socket) over a virtio serial port, so one program checks both
//! ends of each transfer.

mod aio;
mod bench;
mod cases;
mod control_client;
mod demo;
mod dmabuf;
mod error;
mod ffs;
mod ffs_dmabuf;
mod gadget;
mod kmsg;
mod ktap;
mod soak;
mod suite;
mod support;
mod usbip;
mod usbtest;
mod usbtest_ffs;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::control_client::ControlClient;
use crate::error::Error;
use crate::support::Ctx;

#[derive(Parser)]
#[command(
    version,
    about = "Guest tool of virtio-udc: FunctionFS gadget, bulk transfers, the VM scenario suite"
)]
struct Cli {
    /// The control channel to the USB host side (a virtio serial port).
    #[arg(long, default_value = "/dev/udc-control", global = true)]
    control: PathBuf,
    /// UDC to bind (default: the only one in /sys/class/udc).
    #[arg(long, global = true)]
    udc: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the scenario suite; KTAP on stdout.
    Test {
        /// Run only the cases whose names contain one of these
        /// comma-separated words; the word `catalogue` stands for the
        /// cases run when no filter is given.
        #[arg(long)]
        filter: Option<String>,
        /// Run exactly these cases (comma-separated names), in the suite's
        /// order: the runner's way of going on in a fresh guest.
        #[arg(long, conflicts_with = "filter", value_delimiter = ',')]
        cases: Vec<String>,
        /// Stop after the first case that fails, saying so (exit status 4):
        /// a failure may leave the kernel or the gadget unfit for the
        /// next case, and the runner (udc-vm test) boots a fresh guest for
        /// the rest.
        #[arg(long)]
        stop_on_failure: bool,
        /// List the cases and exit.
        #[arg(long)]
        list: bool,
    },
    /// Set up the gadget and keep it bound until SIGINT or SIGTERM.
    Serve,
    /// Move data both ways with read()/write(), verified, and print MiB/s.
    Demo {
        /// Bytes each way (rounded down to whole MiB).
        #[arg(long, default_value_t = 64 << 20)]
        size: usize,
    },
    /// Throughput and guest CPU time per GiB of each way of moving bulk
    /// data, on virtio-udc and dummy_hcd; `bench:` lines on stdout.
    Bench(bench::BenchArgs),
    /// Read/write and DMABUF transfers both ways for a set time under the
    /// daemon's injected delays and faults, every byte checked; `soak:`
    /// lines on stdout (what `udc-vm soak` runs). Exit status 1 when a
    /// transfer's data was wrong, an error no injected fault explains, or
    /// the faults injected and seen differ.
    Soak(soak::SoakArgs),
    /// The kernel's gadget test suite: sourcesink bound to the UDC, the
    /// guest's own USB stack as its host (vhci_hcd through the daemon's
    /// USB/IP server, or dummy_hcd), tools/usb/testusb.c against usbtest;
    /// KTAP on stdout, one case per test number (docs/usbtest.md).
    Usbtest(usbtest::UsbtestArgs),
    /// Import the daemon's USB/IP device and attach it to this kernel's
    /// vhci_hcd, as `usbip attach` does; prints the port and usbfs node
    /// (detach with `echo PORT > /sys/devices/platform/vhci_hcd.0/detach`).
    UsbipAttach {
        /// The server (default: udc.usbip= on the kernel command line).
        #[arg(long)]
        server: Option<String>,
    },
    /// Send one request to the host side's control socket and print the
    /// reply, e.g. '{"op":"inject","set":{"ep1in.hold":"next:1"}}' or
    /// '{"op":"injections"}' (docs/control-socket.md, docs/injection.md).
    Host {
        /// The request, one JSON object.
        request: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Test {
            ref filter,
            ref cases,
            stop_on_failure,
            list,
        } => {
            let chosen = match suite::select_cases(filter.as_deref(), cases) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            if list {
                for c in &chosen {
                    println!(
                        "{} (needs {}{})",
                        c.name,
                        c.needs.describe(),
                        if c.default { "" } else { "; runs only when named" }
                    );
                }
                return ExitCode::SUCCESS;
            }
            suite::run_suite(context(&cli), chosen, stop_on_failure)
        }
        Cmd::Serve => match gadget::serve(cli.udc.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Cmd::Demo { size } => {
            let mut ctx = match context(&cli) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            match demo::run(&mut ctx, size) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Cmd::Bench(ref args) => match context(&cli).and_then(|mut ctx| bench::run(&mut ctx, args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Cmd::Soak(ref args) => match context(&cli).and_then(|mut ctx| soak::run(&mut ctx, args)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => fail(e),
        },
        Cmd::Host { ref request } => host_request(&cli, request),
        Cmd::Usbtest(ref args) => match usbtest::run(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => fail(e),
        },
        Cmd::UsbipAttach { ref server } => {
            let Some(server) = server.clone().or_else(usbip::server_from_cmdline) else {
                return fail(Error::Setup(
                    "no USB/IP server: give --server, or boot with udc-vm --usbip".into(),
                ));
            };
            match usbip::attach(&server) {
                Ok(a) => {
                    println!(
                        "attached {:04x}:{:04x} on vhci_hcd port {} as {} ({})",
                        a.imported.vendor,
                        a.imported.product,
                        a.port,
                        a.sysfs.display(),
                        a.devnode.display()
                    );
                    // It stays attached after we exit.
                    std::mem::forget(a);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

/// `udc-gadget host REQUEST`: exit status 0 when the reply says ok.
fn host_request(cli: &Cli, request: &str) -> ExitCode {
    let req: serde_json::Value = match serde_json::from_str(request) {
        Ok(v) => v,
        Err(e) => return fail(Error::Setup(format!("the request is not JSON: {e}"))),
    };
    match ControlClient::open(&cli.control).and_then(|mut h| h.request(&req)) {
        Ok(reply) => {
            println!("{reply}");
            if reply["ok"] == true {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => fail(e),
    }
}

fn fail(e: Error) -> ExitCode {
    eprintln!("udc-gadget: {e}");
    ExitCode::FAILURE
}

fn context(cli: &Cli) -> Result<Ctx, Error> {
    Ctx::open(&cli.control, cli.udc.clone())
}
