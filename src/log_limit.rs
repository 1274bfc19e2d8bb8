// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Rate limits for log lines a guest can trigger.
//!
//! A malformed request is worth a warning, but a guest that posts a million
//! of them must not fill the host's disk or drown the lines that matter.
//! Each call site of [`guest_warn!`] logs at most [`BURST`] lines per
//! [`WINDOW`]; the first line after a quiet spell says how many were
//! suppressed, so nothing is lost from the count.
//!
//! [`guest_warn!`]: crate::guest_warn

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines one call site may log per window.
pub const BURST: u32 = 10;
/// The window over which [`BURST`] is counted.
pub const WINDOW: Duration = Duration::from_secs(1);

/// One call site's limit.
pub struct RateLimit {
    state: Mutex<State>,
}

struct State {
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl RateLimit {
    pub const fn new() -> Self {
        RateLimit {
            state: Mutex::new(State {
                window_start: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether a line may be logged at `now`: `Some(n)` with the number of
    /// lines suppressed since the last one logged, or `None` to stay quiet.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let expired = s
            .window_start
            .map_or(true, |start| now.duration_since(start) >= WINDOW);
        if expired {
            s.window_start = Some(now);
            s.logged = 0;
        }
        if s.logged == BURST {
            s.suppressed += 1;
            return None;
        }
        s.logged += 1;
        Some(std::mem::take(&mut s.suppressed))
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

/// `log::warn!` for lines a guest can trigger, limited per call site (see
/// the module's documentation).
#[macro_export]
macro_rules! guest_warn {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::log_limit::RateLimit = $crate::log_limit::RateLimit::new();
        match LIMIT.admit(::std::time::Instant::now()) {
            Some(0) => ::log::warn!($($arg)+),
            Some(n) => ::log::warn!("{} ({n} more like it suppressed)", format_args!($($arg)+)),
            None => {}
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_quiet_then_the_count() {
        let limit = RateLimit::new();
        let t0 = Instant::now();
        for _ in 0..BURST {
            assert_eq!(limit.admit(t0), Some(0));
        }
        for _ in 0..25 {
            assert_eq!(limit.admit(t0 + WINDOW / 2), None);
        }
        assert_eq!(
            limit.admit(t0 + WINDOW),
            Some(25),
            "the next window says what was left out"
        );
        assert_eq!(limit.admit(t0 + WINDOW), Some(0));
    }
}
