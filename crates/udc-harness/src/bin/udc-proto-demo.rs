// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The protocol tier's demo: the real daemon and the fake guest enumerate a
//! gadget at full, high and SuperSpeed, then move verified data both ways.

mod common;

use std::time::{Duration, Instant};

use common::{Ctl, Daemon};
use serde_json::json;
use udc_harness::{BufferSpec, FakeGadget, Harness, HarnessOptions};
use udc_patterns::Pattern;

const T: Duration = Duration::from_secs(30);

fn main() {
    if let Err(e) = real_main() {
        eprintln!("udc-proto-demo: FAILED: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), String> {
    for speed in ["full", "high", "super"] {
        let d = Daemon::start(&["--speed", speed])?;
        let mut h = Harness::connect(&d.socket, HarnessOptions::default()).map_err(|e| e.to_string())?;
        let mut g = FakeGadget::new();
        g.connect_and_configure(&mut h, T).map_err(|e| e.to_string())?;
        let mut ctl = Ctl::connect(&d.control)?;
        let e = ctl.req(json!({"op": "descriptors"}))?["enumerated"].clone();
        let eps: Vec<String> = e["configurations"][0]["interfaces"][0]["endpoints"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|ep| {
                        format!(
                            "{:#04x}/{}",
                            ep["address"].as_u64().unwrap_or(0),
                            ep["max_packet_size"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "enumerated at {:<5}: {:04x}:{:04x} \"{}\" \"{}\", endpoints {}",
            speed,
            e["device"]["id_vendor"].as_u64().unwrap_or(0),
            e["device"]["id_product"].as_u64().unwrap_or(0),
            e["strings"]["1"].as_str().unwrap_or("?"),
            e["strings"]["2"].as_str().unwrap_or("?"),
            eps.join(" ")
        );
    }

    let d = Daemon::start(&["--speed", "super"])?;
    let mut h = Harness::connect(&d.socket, HarnessOptions::default().with_mem_size(512 << 20))
        .map_err(|e| e.to_string())?;
    let mut g = FakeGadget::new();
    g.connect_and_configure(&mut h, T).map_err(|e| e.to_string())?;
    let mut ctl = Ctl::connect(&d.control)?;
    const SIZE: u64 = 1 << 20;
    const COUNT: u64 = 256;
    let pattern = Pattern::Prbs { seed: 2026 };

    // IN: the guest sends the pattern; the host checks every byte.
    ctl.req(json!({"op": "stream_start", "ep": "ep1in", "pattern": pattern.to_string(), "verify": true, "transfer_size": SIZE, "depth": 4, "count": COUNT}))?;
    let bufs: Vec<_> = (0..4)
        .map(|_| h.alloc_buffer(&BufferSpec::per_page(SIZE)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut chunk = vec![0u8; SIZE as usize];
    let start = Instant::now();
    let mut inflight = std::collections::VecDeque::new();
    for i in 0..COUNT {
        if inflight.len() == bufs.len() {
            let x = inflight.pop_front().unwrap();
            let c = h.wait_completion(x, T).map_err(|e| e.to_string())?;
            if !c.is_ok() {
                return Err(format!("IN request failed: {c:?}"));
            }
        }
        pattern.fill(i * SIZE, &mut chunk);
        let b = &bufs[(i % 4) as usize];
        h.write_buffer(b, &chunk).map_err(|e| e.to_string())?;
        inflight.push_back(h.submit_buffer(0x81, 0, b, i).map_err(|e| e.to_string())?);
    }
    for x in inflight {
        h.wait_completion(x, T).map_err(|e| e.to_string())?;
    }
    let s = ctl.wait_stream("ep1in", T)?;
    let secs = start.elapsed().as_secs_f64();
    if s["last_error"] != serde_json::Value::Null {
        return Err(format!("IN data corrupt: {}", s["last_error"]));
    }
    println!(
        "IN  (guest to host): {} MiB verified byte for byte by the host, {:.0} MiB/s",
        s["stats"]["bytes"].as_u64().unwrap_or(0) >> 20,
        (SIZE * COUNT) as f64 / secs / 1048576.0
    );

    // OUT: the host sends the pattern; the guest checks every byte.
    ctl.req(json!({"op": "stream_start", "ep": "ep2out", "pattern": pattern.to_string(), "transfer_size": SIZE, "depth": 4, "count": COUNT}))?;
    let start = Instant::now();
    let mut want = vec![0u8; SIZE as usize];
    for i in 0..COUNT {
        let b = &bufs[(i % 4) as usize];
        let x = h.submit_buffer(0x02, 0, b, i).map_err(|e| e.to_string())?;
        let c = h.wait_completion(x, T).map_err(|e| e.to_string())?;
        if c.result() != Ok(SIZE as u32) {
            return Err(format!("OUT request failed: {c:?}"));
        }
        pattern.fill(i * SIZE, &mut want);
        if h.read_buffer(b).map_err(|e| e.to_string())? != want {
            return Err(format!("OUT data corrupt in transfer {i}"));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    ctl.wait_stream("ep2out", T)?;
    println!(
        "OUT (host to guest): {} MiB verified byte for byte by the guest, {:.0} MiB/s",
        (SIZE * COUNT) >> 20,
        (SIZE * COUNT) as f64 / secs / 1048576.0
    );
    println!("(protocol tier: real daemon, fake guest over vhost-user with memfd memory; the VM demo needs the guest side)");
    Ok(())
}
