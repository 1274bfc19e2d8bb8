// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The control-socket client: the USB host side, reached from inside the
//! guest through the daemon's control socket (docs/control-socket.md) on
//! the other end of a virtio serial port that QEMU connects to it. One JSON
//! object per line each way.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::error::Error;

/// An endpoint as the host enumerated it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostEndpoint {
    pub address: u8,
    /// wMaxPacketSize.
    pub max_packet: usize,
}

/// One connection to the host side (the daemon's control socket).
pub struct ControlClient {
    writer: File,
    reader: BufReader<File>,
}

impl ControlClient {
    pub fn open(path: &Path) -> Result<ControlClient, Error> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::Setup(format!("control channel {}: {e}", path.display())))?;
        let reader = BufReader::new(file.try_clone().map_err(|e| Error::Setup(e.to_string()))?);
        Ok(ControlClient { writer: file, reader })
    }

    /// Opens the channel again until the host side answers `status`: after
    /// the daemon was restarted, QEMU reconnects the port to the new one.
    /// The port opens once at a time, so the old descriptors go first.
    pub fn reconnect(&mut self, path: &Path, timeout: Duration) -> Result<(), Error> {
        let null = || File::open("/dev/null").map_err(|e| Error::Setup(format!("/dev/null: {e}")));
        self.writer = null()?;
        self.reader = BufReader::new(null()?);
        let start = Instant::now();
        loop {
            let attempt = ControlClient::open(path).and_then(|mut l| {
                l.send(&json!({"op": "status"}))?;
                l.reply_within(Duration::from_secs(2))?;
                Ok(l)
            });
            match attempt {
                Ok(l) => {
                    *self = l;
                    return Ok(());
                }
                Err(e) if start.elapsed() > timeout => {
                    return Err(Error::Check(format!(
                        "the host side did not come back within {timeout:?}: {e}"
                    )))
                }
                Err(_) => sleep(Duration::from_millis(200)),
            }
        }
    }

    fn send(&mut self, req: &Value) -> Result<(), Error> {
        let mut line = serde_json::to_string(req).expect("a JSON value serialises");
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| Error::Host(format!("sending {}: {e}", op_name(req))))
    }

    /// The next reply line, if it arrives within `timeout`.
    fn reply_within(&mut self, timeout: Duration) -> Result<Value, Error> {
        if self.reader.buffer().is_empty() {
            let mut pfd = libc::pollfd {
                fd: self.writer.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd that lives across the call.
            let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
            if n <= 0 {
                return Err(Error::Host(format!("no reply within {timeout:?}")));
            }
        }
        let mut reply = String::new();
        let n = self
            .reader
            .read_line(&mut reply)
            .map_err(|e| Error::Host(format!("reading a reply: {e}")))?;
        if n == 0 {
            return Err(Error::Host("control channel closed".into()));
        }
        serde_json::from_str(&reply).map_err(|e| Error::Host(format!("bad reply {reply:?}: {e}")))
    }

    /// Sends one request and returns the reply, whatever its `ok`.
    pub fn request(&mut self, req: &Value) -> Result<Value, Error> {
        let mut line = serde_json::to_string(req).expect("a JSON value serialises");
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| Error::Host(format!("sending {}: {e}", op_name(req))))?;
        let mut reply = String::new();
        let n = self
            .reader
            .read_line(&mut reply)
            .map_err(|e| Error::Host(format!("reading the reply to {}: {e}", op_name(req))))?;
        if n == 0 {
            return Err(Error::Host(format!(
                "control channel closed during {}",
                op_name(req)
            )));
        }
        serde_json::from_str(&reply).map_err(|e| Error::Host(format!("bad reply {reply:?}: {e}")))
    }

    /// Sends one request that must succeed.
    pub fn ok(&mut self, req: Value) -> Result<Value, Error> {
        let r = self.request(&req)?;
        if r["ok"] != true {
            return Err(Error::Host(format!("{} failed: {}", op_name(&req), r["error"])));
        }
        Ok(r)
    }

    pub fn status(&mut self) -> Result<Value, Error> {
        self.ok(json!({"op": "status"}))
    }

    /// The device's view of endpoint `ep` (`status`'s
    /// `device.endpoints[]` entry): queues, stats, held completions.
    pub fn endpoint_status(&mut self, ep: u8) -> Result<Value, Error> {
        let st = self.status()?;
        st["device"]["endpoints"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["address"] == ep).cloned())
            .ok_or_else(|| {
                Error::Check(format!(
                    "the device reports no endpoint {ep:#04x}: {}",
                    st["device"]
                ))
            })
    }

    /// The race detectors' reports (docs/injection.md): the total so far,
    /// and the newest, oldest first.
    pub fn races(&mut self) -> Result<(u64, Vec<Value>), Error> {
        let r = self.ok(json!({"op": "injections"}))?;
        let log = &r["log"];
        Ok((
            log["races_total"].as_u64().unwrap_or(0),
            log["races"].as_array().cloned().unwrap_or_default(),
        ))
    }

    /// The IN and OUT endpoints of the first interface as the host
    /// enumerated them (the addresses the UDC gave them), in that order.
    pub fn enumerated_endpoint_pair(&mut self) -> Result<[HostEndpoint; 2], Error> {
        let d = self.ok(json!({"op": "descriptors"}))?;
        let eps = d["enumerated"]["configurations"][0]["interfaces"][0]["endpoints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let find = |want_in: bool| {
            eps.iter().find_map(|e| {
                let a = e["address"].as_u64()?;
                ((a & 0x80 != 0) == want_in).then(|| HostEndpoint {
                    address: a as u8,
                    max_packet: e["max_packet_size"].as_u64().unwrap_or(0) as usize,
                })
            })
        };
        match (find(true), find(false)) {
            (Some(i), Some(o)) => Ok([i, o]),
            _ => Err(Error::Check(format!(
                "the host found no IN and OUT endpoint pair: {}",
                d["enumerated"]["configurations"]
            ))),
        }
    }

    /// Waits until the host has configured the device.
    pub fn wait_configured(&mut self, timeout: Duration) -> Result<Value, Error> {
        let start = Instant::now();
        loop {
            let st = self.status()?;
            if st["device"]["state"] == "configured" {
                return Ok(st);
            }
            if start.elapsed() > timeout {
                return Err(Error::Check(format!(
                    "the host did not configure the device within {timeout:?}: state {}, last enumeration error {}",
                    st["device"]["state"], st["host"]["last_error"]
                )));
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the host no longer sees the device.
    pub fn wait_detached(&mut self, timeout: Duration) -> Result<(), Error> {
        let start = Instant::now();
        loop {
            let st = self.status()?;
            if st["device"]["pullup"] == false || st["device"]["state"] == "detached" {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(Error::Check(format!(
                    "the host still sees the device after {timeout:?}: {}",
                    st["device"]["state"]
                )));
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// One OUT transfer of `data`; returns the reply.
    pub fn send_out(&mut self, ep: u8, data: &[u8], zlp: bool) -> Result<Value, Error> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        let r = self.request(
            &json!({"op": "transfer", "ep": ep_str(ep), "data": b64, "zlp": zlp, "timeout_ms": 10000}),
        )?;
        self.with_dma_fault(ep, r)
    }

    /// One IN transfer of up to `len` bytes; returns the reply and the data.
    pub fn read_in(&mut self, ep: u8, len: usize) -> Result<(Value, Vec<u8>), Error> {
        let r =
            self.request(&json!({"op": "transfer", "ep": ep_str(ep), "length": len, "timeout_ms": 10000}))?;
        let r = self.with_dma_fault(ep, r)?;
        let data = match r["data"].as_str() {
            Some(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| Error::Host(format!("bad base64 from the host: {e}")))?,
            None => Vec::new(),
        };
        Ok((r, data))
    }

    /// A transfer the device's DMA fault ended carries the device's report
    /// of it (`device_dma_fault`: the daemon's log line, e.g. an IOMMU
    /// permission fault), so that a failure says why.
    fn with_dma_fault(&mut self, ep: u8, mut r: Value) -> Result<Value, Error> {
        if r["status"] == "dma_fault" {
            let e = self.endpoint_status(ep)?;
            r["device_dma_fault"] = e["last_dma_fault"].clone();
        }
        Ok(r)
    }

    /// Starts a stream of `count` transfers of `size` bytes.
    pub fn stream_start(&mut self, ep: u8, pattern: &str, size: usize, count: u64) -> Result<(), Error> {
        self.ok(json!({
            "op": "stream_start", "ep": ep_str(ep), "pattern": pattern,
            "transfer_size": size, "count": count, "depth": 2,
        }))?;
        Ok(())
    }

    /// Waits until the stream on `ep` has ended; returns its report.
    pub fn stream_wait(&mut self, ep: u8, timeout: Duration) -> Result<Value, Error> {
        let start = Instant::now();
        loop {
            let r = self.ok(json!({"op": "streams"}))?;
            let ours = r["streams"]
                .as_array()
                .and_then(|a| a.iter().find(|s| s["spec"]["ep"] == ep))
                .cloned();
            let Some(s) = ours else {
                return Err(Error::Host(format!("no stream on {} in {r}", ep_str(ep))));
            };
            if s["running"] == false {
                return Ok(s);
            }
            if start.elapsed() > timeout {
                let _ = self.request(&json!({"op": "stream_stop", "ep": ep_str(ep)}));
                return Err(Error::Check(format!(
                    "the stream on {} did not end within {timeout:?}: {s}",
                    ep_str(ep)
                )));
            }
            sleep(Duration::from_millis(20));
        }
    }
}

/// `0x81`-style endpoint name the control socket accepts.
pub fn ep_str(ep: u8) -> String {
    format!("{ep:#04x}")
}

fn op_name(req: &Value) -> String {
    req["op"].as_str().unwrap_or("request").to_string()
}
