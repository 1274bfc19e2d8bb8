// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! A run of the suite: the cases chosen by name or filter, each run with
//! the kernel log and the daemon's race detectors watched, KTAP on stdout
//! and each case's start and failure in the kernel log.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::{all, Case};
use crate::error::Error;
use crate::kmsg::{self, KmsgWatch};
use crate::ktap::{Ktap, Outcome};
use crate::support::Ctx;

/// The cases of `udc-gadget test`: those whose names contain a word of
/// `filter`, or exactly `names` (an unknown name is an error), or all.
pub fn select_cases(filter: Option<&str>, names: &[String]) -> Result<Vec<&'static Case>, Error> {
    if !names.is_empty() {
        if let Some(n) = names.iter().find(|n| !all().any(|c| c.name == n.as_str())) {
            return Err(Error::Setup(format!(
                "--cases: no case named {n} (udc-gadget test --list)"
            )));
        }
        return Ok(all().filter(|c| names.iter().any(|n| n == c.name)).collect());
    }
    Ok(all()
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
/// controller without scatter-gather, say), which are KTAP skips saying
/// why: the runner boots a controller of each kind.
///
/// The plan's case names come first as a `# plan:` diagnostic, and each
/// case's start goes to the kernel log (`udc-gadget: case NAME`), so that
/// the runner can tell which case a stuck guest or a console splat
/// belongs to.
pub fn run_suite(ctx: Result<Ctx, Error>, cases: Vec<&Case>, stop_on_failure: bool) -> ExitCode {
    let mut ctx = ctx;
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
    let mut ktap = Ktap::start(left_out.len() + cases.len());
    for c in &left_out {
        ktap.skip(c.name, &format!("needs {}", c.needs.describe()));
    }
    // The cases that run, for the runner: it goes on from the first
    // without a result in a fresh guest.
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
        let started = Instant::now();
        let outcome = match ctx.as_mut() {
            None => Outcome::Fail("no control channel to the host side".into()),
            Some(ctx) => run_case(ctx, c.run, &say_failed),
        };
        let took = started.elapsed();
        if let Some(ctx) = ctx.as_mut() {
            for n in ctx.notes.drain(..) {
                ktap.diag(&n);
            }
        }
        if let (Outcome::Fail(why), false) = (&outcome, said.get()) {
            say_failed(why);
        }
        let failed = matches!(outcome, Outcome::Fail(_));
        ktap.result(c.name, &outcome, took);
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
        let mut n: Vec<&str> = all().map(|c| c.name).collect();
        let len = n.len();
        n.sort();
        n.dedup();
        assert_eq!(n.len(), len);
    }
}
