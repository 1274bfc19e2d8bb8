// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `udc-vm soak`: boots the guest with the daemon under seeded random
//! delays and faults and runs `udc-gadget soak` for a set time: read/write
//! and DMABUF transfers both ways, each one checked byte for byte at both
//! ends (crates/udc-gadget/src/soak.rs says how). The runner shows the
//! guest's progress, then reports transfers, bytes, the faults injected
//! (the guest's count from the daemon's injection log, and the daemon
//! log's own count of faults that struck, which must agree), corruptions
//! nobody detected and kernel warnings on the guest's console, and fails
//! unless the soak ran its time with both of those at zero.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::ktap::{Case, Outcome};
use crate::vm::{self, Mode};
use crate::{Error, VmArgs};

/// Delays and faults when `--inject` gives none: every kind that ends a
/// transfer on its own (a held or reordered completion needs a second
/// party), a few percent each, over random latency and NAKs.
pub const DEFAULT_INJECTION: &[&str] = &[
    "latency=0..1ms",
    "nak=5%",
    "nak_time=1ms",
    "stall=2%",
    "babble=1%",
    "proto_error=1%",
    "io_error=1%",
    "short=2%",
];

/// The guest prints progress every 10 s: this long without any means a
/// transfer hangs where the kernel does not notice.
const QUIET: Duration = Duration::from_secs(120);

/// Boot, module loading and setup under TCG, on top of the soak's time.
const BOOT_ALLOWANCE: u64 = 600;

#[derive(Args, Debug, Clone)]
pub struct SoakArgs {
    /// How long the transfers run: 60s, 10m, 2h, or seconds.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Largest transfer in bytes (up to 1 MiB).
    #[arg(long, value_name = "BYTES")]
    pub max_size: Option<usize>,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: say 60s, 10m, 2h or a number of seconds"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: the units are s, m and h")),
    };
    if secs == 0 {
        return Err("a soak of no time proves nothing".into());
    }
    Ok(Duration::from_secs(secs))
}

/// The guest's `soak: done` line as numbers (and the rest as text).
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub fields: BTreeMap<String, String>,
}

impl Summary {
    pub fn num(&self, k: &str) -> u64 {
        self.fields.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    pub fn secs(&self) -> f64 {
        self.fields
            .get("elapsed")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

/// The last `soak: done` line of the results port.
pub fn parse_done(results: &str) -> Option<Summary> {
    let l = results.lines().rev().find(|l| l.starts_with("soak: done "))?;
    let fields = l["soak: done ".len()..]
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some(Summary { fields })
}

/// The faults that struck, by the daemon's own log (`ep1in: injected
/// stall in request #3 ...`).
pub fn faults_in_daemon_log(log: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for l in log.lines() {
        if let Some(i) = l.find(": injected ") {
            let rest = &l[i + ": injected ".len()..];
            if rest.contains(" in request #") {
                let kind = rest.split(' ').next().unwrap_or("?");
                *m.entry(kind.to_string()).or_insert(0) += 1;
            }
        }
    }
    m
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

pub fn run(a: &VmArgs, s: &SoakArgs) -> Result<ExitCode, Error> {
    let mut a = a.clone();
    if a.inject.is_empty() {
        a.inject = DEFAULT_INJECTION.iter().map(|x| x.to_string()).collect();
        eprintln!(
            "udc-vm: soak injection (default): {}",
            DEFAULT_INJECTION.join(" ")
        );
    }
    let mut o = crate::options(&a, Some(s.duration.as_secs() + BOOT_ALLOWANCE), false)?;
    o.quiet_timeout = Some(QUIET);
    let seed = o.inject_seed.unwrap_or(1);
    let mut cmd = format!("udc-gadget soak --seconds {} --seed {seed}", s.duration.as_secs());
    if let Some(m) = s.max_size {
        cmd.push_str(&format!(" --max-size {m}"));
    }
    eprintln!(
        "udc-vm: soak of {} s; logs in {}",
        s.duration.as_secs(),
        o.out.display()
    );

    let stop = Arc::new(AtomicBool::new(false));
    // The guest's `soak:` lines to stderr as they arrive.
    let tail = vm::follow_lines(
        o.out.join("results.ktap"),
        stop.clone(),
        Duration::from_millis(500),
        |l| {
            if l.starts_with("soak: ") || l.starts_with("udc-gadget") {
                eprint!("udc-vm: guest {l}");
            }
        },
    );
    let booted = vm::boot(&o, &Mode::Script(cmd + "\n"));
    stop.store(true, Ordering::SeqCst);
    let _ = tail.join();
    let f = booted?;

    let results = std::fs::read_to_string(&f.paths.results).unwrap_or_default();
    let console = std::fs::read_to_string(&f.paths.console).unwrap_or_default();
    let daemon_log = std::fs::read_to_string(&f.paths.daemon_log).unwrap_or_default();
    let warnings = crate::kernel_log::problems(&console);
    let struck = faults_in_daemon_log(&daemon_log);
    let struck_total: u64 = struck.values().sum();
    let summary = parse_done(&results);

    // Why the soak itself fails, if it does.
    let mut why: Vec<String> = Vec::new();
    if let Err(e) = o.ffs.check_console(&console) {
        why.push(e);
    }
    if let Some(line) = &f.stuck {
        why.push(format!("the guest's kernel is stuck: {line}"));
    }
    if let Some(x) = &f.stopped {
        why.push(format!("stopped: {x}"));
    }
    if f.timed_out {
        why.push(format!("timeout after {:?}", o.timeout.unwrap_or_default()));
    }
    match crate::ktap::parse(&results).run_exit {
        Some(0) => {}
        Some(n) => why.push(format!("udc-gadget soak exited with status {n}")),
        None => why.push(format!(
            "the guest did not report the soak's end (QEMU {}); last console lines:\n{}\nQEMU said:\n{}",
            f.qemu_status.map(|s| s.to_string()).unwrap_or_default(),
            vm::tail(&f.paths.console, 15),
            vm::tail(&f.paths.qemu_log, 5)
        )),
    }
    for l in results.lines().filter(|l| {
        [
            "CORRUPTION",
            "BAD PARTIAL",
            "UNEXPLAINED",
            "FAULTS UNMATCHED",
            "STOPPED",
        ]
        .iter()
        .any(|m| l.starts_with(&format!("soak: {m}")))
    }) {
        why.push(l.trim_start_matches("soak: ").to_string());
    }
    let corruptions = summary.as_ref().map_or(0, |x| x.num("corruptions"));
    match &summary {
        None => why.push("no `soak: done` line from the guest: the soak did not finish".into()),
        Some(x) => {
            if x.num("transfers") == 0 {
                why.push("no transfer ran".into());
            }
            if x.secs() + 1.0 < s.duration.as_secs_f64() {
                why.push(format!("it ran {:.1} s of {} s", x.secs(), s.duration.as_secs()));
            }
            for k in [
                "corruptions",
                "bad_partial",
                "unexplained",
                "unmatched",
                "races",
                "log_missed",
            ] {
                if x.num(k) > 0 {
                    why.push(format!("{k}: {}", x.num(k)));
                }
            }
            if x.num("faults") != struck_total {
                why.push(format!(
                    "the injection log decided {} faults, the daemon log shows {struck_total} struck",
                    x.num("faults")
                ));
            }
        }
    }
    why.dedup();

    // The report.
    let seconds = summary.as_ref().map_or(0.0, Summary::secs);
    let report = match &summary {
        Some(x) => {
            let kinds = [
                "stall",
                "babble",
                "short",
                "proto_error",
                "io_error",
                "reset",
                "disconnect",
            ]
            .iter()
            .filter(|k| x.num(&format!("log_{k}")) > 0)
            .map(|k| format!("{k} {}", x.num(&format!("log_{k}"))))
            .collect::<Vec<_>>()
            .join(", ");
            format!(
                "soak: {seconds:.0} s, seed {seed}, injection {}\n\
                 transfers:               {} (completed and verified {}, {} of them ended short by an injected short packet; ended with an error by an injected fault {})\n\
                 by kind:                 read/write OUT {}, IN {}; DMABUF OUT {}, IN {}\n\
                 bytes verified:          {} ({} bytes; {} more before faults)\n\
                 faults injected:         {} ({kinds}); the daemon log shows {struck_total} struck\n\
                 delays injected:         {} (latency {}, NAK {})\n\
                 corruptions undetected:  {corruptions}\n\
                 errors unexplained:      {}\n\
                 kernel warnings:         {}\n",
                a.inject.join(" "),
                x.num("transfers"),
                x.num("ok"),
                x.num("short"),
                x.num("faulted"),
                x.num("rw_out"),
                x.num("rw_in"),
                x.num("dmabuf_out"),
                x.num("dmabuf_in"),
                mib(x.num("bytes")),
                x.num("bytes"),
                mib(x.num("partial_bytes")),
                x.num("faults"),
                x.num("delays"),
                x.num("log_latency"),
                x.num("log_nak"),
                x.num("unexplained") + x.num("bad_partial"),
                warnings.len(),
            )
        }
        None => format!(
            "soak: did not finish; seed {seed}; kernel warnings: {}\n",
            warnings.len()
        ),
    };
    print!("{report}");
    for w in &warnings {
        println!("# kernel: {w}");
    }

    let mut cases = vec![
        Case {
            suite: "udc-vm".into(),
            name: "soak".into(),
            outcome: if why.is_empty() {
                Outcome::Pass
            } else {
                Outcome::Fail
            },
            diagnostics: why.clone(),
            seconds: None,
        },
        Case {
            suite: "udc-vm".into(),
            name: "kernel-log".into(),
            outcome: if warnings.is_empty() {
                Outcome::Pass
            } else {
                Outcome::Fail
            },
            diagnostics: warnings.clone(),
            seconds: None,
        },
    ];
    if let Some(p) = &f.privileges {
        cases.push(crate::suite::unprivileged_case(p, 1));
    }
    let mut record = report.clone();
    for c in &cases {
        for d in &c.diagnostics {
            println!("# {}: {d}", c.name);
            record.push_str(&format!("# {}: {d}\n", c.name));
        }
    }
    let _ = std::fs::write(o.out.join("soak.txt"), &record);
    let passed = cases.iter().filter(|c| c.outcome == Outcome::Pass).count();
    let failed = cases.len() - passed;
    for c in cases.iter().filter(|c| c.outcome == Outcome::Fail) {
        println!("# FAILED: {}", c.name);
    }
    println!("udc-vm: {passed} passed, {failed} failed, 0 skipped");
    if failed > 0 {
        println!("udc-vm: injection seed {seed}: run again with --seed {seed} to reproduce");
    }
    eprintln!("udc-vm: report: {}", Path::new(&o.out).join("soak.txt").display());
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn the_last_done_line_is_the_summary() {
        let r = "soak: progress elapsed=10.0 transfers=5\n\
                 soak: done elapsed=60.2 transfers=1234 corruptions=0 faults=31\n\
                 udc-init: run.sh exit 0\n";
        let s = parse_done(r).unwrap();
        assert_eq!(s.num("transfers"), 1234);
        assert_eq!(s.num("faults"), 31);
        assert!((s.secs() - 60.2).abs() < 1e-9);
        assert!(parse_done("soak: progress elapsed=1\n").is_none());
    }

    #[test]
    fn struck_faults_are_counted_from_the_daemon_log() {
        let log = "[2026 INFO vhost_device_udc::device::faults] ep1in: injected stall in request #3 (tag 0x1d) after 512 of 4096 bytes\n\
                   [2026 INFO vhost_device_udc::device::faults] ep2out: injected short in request #9 (tag 0x2) after 0 of 1 bytes\n\
                   [2026 INFO vhost_device_udc::device::faults] ep2out: injected stall in request #10 (tag 0x3) after 0 of 1 bytes\n\
                   [2026 INFO vhost_device_udc] injection: {\"latency\": \"1ms\"}\n";
        let m = faults_in_daemon_log(log);
        assert_eq!(m.get("stall"), Some(&2));
        assert_eq!(m.get("short"), Some(&1));
        assert_eq!(m.values().sum::<u64>(), 3);
    }
}
