// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Delay and fault injection: what to inject, and the seeded decision for
//! each guest request.
//!
//! One grammar serves the config file, the command line and the control
//! socket: a key (optionally scoped to an endpoint, `ep1in.stall`) and a
//! string value. docs/injection.md is its reference. This module is pure:
//! it decides, [`crate::device`] carries the decisions out.
//!
//! Reproducibility: every endpoint draws from its own generator, seeded
//! from the seed and the endpoint address, and draws the same numbers for
//! every request whatever fires. So the decisions for request N of an
//! endpoint depend only on the seed, the settings and N, not on how
//! requests of different endpoints interleave.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::race::{fnv1a, FNV_OFFSET};
use crate::wire::{ep_name, EpAddress, ParseEpAddressError};
use udc_patterns::{fmt_duration, parse_bandwidth, parse_duration, parse_size};

/// How long an injected disconnect lasts unless `reconnect_after` says.
const DEFAULT_RECONNECT: Duration = Duration::from_millis(100);
/// How long a NAK lasts unless `nak_time` says.
const DEFAULT_NAK: Duration = Duration::from_millis(10);

/// Why an injection setting is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// The value does not parse for its key; `reason` says how it should read.
    #[error("{key} = {value:?}: {reason}")]
    Value {
        key: String,
        value: String,
        reason: String,
    },
    #[error("unknown injection key {0:?}; the keys are {keys}", keys = known_keys())]
    UnknownKey(String),
    #[error("injection {0:?}: say KEY=VALUE or EP.KEY=VALUE")]
    NotAnAssignment(String),
    #[error("seed = {0:?}: a seed is a number from 0 to 2^64-1")]
    Seed(String),
    #[error(transparent)]
    Endpoint(#[from] ParseEpAddressError),
    #[error("{0}: ep0 has no injection (control transfers are not injected)")]
    Ep0(String),
}

/// When a fault fires, counted in requests queued on the endpoint since the
/// settings took effect (the first is 1).
#[derive(Clone, Debug, PartialEq)]
pub enum Trigger {
    Always,
    /// Each request with this probability, in percent.
    Probability(f64),
    /// Requests N, 2N, 3N, ...
    Every(u64),
    /// These request numbers.
    Nth(Vec<u64>),
    /// The next N requests, then never (counts down).
    Next(u64),
}

impl Trigger {
    fn parse(s: &str) -> Result<Trigger, String> {
        let t = s.trim();
        let number = |v: &str| {
            v.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{v:?} is not a request count (1, 2, ...)"))
        };
        if t == "always" {
            Ok(Trigger::Always)
        } else if let Some(p) = t.strip_suffix('%') {
            match p.trim().parse::<f64>() {
                Ok(v) if (0.0..=100.0).contains(&v) => Ok(Trigger::Probability(v)),
                _ => Err(format!("{t:?}: a percentage is 0% to 100%")),
            }
        } else if let Some(n) = t.strip_prefix("every:") {
            Ok(Trigger::Every(number(n)?))
        } else if let Some(list) = t.strip_prefix("nth:") {
            let mut v = list.split(',').map(number).collect::<Result<Vec<_>, _>>()?;
            v.sort_unstable();
            v.dedup();
            Ok(Trigger::Nth(v))
        } else if let Some(n) = t.strip_prefix("next:") {
            Ok(Trigger::Next(number(n)?))
        } else {
            Err(format!(
                "{t:?} is not a trigger: say always, 10%, every:N, nth:3,7 or next:N"
            ))
        }
    }

    /// Whether request `index` fires. `draw` is this request's uniform
    /// number in [0, 1), drawn whether or not it is used.
    fn fires(&mut self, index: u64, draw: f64) -> bool {
        match self {
            Trigger::Always => true,
            Trigger::Probability(p) => draw * 100.0 < *p,
            Trigger::Every(n) => index % *n == 0,
            Trigger::Nth(v) => v.binary_search(&index).is_ok(),
            Trigger::Next(n) => {
                if *n == 0 {
                    return false;
                }
                *n -= 1;
                true
            }
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Always => write!(f, "always"),
            Trigger::Probability(p) => write!(f, "{p}%"),
            Trigger::Every(n) => write!(f, "every:{n}"),
            Trigger::Nth(v) => {
                let s: Vec<String> = v.iter().map(u64::to_string).collect();
                write!(f, "nth:{}", s.join(","))
            }
            Trigger::Next(n) => write!(f, "next:{n}"),
        }
    }
}

/// Completion latency: fixed, or uniform in a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latency {
    pub min: Duration,
    pub max: Duration,
}

impl Latency {
    fn parse(s: &str) -> Result<Latency, String> {
        match s.split_once("..") {
            Some((a, b)) => {
                let (min, max) = (parse_duration(a)?, parse_duration(b)?);
                if min > max {
                    return Err(format!("latency {s:?}: the range runs backwards"));
                }
                Ok(Latency { min, max })
            }
            None => {
                let d = parse_duration(s)?;
                Ok(Latency { min: d, max: d })
            }
        }
    }

    fn sample(&self, draw: f64) -> Duration {
        let span = self.max - self.min;
        self.min + span.mul_f64(draw)
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", fmt_duration(self.min))
        } else {
            write!(f, "{}..{}", fmt_duration(self.min), fmt_duration(self.max))
        }
    }
}

/// DMA in chunks: `bytes` at a time, `pause` between chunks of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub bytes: u64,
    pub pause: Duration,
}

impl Chunk {
    /// The chunk in bytes on an endpoint with `mps`-byte packets: whole
    /// packets, at least the size asked for.
    pub fn bytes_for(&self, mps: u64) -> u64 {
        self.bytes.div_ceil(mps) * mps
    }

    fn parse(s: &str) -> Result<Chunk, String> {
        let (b, p) = s
            .split_once(',')
            .ok_or_else(|| format!("chunk {s:?}: say SIZE,PAUSE, e.g. 4K,1ms"))?;
        let bytes = parse_size(b)?;
        if bytes > u64::from(u32::MAX) {
            return Err(format!("chunk {s:?}: the chunk size is 1 byte to 4 GiB"));
        }
        Ok(Chunk {
            bytes,
            pause: parse_duration(p)?,
        })
    }
}

/// What goes wrong with a request, once its data reaches the fault's offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The endpoint answers with a STALL handshake: -EPIPE.
    Stall,
    /// The host sends more than the request has room for: -EOVERFLOW.
    Babble,
    /// OUT: the host ends the transfer with a short packet.
    Short,
    /// A transfer error on the bus (CRC, timeout): -EPROTO.
    Proto,
    /// An I/O error in the controller: -EIO.
    Io,
    /// The host resets the bus.
    Reset,
    /// The host goes away, and comes back after `reconnect_after`.
    Disconnect,
}

impl Fault {
    pub const ALL: [Fault; 7] = [
        Fault::Stall,
        Fault::Babble,
        Fault::Short,
        Fault::Proto,
        Fault::Io,
        Fault::Reset,
        Fault::Disconnect,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Fault::Stall => "stall",
            Fault::Babble => "babble",
            Fault::Short => "short",
            Fault::Proto => "proto_error",
            Fault::Io => "io_error",
            Fault::Reset => "reset",
            Fault::Disconnect => "disconnect",
        }
    }
}

/// The settings of one scope: every endpoint, or one. Unset fields of an
/// endpoint's scope fall back to the global one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultSet {
    pub latency: Option<Latency>,
    /// Bytes per second.
    pub bandwidth: Option<u64>,
    pub chunk: Option<Chunk>,
    pub nak: Option<Trigger>,
    pub nak_time: Option<Duration>,
    pub reorder: Option<Trigger>,
    pub hold: Option<Trigger>,
    pub faults: BTreeMap<&'static str, Trigger>,
    pub reconnect_after: Option<Duration>,
    /// IN race detector: checksum at DMA start and end, this long apart at
    /// least.
    pub in_checksum: Option<Duration>,
    /// OUT race detector: poison the buffer, write the data this late.
    pub out_poison: Option<Duration>,
}

/// Every key, with what it takes, for error messages and docs.
pub const KEYS: &[(&str, &str)] = &[
    (
        "latency",
        "completion latency: DURATION or MIN..MAX (seeded uniform)",
    ),
    (
        "bandwidth",
        "cap: high-speed, super-speed, or a rate such as 40MB/s or 320Mbit/s",
    ),
    ("chunk", "DMA in chunks with pauses: SIZE,PAUSE such as 4K,1ms"),
    ("nak", "NAK the host for nak_time before the data moves: TRIGGER"),
    ("nak_time", "how long a NAK lasts: DURATION (default 10ms)"),
    (
        "reorder",
        "complete this request after the next one (FIFO violation): TRIGGER",
    ),
    (
        "hold",
        "hold the completion until the guest cancels it or the control socket releases it: TRIGGER",
    ),
    ("stall", "end the request with a STALL (-EPIPE): TRIGGER"),
    ("babble", "end the request with babble (-EOVERFLOW): TRIGGER"),
    (
        "short",
        "OUT: the host ends the transfer with a short packet: TRIGGER",
    ),
    (
        "proto_error",
        "end the request with a transfer error (-EPROTO): TRIGGER",
    ),
    ("io_error", "end the request with an I/O error (-EIO): TRIGGER"),
    (
        "reset",
        "the host resets the bus in the middle of the request: TRIGGER",
    ),
    (
        "disconnect",
        "the host disconnects in the middle of the request: TRIGGER",
    ),
    (
        "reconnect_after",
        "how long an injected disconnect lasts: DURATION (default 100ms)",
    ),
    (
        "in_checksum",
        "IN race detector: checksum at DMA start and end, DELAY apart: DURATION",
    ),
    (
        "out_poison",
        "OUT race detector: poison the buffer, write the data DELAY late: DURATION",
    ),
];

fn known_keys() -> String {
    let v: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
    v.join(", ")
}

impl FaultSet {
    /// Sets `key` to `value`; "off" unsets it.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), InjectError> {
        let value = value.trim();
        let off = value == "off";
        let at = |reason: String| InjectError::Value {
            key: key.to_string(),
            value: value.to_string(),
            reason,
        };
        macro_rules! opt {
            ($field:expr, $parse:expr) => {
                $field = if off {
                    None
                } else {
                    Some($parse(value).map_err(at)?)
                }
            };
        }
        match key {
            "latency" => opt!(self.latency, Latency::parse),
            "bandwidth" => opt!(self.bandwidth, parse_bandwidth),
            "chunk" => opt!(self.chunk, Chunk::parse),
            "nak" => opt!(self.nak, Trigger::parse),
            "nak_time" => opt!(self.nak_time, parse_duration),
            "reorder" => opt!(self.reorder, Trigger::parse),
            "hold" => opt!(self.hold, Trigger::parse),
            "reconnect_after" => opt!(self.reconnect_after, parse_duration),
            "in_checksum" => opt!(self.in_checksum, parse_duration),
            "out_poison" => opt!(self.out_poison, parse_duration),
            _ => {
                let Some(f) = Fault::ALL.iter().find(|f| f.key() == key) else {
                    return Err(InjectError::UnknownKey(key.to_string()));
                };
                if off {
                    self.faults.remove(f.key());
                } else {
                    self.faults.insert(f.key(), Trigger::parse(value).map_err(at)?);
                }
            }
        }
        Ok(())
    }

    /// `self` with the unset fields taken from `base`.
    fn over(&self, base: &FaultSet) -> FaultSet {
        let mut faults = base.faults.clone();
        faults.extend(self.faults.iter().map(|(k, v)| (*k, v.clone())));
        FaultSet {
            latency: self.latency.or(base.latency),
            bandwidth: self.bandwidth.or(base.bandwidth),
            chunk: self.chunk.or(base.chunk),
            nak: self.nak.clone().or_else(|| base.nak.clone()),
            nak_time: self.nak_time.or(base.nak_time),
            reorder: self.reorder.clone().or_else(|| base.reorder.clone()),
            hold: self.hold.clone().or_else(|| base.hold.clone()),
            faults,
            reconnect_after: self.reconnect_after.or(base.reconnect_after),
            in_checksum: self.in_checksum.or(base.in_checksum),
            out_poison: self.out_poison.or(base.out_poison),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == FaultSet::default()
    }

    /// The settings as key = value pairs, in the grammar they were given in.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                m.insert(k.to_string(), v);
            }
        };
        put("latency", self.latency.map(|l| l.to_string()));
        put("bandwidth", self.bandwidth.map(|b| format!("{b}B/s")));
        put(
            "chunk",
            self.chunk
                .map(|c| format!("{},{}", c.bytes, fmt_duration(c.pause))),
        );
        put("nak", self.nak.as_ref().map(Trigger::to_string));
        put("nak_time", self.nak_time.map(fmt_duration));
        put("reorder", self.reorder.as_ref().map(Trigger::to_string));
        put("hold", self.hold.as_ref().map(Trigger::to_string));
        for (k, t) in &self.faults {
            put(k, Some(t.to_string()));
        }
        put("reconnect_after", self.reconnect_after.map(fmt_duration));
        put("in_checksum", self.in_checksum.map(fmt_duration));
        put("out_poison", self.out_poison.map(fmt_duration));
        m
    }
}

/// All injection settings: the seed, the global scope, and per-endpoint
/// scopes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InjectConfig {
    pub seed: u64,
    pub global: FaultSet,
    pub endpoints: BTreeMap<u8, FaultSet>,
}

impl InjectConfig {
    /// Applies `KEY=VALUE`, `EP.KEY=VALUE` or `seed=N` (the command line's
    /// and udc-vm's form).
    pub fn apply_assignment(&mut self, s: &str) -> Result<(), InjectError> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| InjectError::NotAnAssignment(s.to_string()))?;
        self.set(k.trim(), v)
    }

    /// Sets one key; `key` may be scoped to an endpoint (`ep2out.stall`).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), InjectError> {
        if key == "seed" {
            self.seed = value
                .trim()
                .parse()
                .map_err(|_| InjectError::Seed(value.to_string()))?;
            return Ok(());
        }
        match key.split_once('.') {
            Some((ep, k)) => {
                let addr = ep.parse::<EpAddress>()?.0;
                if addr & 0x0f == 0 {
                    return Err(InjectError::Ep0(key.to_string()));
                }
                let scope = self.endpoints.entry(addr).or_default();
                scope.set(k, value)?;
                if scope.is_empty() {
                    self.endpoints.remove(&addr);
                }
                Ok(())
            }
            None => self.global.set(key, value),
        }
    }

    /// What endpoint `ep` injects: its own settings over the global ones.
    pub fn effective(&self, ep: u8) -> FaultSet {
        match self.endpoints.get(&ep) {
            Some(s) => s.over(&self.global),
            None => self.global.clone(),
        }
    }

    /// Whether anything at all is injected.
    pub fn is_empty(&self) -> bool {
        self.global.is_empty() && self.endpoints.is_empty()
    }

    /// The settings as `KEY` / `EP.KEY` to value, plus the seed.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut m = self.global.to_map();
        for (ep, s) in &self.endpoints {
            for (k, v) in s.to_map() {
                m.insert(format!("{}.{k}", ep_name(*ep)), v);
            }
        }
        m.insert("seed".into(), self.seed.to_string());
        m
    }
}

/// A small, fast, seedable generator (splitmix64): the same seed gives the
/// same numbers on every machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What happens to one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The request's number on its endpoint, from 1.
    pub index: u64,
    pub latency: Duration,
    pub nak: Option<Duration>,
    pub fault: Option<Fault>,
    /// Bytes of the request that move before the fault (a multiple of the
    /// packet size, below the request's length when it has any).
    pub fault_at: u64,
    pub hold: bool,
    pub reorder: bool,
    pub in_checksum: Option<Duration>,
    pub out_poison: Option<Duration>,
}

/// One endpoint's injector: its settings, generator and request count.
#[derive(Clone, Debug)]
pub struct EpInjector {
    /// The settings as they run: `next:N` triggers count down here.
    pub set: FaultSet,
    /// The settings as they were given, to tell a changed key from a kept one.
    given: FaultSet,
    rng: Rng,
    requests: u64,
}

impl EpInjector {
    pub fn new(cfg: &InjectConfig, ep: u8) -> Option<EpInjector> {
        let set = cfg.effective(ep);
        if set.is_empty() {
            return None;
        }
        // Each endpoint's stream is its own, so interleaving across
        // endpoints does not change any endpoint's decisions.
        let mut mix = Rng::new(cfg.seed ^ (u64::from(ep) << 56));
        Some(EpInjector {
            given: set.clone(),
            set,
            rng: Rng::new(mix.next_u64()),
            requests: 0,
        })
    }

    /// New settings for a running injector: the generator and the request
    /// count go on, and a trigger whose setting did not change keeps its
    /// state (a spent `next:1` stays spent).
    pub fn update(&mut self, new: FaultSet) {
        fn keep<T: Clone + PartialEq>(given: &Option<T>, running: &Option<T>, new: &Option<T>) -> Option<T> {
            if given == new {
                running.clone()
            } else {
                new.clone()
            }
        }
        let mut set = new.clone();
        set.nak = keep(&self.given.nak, &self.set.nak, &new.nak);
        set.reorder = keep(&self.given.reorder, &self.set.reorder, &new.reorder);
        set.hold = keep(&self.given.hold, &self.set.hold, &new.hold);
        for (k, t) in set.faults.iter_mut() {
            if self.given.faults.get(k) == Some(t) {
                if let Some(running) = self.set.faults.get(k) {
                    *t = running.clone();
                }
            }
        }
        self.given = new;
        self.set = set;
    }

    /// Decides what happens to the next request, of `length` bytes, on an
    /// endpoint with packets of `mps` bytes (`is_in`: an IN endpoint).
    pub fn plan(&mut self, length: u64, mps: u64, is_in: bool) -> Plan {
        self.requests += 1;
        let index = self.requests;
        // Fixed draws per request, used or not: see the module comment.
        let latency_draw = self.rng.unit();
        let nak_draw = self.rng.unit();
        let reorder_draw = self.rng.unit();
        let hold_draw = self.rng.unit();
        let fault_draws: Vec<f64> = Fault::ALL.iter().map(|_| self.rng.unit()).collect();
        let at_draw = self.rng.next_u64();
        let s = &mut self.set;
        let mut plan = Plan {
            index,
            latency: s.latency.map(|l| l.sample(latency_draw)).unwrap_or_default(),
            ..Plan::default()
        };
        if s.nak.as_mut().is_some_and(|t| t.fires(index, nak_draw)) {
            plan.nak = Some(s.nak_time.unwrap_or(DEFAULT_NAK));
        }
        plan.reorder = s.reorder.as_mut().is_some_and(|t| t.fires(index, reorder_draw));
        plan.hold = s.hold.as_mut().is_some_and(|t| t.fires(index, hold_draw));
        for (f, draw) in Fault::ALL.iter().zip(fault_draws) {
            // Short packets come from the host, so only OUT endpoints see
            // them. Once one fault is chosen the others are not asked, so a
            // `next:N` of a losing key is not spent.
            if (*f == Fault::Short && is_in) || plan.fault.is_some() {
                continue;
            }
            if let Some(t) = s.faults.get_mut(f.key()) {
                if t.fires(index, draw) {
                    plan.fault = Some(*f);
                }
            }
        }
        let packets = length.div_ceil(mps.max(1));
        plan.fault_at = if packets == 0 { 0 } else { at_draw % packets * mps };
        if is_in {
            plan.in_checksum = s.in_checksum;
        } else {
            plan.out_poison = s.out_poison;
        }
        plan
    }

    pub fn reconnect_after(&self) -> Duration {
        self.set.reconnect_after.unwrap_or(DEFAULT_RECONNECT)
    }
}

/// One injected event, for the log, the control socket and the digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InjectedEvent {
    /// Order among all injected events since the settings took effect.
    pub seq: u64,
    pub ep: String,
    /// The request's number on its endpoint.
    pub request: u64,
    /// The driver's tag for the request (not part of the digest: it is
    /// the driver's to choose).
    pub tag: u64,
    pub event: String,
}

/// A race a detector caught.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RaceReport {
    pub ep: String,
    pub request: u64,
    pub tag: u64,
    pub kind: &'static str,
    pub detail: String,
    /// Offsets of the 4 KiB blocks of the request that changed (the first 32).
    pub changed_blocks: Vec<u64>,
}

/// The injected-event log: the newest events, a count, and a digest, so
/// two runs can be compared by one number. The digest chains each
/// endpoint's events (request number, event) in that endpoint's order and
/// then combines the chains in endpoint order: how the requests of
/// different endpoints interleaved does not change it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct InjectLog {
    pub total: u64,
    pub digest: String,
    pub events: std::collections::VecDeque<InjectedEvent>,
    pub races_total: u64,
    pub races: std::collections::VecDeque<RaceReport>,
    #[serde(skip)]
    chains: BTreeMap<u8, u64>,
}

/// Events and races kept for the control socket; older ones are counted only.
const LOG_KEEP: usize = 4096;

impl InjectLog {
    pub fn push(&mut self, ep: u8, request: u64, tag: u64, event: String) {
        self.total += 1;
        let chain = self.chains.entry(ep).or_insert(FNV_OFFSET);
        for b in [&request.to_le_bytes()[..], event.as_bytes(), b"\n"] {
            *chain = fnv1a(*chain, b);
        }
        let mut h = FNV_OFFSET;
        for (ep, c) in &self.chains {
            h = fnv1a(fnv1a(h, &[*ep]), &c.to_le_bytes());
        }
        self.digest = format!("{h:016x}");
        if self.events.len() == LOG_KEEP {
            self.events.pop_front();
        }
        self.events.push_back(InjectedEvent {
            seq: self.total,
            ep: ep_name(ep),
            request,
            tag,
            event,
        });
    }

    pub fn race(&mut self, r: RaceReport) {
        self.races_total += 1;
        if self.races.len() == LOG_KEEP {
            self.races.pop_front();
        }
        self.races.push_back(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(assignments: &[&str]) -> InjectConfig {
        let mut c = InjectConfig::default();
        for a in assignments {
            c.apply_assignment(a).unwrap();
        }
        c
    }

    #[test]
    fn grammar_round_trips_through_to_map() {
        let c = cfg(&[
            "seed=7",
            "latency=100us..2ms",
            "bandwidth=high-speed",
            "chunk=4K,1ms",
            "ep2out.stall=nth:3,1",
            "ep1in.hold=next:1",
            "nak=25%",
            "nak_time=5ms",
            "out_poison=20ms",
        ]);
        let m = c.to_map();
        assert_eq!(m["seed"], "7");
        assert_eq!(m["latency"], "100us..2ms");
        assert_eq!(m["bandwidth"], "53248000B/s");
        assert_eq!(m["chunk"], "4096,1ms");
        assert_eq!(m["ep2out.stall"], "nth:1,3");
        assert_eq!(m["ep1in.hold"], "next:1");
        assert_eq!(m["nak"], "25%");
        let mut again = InjectConfig::default();
        for (k, v) in &m {
            again.set(k, v).unwrap();
        }
        assert_eq!(again, c);
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let mut c = InjectConfig::default();
        let e = c.apply_assignment("latency=fast").unwrap_err().to_string();
        assert!(e.contains("latency") && e.contains("not a duration"), "{e}");
        let e = c.apply_assignment("latency=5").unwrap_err().to_string();
        assert!(e.contains("no unit"), "{e}");
        let e = c.apply_assignment("stal=always").unwrap_err().to_string();
        assert!(
            e.contains("unknown injection key \"stal\"") && e.contains("stall"),
            "{e}"
        );
        let e = c.apply_assignment("stall=sometimes").unwrap_err().to_string();
        assert!(e.contains("not a trigger"), "{e}");
        let e = c.apply_assignment("ep0.stall=always").unwrap_err().to_string();
        assert!(e.contains("ep0"), "{e}");
        let e = c
            .apply_assignment("ep3sideways.stall=always")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ep3sideways"), "{e}");
        let e = c.apply_assignment("latency=2ms..1ms").unwrap_err().to_string();
        assert!(e.contains("backwards"), "{e}");
        let e = c.apply_assignment("bandwidth=fast").unwrap_err().to_string();
        assert!(e.contains("not a bandwidth"), "{e}");
        let e = c.apply_assignment("stall=150%").unwrap_err().to_string();
        assert!(e.contains("0% to 100%"), "{e}");
        let e = c.apply_assignment("chunk=8G,1ms").unwrap_err().to_string();
        assert!(e.contains("4 GiB"), "{e}");
        let e = c.apply_assignment("stall=nth:0").unwrap_err().to_string();
        assert!(e.contains("request count"), "{e}");
        let e = c.apply_assignment("seed=-1").unwrap_err().to_string();
        assert!(e.contains("seed"), "{e}");
        assert_eq!(
            c.apply_assignment("no-equals-sign"),
            Err(InjectError::NotAnAssignment("no-equals-sign".into()))
        );
        assert!(matches!(
            c.apply_assignment("ep3sideways.stall=always"),
            Err(InjectError::Endpoint(_))
        ));
        assert!(matches!(c.apply_assignment("stal=always"), Err(InjectError::UnknownKey(k)) if k == "stal"));
        assert!(c.is_empty(), "nothing was set by the failed assignments");
    }

    #[test]
    fn off_unsets_and_endpoint_scope_overrides_global() {
        let mut c = cfg(&[
            "stall=always",
            "latency=1ms",
            "ep1in.latency=5ms",
            "ep1in.stall=off",
        ]);
        let ep1 = c.effective(0x81);
        assert_eq!(ep1.latency.unwrap().min, Duration::from_millis(5));
        // "off" in a scope only unsets that scope's own key.
        assert!(ep1.faults.contains_key("stall"));
        assert_eq!(c.effective(0x02).latency.unwrap().min, Duration::from_millis(1));
        c.set("stall", "off").unwrap();
        assert!(!c.effective(0x02).faults.contains_key("stall"));
        c.set("latency", "off").unwrap();
        c.set("ep1in.latency", "off").unwrap();
        assert!(c.is_empty());
    }

    #[test]
    fn triggers_fire_where_they_say() {
        let mut every = Trigger::parse("every:3").unwrap();
        let fired: Vec<u64> = (1..=9).filter(|&i| every.fires(i, 0.5)).collect();
        assert_eq!(fired, [3, 6, 9]);
        let mut nth = Trigger::parse("nth:2,5").unwrap();
        let fired: Vec<u64> = (1..=9).filter(|&i| nth.fires(i, 0.5)).collect();
        assert_eq!(fired, [2, 5]);
        let mut next = Trigger::parse("next:2").unwrap();
        let fired: Vec<u64> = (1..=9).filter(|&i| next.fires(i, 0.5)).collect();
        assert_eq!(fired, [1, 2]);
        let mut p = Trigger::parse("10%").unwrap();
        assert!(p.fires(1, 0.05) && !p.fires(1, 0.2));
        assert_eq!(Trigger::parse("7%").unwrap().to_string(), "7%");
        assert_eq!(Trigger::parse("0.1%").unwrap().to_string(), "0.1%");
        assert!(Trigger::parse("always").unwrap().fires(1, 0.99));
    }

    #[test]
    fn same_seed_same_plans_other_seed_other_plans() {
        let c = cfg(&["seed=42", "latency=0..10ms", "stall=20%", "reorder=10%"]);
        let plans = |c: &InjectConfig| {
            let mut inj = EpInjector::new(c, 0x81).unwrap();
            (0..200).map(|_| inj.plan(65536, 512, true)).collect::<Vec<_>>()
        };
        let a = plans(&c);
        assert_eq!(a, plans(&c));
        let stalls = a.iter().filter(|p| p.fault == Some(Fault::Stall)).count();
        assert!((20..=60).contains(&stalls), "20% of 200 stalled {stalls} times");
        assert!(a.iter().all(|p| p.latency <= Duration::from_millis(10)));
        assert!(a.iter().all(|p| p.fault_at % 512 == 0 && p.fault_at < 65536));
        let mut other = c.clone();
        other.seed = 43;
        assert_ne!(a, plans(&other));
        // Endpoints draw from streams of their own.
        let mut inj2 = EpInjector::new(&c, 0x02).unwrap();
        let b: Vec<Plan> = (0..200).map(|_| inj2.plan(65536, 512, false)).collect();
        assert_ne!(
            a.iter().map(|p| p.latency).collect::<Vec<_>>(),
            b.iter().map(|p| p.latency).collect::<Vec<_>>()
        );
    }

    #[test]
    fn short_applies_to_out_only_and_first_fault_wins() {
        // A losing next:1 is not spent.
        let c = cfg(&["stall=nth:1", "proto_error=next:1"]);
        let mut inj = EpInjector::new(&c, 0x81).unwrap();
        assert_eq!(inj.plan(1024, 512, true).fault, Some(Fault::Stall));
        assert_eq!(inj.plan(1024, 512, true).fault, Some(Fault::Proto));
        assert_eq!(inj.plan(1024, 512, true).fault, None);
        let c = cfg(&["short=always", "proto_error=always"]);
        let mut inj = EpInjector::new(&c, 0x81).unwrap();
        assert_eq!(inj.plan(1024, 512, true).fault, Some(Fault::Proto));
        let mut inj = EpInjector::new(&c, 0x02).unwrap();
        assert_eq!(inj.plan(1024, 512, false).fault, Some(Fault::Short));
        // A zero-length request faults at its start.
        assert_eq!(inj.plan(0, 512, false).fault_at, 0);
    }

    #[test]
    fn log_digest_does_not_depend_on_how_endpoints_interleave() {
        let mut a = InjectLog::default();
        let mut b = InjectLog::default();
        a.push(0x81, 1, 1, "stall at 0".into());
        a.push(0x02, 1, 2, "latency 1ms".into());
        a.push(0x81, 2, 3, "hold".into());
        b.push(0x02, 1, 2, "latency 1ms".into());
        b.push(0x81, 1, 1, "stall at 0".into());
        b.push(0x81, 2, 3, "hold".into());
        assert_eq!(a.digest, b.digest);
        // Order within an endpoint does count.
        let mut c = InjectLog::default();
        c.push(0x81, 2, 3, "hold".into());
        c.push(0x81, 1, 1, "stall at 0".into());
        c.push(0x02, 1, 2, "latency 1ms".into());
        assert_ne!(a.digest, c.digest);
    }

    #[test]
    fn log_digest_depends_on_events_not_tags() {
        let mut a = InjectLog::default();
        let mut b = InjectLog::default();
        a.push(0x81, 1, 100, "stall at 0".into());
        b.push(0x81, 1, 999, "stall at 0".into());
        assert_eq!(a.digest, b.digest);
        b.push(0x81, 2, 1000, "stall at 0".into());
        assert_ne!(a.digest, b.digest);
    }
}
