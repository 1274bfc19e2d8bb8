// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Protocol tier: the bus capture (--pcap), read back by tshark as a user
//! would read it in Wireshark.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::json;

/// tshark's fields of each captured event, one line per event.
fn tshark_fields(pcap: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(pcap)
        .args(["-T", "fields", "-E", "separator=/t"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("tshark cannot run ({e}): make setup installs it (apt-get install tshark)")
    });
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// Enumeration and bulk traffic both ways under --pcap: tshark dissects the
/// device and configuration descriptors the host read, and the bulk bytes
/// it shows completing on each endpoint are the daemon's own count.
#[test]
fn tshark_reads_the_enumeration_and_the_bulk_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("bus.pcap");
    let d = Daemon::start_at(
        dir.path(),
        &["--pcap", pcap.to_str().unwrap(), "--pcap-snaplen", "256"],
    );
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    for (i, len) in [1usize, 512, 3000, 65536 + 7].into_iter().enumerate() {
        let b = h.buffer(len as u64).unwrap();
        let payload = data(len, i as u64);
        h.write_buffer(&b, &payload).unwrap();
        let x = h.submit_buffer(0x81, 0, &b, 10 + i as u64).unwrap();
        let (r, got) = ctl.read_in("ep1in", len);
        assert_eq!(r["status"], "ok", "{r}");
        assert!(got == payload);
        h.wait_completion(x, T).unwrap();

        let b = h.buffer(len as u64).unwrap();
        let x = h.submit_buffer(0x02, 0, &b, 20 + i as u64).unwrap();
        let r = ctl.write_out("ep2out", &data(len, 100 + i as u64), false);
        assert_eq!(r["status"], "ok", "{r}");
        h.wait_completion(x, T).unwrap();
    }
    // A stall shows as -EPIPE: the gadget halts ep1in, the host reads it.
    h.set_halt(0x81, 1).unwrap();
    let (r, _) = ctl.read_in("ep1in", 512);
    assert_eq!(r["status"], "stall", "{r}");
    h.set_halt(0x81, 0).unwrap();
    let st = ctl.ok(json!({"op": "status"}));
    let enumerated = &st["host"]["enumerated"];

    let rows = tshark_fields(
        &pcap,
        &[
            "usb.urb_type",
            "usb.transfer_type",
            "usb.endpoint_address",
            "usb.urb_len",
            "usb.urb_status",
            "usb.idVendor",
            "usb.idProduct",
            "usb.bNumInterfaces",
        ],
    );
    let vendor = rows
        .iter()
        .find_map(|r| r[5].parse::<String>().ok().filter(|s| !s.is_empty()));
    // The daemon names it in hex ("1d6b"), tshark as 0x1d6b.
    let want = u64::from_str_radix(enumerated["vendor"].as_str().unwrap(), 16).unwrap();
    assert_eq!(
        vendor
            .as_deref()
            .map(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap()),
        Some(want),
        "the device descriptor's idVendor"
    );
    assert!(
        rows.iter().any(|r| !r[7].is_empty()),
        "no configuration descriptor dissected"
    );
    // usbmon's 'C' events of bulk transfers (type 3), by endpoint.
    let mut bytes = BTreeMap::<String, u64>::new();
    for r in rows.iter().filter(|r| r[0] == "'C'" && r[1] == "0x03") {
        *bytes.entry(r[2].clone()).or_default() += r[3].parse::<u64>().unwrap();
    }
    let eps = st["device"]["endpoints"].as_array().unwrap();
    let stat = |name: &str| {
        eps.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {eps:?}"))["stats"]["bytes"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(bytes.get("0x81").copied(), Some(stat("ep1in")), "{bytes:?}");
    assert_eq!(bytes.get("0x02").copied(), Some(stat("ep2out")), "{bytes:?}");
    assert!(
        rows.iter()
            .any(|r| r[0] == "'C'" && r[1] == "0x03" && r[2] == "0x81" && r[4] == "-32"),
        "the stalled transfer as -EPIPE: {rows:?}"
    );
}

/// The control socket starts and stops a capture at run time, only into
/// --control-file-dir and only as a new file; `status` shows it running.
#[test]
fn the_control_socket_starts_and_stops_a_capture() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let d = Daemon::start_at(dir.path(), &["--control-file-dir", files.to_str().unwrap()]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    let outside = dir.path().join("bus.pcap");
    let r = ctl.req(json!({"op": "capture", "action": "start", "path": outside}));
    assert!(r["error"].as_str().unwrap().contains("outside"), "{r}");
    let pcap = files.join("bus.pcap");
    let r = ctl.ok(json!({"op": "capture", "action": "start", "path": pcap, "snaplen": 64}));
    assert_eq!(r["capture"]["snaplen"], 64, "{r}");
    let r = ctl.req(json!({"op": "capture", "action": "start", "path": files.join("other.pcap")}));
    assert!(r["error"].as_str().unwrap().contains("already running"), "{r}");
    assert_eq!(ctl.ok(json!({"op": "status"}))["capture"]["path"], json!(pcap));

    let b = h.buffer(1000).unwrap();
    h.write_buffer(&b, &data(1000, 1)).unwrap();
    let x = h.submit_buffer(0x81, 0, &b, 1).unwrap();
    let (r, _) = ctl.read_in("ep1in", 1000);
    assert_eq!(r["status"], "ok", "{r}");
    h.wait_completion(x, T).unwrap();
    let r = ctl.ok(json!({"op": "capture", "action": "stop"}));
    assert_eq!(
        r["capture"]["events"], 2,
        "one transfer's submission and completion: {r}"
    );
    assert!(ctl.ok(json!({"op": "status"}))["capture"].is_null());
    let r = ctl.req(json!({"op": "capture", "action": "start", "path": pcap}));
    assert!(
        r["error"].as_str().unwrap().contains("exists"),
        "never over a file: {r}"
    );

    let rows = tshark_fields(
        &pcap,
        &[
            "usb.urb_type",
            "usb.endpoint_address",
            "usb.urb_len",
            "usb.capdata",
        ],
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (rows[1][0].as_str(), rows[1][1].as_str(), rows[1][2].as_str()),
        ("'C'", "0x81", "1000")
    );
    // The snap length: 64 of the 1000 bytes kept.
    assert_eq!(rows[1][3].replace(':', "").len(), 128, "{rows:?}");
}
