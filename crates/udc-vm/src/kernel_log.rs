//! Finds the lines of a guest console log that mean a kernel bug (the
//! markers are shared with the guest tool, in udc-patterns).

/// The problem lines in `log`.
pub fn problems(log: &str) -> Vec<String> {
    udc_patterns::kernel_log::problem_lines(log)
}
