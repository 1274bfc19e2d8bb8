// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Reads what the guest reported: a top-level KTAP stream whose cases are
//! suites (the guest tool's KTAP, or a Rust test binary's output), each
//! indented four spaces as a KTAP subtest. Leaf cases are what is counted.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Skip(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub suite: String,
    pub name: String,
    pub outcome: Outcome,
    /// `#` lines printed before the result.
    pub diagnostics: Vec<String>,
    /// How long the case ran, where the guest tool said (its `# duration:`
    /// line, taken out of the diagnostics).
    pub seconds: Option<f64>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub cases: Vec<Case>,
    /// Problems with the report itself (missing plan or results).
    pub errors: Vec<String>,
    /// The exit status of /udc/run.sh, when init reported it.
    pub run_exit: Option<i32>,
    /// The guest tool's case names, in order (its `# plan:` line).
    pub plan: Option<Vec<String>>,
    /// The guest tool said it stopped after a failed case, leaving the
    /// rest of its plan for a fresh guest.
    pub stopped: bool,
    /// Suites the top-level plan announced, and how many reported.
    pub suites_planned: Option<usize>,
    pub suites_reported: usize,
    /// Cases of a suite that never reported its own result (the guest
    /// stopped in the middle of it), in order.
    pub unfinished: Vec<Case>,
}

/// The guest tool's diagnostics the runner reads rather than shows.
pub const PLAN_PREFIX: &str = "plan: ";
pub const STOPPED_PREFIX: &str = "udc-gadget: stopped after ";
/// A case's run time (`duration: 1.234s`), taken into [`Case::seconds`].
pub const DURATION_PREFIX: &str = "duration: ";

/// The skips among `cases` that no other suite of the run made up for: a
/// case one controller's boot skips (it needs the other kind) counts as
/// skipped only when no boot ran it. A skip is never a pass.
pub fn uncovered_skips(cases: &[Case]) -> impl Iterator<Item = &Case> {
    let skip = |c: &Case| matches!(c.outcome, Outcome::Skip(_));
    cases
        .iter()
        .filter(move |c| skip(c) && !cases.iter().any(|o| o.name == c.name && !skip(o)))
}

impl Report {
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.cases.iter().filter(|c| f(&c.outcome)).count()
    }
    pub fn passed(&self) -> usize {
        self.count(|o| *o == Outcome::Pass)
    }
    pub fn failed(&self) -> usize {
        self.count(|o| *o == Outcome::Fail) + self.errors.len()
    }
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skip(_)))
    }
}

/// `ok 3 name # SKIP why` → (pass, 3, name, directive)
fn result_line(line: &str) -> Option<(bool, usize, String, Option<String>)> {
    let (ok, rest) = if let Some(r) = line.strip_prefix("not ok ") {
        (false, r)
    } else if let Some(r) = line.strip_prefix("ok ") {
        (true, r)
    } else {
        return None;
    };
    let (num, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let num = num.parse().ok()?;
    let (name, directive) = match rest.split_once(" # ") {
        Some((n, d)) => (n.trim().to_string(), Some(d.trim().to_string())),
        None => (rest.trim().to_string(), None),
    };
    Some((ok, num, name, directive))
}

/// `test name ... ok` from a Rust test binary.
fn cargo_line(line: &str) -> Option<(String, Outcome)> {
    let rest = line.strip_prefix("test ")?;
    let (name, res) = rest.rsplit_once(" ... ")?;
    let outcome = match res.trim() {
        "ok" => Outcome::Pass,
        "FAILED" => Outcome::Fail,
        r if r.starts_with("ignored") => Outcome::Skip("ignored".into()),
        _ => return None,
    };
    Some((name.to_string(), outcome))
}

pub fn parse(text: &str) -> Report {
    let mut report = Report::default();
    let mut plan: Option<usize> = None;
    let mut top_results = 0;
    let mut leaves: Vec<Case> = Vec::new();
    let mut diags: Vec<String> = Vec::new();
    let mut saw_header = false;
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        if let Some(n) = line.strip_prefix("udc-init: run.sh exit ") {
            report.run_exit = n.trim().parse().ok();
            continue;
        }
        if let Some(inner) = line.strip_prefix("    ") {
            let inner = inner.trim_start();
            if let Some(d) = inner.strip_prefix('#') {
                let d = d.trim();
                if let Some(names) = d.strip_prefix(PLAN_PREFIX) {
                    if report.plan.is_none() {
                        report.plan = Some(
                            names
                                .split(',')
                                .filter(|n| !n.is_empty())
                                .map(str::to_string)
                                .collect(),
                        );
                    }
                    continue;
                }
                if d.starts_with(STOPPED_PREFIX) {
                    report.stopped = true;
                }
                diags.push(d.to_string());
            } else if let Some((ok, _, name, directive)) = result_line(inner) {
                let outcome = match directive {
                    Some(d) if d.to_ascii_uppercase().starts_with("SKIP") => {
                        Outcome::Skip(d[4..].trim().to_string())
                    }
                    _ if ok => Outcome::Pass,
                    _ => Outcome::Fail,
                };
                leaves.push(Case {
                    suite: String::new(),
                    name,
                    outcome,
                    diagnostics: std::mem::take(&mut diags),
                    seconds: None,
                });
            } else if let Some((name, outcome)) = cargo_line(inner) {
                leaves.push(Case {
                    suite: String::new(),
                    name,
                    outcome,
                    diagnostics: Vec::new(),
                    seconds: None,
                });
            } else if inner.starts_with("---- ") || inner.starts_with("thread ") || inner.contains("panicked")
            {
                diags.push(inner.to_string());
            }
            continue;
        }
        if line == "KTAP version 1" {
            saw_header = true;
        } else if let Some(n) = line.strip_prefix("1..") {
            plan = n.trim().parse().ok();
        } else if let Some((ok, _, suite, directive)) = result_line(line) {
            top_results += 1;
            let failed_leaves = leaves.iter().any(|c| c.outcome == Outcome::Fail);
            if leaves.is_empty() {
                let outcome = match directive {
                    Some(d) if d.to_ascii_uppercase().starts_with("SKIP") => {
                        Outcome::Skip(d[4..].trim().to_string())
                    }
                    _ if ok => Outcome::Pass,
                    _ => Outcome::Fail,
                };
                leaves.push(Case {
                    suite: suite.clone(),
                    name: suite.clone(),
                    outcome,
                    diagnostics: std::mem::take(&mut diags),
                    seconds: None,
                });
            } else if !ok && !failed_leaves {
                // The suite failed although each case it reported passed:
                // it crashed or exited non-zero; that is a failure too.
                leaves.push(Case {
                    suite: suite.clone(),
                    name: format!("{suite} (exit status)"),
                    outcome: Outcome::Fail,
                    diagnostics: std::mem::take(&mut diags),
                    seconds: None,
                });
            }
            for mut c in leaves.drain(..) {
                c.suite = suite.clone();
                report.cases.push(c);
            }
            diags.clear();
        }
    }
    if !saw_header {
        report
            .errors
            .push("the guest printed no KTAP header: the suite did not start".into());
    }
    if plan.is_none() && saw_header {
        report.errors.push("no KTAP plan line".into());
    }
    report.suites_planned = plan;
    report.suites_reported = top_results;
    report.unfinished = leaves;
    for c in report.cases.iter_mut().chain(report.unfinished.iter_mut()) {
        take_duration(c);
    }
    report
}

/// The guest tool's `# duration: 1.234s` line of a case, from its
/// diagnostics into [`Case::seconds`].
fn take_duration(c: &mut Case) {
    let found = c.diagnostics.iter().enumerate().find_map(|(i, d)| {
        let secs = d
            .strip_prefix(DURATION_PREFIX)?
            .strip_suffix('s')?
            .parse::<f64>()
            .ok()?;
        Some((i, secs))
    });
    if let Some((i, secs)) = found {
        c.diagnostics.remove(i);
        c.seconds = Some(secs);
    }
}

impl Report {
    /// The report's shortfalls when nothing else explains them: suites
    /// that never reported and cases left without their suite.
    pub fn shortfall(&self) -> Vec<String> {
        let mut e = Vec::new();
        if let Some(p) = self.suites_planned {
            if self.suites_reported < p {
                e.push(format!(
                    "the plan announced {p} suites, {} reported: the guest stopped early",
                    self.suites_reported
                ));
            }
        }
        if !self.unfinished.is_empty() {
            e.push(format!(
                "{} cases reported by a suite that never ended",
                self.unfinished.len()
            ));
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "KTAP version 1\n1..2\n    KTAP version 1\n    1..2\n    # super speed\n    ok 1 enumeration\n\
        \x20   # OUT 1 byte: data differs\n    not ok 2 bulk-out-read\n    # udc-gadget: 1 passed, 1 failed\nnot ok 1 udc-gadget\n\
        \x20   running 2 tests\n    test a ... ok\n    test b ... ignored\n    test result: ok.\nok 2 udmabuf\nudc-init: run.sh exit 1\n";

    #[test]
    fn counts_leaf_cases_of_each_suite() {
        let r = parse(GOOD);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!((r.passed(), r.failed(), r.skipped()), (2, 1, 1));
        assert_eq!(r.run_exit, Some(1));
        let bad = r.cases.iter().find(|c| c.outcome == Outcome::Fail).unwrap();
        assert_eq!(
            (bad.suite.as_str(), bad.name.as_str()),
            ("udc-gadget", "bulk-out-read")
        );
        assert_eq!(bad.diagnostics, vec!["OUT 1 byte: data differs".to_string()]);
    }

    #[test]
    fn durations_become_times_and_skips_count_where_no_boot_ran_them() {
        let boot = |suite: &str, skipped: &str, ran: &str| {
            format!(
                "KTAP version 1\n1..1\n    KTAP version 1\n    1..2\n    ok 1 {skipped} # SKIP needs sg\n\
                 \x20   # plan: {ran}\n    # duration: 1.500s\n    # EIO\n    not ok 2 {ran}\nnot ok 1 {suite}\n"
            )
        };
        let r = parse(&boot("udc-gadget", "dmabuf-x", "attach-refused"));
        let ran = &r.cases[1];
        assert_eq!(
            (ran.seconds, ran.diagnostics.clone()),
            (Some(1.5), vec!["EIO".to_string()])
        );
        assert_eq!(r.cases[0].outcome, Outcome::Skip("needs sg".into()));
        assert_eq!(r.cases[0].seconds, None);
        assert_eq!(uncovered_skips(&r.cases).count(), 1, "skipped, and no other boot");
        let mut both = r.cases.clone();
        both.extend(parse(&boot("udc-gadget (no sg)", "attach-refused", "dmabuf-x")).cases);
        assert_eq!(
            uncovered_skips(&both).count(),
            0,
            "each boot ran what the other skipped"
        );
    }

    #[test]
    fn a_truncated_report_falls_short() {
        let r = parse("KTAP version 1\n1..2\n    ok 1 enumeration\nok 1 udc-gadget\n    ok 1 x\n");
        assert_eq!(r.passed(), 1);
        assert_eq!(r.unfinished.len(), 1);
        assert_eq!(r.shortfall().len(), 2, "{:?}", r.shortfall());
    }

    #[test]
    fn the_plan_and_a_stop_are_read_not_shown() {
        let r = parse(
            "KTAP version 1\n1..1\n    KTAP version 1\n    1..3\n    # plan: a,b,c\n    ok 1 a\n\
             \x20   # b: EIO\n    not ok 2 b\n    # udc-gadget: stopped after b failed: 1 cases left for a fresh guest\n\
             not ok 1 udc-gadget # exit status 4\n",
        );
        assert_eq!(
            r.plan.as_deref(),
            Some(&["a".to_string(), "b".into(), "c".into()][..])
        );
        assert!(r.stopped);
        assert_eq!((r.passed(), r.failed()), (1, 1));
        assert_eq!(r.cases[0].diagnostics, Vec::<String>::new());
        assert!(r.shortfall().is_empty());
    }

    #[test]
    fn nothing_at_all_is_a_failure() {
        let r = parse("");
        assert_eq!(r.passed(), 0);
        assert!(r.failed() >= 1);
    }

    #[test]
    fn a_suite_that_crashed_after_passing_cases_fails() {
        let r = parse("KTAP version 1\n1..1\n    ok 1 a\nnot ok 1 s\n");
        assert_eq!((r.passed(), r.failed()), (1, 1));
    }
}
