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
mod dmabuf;
mod ffs;
mod ffs_dmabuf;
mod gadget;
mod host;
mod kmsg;
mod ktap;
mod recipes;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::cases::{Case, Ctx};
use crate::host::HostLink;
use crate::kmsg::KmsgWatch;
use crate::ktap::{Ktap, Outcome};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something the case needs is missing or cannot be set up.
    #[error("setup: {0}")]
    Setup(String),
    /// The host side did not answer as the protocol says.
    #[error("host: {0}")]
    Host(String),
    /// A check failed: the outcome differs from the expected one.
    #[error("{0}")]
    Check(String),
}

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
        /// Run only the cases whose name contains this.
        #[arg(long)]
        filter: Option<String>,
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
    /// Send one request to the host side's control socket and print the
    /// reply, e.g. '{"op":"inject","set":{"ep1in.hold":"next:1"}}' or
    /// '{"op":"injections"}' (docs/control-socket.md, docs/injection.md).
    Host {
        /// The request, one JSON object.
        request: String,
    },
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Test { ref filter, list } => {
            let cases: Vec<&Case> = cases::CASES
                .iter()
                .filter(|c| {
                    filter
                        .as_deref()
                        .is_none_or(|f| f.split(',').any(|f| c.name.contains(f)))
                })
                .collect();
            if list {
                for c in &cases {
                    println!("{} (needs {})", c.name, c.needs.describe());
                }
                return ExitCode::SUCCESS;
            }
            run_suite(&cli, cases)
        }
        Cmd::Serve => serve(&cli),
        Cmd::Demo { size } => {
            let mut ctx = match context(&cli) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            match cases::demo(&mut ctx, size) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Cmd::Bench(ref args) => match context(&cli).and_then(|mut ctx| bench::run(&mut ctx, args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Cmd::Host { ref request } => host_request(&cli, request),
    }
}

/// `udc-gadget host REQUEST`: exit status 0 when the reply says ok.
fn host_request(cli: &Cli, request: &str) -> ExitCode {
    let req: serde_json::Value = match serde_json::from_str(request) {
        Ok(v) => v,
        Err(e) => return fail(Error::Setup(format!("the request is not JSON: {e}"))),
    };
    match HostLink::open(&cli.control).and_then(|mut h| h.request(&req)) {
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
    Ok(Ctx {
        host: HostLink::open(&cli.control)?,
        control: cli.control.clone(),
        udc: cli.udc.clone(),
        notes: Vec::new(),
        expected_races: 0,
    })
}

/// Runs `cases`, less those the controller cannot run (a DMABUF case on a
/// controller without scatter-gather, say), which leave the plan with a
/// diagnostic saying why: the runner boots a controller of each kind.
fn run_suite(cli: &Cli, cases: Vec<&Case>) -> ExitCode {
    let mut ctx = context(cli);
    let sg = match &mut ctx {
        Ok(c) => c
            .host
            .status()
            .ok()
            .and_then(|st| st["device"]["controller"]["scatter_gather"].as_bool()),
        Err(_) => None,
    };
    let (cases, left_out): (Vec<&Case>, Vec<&Case>) = match sg {
        Some(sg) => cases.into_iter().partition(|c| c.needs.admits(sg)),
        None => (cases, Vec::new()),
    };
    let mut ktap = Ktap::start(cases.len());
    for c in &left_out {
        ktap.diag(&format!(
            "not in this plan: {} needs {}",
            c.name,
            c.needs.describe()
        ));
    }
    let mut ctx = match ctx {
        Ok(c) => Some(c),
        Err(e) => {
            ktap.diag(&format!("cannot reach the host side: {e}"));
            None
        }
    };
    for c in &cases {
        let outcome = match ctx.as_mut() {
            None => Outcome::Fail("no control channel to the host side".into()),
            Some(ctx) => run_case(ctx, c.run),
        };
        if let Some(ctx) = ctx.as_mut() {
            for n in ctx.notes.drain(..) {
                ktap.diag(&n);
            }
        }
        ktap.result(c.name, &outcome);
    }
    ktap.finish();
    if ktap.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One case, with the kernel log it produced checked afterwards.
/// One case, with the kernel log it produced checked afterwards, and the
/// daemon's race detectors (docs/injection.md): their reports during the
/// case become its diagnostics, and one it did not provoke fails it.
fn run_case(ctx: &mut Ctx, case: fn(&mut Ctx) -> Result<(), Error>) -> Outcome {
    let mut kmsg = KmsgWatch::start();
    let races_before = races_total(ctx);
    ctx.expected_races = 0;
    let result = case(ctx);
    // Give the kernel a moment to log what teardown caused.
    std::thread::sleep(Duration::from_millis(100));
    let problems = kmsg.problems();
    let races = new_races(ctx, races_before);
    for r in &races {
        ctx.notes.push(format!("RACE {r}"));
    }
    let unexpected = races.len() as u64 > ctx.expected_races;
    let mut why = Vec::new();
    if let Err(e) = result {
        why.push(e.to_string());
    }
    if unexpected {
        why.push(format!(
            "the daemon's race detector reported {} race(s) the case did not provoke",
            races.len() as u64 - ctx.expected_races
        ));
    }
    if !problems.is_empty() {
        why.push(format!("kernel log:\n{}", problems.join("\n")));
    }
    if why.is_empty() {
        Outcome::Pass
    } else {
        Outcome::Fail(why.join("\n"))
    }
}

/// The daemon's count of race reports, if it answers (it may be the one a
/// case just restarted).
fn races_total(ctx: &mut Ctx) -> Option<u64> {
    ctx.host.races().ok().map(|(total, _)| total)
}

/// The race reports since the count was `before`, one line each.
fn new_races(ctx: &mut Ctx, before: Option<u64>) -> Vec<String> {
    let Some(before) = before else { return Vec::new() };
    let Ok((total, list)) = ctx.host.races() else {
        return Vec::new();
    };
    // A restarted daemon counts from 0 again: nothing to attribute.
    let n = total.saturating_sub(before) as usize;
    list[list.len().saturating_sub(n)..]
        .iter()
        .map(|x| {
            format!(
                "{} request #{} tag {:#x}: {} (blocks at {})",
                x["ep"].as_str().unwrap_or("?"),
                x["request"],
                x["tag"].as_u64().unwrap_or(0),
                x["detail"].as_str().unwrap_or(""),
                x["changed_blocks"]
            )
        })
        .collect()
}

fn serve(cli: &Cli) -> ExitCode {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let udc = match gadget::find_udc(cli.udc.as_deref()) {
        Ok(u) => u,
        Err(e) => return fail(e),
    };
    let name = udc.name().to_string_lossy().into_owned();
    let g = match gadget::TestGadget::bind(udc) {
        Ok(g) => g,
        Err(e) => return fail(e),
    };
    println!(
        "udc-gadget: bound to UDC {name}; FunctionFS at {} (ep1: bulk IN, ep2: bulk OUT)",
        g.ffs_dir.display()
    );
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(g);
    println!("udc-gadget: unbound");
    ExitCode::SUCCESS
}
