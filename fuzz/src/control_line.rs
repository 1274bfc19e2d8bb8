// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Control-socket request lines through the daemon's dispatcher
//! ([`answer_line`]): the JSON parsing, every operation's argument checks,
//! and what they do to the host model and the device, without a socket.
//!
//! Input: one byte for the device's state (detached, or configured with
//! the driver's requests queued on bulk IN and OUT), then request lines
//! separated by newlines. Every line gets an answer with `"ok"` in it.
//!
//! Waiting is shortened so that an input runs in milliseconds: the host's
//! control timeout is 1 ms, and lines that are JSON objects have their
//! `timeout_ms` and `control_timeout_ms` lowered to at most 2 ms and their
//! `transfer_size` to at most 64 KiB. What is parsed is otherwise the
//! line as given.

use std::sync::mpsc::channel;
use std::time::Duration;

use serde_json::Value;
use vhost_device_udc::control::{answer_line, ControlPolicy};
use vhost_device_udc::device::{ControllerConfig, GuestMem, Output};
use vhost_device_udc::host::{Host, HostConfig};
use vhost_device_udc::request::{Command, EpEnable, Segment, XferRequest};
use vhost_device_udc::traffic::Traffic;
use vhost_device_udc::udc::{ChainToken, Rings, Udc};
use vhost_device_udc::usb::{SetupPacket, Speed};
use vhost_device_udc::wire::*;

use crate::device_ops::guest_memory;
use crate::Input;

const MAX_LINES: usize = 24;

/// Rings that drop what the device delivers: this target has no driver.
struct NoRings;

impl Rings for NoRings {
    fn deliver(&mut self, _mem: Option<&GuestMem>, _outputs: Vec<Output<ChainToken>>) {}
    fn clear(&mut self) {}
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

fn token(head: u16) -> ChainToken {
    ChainToken {
        head,
        status_at: Vec::new(),
    }
}

/// Configures the bus as enumeration leaves it and queues the driver's
/// requests: three on bulk IN, three on bulk OUT, one on interrupt IN.
fn configure(udc: &Udc) {
    let mut g = udc.lock();
    g.command(Command::Pullup(true));
    g.bus_reset(Speed::High);
    let (tx, _rx) = channel();
    g.start_control(SetupPacket::set_address(1), Vec::new(), tx);
    for (ep, ep_type) in [(0x81, USB_XFER_BULK), (0x02, USB_XFER_BULK), (0x83, USB_XFER_INT)] {
        g.command(Command::EpEnable(EpEnable {
            ep,
            ep_type,
            max_packet: 512,
            interval: 1,
            max_burst: 0,
            mult: 0,
        }));
    }
    let (tx, _rx) = channel();
    g.start_control(SetupPacket::set_configuration(1), Vec::new(), tx);
    let status_stage = XferRequest {
        ep: 0x80,
        flags: 0,
        length: 0,
        tag: 0,
        segments: Vec::new(),
    };
    g.queue_xfer(token(0), status_stage);
    // Lengths: short, a packet, a packet and a bit, zero.
    for (i, (ep, length, flags)) in [
        (0x81, 100, 0),
        (0x81, 512, VIRTIO_UDC_XFER_F_ZERO),
        (0x81, 1000, 0),
        (0x02, 512, 0),
        (0x02, 4096, 0),
        (0x02, 0, 0),
        (0x83, 8, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let head = i as u16 + 1;
        let addr = 0x1000 * u64::from(head);
        g.queue_xfer(
            token(head),
            XferRequest {
                ep,
                flags,
                length,
                tag: u64::from(head),
                segments: if length == 0 {
                    Vec::new()
                } else {
                    vec![Segment { addr, len: length }]
                },
            },
        );
    }
}

/// Lowers what would make a line wait (see the module's text).
fn shorten(line: &[u8]) -> Option<Vec<u8>> {
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(line) else {
        return None;
    };
    let mut changed = false;
    for (key, cap) in [
        ("timeout_ms", 2),
        ("control_timeout_ms", 2),
        ("transfer_size", 65536),
    ] {
        if let Some(n) = obj.get(key).and_then(Value::as_u64) {
            if n > cap {
                obj.insert(key.into(), Value::from(cap));
                changed = true;
            }
        }
    }
    if matches!(obj.get("op").and_then(Value::as_str), Some("transfer" | "hold"))
        && !obj.contains_key("timeout_ms")
    {
        obj.insert("timeout_ms".into(), Value::from(1));
        changed = true;
    }
    changed.then(|| serde_json::to_vec(&obj).expect("a JSON object serializes"))
}

pub fn run(data: &[u8]) {
    session(data);
}

/// Runs one input; returns the answers.
fn session(data: &[u8]) -> Vec<Value> {
    let mut input = Input::new(data);
    let setup = input.u8();
    let udc = Udc::new(ControllerConfig::default(), Box::new(NoRings));
    let mem = vhost_device_udc::iommu::DeviceIommu::default().memory(guest_memory(), false);
    udc.lock().set_memory(std::sync::Arc::new(mem));
    if setup & 1 != 0 {
        configure(&udc);
    }
    let host = Host::new(
        udc.clone(),
        HostConfig {
            auto_enumerate: setup & 2 != 0,
            control_timeout: Duration::from_millis(1),
            ..HostConfig::default()
        },
    );
    let traffic = Traffic::new(host.clone());
    let policy = ControlPolicy::default();
    let mut answers = Vec::new();
    for line in input.rest().split(|&b| b == b'\n').take(MAX_LINES) {
        let shortened = shorten(line);
        let line = shortened.as_deref().unwrap_or(line);
        let Some((reply, _fd)) = answer_line(line, &policy, &host, &traffic) else {
            assert!(
                std::str::from_utf8(line).is_ok_and(|l| l.trim().is_empty()),
                "only blank lines go unanswered"
            );
            continue;
        };
        assert!(
            reply.get("ok").is_some_and(Value::is_boolean),
            "an answer without \"ok\": {reply}"
        );
        // What the socket would send.
        let _ = reply.to_string();
        answers.push(reply);
    }
    traffic.stop_all();
    answers
}

/// The requests of docs/control-socket.md, on a detached and on a
/// configured device, one per seed and all in one session.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    const LINES: [(&str, &str); 22] = [
        ("status", r#"{"op":"status"}"#),
        ("descriptors", r#"{"op":"descriptors"}"#),
        ("enumerate", r#"{"op":"enumerate"}"#),
        (
            "control-in",
            r#"{"op":"control","request_type":192,"request":1,"value":0,"index":0,"length":4}"#,
        ),
        (
            "control-out",
            r#"{"op":"control","request_type":64,"request":2,"value":0,"index":0,"length":3,"data":"AQID"}"#,
        ),
        (
            "get-status",
            r#"{"op":"control","request_type":128,"request":0,"length":2}"#,
        ),
        (
            "transfer-in",
            r#"{"op":"transfer","ep":"ep1in","length":65536,"timeout_ms":2000}"#,
        ),
        (
            "transfer-out",
            r#"{"op":"transfer","ep":"ep2out","data":"aGVsbG8=","zlp":false}"#,
        ),
        ("hold", r#"{"op":"hold","ep":"ep1in","timeout_ms":5000}"#),
        (
            "release",
            r#"{"op":"release","ep":"ep1in","handle":1,"actual":16,"status":"ok"}"#,
        ),
        (
            "stream-start",
            r#"{"op":"stream_start","ep":"ep1in","pattern":"prbs:42","verify":true,"transfer_size":1048576,"depth":4,"count":2}"#,
        ),
        ("stream-stop", r#"{"op":"stream_stop","ep":"ep1in"}"#),
        ("streams", r#"{"op":"streams"}"#),
        ("bus-reset", r#"{"op":"bus","action":"reset"}"#),
        ("bus-suspend", r#"{"op":"bus","action":"suspend"}"#),
        ("bus-disconnect", r#"{"op":"bus","action":"disconnect"}"#),
        (
            "inject",
            r#"{"op":"inject","set":{"latency":"100us..2ms","ep2out.stall":"next:1"}}"#,
        ),
        ("inject-clear", r#"{"op":"inject","clear":true}"#),
        ("injections", r#"{"op":"injections"}"#),
        (
            "host",
            r#"{"op":"host","speed":"super","auto_enumerate":false,"control_timeout_ms":1000}"#,
        ),
        ("crash", r#"{"op":"crash","down_ms":10}"#),
        (
            "stream-file",
            r#"{"op":"stream_start","ep":"ep2out","pattern":"file:/etc/passwd"}"#,
        ),
    ];
    let mut v = Vec::new();
    for (name, line) in LINES {
        v.push((format!("{name}-detached"), [b"\x00", line.as_bytes()].concat()));
        v.push((format!("{name}-configured"), [b"\x01", line.as_bytes()].concat()));
    }
    let session: Vec<&str> = [
        "hold",
        "release",
        "transfer-in",
        "transfer-out",
        "inject",
        "status",
        "bus-reset",
        "injections",
    ]
    .iter()
    .map(|n| LINES.iter().find(|(k, _)| k == n).expect("a named line").1)
    .collect();
    v.push((
        "session-configured".into(),
        [b"\x01".as_slice(), session.join("\n").as_bytes()].concat(),
    ));
    v.push(("not-utf8".into(), b"\x00{\"op\":\"st\xffatus\"}".to_vec()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(seed: &str) -> Value {
        let (_, bytes) = seeds()
            .into_iter()
            .find(|(n, _)| n == seed)
            .expect("a seed of that name");
        session(&bytes).pop().expect("an answer")
    }

    /// The seeds reach the operations, not just the parser: on the
    /// configured device the host reads the queued IN request, writes to
    /// the OUT one and holds one; the gates stay shut.
    #[test]
    fn seeds_reach_the_device() {
        assert_eq!(answer("status-configured")["device"]["state"], "configured");
        let read = answer("transfer-in-configured");
        assert_eq!(
            (&read["ok"], &read["actual"]),
            (&Value::from(true), &Value::from(100))
        );
        assert_eq!(answer("transfer-out-configured")["ok"], true);
        assert_eq!(answer("hold-configured")["length"], 100);
        assert_eq!(answer("transfer-in-detached")["status"], "shutdown");
        assert_eq!(answer("crash-configured")["ok"], false);
        assert_eq!(answer("stream-file-configured")["ok"], false);
        let session = seeds()
            .into_iter()
            .find(|(n, _)| n == "session-configured")
            .unwrap()
            .1;
        assert_eq!(super::session(&session).len(), 8);
    }
}
