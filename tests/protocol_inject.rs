// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Protocol tier: delay and fault injection and the race detectors, through
//! the real daemon: set from the command line, the config file and the
//! control socket, seen by the fake guest as a driver would see them.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use udc_harness::wire::*;

/// Sets injection keys over the control socket.
fn inject(ctl: &mut Ctl, set: Value) -> Value {
    ctl.ok(json!({"op": "inject", "set": set}))
}

/// An OUT transfer of `data` from the host, in a thread (it may wait for
/// the guest).
fn host_write(d: &Daemon, ep: &'static str, data: Vec<u8>) -> thread::JoinHandle<Value> {
    let path = d.control.clone();
    thread::spawn(move || Ctl::connect(&path).write_out(ep, &data, false))
}

fn host_read(d: &Daemon, ep: &'static str, len: usize) -> thread::JoinHandle<(Value, Vec<u8>)> {
    let path = d.control.clone();
    thread::spawn(move || Ctl::connect(&path).read_in(ep, len))
}

#[test]
fn latency_from_the_command_line_delays_completions_in_order() {
    // Global latency, and ep1in opting out with a latency of its own, 0.
    let d = Daemon::start(&["--inject", "latency=40ms", "--inject", "ep1in.latency=0"]);
    let (mut h, _g) = d.configured();
    let bufs: Vec<_> = (0..3).map(|_| h.buffer(512).unwrap()).collect();
    let xs: Vec<_> = bufs
        .iter()
        .enumerate()
        .map(|(i, b)| h.submit_buffer(0x02, 0, b, 10 + i as u64).unwrap())
        .collect();
    let start = Instant::now();
    for i in 0..3u8 {
        let r = d.ctl().write_out("ep2out", &[i; 512], false);
        assert_eq!(r["status"], "ok", "{r}");
    }
    let cs = h.wait_completions(&xs, T).unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(40),
        "a completion came before its 40 ms latency"
    );
    let seqs: Vec<u64> = cs.iter().map(|c| c.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "FIFO order kept: {seqs:?}");
    for (i, c) in cs.iter().enumerate() {
        assert_eq!(c.result(), Ok(512));
        assert_eq!(h.read_buffer(&bufs[i]).unwrap(), vec![i as u8; 512]);
    }
    let b = h.buffer(512).unwrap();
    let x = h.submit_buffer(0x81, 0, &b, 20).unwrap();
    d.ctl().read_in("ep1in", 512);
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(512));
    let st = d.ctl().ok(json!({"op": "injections"}));
    assert_eq!(st["settings"]["latency"], "40ms", "{st}");
    assert_eq!(st["settings"]["ep1in.latency"], "0", "{st}");
    let eps: Vec<&str> = st["log"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ep"].as_str().unwrap())
        .collect();
    assert_eq!(eps, ["ep2out"; 3], "ep1in's request had no latency: {st}");
    assert!(d.log_text().contains("inject latency 40ms"));
}

#[test]
fn socket_injects_each_fault_once_and_the_endpoint_recovers() {
    let d = Daemon::start(&["--seed", "5"]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    for (key, errno, host_status) in [
        ("stall", -libc::EPIPE, "stall"),
        ("babble", -libc::EOVERFLOW, "overflow"),
        ("proto_error", -libc::EPROTO, "proto"),
        ("io_error", -libc::EIO, "proto"),
    ] {
        for (ep, name) in [(0x81u8, "ep1in"), (0x02, "ep2out")] {
            inject(&mut ctl, json!({ format!("{name}.{key}"): "next:1" }));
            let b = h.buffer(8192).unwrap();
            let x = h.submit_buffer(ep, 0, &b, 1).unwrap();
            let r = if ep == 0x81 {
                ctl.read_in(name, 8192).0
            } else {
                ctl.write_out(name, &data(8192, 1), false)
            };
            assert_eq!(r["status"], host_status, "{key} on {name}: host saw {r}");
            let c = h.wait_completion(x, T).unwrap();
            assert_eq!(c.status_code().map(|s| s.errno()), Some(errno), "{key} on {name}");
            // The fault sat at a packet boundary inside the request.
            assert!(
                c.actual < 8192 && c.actual % 512 == 0,
                "{key}: actual {}",
                c.actual
            );
            assert_eq!(r["actual"], c.actual, "{key} on {name}: both sides agree");
            // next:1 is spent: the next request goes through.
            let x = h.submit_buffer(ep, 0, &b, 2).unwrap();
            let r = if ep == 0x81 {
                ctl.read_in(name, 8192).0
            } else {
                ctl.write_out(name, &data(8192, 2), false)
            };
            assert_eq!(r["status"], "ok", "after {key} on {name}: {r}");
            assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(8192));
            h.free_buffer(b).unwrap();
        }
    }
    // Short packets come from the host: OUT only.
    inject(&mut ctl, json!({"ep2out.short": "next:1"}));
    let b = h.buffer(8192).unwrap();
    let x = h.submit_buffer(0x02, 0, &b, 3).unwrap();
    let r = ctl.write_out("ep2out", &data(8192, 3), false);
    let c = h.wait_completion(x, T).unwrap();
    assert_eq!(r["status"], "ok");
    assert_eq!(r["actual"], c.actual, "{r}");
    assert!(c.is_ok() && c.actual < 8192, "short: {c:?}");
    let log = ctl.ok(json!({"op": "injections"}));
    let events: Vec<&str> = log["log"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    // Each key fired once (a spent next:1 stays spent when other keys
    // change), and the log kept them all.
    assert_eq!(events.len(), 9, "{events:?}");
    assert!(events[8].starts_with("short at "), "{events:?}");
}

#[test]
fn held_completion_is_released_from_the_socket_or_cancelled_by_the_guest() {
    let d = Daemon::start(&["--inject", "ep1in.hold=nth:1,2"]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    let b1 = h.buffer(4096).unwrap();
    let b2 = h.buffer(4096).unwrap();
    h.write_buffer(&b1, &data(4096, 1)).unwrap();
    let x1 = h.submit_buffer(0x81, 0, &b1, 1).unwrap();
    let x2 = h.submit_buffer(0x81, 0, &b2, 2).unwrap();
    let (r, got) = ctl.read_in("ep1in", 4096);
    assert_eq!(r["status"], "ok", "the data moved: {r}");
    assert_eq!(got, data(4096, 1));
    let _ = ctl.read_in("ep1in", 4096);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(h.try_completion(x1).unwrap(), None, "held");
    let st = ctl.ok(json!({"op": "status"}));
    let ep = &st["device"]["endpoints"][1];
    assert_eq!(ep["name"], "ep1in");
    let handles = ep["held_completions"].as_array().unwrap().clone();
    assert_eq!(handles.len(), 2, "{ep}");
    ctl.ok(json!({"op": "release", "ep": "ep1in", "handle": handles[0]}));
    assert_eq!(h.wait_completion(x1, T).unwrap().result(), Ok(4096));
    // The guest dequeues the second: it comes back cancelled.
    let r = h.cancel(0x81, 2).unwrap();
    assert_eq!(u32::from(r.status), VIRTIO_UDC_S_OK);
    assert_eq!(h.wait_completion(x2, T).unwrap().result(), Err(-libc::ECONNRESET));
    let r = ctl.req(json!({"op": "release", "ep": "ep1in", "handle": handles[1]}));
    assert_eq!(r["ok"], false, "already gone: {r}");
}

#[test]
fn reorder_breaks_fifo_on_purpose() {
    let d = Daemon::start(&["--inject", "ep2out.reorder=nth:1"]);
    let (mut h, _g) = d.configured();
    let b: Vec<_> = (0..2).map(|_| h.buffer(512).unwrap()).collect();
    let x0 = h.submit_buffer(0x02, 0, &b[0], 1).unwrap();
    let x1 = h.submit_buffer(0x02, 0, &b[1], 2).unwrap();
    for i in 0..2u8 {
        d.ctl().write_out("ep2out", &[i; 512], false);
    }
    let c = h.wait_completions(&[x0, x1], T).unwrap();
    assert!(c[1].seq < c[0].seq, "request 2 completed before request 1: {c:?}");
    assert!(d.log_text().contains("injected reordering"));
}

#[test]
fn injected_bus_reset_and_disconnect_mid_transfer() {
    let d = Daemon::start(&[
        "--inject",
        "ep1in.reset=nth:1",
        "--inject",
        "ep2out.disconnect=nth:1",
    ]);
    let (mut h, mut g) = d.configured();
    let b = h.buffer(65536).unwrap();
    let x = h.submit_buffer(0x81, 0, &b, 1).unwrap();
    let host = host_read(&d, "ep1in", 65536);
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Err(-libc::ESHUTDOWN));
    let (r, _) = host.join().unwrap();
    assert_ne!(r["status"], "ok", "{r}");
    // The host enumerates again, as after any reset.
    g.configured = false;
    g.run_until_configured(&mut h, T).unwrap();
    let st = d.ctl().ok(json!({"op": "status"}));
    assert_eq!(st["host"]["enumerations"], 2, "{st}");

    let x = h.submit_buffer(0x02, 0, &b, 2).unwrap();
    let host = host_write(&d, "ep2out", data(65536, 9));
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Err(-libc::ESHUTDOWN));
    h.expect_event(VIRTIO_UDC_EVT_DISCONNECT, T).unwrap();
    let _ = host.join().unwrap();
    // reconnect_after (100 ms by default): the host comes back.
    g.configured = false;
    g.run_until_configured(&mut h, T).unwrap();
    let st = d.ctl().ok(json!({"op": "status"}));
    assert_eq!(st["host"]["enumerations"], 3, "{st}");
}

#[test]
fn bandwidth_cap_and_chunked_dma() {
    let d = Daemon::start(&[]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    // 1 MiB at 10 MB/s takes at least 100 ms.
    inject(&mut ctl, json!({"ep2out.bandwidth": "10MB/s"}));
    let b = h.buffer(1 << 20).unwrap();
    let x = h.submit_buffer(0x02, 0, &b, 1).unwrap();
    let start = Instant::now();
    let host = host_write(&d, "ep2out", data(1 << 20, 4));
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(1 << 20));
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(host.join().unwrap()["status"], "ok");
    assert_eq!(h.read_buffer(&b).unwrap(), data(1 << 20, 4));

    // Chunks of 4 KiB with 200 ms pauses: part of the data is in the
    // buffer before the request completes.
    inject(
        &mut ctl,
        json!({"ep2out.bandwidth": "off", "ep2out.chunk": "4K,200ms"}),
    );
    let b = h.buffer(16384).unwrap();
    let x = h.submit_buffer(0x02, 0, &b, 2).unwrap();
    let payload = data(16384, 5);
    let host = host_write(&d, "ep2out", payload.clone());
    thread::sleep(Duration::from_millis(100));
    assert_eq!(h.try_completion(x).unwrap(), None);
    let now = h.read_buffer(&b).unwrap();
    assert_eq!(now[..4096], payload[..4096], "the first chunk is in");
    assert!(now[4096..].iter().all(|&v| v == 0), "the rest is not yet");
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(16384));
    assert_eq!(h.read_buffer(&b).unwrap(), payload);
    let _ = host.join();
}

#[test]
fn a_global_bandwidth_cap_is_shared_by_the_whole_bus() {
    // 10 MB/s for the bus: 1 MiB on each of two endpoints at once takes
    // at least 2 MiB / 10 MB/s = 210 ms, not the 105 ms of one.
    let d = Daemon::start(&["--inject", "bandwidth=10MB/s"]);
    let (mut h, _g) = d.configured();
    let bi = h.buffer(1 << 20).unwrap();
    let bo = h.buffer(1 << 20).unwrap();
    h.write_buffer(&bi, &data(1 << 20, 20)).unwrap();
    let xi = h.submit_buffer(0x81, 0, &bi, 1).unwrap();
    let xo = h.submit_buffer(0x02, 0, &bo, 2).unwrap();
    let start = Instant::now();
    let host_in = host_read(&d, "ep1in", 1 << 20);
    let host_out = host_write(&d, "ep2out", data(1 << 20, 21));
    let cs = h.wait_completions(&[xi, xo], T).unwrap();
    let took = start.elapsed();
    assert!(cs.iter().all(|c| c.result() == Ok(1 << 20)), "{cs:?}");
    assert!(
        took >= Duration::from_millis(200),
        "2 MiB over a 10 MB/s bus took {took:?}"
    );
    let (r, got) = host_in.join().unwrap();
    assert_eq!(r["status"], "ok");
    assert_eq!(got, data(1 << 20, 20));
    assert_eq!(host_out.join().unwrap()["status"], "ok");
    assert_eq!(h.read_buffer(&bo).unwrap(), data(1 << 20, 21));
}

#[test]
fn nak_delays_the_host() {
    let d = Daemon::start(&["--inject", "ep1in.nak=always", "--inject", "ep1in.nak_time=150ms"]);
    let (mut h, _g) = d.configured();
    let b = h.buffer(512).unwrap();
    let x = h.submit_buffer(0x81, 0, &b, 1).unwrap();
    let start = Instant::now();
    let (r, _) = d.ctl().read_in("ep1in", 512);
    assert_eq!(r["status"], "ok");
    assert!(start.elapsed() >= Duration::from_millis(150));
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(512));
}

#[test]
fn race_detectors_catch_a_writer_and_show_a_reader_the_poison() {
    let d = Daemon::start(&[
        "--inject",
        "ep1in.in_checksum=300ms",
        "--inject",
        "ep2out.out_poison=300ms",
    ]);
    let (mut h, _g) = d.configured();
    // IN: the guest changes the buffer while the device reads it.
    let b = h.buffer(16384).unwrap();
    h.write_buffer(&b, &data(16384, 7)).unwrap();
    let x = h.submit_buffer(0x81, 0x00, &b, 0x42).unwrap();
    let host = host_read(&d, "ep1in", 16384);
    thread::sleep(Duration::from_millis(100));
    let mut changed = data(16384, 7);
    changed[12288 + 5] ^= 0xff;
    h.write_buffer(&b, &changed).unwrap();
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(16384));
    let _ = host.join();
    let log = d.ctl().ok(json!({"op": "injections"}));
    let races = log["log"]["races"].as_array().unwrap();
    assert_eq!(races.len(), 1, "{log}");
    assert_eq!(races[0]["tag"], 0x42);
    assert_eq!(races[0]["kind"], "in_changed_during_dma");
    assert_eq!(races[0]["changed_blocks"], json!([12288]));
    assert!(d.log_text().contains("RACE ep1in"));

    // OUT: a reader that does not wait for the completion reads poison.
    let b = h.buffer(8192).unwrap();
    let x = h.submit_buffer(0x02, 0, &b, 0x43).unwrap();
    let host = host_write(&d, "ep2out", data(8192, 8));
    thread::sleep(Duration::from_millis(100));
    let early = h.read_buffer(&b).unwrap();
    assert!(
        early.chunks(8).all(|c| c == b"UDCPOISN"),
        "poison before the data"
    );
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(8192));
    assert_eq!(
        h.read_buffer(&b).unwrap(),
        data(8192, 8),
        "the data after the completion"
    );
    let _ = host.join();
}

/// Runs a fixed sequence of transfers with random injection; returns the
/// log's digest and events (endpoint, request number, event).
fn seeded_run(seed: &str) -> (String, Vec<(String, u64, String)>) {
    let d = Daemon::start(&[
        "--seed",
        seed,
        "--inject",
        "latency=0..2ms",
        "--inject",
        "ep1in.stall=15%",
        "--inject",
        "ep2out.short=15%",
        "--inject",
        "nak=10%",
        "--inject",
        "nak_time=1ms",
    ]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    let b = h.buffer(4096).unwrap();
    for i in 0..40u64 {
        let (ep, name) = if i % 2 == 0 {
            (0x81u8, "ep1in")
        } else {
            (0x02, "ep2out")
        };
        let x = h.submit_buffer(ep, 0, &b, i).unwrap();
        if ep == 0x81 {
            ctl.read_in(name, 4096);
        } else {
            ctl.write_out(name, &data(4096, i), false);
        }
        h.wait_completion(x, T).unwrap();
    }
    let log = ctl.ok(json!({"op": "injections"}));
    let events = log["log"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["ep"].as_str().unwrap().to_string(),
                e["request"].as_u64().unwrap(),
                e["event"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (log["log"]["digest"].as_str().unwrap().to_string(), events)
}

#[test]
fn the_same_seed_gives_the_same_injected_events() {
    let a = seeded_run("2024");
    assert!(a.1.iter().any(|e| e.2.starts_with("stall")), "{:?}", a.1);
    assert_eq!(a, seeded_run("2024"));
    assert_ne!(a.0, seeded_run("2025").0);
}

#[test]
fn bad_injection_input_is_refused_with_a_reason() {
    let out = std::process::Command::new(daemon_binary())
        .args([
            "--socket-path",
            "/nonexistent/x.sock",
            "--inject",
            "ep2out.stal=always",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--inject ep2out.stal=always") && err.contains("unknown injection key"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[inject]\nlatency = \"soon\"\n").unwrap();
    let out = std::process::Command::new(daemon_binary())
        .arg("--socket-path")
        .arg(dir.path().join("s"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("c.toml") && err.contains("[inject]") && err.contains("soon"),
        "{err}"
    );

    let d = Daemon::start(&["--inject", "latency=1ms"]);
    let mut ctl = d.ctl();
    let r = ctl.req(json!({"op": "inject", "set": {"latency": "2ms", "ep1in.stall": "maybe"}}));
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("maybe"), "{r}");
    let r = ctl.ok(json!({"op": "inject"}));
    assert_eq!(
        r["settings"]["latency"], "1ms",
        "nothing applied from the refused request: {r}"
    );
    let r = ctl.req(json!({"op": "inject", "set": {"ep15out.stall": "always"}}));
    assert!(r["error"].as_str().unwrap().contains("no ep15out"), "{r}");
    let r = ctl.ok(json!({"op": "inject", "clear": true}));
    assert_eq!(r["settings"], json!({"seed": "0"}), "{r}");
}

#[test]
fn config_file_injection_applies() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[inject]\nseed = 77\n[inject.ep2out]\nstall = \"nth:1\"\n").unwrap();
    let d = Daemon::start(&["--config", cfg.to_str().unwrap()]);
    let (mut h, _g) = d.configured();
    let b = h.buffer(512).unwrap();
    let x = h.submit_buffer(0x02, 0, &b, 1).unwrap();
    let r = d.ctl().write_out("ep2out", &[1; 512], false);
    assert_eq!(r["status"], "stall", "{r}");
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Err(-libc::EPIPE));
    let st = d.ctl().ok(json!({"op": "inject"}));
    assert_eq!(st["settings"]["seed"], "77");
}
