// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Shared by the harness's programs: start the daemon next to them, talk to
//! its control socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Daemon {
    child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub control: PathBuf,
}

/// The daemon binary: $VHOST_DEVICE_UDC, or beside this program.
fn daemon_binary() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("VHOST_DEVICE_UDC") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let p = me.with_file_name("vhost-device-udc");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found: build it (cargo build --release) or set VHOST_DEVICE_UDC",
            p.display()
        ))
    }
}

impl Daemon {
    pub fn start(args: &[&str]) -> Result<Daemon, String> {
        let dir = std::env::temp_dir().join(format!("udc-harness-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let socket = dir.join("udc.sock");
        let control = dir.join("udc.ctl");
        let log = dir.join("daemon.log");
        let logf = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(daemon_binary()?)
            .arg("--socket-path")
            .arg(&socket)
            .arg("--control-socket")
            .arg(&control)
            .args(["--log-level", "warn"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().map_err(|e| e.to_string())?)
            .stderr(logf)
            .spawn()
            .map_err(|e| format!("cannot start the daemon: {e}"))?;
        let start = Instant::now();
        while !(socket.exists() && control.exists()) {
            if start.elapsed() > Duration::from_secs(10) {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("the daemon did not start:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Daemon {
            child,
            dir,
            socket,
            control,
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Ctl {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Ctl {
    pub fn connect(p: &Path) -> Result<Ctl, String> {
        let s = UnixStream::connect(p).map_err(|e| format!("control socket: {e}"))?;
        Ok(Ctl {
            w: s.try_clone().map_err(|e| e.to_string())?,
            r: BufReader::new(s),
        })
    }

    pub fn req(&mut self, v: Value) -> Result<Value, String> {
        writeln!(self.w, "{v}").map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.r.read_line(&mut line).map_err(|e| e.to_string())?;
        let r: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
        if r["ok"] != true {
            return Err(format!("{v}: {}", r["error"]));
        }
        Ok(r)
    }

    /// Waits for the stream on `ep` to end and returns its status.
    pub fn wait_stream(&mut self, ep: &str, timeout: Duration) -> Result<Value, String> {
        let start = Instant::now();
        loop {
            let r = self.req(serde_json::json!({"op": "streams"}))?;
            if let Some(s) = r["streams"]
                .as_array()
                .and_then(|a| a.iter().find(|s| s["endpoint"] == ep))
            {
                if s["running"] == false {
                    return Ok(s.clone());
                }
            }
            if start.elapsed() > timeout {
                return Err(format!("stream on {ep} did not finish in {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
