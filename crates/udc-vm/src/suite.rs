// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `udc-vm test`: the VM scenario suite on one controller or both.
//!
//! A case that fails may leave the kernel or the gadget unfit for the next
//! one (a WARN with a refcount gone wrong, a CPU spinning on a lock), so the
//! guest tool stops after a failed case and the runner goes on with the
//! rest of the plan in a fresh guest. A case during which the guest got
//! stuck or went quiet fails with that as its reason; kernel-log lines on
//! the console go to the case that was running when they were logged.
//! Known kernel bugs can be asserted as expected failures (`--expect-fail`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use crate::kernel_log;
use crate::ktap::{self, Case, Outcome, STOPPED_PREFIX};
use crate::vm::{self, Mode, VmOptions};
use crate::{junit, shell_quote, Error};

/// A case that hangs without the kernel noticing is stopped after this
/// long without a new line on the results port.
const QUIET_TIMEOUT: Duration = Duration::from_secs(300);

/// The guest tool's suite, as the runner names it.
const GADGET_SUITE: &str = "udc-gadget";

/// The guest tool's cases the controller without scatter-gather runs when
/// no --filter is given: enumeration and the linear read/write path, and
/// the DMABUF cases, of which the guest tool keeps only the one for this
/// controller (attach refused).
pub const NO_SG_FILTER: &str = "enumeration,bulk-out-read,bulk-in-write,short-and-zero-length,dmabuf";

/// `--expect-fail CASE:TEXT`: CASE must fail, with TEXT in its reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    pub case: String,
    pub text: String,
}

impl FromStr for Expectation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some((c, t)) if !c.is_empty() && !t.is_empty() => Ok(Expectation {
                case: c.to_string(),
                text: t.to_string(),
            }),
            _ => Err(format!(
                "'{s}': say CASE:TEXT (the case and a text its failure must show)"
            )),
        }
    }
}

/// What `udc-vm test` was asked for.
pub struct TestArgs {
    pub filter: Option<String>,
    pub junit: Option<PathBuf>,
    pub ktap: Option<PathBuf>,
    pub controller: Controllers,
    pub expect_fail: Vec<Expectation>,
    /// Run the usbtest suites (USBTEST_SUITES); alone, only those.
    pub usbtest: bool,
}

/// One controller's boots.
struct Controller {
    /// Said in the output and added to suite names, except for the first.
    label: &'static str,
    daemon_args: Vec<String>,
    filter: Option<String>,
    guest_binaries: bool,
    /// The usbtest suites (`--usbtest`).
    usbtest: bool,
    out: PathBuf,
}

/// Which controllers a run boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Controllers {
    /// The default with scatter-gather, then one without.
    Both,
    Sg,
    /// The daemon's --no-sg: FunctionFS must refuse DMABUFs, read/write
    /// take the linear path.
    NoSg,
}

fn controllers(
    o: &VmOptions,
    filter: Option<&str>,
    controller: Controllers,
    usbtest: bool,
) -> Vec<Controller> {
    let mut cs = Vec::new();
    if controller != Controllers::NoSg {
        cs.push(Controller {
            label: "",
            daemon_args: o.daemon_args.clone(),
            filter: filter.map(str::to_string),
            // --usbtest alone runs only the usbtest suites.
            guest_binaries: filter.is_none() && !usbtest,
            usbtest,
            out: o.out.clone(),
        });
    }
    // The usbtest suites need scatter-gather (DMABUF) and run once.
    if controller != Controllers::Sg && !usbtest {
        let mut daemon_args = o.daemon_args.clone();
        daemon_args.push("--no-sg".into());
        cs.push(Controller {
            label: "no sg",
            daemon_args,
            filter: Some(filter.unwrap_or(NO_SG_FILTER).to_string()),
            guest_binaries: false,
            usbtest: false,
            out: if controller == Controllers::NoSg {
                o.out.clone()
            } else {
                o.out.join("no-sg")
            },
        });
    }
    cs
}

/// Which of the guest tool's cases a boot runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GadgetPlan {
    /// As the filter (or the whole suite) selects them.
    Filter(Option<String>),
    /// Exactly these, going on after a failure.
    Exact(Vec<String>),
    /// None: only the guest test binaries are left.
    Nothing,
}

/// /udc/run.sh for one boot: each suite one top-level KTAP case, its own
/// output indented as a subtest, line by line as it comes.
fn test_script(gadget: &GadgetPlan, guest_binaries: bool, usbtest: bool) -> String {
    let mut s = String::from(
        "set -u\n\
         # The daemon's own tests find its guest build here (docs/vm-tier.md).\n\
         export VHOST_DEVICE_UDC_BIN=/usr/bin/vhost-device-udc\n\
         suites=\n",
    );
    let gadget_args = match gadget {
        GadgetPlan::Filter(None) => Some(String::new()),
        GadgetPlan::Filter(Some(f)) => Some(format!(" --filter {}", shell_quote(f))),
        GadgetPlan::Exact(names) => Some(format!(" --cases {}", shell_quote(&names.join(",")))),
        GadgetPlan::Nothing => None,
    };
    if gadget_args.is_some() {
        s += "suites=/usr/bin/udc-gadget\n";
    }
    if guest_binaries {
        // The test suites only: ffs-test and testusb live there too.
        s += "for t in /usr/libexec/udc/*-tests; do [ -f \"$t\" ] && [ -x \"$t\" ] && suites=\"$suites $t\"; done\n";
    }
    if usbtest {
        for (name, _) in USBTEST_SUITES {
            s += &format!("suites=\"$suites {name}\"\n");
        }
    }
    s += "set -- $suites\n\
          echo 'KTAP version 1'\n\
          echo \"1..$#\"\n\
          echo \"# f_fs: $(cat /etc/udc/ffs 2>/dev/null); srcversion $(cat /sys/module/usb_f_fs/srcversion 2>/dev/null || echo none)\"\n\
          i=0\n\
          for t in $suites; do\n\
          \x20   i=$((i + 1))\n\
          \x20   name=${t##*/}\n\
          \x20   echo \"<6>udc-vm: suite $name\" > /dev/kmsg\n\
          \x20   case $name in\n";
    s += &format!(
        "        udc-gadget) set -- \"$t\" test --stop-on-failure{} ;;\n",
        gadget_args.unwrap_or_default()
    );
    for (name, args) in USBTEST_SUITES {
        s += &format!("        {name}) set -- /usr/bin/udc-gadget usbtest {args} ;;\n");
    }
    s += "        *) set -- \"$t\" --test-threads=1 ;;\n\
          \x20   esac\n\
          \x20   # Line by line, so each result reaches the results port as it ends.\n\
          \x20   { \"$@\"; echo $? > /tmp/suite.rc; } 2>&1 | while IFS= read -r l; do printf '    %s\\n' \"$l\"; done\n\
          \x20   rc=$(cat /tmp/suite.rc)\n\
          \x20   if [ \"$rc\" = 0 ]; then echo \"ok $i $name\"; else echo \"not ok $i $name # exit status $rc\"; fi\n\
          \x20   # Stopped after a failed case: the rest is for a fresh guest.\n\
          \x20   if [ \"$name\" = udc-gadget ] && [ \"$rc\" = 4 ]; then exit 4; fi\n\
          done\n";
    s
}

/// `--usbtest`: the kernel's gadget test suite (docs/usbtest.md), a KTAP
/// suite per device and way to it, each test number a case.
pub const USBTEST_SUITES: &[(&str, &str)] = &[
    ("usbtest-usbip-sourcesink", "--via usbip --device sourcesink"),
    ("usbtest-dummy-sourcesink", "--via dummy --device sourcesink"),
    // Not a multiple of any bulk packet size: no zero-length packets,
    // which a DMABUF transfer could not tell from data (docs/usbtest.md).
    (
        "usbtest-usbip-ffs-dmabuf",
        "--via usbip --device ffs-dmabuf --size 1000",
    ),
];

/// What one controller's boots found.
#[derive(Default)]
struct Found {
    cases: Vec<Case>,
    errors: Vec<String>,
    seconds: f64,
    console_tail: String,
}

/// Why the guest tool's running case has no result.
fn why_no_result(f: &vm::Finished, report: &ktap::Report, timeout: Option<Duration>) -> String {
    if let Some(line) = &f.stuck {
        format!("the guest's kernel broke down during this case ({line}); the runner stopped it")
    } else if let Some(why) = &f.stopped {
        format!("{why} during this case; the runner stopped the guest")
    } else if f.timed_out {
        format!(
            "the run's time ({} s) was up during this case",
            timeout.unwrap_or_default().as_secs()
        )
    } else if f.qemu_status.is_some_and(|s| !s.success()) {
        format!(
            "QEMU ended ({}) during this case:\n{}",
            f.qemu_status.unwrap(),
            vm::tail(&f.paths.qemu_log, 5)
        )
    } else if report.run_exit.is_none() {
        "the guest went away during this case without a word (see the console)".into()
    } else {
        "the guest tool ended during this case without giving its result".into()
    }
}

/// How a boot ended before the suite started: the runner's reason to stop
/// it, or QEMU's exit status.
fn boot_end(
    stuck: Option<&str>,
    stopped: Option<&str>,
    timed_out: bool,
    qemu: Option<std::process::ExitStatus>,
) -> String {
    if let Some(line) = stuck {
        format!("the boot ended: the guest's kernel broke down ({line}); the runner stopped it")
    } else if let Some(why) = stopped {
        format!("the boot ended: {why}; the runner stopped the guest")
    } else if timed_out {
        "the boot ended: the run's time was up".into()
    } else {
        match qemu {
            Some(s) if s.success() => "the boot ended: QEMU exited with status 0 before the suite \
                 started, so the guest reset or powered off (QEMU runs with -no-reboot: a reset, \
                 a triple fault included, ends it quietly)"
                .into(),
            Some(s) => format!("the boot ended: QEMU ended ({s})"),
            None => "the boot ended: QEMU's exit status is not known".into(),
        }
    }
}

/// Most boots for one controller: one per case at worst, and some.
const MAX_BOOTS: usize = 64;

/// Runs one controller's part: boots until every planned case has a
/// result, each boot going on after the case the last one stopped at.
fn run_controller(o: &VmOptions, c: &Controller) -> Result<Found, Error> {
    let mut found = Found::default();
    let mut gadget = if c.usbtest && c.filter.is_none() {
        GadgetPlan::Nothing
    } else {
        GadgetPlan::Filter(c.filter.clone())
    };
    let mut binaries = c.guest_binaries;
    let mut usbtest = c.usbtest;
    for n in 1.. {
        let out = if n == 1 {
            c.out.clone()
        } else {
            c.out.join(format!("boot-{n}"))
        };
        std::fs::create_dir_all(&out).map_err(|e| Error::Io(format!("{}: {e}", out.display())))?;
        if n > 1 {
            let left = match &gadget {
                GadgetPlan::Exact(v) => v.len(),
                _ => 0,
            };
            eprintln!(
                "udc-vm: a fresh guest for the {left} cases left{}; logs in {}",
                if binaries {
                    " and the guest test binaries"
                } else {
                    ""
                },
                out.display()
            );
        }
        let bo = VmOptions {
            daemon_args: c.daemon_args.clone(),
            out: out.clone(),
            stop_marker: Some(STOPPED_PREFIX.to_string()),
            quiet_timeout: Some(QUIET_TIMEOUT),
            ..o.clone()
        };
        let f = vm::boot(&bo, &Mode::Script(test_script(&gadget, binaries, usbtest)))?;
        found.seconds += f.elapsed.as_secs_f64();
        found.console_tail += &vm::tail(&f.paths.console, 200);
        let results = std::fs::read_to_string(&f.paths.results).unwrap_or_default();
        let console = std::fs::read_to_string(&f.paths.console).unwrap_or_default();
        let mut report = ktap::parse(&results);
        let by_case = kernel_log::by_case(&console);
        let boot_name = if n == 1 {
            "kernel-log".to_string()
        } else {
            format!("kernel-log (boot {n})")
        };

        if let Err(e) = o.ffs.check_console(&console) {
            found.errors.push(e);
        }
        for l in console.lines().filter(|l| l.contains("udc-init: FAILED to load")) {
            found.errors.push(format!(
                "{} (a module that does not match the kernel? rebuild the image)",
                l.trim()
            ));
        }

        // The cases of the guest tool's suite that never ended belong to it
        // when it was the suite running (it always runs first).
        let gadget_ran = !matches!(gadget, GadgetPlan::Nothing);
        let mut cases = std::mem::take(&mut report.cases);
        if gadget_ran && report.suites_reported == 0 {
            for mut u in std::mem::take(&mut report.unfinished) {
                u.suite = GADGET_SUITE.into();
                cases.push(u);
            }
        }
        // Console lines logged during a case are that case's.
        for case in cases.iter_mut().filter(|x| x.suite == GADGET_SUITE) {
            let extra: Vec<String> = by_case
                .of(&case.name)
                .iter()
                .filter(|l| !case.diagnostics.iter().any(|d| d.contains(l.as_str())))
                .map(|l| format!("console: {l}"))
                .collect();
            if !extra.is_empty() {
                case.outcome = Outcome::Fail;
                case.diagnostics.extend(extra);
            }
        }
        // The planned cases without a result: the first was running.
        let plan = report.plan.clone().unwrap_or_default();
        let mut pending: Vec<String> = plan
            .iter()
            .filter(|p| !cases.iter().any(|x| x.suite == GADGET_SUITE && &x.name == *p))
            .cloned()
            .collect();
        let interrupted = f.stuck.is_some() || f.stopped.is_some() || f.timed_out;
        let mut explained = false;
        if !pending.is_empty() && !report.stopped {
            let running = pending.remove(0);
            explained = true;
            let mut diagnostics = vec![why_no_result(&f, &report, o.timeout)];
            // What the guest tool said about it on the console, if it got
            // that far: its reasons, with the kernel's evidence.
            diagnostics.extend(kernel_log::failure_said(&console, &running));
            diagnostics.extend(by_case.of(&running).iter().map(|l| format!("console: {l}")));
            if let Some(line) = &f.stuck {
                let trace = kernel_log::backtrace_after(&console, line);
                if !trace.is_empty() {
                    diagnostics.push(format!("the kernel's backtrace:\n{}", trace.join("\n")));
                }
            }
            diagnostics.push(format!(
                "last console lines ({}):\n{}",
                f.paths.console.display(),
                vm::tail(&f.paths.console, 12)
            ));
            cases.push(Case {
                suite: GADGET_SUITE.into(),
                name: running,
                outcome: Outcome::Fail,
                diagnostics,
                seconds: None,
            });
        }
        // The guest test binaries ran when every suite reported.
        let all_ran = report.suites_planned == Some(report.suites_reported);
        let binaries_ran = binaries && all_ran;
        let usbtest_ran = usbtest && all_ran;
        // Going on needs the guest tool to have started (its plan), or a
        // boot that fails before it would repeat for ever.
        let started = report.plan.is_some() || !gadget_ran;
        let went_on = started
            && n < MAX_BOOTS
            && (!pending.is_empty()
                || (((binaries && !binaries_ran) || (usbtest && !usbtest_ran))
                    && (report.stopped || interrupted)));
        // A guest stopped on purpose, or stuck in a case that failed for it,
        // leaves its report short: that is explained above.
        if !went_on && !explained && !report.stopped {
            found.errors.extend(report.shortfall());
            found.errors.append(&mut report.errors);
            if gadget_ran && report.plan.is_none() {
                found.errors.push(format!(
                    "the guest tool printed no plan: it did not start (console: {})",
                    f.paths.console.display()
                ));
                // How the boot ended says why: a kernel that broke down, a
                // guest that reset, QEMU that failed.
                let qemu_log = match f.qemu_status {
                    Some(s) if !s.success() => format!("\n{}", vm::tail(&f.paths.qemu_log, 5)),
                    _ => String::new(),
                };
                found.errors.push(format!(
                    "{}{qemu_log}\nlast console lines ({}):\n{}",
                    boot_end(
                        f.stuck.as_deref(),
                        f.stopped.as_deref(),
                        f.timed_out,
                        f.qemu_status
                    ),
                    f.paths.console.display(),
                    vm::tail(&f.paths.console, 12)
                ));
            }
        }
        let outside: Vec<String> = by_case.outside.clone();
        cases.push(Case {
            suite: "udc-vm".into(),
            name: boot_name,
            outcome: if outside.is_empty() {
                Outcome::Pass
            } else {
                Outcome::Fail
            },
            diagnostics: outside,
            seconds: None,
        });
        if let Some(p) = &f.privileges {
            cases.push(unprivileged_case(p, n));
        }
        if f.daemon_restarts > 0 {
            eprintln!("udc-vm: the daemon was started again {} times", f.daemon_restarts);
        }
        found.cases.extend(cases);
        if !went_on {
            break;
        }
        gadget = if pending.is_empty() {
            GadgetPlan::Nothing
        } else {
            GadgetPlan::Exact(pending)
        };
        binaries = binaries && !binaries_ran;
        usbtest = usbtest && !usbtest_ran;
    }
    if !c.label.is_empty() {
        for x in &mut found.cases {
            x.suite = format!("{} ({})", x.suite, c.label);
        }
        for e in &mut found.errors {
            *e = format!("{}: {e}", c.label);
        }
    }
    for e in &found.errors {
        eprintln!("udc-vm: {e}");
    }
    Ok(found)
}

/// Applies `--expect-fail`: a case failing as expected counts as passed
/// (and says so); one that passes, fails otherwise, or did not run fails.
fn apply_expectations(cases: &mut [Case], expected: &[Expectation]) -> Vec<String> {
    let mut errors = Vec::new();
    for x in expected {
        let matching: Vec<&mut Case> = cases.iter_mut().filter(|c| c.name == x.case).collect();
        if matching.is_empty() {
            errors.push(format!("--expect-fail {}: the case did not run", x.case));
            continue;
        }
        for c in matching {
            let shows = c.diagnostics.iter().any(|d| d.contains(&x.text));
            match (&c.outcome, shows) {
                (Outcome::Fail, true) => {
                    c.outcome = Outcome::Pass;
                    c.diagnostics.push(format!(
                        "failed as expected (--expect-fail {}:{})",
                        x.case, x.text
                    ));
                }
                (Outcome::Fail, false) => c.diagnostics.push(format!(
                    "failed, but not as expected: '{}' is not among the reasons above",
                    x.text
                )),
                _ => {
                    c.outcome = Outcome::Fail;
                    c.diagnostics.push(format!(
                        "passed, but was expected to fail showing '{}': if the kernel fixed the bug, \
                         update docs/kernel-bugs.md and the expectation",
                        x.text
                    ));
                }
            }
        }
    }
    errors
}

/// What a `udc-vm test` run found, expectations applied.
pub struct Results {
    pub cases: Vec<Case>,
    /// Problems of the run itself (a short report, a wrong f_fs, ...).
    pub errors: Vec<String>,
    pub seconds: f64,
    console_tail: String,
}

/// The `unprivileged` case of a boot run with `--user`.
pub fn unprivileged_case(p: &crate::user::Privileges, boot: usize) -> Case {
    let mut diagnostics = p.lines.clone();
    diagnostics.extend(p.problems.iter().map(|x| format!("PRIVILEGED: {x}")));
    Case {
        suite: "udc-vm".into(),
        name: if boot <= 1 {
            "unprivileged".into()
        } else {
            format!("unprivileged (boot {boot})")
        },
        outcome: if p.problems.is_empty() && !p.lines.is_empty() {
            Outcome::Pass
        } else {
            Outcome::Fail
        },
        diagnostics,
        seconds: None,
    }
}

/// The skipped cases this run should have run: those no other boot ran
/// (`ktap::uncovered_skips`), less those skipped for needing a controller
/// the run was told not to boot (`--controller sg` leaves out the cases
/// for one without scatter-gather on purpose).
pub fn holes(cases: &[Case], controller: Controllers) -> Vec<&Case> {
    ktap::uncovered_skips(cases)
        .filter(|c| {
            let for_other_controller =
                matches!(&c.outcome, Outcome::Skip(why) if why.starts_with(NEEDS_PREFIX));
            controller == Controllers::Both || !for_other_controller
        })
        .collect()
}

/// How the guest tool says a case needs the other kind of controller.
const NEEDS_PREFIX: &str = "needs a controller";

/// Runs the suite on each controller asked for.
pub fn collect(o: &VmOptions, a: &TestArgs) -> Result<Results, Error> {
    let cs = controllers(o, a.filter.as_deref(), a.controller, a.usbtest);
    let mut all = Found::default();
    for (n, c) in cs.iter().enumerate() {
        if cs.len() > 1 {
            eprintln!(
                "udc-vm: controller {} of {}: {}",
                n + 1,
                cs.len(),
                if c.label.is_empty() {
                    "with scatter-gather".to_string()
                } else {
                    format!(
                        "without scatter-gather (daemon --no-sg), logs in {}",
                        c.out.display()
                    )
                }
            );
        }
        let f = run_controller(o, c)?;
        all.seconds += f.seconds;
        all.console_tail += &f.console_tail;
        all.cases.extend(f.cases);
        all.errors.extend(f.errors);
    }
    all.errors
        .extend(apply_expectations(&mut all.cases, &a.expect_fail));
    Ok(Results {
        cases: all.cases,
        errors: all.errors,
        seconds: all.seconds,
        console_tail: all.console_tail,
    })
}

pub fn run(o: &VmOptions, a: &TestArgs) -> Result<ExitCode, Error> {
    let all = collect(o, a)?;
    let report = ktap::Report {
        cases: all.cases,
        errors: all.errors,
        ..Default::default()
    };
    if let Some(path) = &a.junit {
        let mut cases = report.cases.clone();
        for e in &report.errors {
            cases.push(Case {
                suite: "udc-vm".into(),
                name: "run".into(),
                outcome: Outcome::Fail,
                diagnostics: vec![e.clone()],
                seconds: None,
            });
        }
        let mut props = vec![("f_fs", o.ffs.summary()), ("kernel", o.image.release.clone())];
        if let Some(seed) = o.inject_seed {
            props.push(("injection seed", seed.to_string()));
        }
        let xml = junit::render("udc-vm", &cases, all.seconds, &all.console_tail, &props);
        std::fs::write(path, xml).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        eprintln!("udc-vm: JUnit XML: {}", path.display());
    }
    if let Some(path) = &a.ktap {
        let mut header = vec![
            format!("udc-vm test: kernel {}", o.image.release),
            format!("f_fs: {}", o.ffs.summary()),
        ];
        if let Some(seed) = o.inject_seed {
            header.push(format!("injection seed {seed}"));
        }
        let doc = crate::ktap_write::document(&report.cases, &report.errors, &header);
        std::fs::write(path, doc).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        eprintln!("udc-vm: KTAP: {}", path.display());
    }
    for c in report.cases.iter().filter(|c| c.outcome == Outcome::Fail) {
        println!("# FAILED: {} / {}", c.suite, c.name);
        let lines: Vec<&str> = c.diagnostics.iter().flat_map(|d| d.lines()).collect();
        for l in lines.iter().take(12) {
            println!("#   {l}");
        }
        if lines.len() > 12 {
            println!(
                "#   ... ({} more lines in the JUnit XML and the logs)",
                lines.len() - 12
            );
        }
    }
    for e in &report.errors {
        println!("# ERROR: {e}");
    }
    let expected = report
        .cases
        .iter()
        .filter(|c| c.diagnostics.iter().any(|d| d.starts_with("failed as expected")))
        .count();
    let holes = holes(&report.cases, a.controller).len();
    let uncovered = ktap::uncovered_skips(&report.cases).count();
    let mut others = Vec::new();
    if report.skipped() > uncovered {
        others.push(format!(
            "{} skipped by one controller, run by the other",
            report.skipped() - uncovered
        ));
    }
    if uncovered > holes {
        others.push(format!(
            "{} for the controller --controller left out",
            uncovered - holes
        ));
    }
    println!(
        "udc-vm: {} passed, {} failed, {} skipped{}{}",
        report.passed(),
        report.failed(),
        holes,
        if others.is_empty() {
            String::new()
        } else {
            format!(" ({})", others.join("; "))
        },
        if expected > 0 {
            format!(" ({expected} of the passed failed as expected)")
        } else {
            String::new()
        }
    );
    println!("udc-vm: f_fs: {}", o.ffs.summary());
    if let (Some(seed), true) = (o.inject_seed, report.failed() > 0) {
        println!("udc-vm: injection seed {seed}: run again with --seed {seed} to reproduce");
    }
    // A skipped case is not a pass: the suite must run whole (a case one
    // controller skips must run on the other). With --ktap the status is
    // kselftest's (4 for skips), for the CI that reads it.
    if a.ktap.is_some() {
        return Ok(ExitCode::from(crate::ktap_write::exit_status(
            &report.cases,
            &report.errors,
            holes,
        )));
    }
    Ok(if report.failed() == 0 && holes == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_boot_that_ended_before_the_suite_says_how() {
        use std::os::unix::process::ExitStatusExt;
        let quiet = super::boot_end(None, None, false, Some(std::process::ExitStatus::from_raw(0)));
        assert!(
            quiet.contains("status 0") && quiet.contains("-no-reboot"),
            "{quiet}"
        );
        let killed = super::boot_end(None, None, false, Some(std::process::ExitStatus::from_raw(9)));
        assert!(killed.contains("QEMU ended (signal: 9"), "{killed}");
        let stuck = super::boot_end(Some("Kernel panic"), None, false, None);
        assert!(stuck.contains("broke down (Kernel panic)"), "{stuck}");
        assert!(super::boot_end(None, None, true, None).contains("time was up"));
    }

    use super::*;

    #[test]
    fn both_controllers_by_default() {
        let mut o = vm::tests::opts();
        o.daemon_args = vec!["--config=udc.toml".into()];
        let cs = controllers(&o, None, Controllers::Both, false);
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].daemon_args, ["--config=udc.toml"]);
        assert!(cs[0].guest_binaries && cs[0].filter.is_none());
        assert_eq!(cs[1].daemon_args, ["--config=udc.toml", "--no-sg"]);
        assert_eq!(cs[1].filter.as_deref(), Some(NO_SG_FILTER));
        assert!(!cs[1].guest_binaries);
        assert_eq!(cs[1].out, o.out.join("no-sg"));
    }

    #[test]
    fn a_filter_and_one_controller_give_one() {
        let o = vm::tests::opts();
        let cs = controllers(&o, Some("bulk"), Controllers::Sg, false);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].filter.as_deref(), Some("bulk"));
        assert!(!cs[0].guest_binaries);
        let cs = controllers(&o, Some("bulk"), Controllers::NoSg, false);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].out, o.out);
    }

    #[test]
    fn usbtest_alone_is_one_boot_of_the_usbtest_suites() {
        let o = vm::tests::opts();
        let cs = controllers(&o, None, Controllers::Both, true);
        assert_eq!(cs.len(), 1, "the suites need scatter-gather and run once");
        assert!(cs[0].usbtest && !cs[0].guest_binaries);
        let s = test_script(&GadgetPlan::Nothing, false, true);
        assert!(!s.contains("suites=/usr/bin/udc-gadget"));
        for (name, args) in USBTEST_SUITES {
            assert!(s.contains(&format!("suites=\"$suites {name}\"")), "{s}");
            assert!(
                s.contains(&format!("{name}) set -- /usr/bin/udc-gadget usbtest {args} ;;")),
                "{s}"
            );
        }
    }

    #[test]
    fn the_script_stops_after_a_failure_and_goes_on_with_exact_cases() {
        let s = test_script(&GadgetPlan::Filter(None), true, false);
        assert!(s.contains("/usr/libexec/udc/*-tests"));
        assert!(s.contains("test --stop-on-failure ;;"), "{s}");
        assert!(s.contains("[ \"$rc\" = 4 ]; then exit 4"));
        let s = test_script(&GadgetPlan::Filter(Some("dmabuf".into())), false, false);
        assert!(!s.contains("/usr/libexec/udc/"));
        assert!(s.contains("test --stop-on-failure --filter dmabuf"));
        let s = test_script(&GadgetPlan::Exact(vec!["a".into(), "b-c".into()]), false, false);
        assert!(s.contains("--cases a,b-c"));
        let s = test_script(&GadgetPlan::Nothing, true, false);
        assert!(!s.contains("suites=/usr/bin/udc-gadget"));
        // No sed: it buffers, and the results would come only at the end.
        assert!(!s.contains("sed"));
    }

    fn case(name: &str, outcome: Outcome, diag: &str) -> Case {
        Case {
            suite: GADGET_SUITE.into(),
            name: name.into(),
            outcome,
            diagnostics: vec![diag.into()],
            seconds: None,
        }
    }

    #[test]
    fn a_skip_is_a_hole_unless_another_boot_ran_it_or_its_controller_was_not_asked_for() {
        let skip = |name: &str, why: &str| Case {
            outcome: Outcome::Skip(why.into()),
            ..case(name, Outcome::Pass, "")
        };
        let needs_no_sg = skip("attach-refused", "needs a controller without scatter-gather");
        let ignored = skip("t", "ignored");
        let cases = [needs_no_sg.clone(), ignored.clone(), case("x", Outcome::Pass, "")];
        assert_eq!(holes(&cases, Controllers::Both), [&needs_no_sg, &ignored]);
        assert_eq!(holes(&cases, Controllers::Sg), [&ignored]);
        let mut ran = cases.to_vec();
        ran.push(case("attach-refused", Outcome::Pass, ""));
        assert_eq!(holes(&ran, Controllers::Both), [&ignored]);
    }

    #[test]
    fn expected_failures_pass_only_when_they_fail_as_said() {
        let x = |s: &str| s.parse::<Expectation>().unwrap();
        let mut cases = vec![
            case(
                "a",
                Outcome::Fail,
                "console: BUG: kernel NULL pointer dereference",
            ),
            case("b", Outcome::Pass, ""),
            case("c", Outcome::Fail, "EIO"),
        ];
        let errs = apply_expectations(
            &mut cases,
            &[x("a:NULL pointer"), x("b:stale"), x("c:EPERM"), x("d:x")],
        );
        assert_eq!(cases[0].outcome, Outcome::Pass);
        assert!(cases[0]
            .diagnostics
            .last()
            .unwrap()
            .starts_with("failed as expected"));
        assert_eq!(cases[1].outcome, Outcome::Fail);
        assert!(cases[1]
            .diagnostics
            .last()
            .unwrap()
            .contains("passed, but was expected to fail"));
        assert_eq!(cases[2].outcome, Outcome::Fail);
        assert_eq!(errs, ["--expect-fail d: the case did not run"]);
        assert!("nocolon".parse::<Expectation>().is_err());
        assert!(":x".parse::<Expectation>().is_err());
    }

    #[test]
    fn the_unprivileged_case_needs_a_record_and_no_problem() {
        let mut p = crate::user::Privileges::default();
        assert_eq!(unprivileged_case(&p, 1).outcome, Outcome::Fail);
        p.lines.push("daemon (pid 7): Uid: 998 998 998 998".into());
        assert_eq!(unprivileged_case(&p, 1).outcome, Outcome::Pass);
        p.problems
            .push("qemu (pid 8): CapEff: 1: it holds capabilities".into());
        let c = unprivileged_case(&p, 2);
        assert_eq!(c.outcome, Outcome::Fail);
        assert_eq!(c.name, "unprivileged (boot 2)");
        assert!(c.diagnostics.iter().any(|d| d.starts_with("PRIVILEGED: qemu")));
    }
}
