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
mod case;
mod cases;
mod dmabuf;
mod dmabuf_cases;
mod ffs;
mod ffs_dmabuf;
mod findings;
mod gadget;
mod host;
mod kmsg;
mod ktap;
mod lifecycle;
mod plan;
mod recipes;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::case::{Case, Ctx};
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
        Cmd::Test {
            ref filter,
            ref cases,
            stop_on_failure,
            list,
        } => {
            let chosen = match select_cases(filter.as_deref(), cases) {
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
            run_suite(&cli, chosen, stop_on_failure)
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

/// The cases of `udc-gadget test`: those whose names contain a word of
/// `filter`, or exactly `names` (an unknown name is an error), or all.
fn select_cases(filter: Option<&str>, names: &[String]) -> Result<Vec<&'static Case>, Error> {
    if !names.is_empty() {
        if let Some(n) = names.iter().find(|n| !plan::all().any(|c| c.name == n.as_str())) {
            return Err(Error::Setup(format!(
                "--cases: no case named {n} (udc-gadget test --list)"
            )));
        }
        return Ok(plan::all()
            .filter(|c| names.iter().any(|n| n == c.name))
            .collect());
    }
    Ok(plan::all()
        .filter(|c| match filter {
            None => c.default,
            Some(f) => f
                .split(',')
                .any(|f| c.name.contains(f) || (f == CATALOGUE && c.default)),
        })
        .collect())
}

/// The filter word for the cases `udc-gadget test` runs when given none
/// (the catalogue), so that a filter can add to them: `catalogue,lifecycle`.
const CATALOGUE: &str = "catalogue";

/// Exit status of `udc-gadget test --stop-on-failure` when it stopped
/// early.
const STOPPED: u8 = 4;

/// Runs `cases`, less those the controller cannot run (a DMABUF case on a
/// controller without scatter-gather, say), which leave the plan with a
/// diagnostic saying why: the runner boots a controller of each kind.
///
/// The plan's case names come first as a `# plan:` diagnostic, and each
/// case's start goes to the kernel log (`udc-gadget: case NAME`), so that
/// the runner can tell which case a stuck guest or a console splat
/// belongs to.
fn run_suite(cli: &Cli, cases: Vec<&Case>, stop_on_failure: bool) -> ExitCode {
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
    ktap.diag(&format!(
        "plan: {}",
        cases.iter().map(|c| c.name).collect::<Vec<_>>().join(",")
    ));
    let mut ctx = match ctx {
        Ok(c) => Some(c),
        Err(e) => {
            ktap.diag(&format!("cannot reach the host side: {e}"));
            None
        }
    };
    for (i, c) in cases.iter().enumerate() {
        kmsg::mark(&format!("udc-gadget: case {}", c.name));
        // Said after the last case too: the runner then stops a guest the
        // failure left stuck, and runs the guest test binaries in a fresh one.
        let stop = stop_on_failure.then(|| {
            format!(
                "udc-gadget: stopped after {} failed: {} cases left for a fresh guest",
                c.name,
                cases.len() - i - 1
            )
        });
        // The console hears of a failure first: a guest stuck by the case
        // may never get its KTAP line to the runner, and the console needs
        // no interrupt.
        let said = std::cell::Cell::new(false);
        let say_failed = |why: &str| {
            for l in why.lines().take(20) {
                kmsg::mark(&format!("udc-gadget: {} failed: {l}", c.name));
            }
            if let Some(stop) = &stop {
                kmsg::mark(stop);
            }
            said.set(true);
        };
        let outcome = match ctx.as_mut() {
            None => Outcome::Fail("no control channel to the host side".into()),
            Some(ctx) => run_case(ctx, c.run, &say_failed),
        };
        if let Some(ctx) = ctx.as_mut() {
            for n in ctx.notes.drain(..) {
                ktap.diag(&n);
            }
        }
        if let (Outcome::Fail(why), false) = (&outcome, said.get()) {
            say_failed(why);
        }
        let failed = matches!(outcome, Outcome::Fail(_));
        ktap.result(c.name, &outcome);
        if let (true, Some(stop)) = (failed, &stop) {
            ktap.diag(stop);
            return ExitCode::from(STOPPED);
        }
    }
    kmsg::mark("udc-gadget: suite done");
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
///
/// A case that fails says why on the console at once (`failed_early`),
/// before any more I/O: it may have left the guest unable to do any.
fn run_case(ctx: &mut Ctx, case: fn(&mut Ctx) -> Result<(), Error>, failed_early: &dyn Fn(&str)) -> Outcome {
    let mut kmsg = KmsgWatch::start();
    let races_before = races_total(ctx);
    ctx.expected_races = 0;
    let result = case(ctx);
    if let Err(e) = &result {
        failed_early(&e.to_string());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: Vec<&Case>) -> Vec<&'static str> {
        v.into_iter().map(|c| c.name).collect()
    }

    #[test]
    fn no_filter_is_the_catalogue_and_reproducers_run_when_named() {
        let all = names(select_cases(None, &[]).unwrap());
        assert!(all.contains(&"enumeration") && all.contains(&"dmabuf-sizes-udmabuf-and-heap"));
        assert!(!all
            .iter()
            .any(|n| n.starts_with("lifecycle-") || n.starts_with("ffs-")));
        let some = names(select_cases(Some("ffs-fence,lifecycle-close"), &[]).unwrap());
        assert_eq!(some.len(), 9, "{some:?}");
        let both = names(select_cases(Some("catalogue,lifecycle"), &[]).unwrap());
        assert_eq!(both.len(), all.len() + 32);
        assert_eq!(
            names(select_cases(None, &["daemon-crash-and-restart".into(), "enumeration".into()]).unwrap()),
            ["enumeration", "daemon-crash-and-restart"],
            "exact names keep the suite's order"
        );
        assert!(select_cases(None, &["no-such-case".into()]).is_err());
    }

    #[test]
    fn every_case_has_its_own_name() {
        let mut n: Vec<&str> = plan::all().map(|c| c.name).collect();
        let len = n.len();
        n.sort();
        n.dedup();
        assert_eq!(n.len(), len);
    }
}
