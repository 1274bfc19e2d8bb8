// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Finds the lines of a guest console log that mean a kernel bug (the
//! markers are shared with the guest tool, in udc-patterns), and tells which
//! case each belongs to: the guest tool writes `udc-gadget: case NAME` into
//! the kernel log as each case starts, so the console shows the cases in
//! order with the kernel's own messages.

/// The problem lines in `log`.
pub fn problems(log: &str) -> Vec<String> {
    udc_patterns::kernel_log::problem_lines(log)
}

/// A console log's problem lines, by when they were logged.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ByCase {
    /// Before the first case, after the guest tool's suite, or during the
    /// other suites: the boot's own `kernel-log` case.
    pub outside: Vec<String>,
    /// During each case that has any, in the order the cases ran.
    pub cases: Vec<(String, Vec<String>)>,
}

impl ByCase {
    pub fn of(&self, case: &str) -> &[String] {
        self.cases
            .iter()
            .find(|(c, _)| c == case)
            .map(|(_, p)| p.as_slice())
            .unwrap_or(&[])
    }
}

const CASE_MARK: &str = "udc-gadget: case ";
/// The guest tool's suite ended (`udc-gadget: stopped after` does not end
/// the failed case's part: what the kernel reports next is that case's).
const SUITE_DONE_MARK: &str = "udc-gadget: suite done";
/// /udc/run.sh starts another suite (a guest test binary).
const SUITE_MARK: &str = "udc-vm: suite ";

/// What the guest tool wrote into the kernel log about `case`'s failure
/// (`udc-gadget: NAME failed: ...`), without the prefix.
pub fn failure_said(log: &str, case: &str) -> Vec<String> {
    let prefix = format!("udc-gadget: {case} failed: ");
    log.lines()
        .filter_map(|l| {
            l.find(&prefix)
                .map(|i| l[i + prefix.len()..].trim_end().to_string())
        })
        .collect()
}

pub fn by_case(log: &str) -> ByCase {
    let mut out = ByCase::default();
    let mut current: Option<String> = None;
    for line in log.lines() {
        if let Some(i) = line.find(CASE_MARK) {
            current = Some(line[i + CASE_MARK.len()..].trim().to_string());
            continue;
        }
        if line.contains(SUITE_DONE_MARK) || line.contains(SUITE_MARK) {
            current = None;
            continue;
        }
        // The guest tool's own words about a failure are not the kernel's.
        if line.contains(" failed: ") && line.contains("udc-gadget: ") {
            continue;
        }
        let bad = problems(line);
        if bad.is_empty() {
            continue;
        }
        match &current {
            Some(c) => match out.cases.iter_mut().find(|(n, _)| n == c) {
                Some((_, v)) => v.extend(bad),
                None => out.cases.push((c.clone(), bad)),
            },
            None => out.outside.extend(bad),
        }
    }
    out
}

/// The kernel's backtrace after the line `from` (a stall or lockup
/// report): the RIP lines and the frames it is sure of (not the `? `
/// guesses), at most 16 lines, without timestamps.
pub fn backtrace_after(log: &str, from: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = false;
    for line in log.lines() {
        if !seen {
            seen = line.trim() == from.trim();
            continue;
        }
        let text = match line.find("] ") {
            Some(i) if line.starts_with('[') => line[i + 2..].trim(),
            _ => line.trim(),
        };
        let frame = text
            .split_whitespace()
            .next()
            .is_some_and(|w| w.contains("+0x") && w.contains('/'));
        if text.starts_with("RIP: 0010:") || frame {
            out.push(text.to_string());
        }
        if out.len() >= 16 || text.starts_with("RIP: 0033:") {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backtrace_after_a_stall_keeps_the_frames_it_is_sure_of() {
        let log = "[ 73.09] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n\
                   [ 73.10] RIP: 0010:native_queued_spin_lock_slowpath+0x84/0x2a0\n\
                   [ 73.10] Code: 0f 1f 44\n\
                   [ 73.10] Call Trace:\n\
                   [ 73.10]  <TASK>\n\
                   [ 73.10]  _raw_spin_lock_irqsave+0x3d/0x50\n\
                   [ 73.10]  dma_fence_get_status+0x18/0x80\n\
                   [ 73.10]  ? handle_mm_fault+0xae/0x2f0\n\
                   [ 73.10]  sync_file_ioctl+0x4ba/0x5a0\n\
                   [ 73.10] RIP: 0033:0x7f4dd884df4b\n\
                   [ 73.11]  later_frame+0x1/0x2\n";
        let t = backtrace_after(
            log,
            "[ 73.09] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
        );
        assert_eq!(
            t,
            [
                "RIP: 0010:native_queued_spin_lock_slowpath+0x84/0x2a0",
                "_raw_spin_lock_irqsave+0x3d/0x50",
                "dma_fence_get_status+0x18/0x80",
                "sync_file_ioctl+0x4ba/0x5a0"
            ]
        );
    }

    #[test]
    fn problems_go_to_the_case_that_was_running() {
        let log = "[ 1.0] WARNING: CPU: 0 PID: 1 at boot\n\
                   [ 2.0] udc-gadget: case enumeration\n\
                   [ 2.5] virtio_udc: configured\n\
                   [ 3.0] udc-gadget: case dmabuf-detach\n\
                   [ 3.1] BUG: kernel NULL pointer dereference, address: 0000000000000000\n\
                   [ 3.2] udc-gadget: stopped\n\
                   [ 3.3] Call Trace:\n\
                   [ 9.0] udc-gadget: suite done\n\
                   [ 9.1] udc-vm: suite udmabuf-device-tests\n\
                   [ 9.5] WARNING: CPU: 1 PID: 80 at mm/page_alloc.c\n";
        let b = by_case(log);
        assert_eq!(b.outside.len(), 2, "{b:?}");
        assert!(b.outside[0].contains("at boot") && b.outside[1].contains("page_alloc"));
        assert!(b.of("enumeration").is_empty());
        assert_eq!(b.of("dmabuf-detach").len(), 2);
        assert!(b.of("dmabuf-detach")[1].contains("Call Trace:"));
    }
}
