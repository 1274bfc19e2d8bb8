// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The daemon's TOML configuration: the controller the guest sees, the host's
//! behaviour, and traffic streams to run once the gadget is configured.
//!
//! Unknown keys are errors, so a typo never silently becomes a default.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::device::{ControllerConfig, EpCap};
use crate::host::HostConfig;
use crate::inject::InjectConfig;
use crate::traffic::StreamSpec;
use crate::usb::Speed;
use crate::wire::*;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config file {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub controller: ControllerSection,
    #[serde(default)]
    pub host: HostSection,
    #[serde(default, rename = "stream")]
    pub streams: Vec<StreamSection>,
    /// Delay and fault injection (docs/injection.md): keys of the global
    /// scope, and tables named after endpoints for their own scopes.
    #[serde(default)]
    pub inject: toml::Table,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerSection {
    /// "full", "high" or "super".
    pub max_speed: Option<String>,
    pub scatter_gather: Option<bool>,
    pub max_segments: Option<u32>,
    pub remote_wakeup: Option<bool>,
    /// Replaces the default endpoint layout when present.
    pub endpoints: Option<Vec<EndpointSection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSection {
    /// "ep1in", "ep2out", or a number such as "0x81".
    pub address: String,
    /// Any of "bulk", "interrupt", "isochronous"; default all three.
    pub types: Option<Vec<String>>,
    pub max_packet: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSection {
    pub speed: Option<String>,
    pub auto_enumerate: Option<bool>,
    pub control_timeout_ms: Option<u64>,
    pub address: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSection {
    pub endpoint: String,
    /// "counter", "prbs:SEED", "zeros".
    pub pattern: Option<String>,
    /// IN streams: check received data against the pattern (default true).
    pub verify: Option<bool>,
    pub transfer_size: Option<usize>,
    pub depth: Option<usize>,
    /// Stop after this many transfers; 0 or absent: run until stopped.
    pub count: Option<u64>,
    /// OUT streams: end each transfer with a ZLP when it is a packet multiple.
    pub zlp: Option<bool>,
}

/// Parses "ep1in", "ep2out", "0x81", "129".
pub fn parse_ep_address(s: &str) -> Result<u8, String> {
    let t = s.trim().to_ascii_lowercase();
    let parsed = if let Some(rest) = t.strip_prefix("ep") {
        let (num, dir) = if let Some(n) = rest.strip_suffix("in") {
            (n, USB_DIR_IN)
        } else if let Some(n) = rest.strip_suffix("out") {
            (n, 0)
        } else if rest == "0" {
            ("0", 0)
        } else {
            return Err(format!("endpoint {s:?}: say ep<N>in or ep<N>out"));
        };
        num.parse::<u8>().ok().filter(|n| *n <= 15).map(|n| n | dir)
    } else if let Some(hex) = t.strip_prefix("0x") {
        u8::from_str_radix(hex, 16).ok()
    } else {
        t.parse::<u8>().ok()
    };
    match parsed {
        Some(a) if a & 0x70 == 0 => Ok(a),
        _ => Err(format!(
            "endpoint {s:?} is not an endpoint address (ep1in, ep2out, 0x81, ...)"
        )),
    }
}

pub fn parse_speed(s: &str) -> Result<Speed, String> {
    s.parse::<Speed>()
        .map_err(|_| format!("speed {s:?}: use one of full, high, super"))
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text, &p)
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Applies this file on top of `ctrl`, `host` and `inject`, checking
    /// every value.
    pub fn apply(
        &self,
        path: &str,
        ctrl: &mut ControllerConfig,
        host: &mut HostConfig,
        inject: &mut InjectConfig,
    ) -> Result<Vec<StreamSpec>, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_string(),
            message,
        };
        let c = &self.controller;
        if let Some(s) = &c.max_speed {
            ctrl.max_speed = parse_speed(s).map_err(|m| invalid(format!("[controller] max_speed: {m}")))?;
        }
        if let Some(sg) = c.scatter_gather {
            ctrl.sg = sg;
        }
        if let Some(n) = c.max_segments {
            if n < MIN_SG_SEGMENTS {
                return Err(invalid(format!(
                    "[controller] max_segments {n}: the spec's minimum is {MIN_SG_SEGMENTS} (a 64 MiB udmabuf arrives as one segment per page); to test without scatter-gather set scatter_gather = false"
                )));
            }
            ctrl.max_segments = n;
        }
        if let Some(w) = c.remote_wakeup {
            ctrl.remote_wakeup = w;
        }
        if let Some(eps) = &c.endpoints {
            let mut list: Vec<EpCap> = Vec::new();
            for (i, e) in eps.iter().enumerate() {
                let what = format!("[controller] endpoints[{i}]");
                let addr = parse_ep_address(&e.address).map_err(|m| invalid(format!("{what}: {m}")))?;
                if ep_num(addr) == 0 {
                    return Err(invalid(format!(
                        "{what}: ep0 is always present; list only ep1-ep15"
                    )));
                }
                if list.iter().any(|x| x.addr == addr) {
                    return Err(invalid(format!("{what}: {} is listed twice", ep_name(addr))));
                }
                let mut caps = 0;
                for t in e
                    .types
                    .clone()
                    .unwrap_or_else(|| vec!["bulk".into(), "interrupt".into(), "isochronous".into()])
                {
                    caps |= match t.as_str() {
                        "bulk" => VIRTIO_UDC_EP_CAP_BULK,
                        "interrupt" => VIRTIO_UDC_EP_CAP_INT,
                        "isochronous" => VIRTIO_UDC_EP_CAP_ISO,
                        other => {
                            return Err(invalid(format!(
                                "{what}: type {other:?}: use bulk, interrupt or isochronous"
                            )))
                        }
                    };
                }
                let mp = e.max_packet.unwrap_or(1024);
                if !(8..=1024).contains(&mp) {
                    return Err(invalid(format!("{what}: max_packet {mp} is outside 8..=1024")));
                }
                list.push(EpCap {
                    addr,
                    caps,
                    max_packet_limit: mp,
                });
            }
            if list.len() > MAX_VALID_EPS - 1 {
                return Err(invalid(format!(
                    "[controller] endpoints: {} listed, at most 29",
                    list.len()
                )));
            }
            ctrl.endpoints = list;
        }
        let h = &self.host;
        if let Some(s) = &h.speed {
            host.speed = parse_speed(s).map_err(|m| invalid(format!("[host] speed: {m}")))?;
        }
        if let Some(a) = h.auto_enumerate {
            host.auto_enumerate = a;
        }
        if let Some(ms) = h.control_timeout_ms {
            if ms == 0 {
                return Err(invalid("[host] control_timeout_ms must be above 0".into()));
            }
            host.control_timeout = Duration::from_millis(ms);
        }
        if let Some(a) = h.address {
            if !(1..=127).contains(&a) {
                return Err(invalid(format!("[host] address {a} is outside 1..=127")));
            }
            host.address = a;
        }
        let mut streams = Vec::new();
        for (i, s) in self.streams.iter().enumerate() {
            let what = format!("[[stream]] #{}", i + 1);
            let spec = StreamSpec::from_parts(
                &s.endpoint,
                s.pattern.as_deref(),
                s.verify,
                s.transfer_size,
                s.depth,
                s.count,
                s.zlp,
            )
            .map_err(|m| invalid(format!("{what}: {m}")))?;
            if !ctrl.has_endpoint(spec.ep) || ep_num(spec.ep) == 0 {
                return Err(invalid(format!(
                    "{what}: the controller has no {}",
                    ep_name(spec.ep)
                )));
            }
            streams.push(spec);
        }
        apply_inject(&self.inject, inject).map_err(invalid)?;
        ctrl.check_injection(inject)
            .map_err(|m| invalid(format!("[inject]: {m}")))?;
        Ok(streams)
    }
}

/// The [inject] table: `key = "value"` pairs (numbers allowed where the
/// value is one), and `[inject.EP]` tables of the same keys.
fn apply_inject(t: &toml::Table, inject: &mut InjectConfig) -> Result<(), String> {
    fn text(v: &toml::Value) -> Option<String> {
        match v {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(i) => Some(i.to_string()),
            toml::Value::Float(f) => Some(f.to_string()),
            _ => None,
        }
    }
    for (k, v) in t {
        match v {
            toml::Value::Table(scope) => {
                for (sk, sv) in scope {
                    let value =
                        text(sv).ok_or_else(|| format!("[inject.{k}] {sk}: give the value as a string"))?;
                    inject
                        .set(&format!("{k}.{sk}"), &value)
                        .map_err(|m| format!("[inject.{k}] {m}"))?;
                }
            }
            other => {
                let value = text(other).ok_or_else(|| format!("[inject] {k}: give the value as a string"))?;
                inject.set(k, &value).map_err(|m| format!("[inject] {m}"))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(text: &str) -> Result<(ControllerConfig, HostConfig, Vec<StreamSpec>), String> {
        let f = FileConfig::parse(text, "t.toml").map_err(|e| e.to_string())?;
        let mut c = ControllerConfig::default();
        let mut h = HostConfig::default();
        let mut i = InjectConfig::default();
        let s = f
            .apply("t.toml", &mut c, &mut h, &mut i)
            .map_err(|e| e.to_string())?;
        Ok((c, h, s))
    }

    fn inject(text: &str) -> Result<InjectConfig, String> {
        let f = FileConfig::parse(text, "t.toml").map_err(|e| e.to_string())?;
        let mut i = InjectConfig::default();
        f.apply(
            "t.toml",
            &mut ControllerConfig::default(),
            &mut HostConfig::default(),
            &mut i,
        )
        .map_err(|e| e.to_string())?;
        Ok(i)
    }

    #[test]
    fn inject_section_applies_and_names_its_errors() {
        let i = inject(
            r#"
            [inject]
            seed = 99
            latency = "1ms..2ms"
            [inject.ep2out]
            out_poison = "20ms"
            stall = "nth:3"
            "#,
        )
        .unwrap();
        assert_eq!(i.seed, 99);
        let m = i.to_map();
        assert_eq!(m["latency"], "1ms..2ms");
        assert_eq!(m["ep2out.out_poison"], "20ms");
        assert_eq!(m["ep2out.stall"], "nth:3");
        let e = inject("[inject]\nlatncy = \"1ms\"\n").unwrap_err();
        assert!(
            e.contains("t.toml") && e.contains("[inject]") && e.contains("latncy"),
            "{e}"
        );
        let e = inject("[inject.ep1in]\nstall = \"often\"\n").unwrap_err();
        assert!(e.contains("[inject.ep1in]") && e.contains("often"), "{e}");
        let e = inject("[inject.ep15out]\nstall = \"always\"\n").unwrap_err();
        assert!(e.contains("[inject]: the controller has no ep15out"), "{e}");
        let e = inject("[inject]\nlatency = true\n").unwrap_err();
        assert!(e.contains("latency"), "{e}");
    }

    #[test]
    fn full_config_applies() {
        let (c, h, s) = apply(
            r#"
            [controller]
            max_speed = "high"
            scatter_gather = false
            endpoints = [ { address = "ep1in", types = ["bulk"], max_packet = 512 }, { address = "0x02" } ]
            [host]
            speed = "super"
            auto_enumerate = false
            control_timeout_ms = 1000
            [[stream]]
            endpoint = "ep1in"
            pattern = "prbs:7"
            transfer_size = 4096
            "#,
        )
        .unwrap();
        assert_eq!(c.max_speed, Speed::High);
        assert!(!c.sg);
        assert_eq!(c.endpoints.len(), 2);
        assert_eq!(c.endpoints[0].caps, VIRTIO_UDC_EP_CAP_BULK);
        assert_eq!(h.speed, Speed::Super);
        assert!(!h.auto_enumerate);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].ep, 0x81);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = apply("[controller]\nmax_sped = \"high\"\n").unwrap_err();
        assert!(e.contains("max_sped"), "{e}");
        let e = apply("[controller]\nmax_speed = \"warp\"\n").unwrap_err();
        assert!(e.contains("warp") && e.contains("full, high, super"), "{e}");
        let e = apply("[controller]\nmax_segments = 16\n").unwrap_err();
        assert!(e.contains("16384"), "{e}");
        let e = apply("[controller]\nendpoints = [ { address = \"ep16in\" } ]\n").unwrap_err();
        assert!(e.contains("ep16in"), "{e}");
        let e = apply("[[stream]]\nendpoint = \"ep1in\"\npattern = \"noise\"\n").unwrap_err();
        assert!(e.contains("noise"), "{e}");
    }

    #[test]
    fn endpoint_addresses() {
        assert_eq!(parse_ep_address("ep1in"), Ok(0x81));
        assert_eq!(parse_ep_address("EP15OUT"), Ok(0x0f));
        assert_eq!(parse_ep_address("0x82"), Ok(0x82));
        assert_eq!(parse_ep_address("3"), Ok(3));
        assert!(parse_ep_address("0x91").is_err());
        assert!(parse_ep_address("ep1").is_err());
    }
}
