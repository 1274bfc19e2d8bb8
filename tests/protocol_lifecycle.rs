// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Protocol tier: enumeration at each speed, descriptor validation, bus
//! events, the control socket, reconnection and signals.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use udc_harness::wire::*;
use udc_harness::{FakeGadget, Malformation, SetupReply};

fn enumerate_at(host_speed: &str, max_speed: Option<&str>, want: &str, want_wire: u8) {
    let mut args = vec!["--speed", host_speed];
    if let Some(m) = max_speed {
        args.extend(["--max-speed", m]);
    }
    let d = Daemon::start(&args);
    let (h, g) = d.configured();
    let mut ctl = d.ctl();
    let e = ctl.ok(json!({"op": "descriptors"}))["enumerated"].clone();
    assert_eq!(e["speed"], want, "{e}");
    assert_eq!(e["device"]["id_vendor"], g.vendor_id);
    assert_eq!(e["device"]["id_product"], g.product_id);
    let bcd = g.bcd_usb_for(want_wire);
    assert_eq!(e["device"]["bcd_usb"], bcd);
    let strings = e["strings"].as_object().unwrap();
    let values: Vec<&str> = strings.values().filter_map(|v| v.as_str()).collect();
    for s in ["virtio-udc", "udc-harness gadget", "0001"] {
        assert!(values.contains(&s), "string {s:?} missing: {strings:?}");
    }
    // The parsed endpoints are what the gadget described at this speed.
    let eps = &e["configurations"][0]["interfaces"][0]["endpoints"];
    let mps: Vec<(u64, u64)> = eps
        .as_array()
        .unwrap()
        .iter()
        .map(|ep| {
            (
                ep["address"].as_u64().unwrap(),
                ep["max_packet_size"].as_u64().unwrap(),
            )
        })
        .collect();
    let want_mps = u64::from(udc_harness::EndpointSpec::bulk(0x81).max_packet_for(want_wire));
    assert_eq!(mps, vec![(0x81, want_mps), (0x02, want_mps)], "{e}");
    if want_wire >= VIRTIO_UDC_SPEED_SUPER {
        assert!(
            e["bos"].is_object(),
            "a SuperSpeed device's BOS was not read: {e}"
        );
        for ep in eps.as_array().unwrap() {
            assert!(
                ep["companion"].is_object(),
                "no SuperSpeed companion parsed: {ep}"
            );
        }
    }
    let st = ctl.ok(json!({"op": "status"}));
    assert_eq!(st["device"]["state"], "configured");
    assert_eq!(st["device"]["address"], 1);
    drop(h);
}

#[test]
fn enumeration_at_full_speed() {
    enumerate_at("full", None, "full", VIRTIO_UDC_SPEED_FULL);
}

#[test]
fn enumeration_at_high_speed() {
    enumerate_at("high", None, "high", VIRTIO_UDC_SPEED_HIGH);
}

#[test]
fn enumeration_at_super_speed() {
    enumerate_at("super", None, "super", VIRTIO_UDC_SPEED_SUPER);
}

#[test]
fn bus_speed_is_the_lower_of_host_and_controller() {
    enumerate_at("super", Some("high"), "high", VIRTIO_UDC_SPEED_HIGH);
}

#[test]
fn config_space_describes_the_controller() {
    let d = Daemon::start(&[]);
    let h = d.harness();
    let c = h.config();
    assert_eq!(
        u32::from(c.flags) & VIRTIO_UDC_CONFIG_F_SG,
        VIRTIO_UDC_CONFIG_F_SG
    );
    assert!(u32::from(c.max_segments) >= MIN_SG_SEGMENTS);
    assert_eq!(c.max_speed, VIRTIO_UDC_SPEED_SUPER);
    assert_eq!(c.num_eps, 30);
    assert_eq!(c.eps[0].caps, VIRTIO_UDC_EP_CAP_CONTROL);
    drop(h);
    let d = Daemon::start(&["--no-sg", "--max-speed", "high"]);
    let c = *d.harness().config();
    assert_eq!(u32::from(c.flags) & VIRTIO_UDC_CONFIG_F_SG, 0);
    assert_eq!(u32::from(c.max_segments), 1);
    assert_eq!(c.max_speed, VIRTIO_UDC_SPEED_HIGH);
    // The control socket reports the same, for guest tools that adapt.
    let st = d.ctl().ok(json!({"op": "status"}));
    let ctrl = &st["device"]["controller"];
    assert_eq!(ctrl["scatter_gather"], false, "{ctrl}");
    assert_eq!(ctrl["max_segments"], 1, "{ctrl}");
    assert_eq!(ctrl["max_speed"], "high", "{ctrl}");
    assert_eq!(ctrl["endpoints"], 29, "{ctrl}");
}

#[test]
fn malformed_descriptors_are_named_in_the_log_and_status() {
    let cases: Vec<(Malformation, &str)> = vec![
        (Malformation::ConfigTotalLengthTooSmall, "wTotalLength"),
        (Malformation::MaxPacketTooLarge, "wMaxPacketSize"),
        (Malformation::EndpointAddress(0x80), "endpoint"),
        (Malformation::Ep0MaxPacket(7), "bMaxPacketSize0"),
    ];
    for (m, word) in cases {
        let d = Daemon::start(&["--speed", "high", "--strict-descriptors"]);
        let st = enumeration_outcome(&d, &m);
        let err = st["host"]["last_error"]
            .as_str()
            .unwrap_or_else(|| panic!("{m:?}: enumerated: {st}"))
            .to_string();
        assert!(err.contains(word), "{m:?}: error does not name {word}: {err}");
        assert!(
            d.log_text().contains(word),
            "{m:?}: the daemon log does not name {word}"
        );
    }
}

/// Pulls up a gadget with malformation `m` on `d` and runs it until the
/// host has enumerated it or given up; returns `status` then.
/// A JSON array of strings, as &strs.
fn strings(v: &serde_json::Value) -> Vec<&str> {
    v.as_array()
        .expect("an array")
        .iter()
        .filter_map(|d| d.as_str())
        .collect()
}

fn enumeration_outcome(d: &Daemon, m: &Malformation) -> serde_json::Value {
    let mut h = d.harness();
    let mut g = FakeGadget::new().with_malformation(m.clone());
    h.pullup(true).unwrap();
    let mut ctl = d.ctl();
    let start = Instant::now();
    loop {
        g.run_for(&mut h, Duration::from_millis(50)).unwrap();
        let st = ctl.ok(json!({"op": "status"}));
        if !st["host"]["last_error"].is_null() || !st["host"]["enumerated"].is_null() {
            return st;
        }
        assert!(
            start.elapsed() < T,
            "{m:?}: enumeration neither failed nor finished"
        );
    }
}

/// By default the host takes descriptors as Linux's usbcore does: the same
/// device that --strict-descriptors refuses enumerates, each defect named
/// in the log and in `status` with what the host did about it.
#[test]
fn descriptor_defects_are_taken_as_usbcore_takes_them() {
    let cases: Vec<(&str, Malformation, &str)> = vec![
        (
            "full",
            Malformation::MaxPacketZero,
            "endpoint 0x81 (bulk): wMaxPacketSize 0 (the gadget side refuses to enable such an endpoint): accepted",
        ),
        (
            "high",
            Malformation::MaxPacketTooLarge,
            "endpoint 0x81 (bulk): wMaxPacketSize 1024: bulk at high speed must be 512: accepted",
        ),
        (
            "full",
            Malformation::MaxPacketTooLarge,
            "endpoint 0x81 (bulk): wMaxPacketSize 0x0080 is over 64, the most usbcore takes for it at full speed: changed to 64",
        ),
        (
            "super",
            Malformation::MissingSsCompanion,
            "endpoint 0x81 (bulk): no SuperSpeed companion descriptor: changed to bMaxBurst 0, bmAttributes 0, wBytesPerInterval 0",
        ),
        (
            "high",
            Malformation::EndpointAddress(0x80),
            "endpoint 0x80 (bulk): an endpoint descriptor for endpoint zero: skipped",
        ),
    ];
    for (speed, m, defect) in cases {
        for strict in [true, false] {
            let mut args = vec!["--speed", speed, "--max-speed", "super"];
            if strict {
                args.push("--strict-descriptors");
            }
            let d = Daemon::start(&args);
            let st = enumeration_outcome(&d, &m);
            let host = &st["host"];
            if strict {
                assert!(host["enumerated"].is_null(), "{m:?} at {speed}, strict: {host}");
                continue;
            }
            assert!(host["last_error"].is_null(), "{m:?} at {speed}: refused: {host}");
            let defects = strings(&host["enumerated"]["defects"]);
            assert!(
                defects.iter().any(|d| d.ends_with(defect)),
                "{m:?} at {speed}: no defect ending {defect:?} in {defects:?}"
            );
            assert!(
                d.log_text().contains(&format!(
                    "descriptor defect: configuration 1: interface 0 alt 0: {defect}"
                )),
                "{m:?} at {speed}: the daemon log does not name the defect"
            );
            assert_eq!(host["config"]["descriptors"], "usbcore");
        }
    }
}

/// A defect the host took stays in `status` when a later step fails, as
/// with stock f_fs, which refuses to enable the endpoint whose 0 the host
/// accepted and stalls SET_CONFIGURATION (docs/kernel-bugs.md).
#[test]
fn defects_stay_in_status_when_set_configuration_then_fails() {
    let d = Daemon::start(&["--speed", "full"]);
    let mut h = d.harness();
    let mut g = FakeGadget::new()
        .with_malformation(Malformation::MaxPacketZero)
        .with_hook(|s| (s.request == 9).then_some(SetupReply::Stall));
    h.pullup(true).unwrap();
    let mut ctl = d.ctl();
    let start = Instant::now();
    let st = loop {
        g.run_for(&mut h, Duration::from_millis(50)).unwrap();
        let st = ctl.ok(json!({"op": "status"}));
        if !st["host"]["last_error"].is_null() {
            break st;
        }
        assert!(start.elapsed() < T, "enumeration did not fail: {st}");
    };
    let host = &st["host"];
    assert!(host["enumerated"].is_null(), "{host}");
    assert!(
        host["last_error"]
            .as_str()
            .unwrap()
            .contains("SET_CONFIGURATION(1)"),
        "{host}"
    );
    let defects = strings(&host["defects"]);
    assert!(
        defects.iter().any(|d| d.ends_with("endpoint 0x81 (bulk): wMaxPacketSize 0 (the gadget side refuses to enable such an endpoint): accepted")),
        "the defect is in status after the failure: {defects:?}"
    );
}

#[test]
fn vendor_control_requests_both_ways_and_stall() {
    let d = Daemon::start(&[]);
    let (mut h, mut g) = d.configured();
    g.set_hook(Some(Box::new(|s| match (s.request_type, s.request) {
        (0xc0, 0x01) => Some(SetupReply::In(b"pong".to_vec())),
        (0x40, 0x02) => Some(SetupReply::Out),
        (0x40, 0x03) => Some(SetupReply::Ack),
        _ => None,
    })));
    let path = d.control.clone();
    let host = std::thread::spawn(move || {
        let mut ctl = Ctl::connect(&path);
        let a = ctl.req(json!({"op": "control", "request_type": 0xc0, "request": 1, "length": 64}));
        let b = ctl
            .req(json!({"op": "control", "request_type": 0x40, "request": 2, "length": 3, "data": "AQID"}));
        let c = ctl.req(json!({"op": "control", "request_type": 0x40, "request": 3}));
        let s = ctl.req(json!({"op": "control", "request_type": 0xc0, "request": 0x55, "length": 8}));
        (a, b, c, s)
    });
    let start = Instant::now();
    while !host.is_finished() {
        g.run_for(&mut h, Duration::from_millis(20)).unwrap();
        assert!(start.elapsed() < T);
    }
    let (a, b, c, s) = host.join().unwrap();
    assert_eq!(a["data"], "cG9uZw==", "{a}");
    assert_eq!(b["ok"], true, "{b}");
    assert_eq!(g.out_data.last().map(|v| v.1.as_slice()), Some(&[1u8, 2, 3][..]));
    assert_eq!(c["ok"], true, "{c}");
    assert_eq!(s["status"], "stall", "an unknown vendor request is stalled: {s}");
}

#[test]
fn a_bus_reset_from_the_control_socket_enumerates_again() {
    let d = Daemon::start(&[]);
    let (mut h, mut g) = d.configured();
    let path = d.control.clone();
    let reset = std::thread::spawn(move || Ctl::connect(&path).req(json!({"op": "bus", "action": "reset"})));
    let start = Instant::now();
    while !reset.is_finished() {
        g.run_for(&mut h, Duration::from_millis(20)).unwrap();
        assert!(start.elapsed() < T, "the reset did not finish");
    }
    let r = reset.join().unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["changed"], true);
    assert!(r["enumerated"]["device"].is_object(), "{r}");
    let st = d.ctl().ok(json!({"op": "status"}));
    assert_eq!(st["host"]["enumerations"], 2, "{st}");
    assert_eq!(st["device"]["state"], "configured", "{st}");
}

#[test]
fn bus_reset_disconnect_and_suspend_reach_the_driver() {
    let d = Daemon::start(&[]);
    let (mut h, mut g) = d.configured();
    let mut ctl = d.ctl();
    let b = h.buffer(512).unwrap();
    let x = h.submit_buffer(0x81, 0, &b, 1).unwrap();
    ctl.ok(json!({"op": "bus", "action": "suspend"}));
    h.expect_event(VIRTIO_UDC_EVT_SUSPEND, T).unwrap();
    ctl.ok(json!({"op": "bus", "action": "resume"}));
    h.expect_event(VIRTIO_UDC_EVT_RESUME, T).unwrap();
    ctl.ok(json!({"op": "bus", "action": "disconnect"}));
    h.expect_event(VIRTIO_UDC_EVT_DISCONNECT, T).unwrap();
    // The queued request ended with -ESHUTDOWN before the event.
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Err(-libc::ESHUTDOWN));
    let st = ctl.ok(json!({"op": "status"}));
    assert_eq!(st["device"]["state"], "detached");
    // Plugging back in enumerates again.
    ctl.ok(json!({"op": "bus", "action": "connect"}));
    let start = Instant::now();
    loop {
        g.run_for(&mut h, Duration::from_millis(20)).unwrap();
        let st = ctl.ok(json!({"op": "status"}));
        if st["host"]["enumerations"] == 2 && st["device"]["state"] == "configured" {
            break;
        }
        assert!(start.elapsed() < T, "no second enumeration: {st}");
    }
    // Remote wakeup, once the host allowed it.
    ctl.ok(json!({"op": "control", "request_type": 0, "request": 3, "value": 1}));
    ctl.ok(json!({"op": "bus", "action": "suspend"}));
    h.expect_event(VIRTIO_UDC_EVT_SUSPEND, T).unwrap();
    assert_eq!(u32::from(h.wakeup().unwrap().status), VIRTIO_UDC_S_OK);
    h.expect_event(VIRTIO_UDC_EVT_RESUME, T).unwrap();
}

#[test]
fn hold_keeps_a_request_until_released() {
    let d = Daemon::start(&[]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    let b = h.buffer(4096).unwrap();
    let x1 = h.submit_buffer(0x02, 0, &b, 1).unwrap();
    let x2 = h.submit_buffer(0x02, 0, &b, 2).unwrap();
    let held = ctl.ok(json!({"op": "hold", "ep": "ep2out"}));
    assert_eq!(held["tag"], 1);
    assert_eq!(held["length"], 4096);
    // Nothing moves behind a held request.
    let path = d.control.clone();
    let writer = std::thread::spawn(move || Ctl::connect(&path).write_out("ep2out", b"behind", false));
    std::thread::sleep(Duration::from_millis(300));
    assert!(h.try_completion(x1).unwrap().is_none());
    assert!(h.try_completion(x2).unwrap().is_none());
    let r = ctl.ok(json!({"op": "release", "ep": "ep2out", "handle": held["handle"], "actual": 100}));
    assert_eq!(r["ok"], true);
    assert_eq!(h.wait_completion(x1, T).unwrap().result(), Ok(100));
    assert_eq!(writer.join().unwrap()["status"], "ok");
    assert_eq!(h.wait_completion(x2, T).unwrap().result(), Ok(6));
    // Releasing twice says why it cannot.
    let r = ctl.req(json!({"op": "release", "ep": "ep2out", "handle": held["handle"]}));
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("holds no request"), "{r}");
    // Release with an error status.
    let x3 = h.submit_buffer(0x81, 0, &b, 3).unwrap();
    let held = ctl.ok(json!({"op": "hold", "ep": "ep1in"}));
    ctl.ok(json!({"op": "release", "ep": "ep1in", "handle": held["handle"], "status": "proto"}));
    assert_eq!(h.wait_completion(x3, T).unwrap().result(), Err(-libc::EPROTO));
    // A DMABUF of the held pages needs /dev/udmabuf; without it the reply
    // says so and the request is not held.
    if !std::path::Path::new("/dev/udmabuf").exists() {
        let x4 = h.submit_buffer(0x81, 0, &b, 4).unwrap();
        let r = ctl.req(json!({"op": "hold", "ep": "ep1in", "dmabuf": true}));
        assert_eq!(r["ok"], false);
        assert!(r["error"].as_str().unwrap().contains("/dev/udmabuf"), "{r}");
        ctl.read_in("ep1in", 4096);
        assert!(h.wait_completion(x4, T).unwrap().is_ok());
    }
}

#[test]
fn control_socket_rejects_bad_requests_clearly() {
    let d = Daemon::start(&[]);
    let mut ctl = d.ctl();
    let r = ctl.raw("this is not json");
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().starts_with("bad request"), "{r}");
    let r = ctl.req(json!({"op": "frobnicate"}));
    assert!(r["error"].as_str().unwrap().contains("frobnicate"), "{r}");
    let r = ctl.req(json!({"op": "status", "extra": 1}));
    assert!(r["error"].as_str().unwrap().contains("extra"), "{r}");
    let r = ctl.req(json!({"op": "transfer", "ep": "ep99in", "length": 1}));
    assert!(r["error"].as_str().unwrap().contains("ep99in"), "{r}");
    let r = ctl.req(json!({"op": "bus", "action": "explode"}));
    assert!(r["error"].as_str().unwrap().contains("explode"), "{r}");
    let r = ctl.req(json!({"op": "host", "speed": "ludicrous"}));
    assert!(r["error"].as_str().unwrap().contains("ludicrous"), "{r}");
    let r = ctl.req(json!({"op": "descriptors"}));
    assert!(r["error"].as_str().unwrap().contains("not enumerated"), "{r}");
    // Still answering.
    ctl.ok(json!({"op": "status"}));
}

#[test]
fn the_daemon_serves_a_reconnecting_frontend() {
    let d = Daemon::start(&[]);
    for round in 0..3 {
        let (mut h, _g) = d.configured();
        let mut ctl = d.ctl();
        let b = h.buffer(1000).unwrap();
        h.write_buffer(&b, &data(1000, round)).unwrap();
        let x = h.submit_buffer(0x81, 0, &b, 1).unwrap();
        assert!(ctl.read_in("ep1in", 4096).1 == data(1000, round), "round {round}");
        assert!(h.wait_completion(x, T).unwrap().is_ok());
        // Leave a request queued: the next connection must not see it.
        h.submit_buffer(0x81, 0, &b, 2).unwrap();
        h.disconnect().unwrap();
    }
    let st = d.ctl().ok(json!({"op": "status"}));
    assert_eq!(st["host"]["enumerations"], 3, "{st}");
}

#[test]
fn sigterm_and_sigint_end_the_daemon_cleanly() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut d = Daemon::start(&[]);
        let (_h, _g) = d.configured();
        let mut child = d.child.take().unwrap();
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(start.elapsed() < T, "the daemon ignored signal {sig}");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(
            status.success(),
            "signal {sig}: exit {status:?}\n{}",
            d.log_text()
        );
        assert!(!d.socket.exists(), "the vhost-user socket was left behind");
        assert!(!d.control.exists(), "the control socket was left behind");
    }
}

#[test]
fn crash_ends_the_daemon_abruptly_and_a_new_one_takes_the_sockets() {
    let mut d = Daemon::start(&["--control-allow-crash"]);
    let (_h, _g) = d.configured();
    let r = d.ctl().ok(json!({"op": "crash"}));
    assert_eq!(r["exit_status"], 70);
    let mut child = d.child.take().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < T, "the daemon did not end after crash");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(70), "{}", d.log_text());
    // No cleanup: the socket files stay behind, as after SIGKILL.
    assert!(d.socket.exists() && d.control.exists());
    // A new daemon binds over the stale sockets.
    let d2 = Daemon::start_at(d.dir.path(), &[]);
    let (_h2, _g2) = d2.configured();
    d2.ctl().ok(json!({"op": "status"}));
}

#[test]
fn auto_enumerate_turned_off_holds_a_gadget_that_pulls_up_right_after() {
    let d = Daemon::start(&[]);
    let mut h = d.harness();
    let mut g = FakeGadget::new();
    // Off, then at once a pull-up: the host must leave the bus alone.
    d.ctl().ok(json!({"op": "host", "auto_enumerate": false}));
    let mut r = udc_harness::harness::ctrl_req(VIRTIO_UDC_CMD_PULLUP);
    r.value = vm_memory::Le32::from(1);
    h.command_ok(r).unwrap();
    g.run_for(&mut h, Duration::from_millis(600)).unwrap();
    let st = d.ctl().ok(json!({"op": "status"}));
    assert_ne!(st["device"]["state"], "configured", "{st}");
    // On demand it enumerates (the request returns once the gadget, run
    // here meanwhile, has answered).
    let mut ctl = d.ctl();
    let asked = std::thread::spawn(move || ctl.ok(json!({"op": "enumerate"})));
    g.run_until_configured(&mut h, T).unwrap();
    asked.join().unwrap();
}

#[test]
fn a_crash_can_ask_its_supervisor_for_downtime() {
    let mut d = Daemon::start(&["--control-allow-crash"]);
    let r = d.ctl().ok(json!({"op": "crash", "down_ms": 4000}));
    assert_eq!(r["exit_status"], 70);
    let mut child = d.child.take().unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < T, "the daemon did not end after crash");
        std::thread::sleep(Duration::from_millis(10));
    }
    // udc-vm reads this line to wait before it starts the daemon again.
    assert!(
        d.log_text().contains("stay down for 4000 ms before a restart"),
        "{}",
        d.log_text()
    );
}

#[test]
fn bad_command_line_and_config_say_what_is_wrong() {
    let bin = env!("CARGO_BIN_EXE_vhost-device-udc");
    let out = std::process::Command::new(bin)
        .args(["--socket-path", "/tmp/x", "--speed", "warp"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warp") && err.contains("full, high, super"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[controller]\nmax_segments = 8\n").unwrap();
    let out = std::process::Command::new(bin)
        .args([
            "--socket-path",
            dir.path().join("s").to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max_segments 8") && err.contains("bad.toml"),
        "{err}"
    );
}

/// A command sees every transfer made available before it, even when the
/// xferq's notification has not been served yet: EP_DISABLE's completions
/// for requests queued just before it are on the used ring before its
/// response (the promise a UDC driver's ep_disable relies on, so that no
/// request comes back after the gadget driver stopped).
#[test]
fn a_command_sees_transfers_queued_without_a_notification() {
    let d = Daemon::start(&[]);
    let (mut h, _g) = d.configured();
    let b = h.buffer(4096).unwrap();
    h.set_auto_kick(false);
    let handles: Vec<_> = (0..3)
        .map(|t| h.submit_buffer(0x81, 0, &b, 100 + t).unwrap())
        .collect();
    h.ep_disable(0x81).unwrap();
    let done = h.poll_completions().unwrap();
    assert_eq!(done.len(), 3, "completions before the response: {done:?}");
    for x in handles {
        assert!(!h.is_in_flight(x), "{x:?} still in flight after EP_DISABLE");
    }
    for c in &done {
        assert_eq!(c.status_code(), Some(Status::Shutdown), "{c:?}");
    }
}
