// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Shared by the protocol tests: the real daemon binary on a real unix
//! socket, the fake guest (udc-harness) connected to it, and a client for
//! the control socket.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use udc_harness::{FakeGadget, Harness, HarnessOptions};

pub const T: Duration = Duration::from_secs(20);

/// The daemon binary: cargo's build of it, or `VHOST_DEVICE_UDC_BIN` where
/// the test runs away from the build tree (inside the VM guest).
pub fn daemon_binary() -> PathBuf {
    std::env::var_os("VHOST_DEVICE_UDC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vhost-device-udc")))
}

/// A running daemon; killed (and its log printed on failure) when dropped.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: DaemonDir,
    pub socket: PathBuf,
    pub control: PathBuf,
    pub log: PathBuf,
}

/// Where a daemon's sockets and log live: its own temporary directory, or
/// one it shares with an earlier daemon (restart after a crash).
pub enum DaemonDir {
    Owned(tempfile::TempDir),
    Borrowed(PathBuf),
}

impl DaemonDir {
    pub fn path(&self) -> &Path {
        match self {
            DaemonDir::Owned(t) => t.path(),
            DaemonDir::Borrowed(p) => p,
        }
    }
}

impl Daemon {
    pub fn start(args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Daemon::start_at(dir.path(), args);
        d.dir = DaemonDir::Owned(dir);
        d
    }

    /// A daemon on the sockets in `path` (an existing directory).
    pub fn start_at(path: &Path, args: &[&str]) -> Daemon {
        let dir = DaemonDir::Borrowed(path.to_path_buf());
        let socket = dir.path().join("udc.sock");
        let control = dir.path().join("udc.ctl");
        let log = dir.path().join("daemon.log");
        let logf = std::fs::File::create(&log).unwrap();
        let child = Command::new(daemon_binary())
            .arg("--socket-path")
            .arg(&socket)
            .arg("--control-socket")
            .arg(&control)
            .args(["--log-level", "debug"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("starting vhost-device-udc");
        let d = Daemon {
            child: Some(child),
            dir,
            socket,
            control,
            log,
        };
        d.wait_for_path(&d.control.clone());
        d.wait_for_path(&d.socket.clone());
        d
    }

    fn wait_for_path(&self, p: &Path) {
        let start = Instant::now();
        while !p.exists() {
            assert!(
                start.elapsed() < T,
                "daemon did not create {}:\n{}",
                p.display(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon runs").id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn harness(&self) -> Harness {
        Harness::connect(&self.socket, HarnessOptions::default()).expect("connecting the fake guest")
    }

    pub fn harness_with(&self, opts: HarnessOptions) -> Harness {
        Harness::connect(&self.socket, opts).expect("connecting the fake guest")
    }

    pub fn ctl(&self) -> Ctl {
        Ctl::connect(&self.control)
    }

    /// Connects a fake guest and runs the default gadget until the host
    /// has configured it.
    pub fn configured(&self) -> (Harness, FakeGadget) {
        let mut h = self.harness();
        let mut g = FakeGadget::new();
        g.connect_and_configure(&mut h, T).expect("enumeration");
        (h, g)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- daemon log ----\n{}", self.log_text());
        }
    }
}

/// A control-socket connection.
pub struct Ctl {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Ctl {
    pub fn connect(p: &Path) -> Ctl {
        let s = UnixStream::connect(p).expect("connecting to the control socket");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Ctl {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }

    pub fn raw(&mut self, line: &str) -> Value {
        writeln!(self.w, "{line}").unwrap();
        let mut out = String::new();
        self.r.read_line(&mut out).expect("control socket reply");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {out}"))
    }

    pub fn req(&mut self, v: Value) -> Value {
        self.raw(&v.to_string())
    }

    /// A request that must succeed.
    pub fn ok(&mut self, v: Value) -> Value {
        let r = self.req(v.clone());
        assert_eq!(r["ok"], true, "request {v} failed: {r}");
        r
    }

    pub fn read_in(&mut self, ep: &str, len: usize) -> (Value, Vec<u8>) {
        let r = self.req(json!({"op": "transfer", "ep": ep, "length": len, "timeout_ms": 20000}));
        let data = r["data"]
            .as_str()
            .map(|d| B64.decode(d).unwrap())
            .unwrap_or_default();
        (r, data)
    }

    pub fn write_out(&mut self, ep: &str, data: &[u8], zlp: bool) -> Value {
        self.req(
            json!({"op": "transfer", "ep": ep, "data": B64.encode(data), "zlp": zlp, "timeout_ms": 20000}),
        )
    }
}

/// Resident memory of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Deterministic test data of `len` bytes, different per `seed`.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    udc_patterns::Pattern::Prbs { seed }.fill(0, &mut v);
    v
}
