// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The daemon's configuration: the controller the guest sees, the host's
//! behaviour, the injection, and traffic streams to run once the gadget is
//! configured.
//!
//! Built in one place, [`DaemonConfig`]'s `TryFrom<ConfigArgs>`: the
//! defaults, then the TOML file, then the command line's options, each
//! value checked where it is read, and the whole checked at the end.
//! Unknown keys are errors, so a typo never silently becomes a default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::device::{ControllerConfig, DeviceError, EpCap, MAX_SEGMENTS};
use crate::host::{HostConfig, MAX_CONTROL_TIMEOUT_MS};
use crate::inject::{InjectConfig, InjectError};
use crate::traffic::StreamSpec;
use crate::usb::DescriptorPolicy;
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
    /// A setting of the file's [inject] or [inject.EP] table.
    #[error("config file {path}: {table} {source}")]
    FileInjection {
        path: String,
        table: String,
        source: InjectError,
    },
    /// An --inject option.
    #[error("{option}: {source}")]
    Injection { option: String, source: InjectError },
    /// The injection names an endpoint the controller lacks.
    #[error("--inject: {0}")]
    InjectionEndpoint(DeviceError),
}

/// Everything the daemon runs with.
#[derive(Debug, Clone, Default)]
pub struct DaemonConfig {
    pub controller: ControllerConfig,
    pub host: HostConfig,
    pub inject: InjectConfig,
    /// Streams to start whenever the gadget is configured.
    pub streams: Vec<StreamSpec>,
}

/// The command-line options that make up the configuration (the daemon's
/// other options say where to listen and how to log).
#[derive(Debug, Default, clap::Args)]
pub struct ConfigArgs {
    /// TOML file describing the controller, the host and traffic streams
    /// (see docs/configuration.md). Command-line options override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Host port speed: full, high or super. The bus runs at the lower of
    /// this and --max-speed. Default: high.
    #[arg(long, value_name = "SPEED")]
    pub speed: Option<Speed>,

    /// Fastest speed the controller advertises to the guest: full, high or
    /// super. Default: super.
    #[arg(long, value_name = "SPEED")]
    pub max_speed: Option<Speed>,

    /// Advertise no scatter-gather (one segment per request). FunctionFS's
    /// DMABUF interface then refuses to attach with -EPERM.
    #[arg(long)]
    pub no_sg: bool,

    /// Do not enumerate when the gadget pulls up; wait for the control
    /// socket's "enumerate".
    #[arg(long)]
    pub no_auto_enumerate: bool,

    /// Refuse a device whose descriptors break a rule of chapter 9, naming
    /// the rule. Default: take them as Linux's usbcore does (skip, fix up
    /// or accept, each defect logged and in `status`; see
    /// docs/descriptor-checks.md).
    #[arg(long)]
    pub strict_descriptors: bool,

    /// Delay or fault injection, KEY=VALUE or EP.KEY=VALUE (repeatable; see
    /// docs/injection.md), e.g. `latency=100us..2ms`, `ep2out.stall=nth:3`,
    /// `bandwidth=high-speed`. Applied over the config file's [inject].
    #[arg(long, value_name = "KEY=VALUE")]
    pub inject: Vec<String>,

    /// Seed of the injection's random choices: the same seed, settings and
    /// guest requests give the same injected events.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

impl TryFrom<ConfigArgs> for DaemonConfig {
    type Error = ConfigError;

    fn try_from(args: ConfigArgs) -> Result<Self, ConfigError> {
        let mut cfg = DaemonConfig::default();
        if let Some(path) = &args.config {
            FileConfig::load(path)?.apply(&path.display().to_string(), &mut cfg)?;
        }
        for a in &args.inject {
            cfg.inject
                .apply_assignment(a)
                .map_err(|source| ConfigError::Injection {
                    option: format!("--inject {a}"),
                    source,
                })?;
        }
        if let Some(s) = args.seed {
            cfg.inject.seed = s;
        }
        if let Some(s) = args.speed {
            cfg.host.speed = s;
        }
        if let Some(s) = args.max_speed {
            cfg.controller.max_speed = s;
        }
        if args.no_sg {
            cfg.controller.sg = false;
        }
        if args.no_auto_enumerate {
            cfg.host.auto_enumerate = false;
        }
        if args.strict_descriptors {
            cfg.host.descriptors = DescriptorPolicy::Strict;
        }
        cfg.controller
            .check_injection(&cfg.inject)
            .map_err(ConfigError::InjectionEndpoint)?;
        Ok(cfg)
    }
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
    /// "usbcore" or "strict".
    pub descriptors: Option<String>,
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

    /// Applies this file on top of `cfg`, checking every value, and that
    /// its streams and injection name endpoints the controller has.
    pub fn apply(&self, path: &str, cfg: &mut DaemonConfig) -> Result<(), ConfigError> {
        let DaemonConfig {
            controller: ctrl,
            host,
            inject,
            streams,
        } = cfg;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_string(),
            message,
        };
        let c = &self.controller;
        if let Some(s) = &c.max_speed {
            ctrl.max_speed = s
                .parse::<Speed>()
                .map_err(|m| invalid(format!("[controller] max_speed: {m}")))?;
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
            if n > MAX_SEGMENTS {
                return Err(invalid(format!(
                    "[controller] max_segments {n}: at most {MAX_SEGMENTS} (a 256 MiB buffer in 4 KiB pages; each segment is 16 bytes the device reads and keeps per request)"
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
                let addr = e
                    .address
                    .parse::<EpAddress>()
                    .map_err(|m| invalid(format!("{what}: {m}")))?
                    .0;
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
            host.speed = s
                .parse::<Speed>()
                .map_err(|m| invalid(format!("[host] speed: {m}")))?;
        }
        if let Some(a) = h.auto_enumerate {
            host.auto_enumerate = a;
        }
        if let Some(ms) = h.control_timeout_ms {
            if ms == 0 || ms > MAX_CONTROL_TIMEOUT_MS {
                return Err(invalid(format!(
                    "[host] control_timeout_ms {ms} is outside 1..={MAX_CONTROL_TIMEOUT_MS} (a control transfer the gadget never answers holds ep0 that long)"
                )));
            }
            host.control_timeout = Duration::from_millis(ms);
        }
        if let Some(d) = &h.descriptors {
            host.descriptors = d
                .parse()
                .map_err(|m| invalid(format!("[host] descriptors: {m}")))?;
        }
        if let Some(a) = h.address {
            if !(1..=127).contains(&a) {
                return Err(invalid(format!("[host] address {a} is outside 1..=127")));
            }
            host.address = a;
        }
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
        apply_inject(path, &self.inject, inject)?;
        ctrl.check_injection(inject)
            .map_err(|m| invalid(format!("[inject]: {m}")))?;
        Ok(())
    }
}

/// The [inject] table: `key = "value"` pairs (numbers allowed where the
/// value is one), and `[inject.EP]` tables of the same keys.
fn apply_inject(path: &str, t: &toml::Table, inject: &mut InjectConfig) -> Result<(), ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_string(),
        message,
    };
    let in_table = |table: String| {
        move |source| ConfigError::FileInjection {
            path: path.to_string(),
            table,
            source,
        }
    };
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
                    let value = text(sv)
                        .ok_or_else(|| invalid(format!("[inject.{k}] {sk}: give the value as a string")))?;
                    inject
                        .set(&format!("{k}.{sk}"), &value)
                        .map_err(in_table(format!("[inject.{k}]")))?;
                }
            }
            other => {
                let value = text(other)
                    .ok_or_else(|| invalid(format!("[inject] {k}: give the value as a string")))?;
                inject.set(k, &value).map_err(in_table("[inject]".into()))?;
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
        let mut cfg = DaemonConfig::default();
        f.apply("t.toml", &mut cfg).map_err(|e| e.to_string())?;
        Ok((cfg.controller, cfg.host, cfg.streams))
    }

    fn inject(text: &str) -> Result<InjectConfig, String> {
        let f = FileConfig::parse(text, "t.toml").map_err(|e| e.to_string())?;
        let mut cfg = DaemonConfig::default();
        f.apply("t.toml", &mut cfg).map_err(|e| e.to_string())?;
        Ok(cfg.inject)
    }

    #[test]
    fn command_line_overrides_the_file_and_is_checked_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.toml");
        std::fs::write(
            &path,
            "[controller]\nmax_speed = \"high\"\n[host]\nspeed = \"full\"\n[inject]\nlatency = \"1ms\"\n",
        )
        .unwrap();
        let args = |extra: ConfigArgs| ConfigArgs {
            config: Some(path.clone()),
            ..extra
        };
        let cfg = DaemonConfig::try_from(args(ConfigArgs::default())).unwrap();
        assert_eq!(cfg.controller.max_speed, Speed::High);
        assert_eq!(cfg.host.speed, Speed::Full);
        assert_eq!(cfg.inject.to_map()["latency"], "1ms");
        let cfg = DaemonConfig::try_from(args(ConfigArgs {
            speed: Some(Speed::Super),
            no_sg: true,
            inject: vec!["latency=2ms".into()],
            seed: Some(5),
            ..ConfigArgs::default()
        }))
        .unwrap();
        assert_eq!(cfg.host.speed, Speed::Super);
        assert!(!cfg.controller.sg);
        assert_eq!(cfg.inject.to_map()["latency"], "2ms");
        assert_eq!(cfg.inject.seed, 5);
        let e = DaemonConfig::try_from(args(ConfigArgs {
            inject: vec!["ep15out.stall=always".into()],
            ..ConfigArgs::default()
        }))
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("--inject: ") && e.contains("ep15out"), "{e}");
        let e = DaemonConfig::try_from(ConfigArgs {
            config: Some(dir.path().join("missing.toml")),
            ..ConfigArgs::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("missing.toml"), "{e}");
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
        let e = apply("[controller]\nmax_segments = 4294967295\n").unwrap_err();
        assert!(e.contains("at most 65536"), "{e}");
        let e = apply("[host]\ncontrol_timeout_ms = 99999999999\n").unwrap_err();
        assert!(e.contains("outside 1..=3600000"), "{e}");
        let e = apply("[controller]\nmax_segments = 16\n").unwrap_err();
        assert!(e.contains("16384"), "{e}");
        let e = apply("[controller]\nendpoints = [ { address = \"ep16in\" } ]\n").unwrap_err();
        assert!(e.contains("ep16in"), "{e}");
        let e = apply("[[stream]]\nendpoint = \"ep1in\"\npattern = \"noise\"\n").unwrap_err();
        assert!(e.contains("noise"), "{e}");
    }
}
