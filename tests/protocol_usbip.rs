// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Protocol tier: the USB/IP server (--usbip-listen, docs/usbip.md) as
//! vhci_hcd uses it: the device list, an import, the client's own
//! enumeration, bulk data both ways checked byte for byte, stalls, unlinks,
//! the built-in host standing aside and coming back, and bad input.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::json;
use udc_harness::{EndpointSpec, FakeGadget, Harness};

const VERSION: u16 = 0x0111;

/// A RET_SUBMIT or RET_UNLINK.
#[derive(Debug, PartialEq, Eq)]
enum Ret {
    Submit {
        seqnum: u32,
        status: i32,
        actual: u32,
        data: Vec<u8>,
    },
    Unlink {
        seqnum: u32,
        status: i32,
    },
}

/// The client side of USB/IP, written from usbip_protocol.rst.
struct Client {
    s: UnixStream,
    /// Seqnums of IN submissions: their RET_SUBMIT carries data.
    ins: HashMap<u32, bool>,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

fn op(code: u16) -> Vec<u8> {
    let mut b = VERSION.to_be_bytes().to_vec();
    b.extend_from_slice(&code.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    b
}

fn busid(id: &str) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..id.len()].copy_from_slice(id.as_bytes());
    b
}

/// The device records of OP_REP_DEVLIST.
fn devlist(path: &Path) -> Vec<Vec<u8>> {
    let mut s = UnixStream::connect(path).unwrap();
    s.write_all(&op(0x8005)).unwrap();
    let mut h = [0u8; 12];
    s.read_exact(&mut h).unwrap();
    assert_eq!(&h[..4], &[0x01, 0x11, 0x00, 0x05], "OP_REP_DEVLIST");
    assert_eq!(be32(&h[4..]), 0, "status");
    (0..be32(&h[8..]))
        .map(|_| {
            let mut d = vec![0u8; 312];
            s.read_exact(&mut d).unwrap();
            let mut ifs = vec![0u8; 4 * usize::from(d[311])];
            s.read_exact(&mut ifs).unwrap();
            d.extend_from_slice(&ifs);
            d
        })
        .collect()
}

impl Client {
    /// OP_REQ_IMPORT of `id`: the reply's status, and the client when 0.
    fn import(path: &Path, id: &str) -> (u32, Option<(Client, Vec<u8>)>) {
        let mut s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let mut req = op(0x8003);
        req.extend_from_slice(&busid(id));
        s.write_all(&req).unwrap();
        let mut h = [0u8; 8];
        s.read_exact(&mut h).unwrap();
        assert_eq!(&h[..4], &[0x01, 0x11, 0x00, 0x03], "OP_REP_IMPORT");
        let status = be32(&h[4..]);
        if status != 0 {
            return (status, None);
        }
        let mut dev = vec![0u8; 312];
        s.read_exact(&mut dev).unwrap();
        let c = Client {
            s,
            ins: HashMap::new(),
        };
        (0, Some((c, dev)))
    }

    fn submit(&mut self, seqnum: u32, ep: u8, flags: u32, len: usize, setup: [u8; 8], out: &[u8]) {
        let is_in = ep & 0x80 != 0;
        let mut b = Vec::new();
        for v in [
            1u32,
            seqnum,
            0x0001_0001,
            u32::from(is_in),
            u32::from(ep & 0x0f),
            flags,
            len as u32,
            0,
            0,
            0,
        ] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&setup);
        b.extend_from_slice(out);
        self.ins.insert(seqnum, is_in);
        self.s.write_all(&b).unwrap();
    }

    fn control_in(&mut self, seqnum: u32, setup: [u8; 8]) {
        let len = usize::from(u16::from_le_bytes([setup[6], setup[7]]));
        self.submit(seqnum, 0x80, 0x200, len, setup, &[]);
    }

    fn unlink(&mut self, seqnum: u32, victim: u32) {
        let mut b = Vec::new();
        for v in [2u32, seqnum, 0x0001_0001, 0, 0, victim] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.resize(48, 0);
        self.s.write_all(&b).unwrap();
    }

    fn recv(&mut self) -> Ret {
        let mut h = [0u8; 48];
        self.s.read_exact(&mut h).expect("a reply from the server");
        let seqnum = be32(&h[4..]);
        let status = be32(&h[20..]) as i32;
        match be32(&h[0..]) {
            3 => {
                let actual = be32(&h[24..]);
                let mut data = Vec::new();
                if self.ins.remove(&seqnum) == Some(true) {
                    data = vec![0u8; actual as usize];
                    self.s.read_exact(&mut data).unwrap();
                }
                Ret::Submit {
                    seqnum,
                    status,
                    actual,
                    data,
                }
            }
            4 => Ret::Unlink { seqnum, status },
            c => panic!("reply command {c}"),
        }
    }

    /// The reply to `seqnum`, which must be a RET_SUBMIT: (status, data).
    fn result(&mut self, seqnum: u32) -> (i32, u32, Vec<u8>) {
        match self.recv() {
            Ret::Submit {
                seqnum: s,
                status,
                actual,
                data,
            } if s == seqnum => (status, actual, data),
            other => panic!("expected RET_SUBMIT {seqnum}, got {other:?}"),
        }
    }

    /// True when the server has closed the connection.
    fn closed(&mut self) -> bool {
        self.s.set_read_timeout(Some(T)).unwrap();
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0) | Err(_))
    }
}

const GET_DEVICE: [u8; 8] = [0x80, 6, 0, 1, 0, 0, 18, 0];
const GET_CONFIG: [u8; 8] = [0x80, 6, 0, 2, 0, 0, 0xff, 0];
const SET_CONFIG_1: [u8; 8] = [0x00, 9, 1, 0, 0, 0, 0, 0];

/// A daemon with the USB/IP server on a Unix socket, its gadget configured
/// by the built-in host.
fn daemon() -> (Daemon, PathBuf, Harness, FakeGadget) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("usbip.sock");
    let mut d = Daemon::start_at(
        dir.path(),
        &["--usbip-listen", &format!("unix:{}", sock.display())],
    );
    d.dir = DaemonDir::Owned(dir);
    let (h, g) = d.configured();
    (d, sock, h, g)
}

/// Runs `client` on a thread while the gadget answers ep0 on this one.
fn with_gadget<R: Send + 'static>(
    h: &mut Harness,
    g: &mut FakeGadget,
    client: impl FnOnce() -> R + Send + 'static,
) -> R {
    let t = thread::spawn(client);
    g.run_until(h, "the USB/IP client's requests", T, |_| t.is_finished())
        .unwrap();
    t.join().expect("the client thread")
}

/// The client enumerates as usbcore does through vhci_hcd (which answers
/// SET_ADDRESS itself): device and configuration descriptors, then
/// SET_CONFIGURATION.
fn enumerate(c: &mut Client) -> (Vec<u8>, Vec<u8>) {
    c.control_in(1, GET_DEVICE);
    let (st, _, dev) = c.result(1);
    assert_eq!(st, 0, "GET_DESCRIPTOR(device)");
    c.control_in(2, GET_CONFIG);
    let (st, _, cfg) = c.result(2);
    assert_eq!(st, 0, "GET_DESCRIPTOR(configuration)");
    c.submit(3, 0x00, 0, 0, SET_CONFIG_1, &[]);
    assert_eq!(c.result(3).0, 0, "SET_CONFIGURATION(1)");
    (dev, cfg)
}

/// Runs the gadget until `status` shows no owner (the built-in host has
/// the device back) and more than `enumerations` enumerations started;
/// that status.
fn given_back(
    d: &Daemon,
    h: &mut Harness,
    g: &mut FakeGadget,
    enumerations: u64,
    after: &str,
) -> serde_json::Value {
    let mut ctl = d.ctl();
    let start = std::time::Instant::now();
    loop {
        g.run_for(h, Duration::from_millis(25)).unwrap();
        let st = ctl.ok(json!({"op": "status"}));
        if st["host"]["owner"].is_null() && st["host"]["enumerations"].as_u64().unwrap() > enumerations {
            return st;
        }
        assert!(
            start.elapsed() < T,
            "after {after}: the device was not given back: {st}"
        );
    }
}

/// A client that has imported the device and enumerated it.
fn imported(h: &mut Harness, g: &mut FakeGadget, sock: &Path) -> Client {
    let sock = sock.to_path_buf();
    with_gadget(h, g, move || {
        let (mut c, _) = Client::import(&sock, "1-1").1.expect("the import");
        enumerate(&mut c);
        c
    })
}

#[test]
fn a_client_lists_imports_enumerates_and_moves_data_both_ways() {
    let (d, sock, mut h, mut g) = daemon();
    let mut ctl = d.ctl();
    let before = ctl.ok(json!({"op": "status"}))["host"]["enumerations"]
        .as_u64()
        .unwrap();

    let list = devlist(&sock);
    assert_eq!(list.len(), 1, "one device exported");
    let r = &list[0];
    assert_eq!(&r[256..260], b"1-1\0", "bus id");
    assert_eq!(be32(&r[296..]), 3, "high speed");
    assert_eq!(
        &r[300..306],
        &[0x1d, 0x6b, 0x01, 0x04, 0x01, 0x00],
        "vendor, product, bcdDevice"
    );
    assert_eq!(r[311], 1, "one interface");
    assert_eq!(r[312], 0xff, "vendor-specific interface class");

    let s2 = sock.clone();
    let (mut c, dev_record, dev, cfg) = with_gadget(&mut h, &mut g, move || {
        let (st, c) = Client::import(&s2, "1-1");
        assert_eq!(st, 0, "import status");
        let (mut c, rec) = c.unwrap();
        let (dev, cfg) = enumerate(&mut c);
        (c, rec, dev, cfg)
    });
    assert_eq!(be32(&dev_record[296..]), 3, "import record speed");
    assert_eq!(
        dev,
        g.device_descriptor(3),
        "the device descriptor the gadget serves"
    );
    assert_eq!(cfg, g.config_descriptor(3, 2), "the whole configuration");
    assert!(g.configured, "the client's SET_CONFIGURATION reached the gadget");

    // The built-in host stands aside.
    let st = ctl.ok(json!({"op": "status"}));
    let owner = st["host"]["owner"].as_str().unwrap_or_default().to_string();
    assert!(owner.starts_with("USB/IP client"), "status names the owner: {st}");
    let r = ctl.req(json!({"op": "transfer", "ep": "ep1in", "length": 8, "timeout_ms": 1000}));
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("in use by USB/IP client"),
        "{r}"
    );
    let (st, none) = Client::import(&sock, "1-1");
    assert!(none.is_none());
    assert_eq!(st, 2, "a second importer: ST_DEV_BUSY");

    // Bulk both ways, sizes around the packet size, checked byte for byte.
    for (i, len) in [1usize, 512, 3000, 65536 + 7].into_iter().enumerate() {
        let payload = data(len, i as u64);
        let b = h.buffer(len as u64).unwrap();
        h.write_buffer(&b, &payload).unwrap();
        let x = h.submit_buffer(0x81, 0, &b, 100 + i as u64).unwrap();
        let seq = 10 + 2 * i as u32;
        c.submit(seq, 0x81, 0x200, len, [0; 8], &[]);
        let (st, actual, got) = c.result(seq);
        assert_eq!((st, actual as usize), (0, len), "IN {len}");
        assert!(got == payload, "IN {len}: the data differs");
        h.wait_completion(x, T).unwrap();

        let payload = data(len, 50 + i as u64);
        let b = h.buffer(len as u64).unwrap();
        let x = h.submit_buffer(0x02, 0, &b, 200 + i as u64).unwrap();
        c.submit(seq + 1, 0x02, 0, len, [0; 8], &payload);
        let (st, actual, _) = c.result(seq + 1);
        assert_eq!((st, actual as usize), (0, len), "OUT {len}");
        let done = h.wait_completion(x, T).unwrap();
        assert_eq!(done.actual as usize, len);
        assert!(
            h.read_buffer_prefix(&b, len as u64).unwrap() == payload,
            "OUT {len}: the data differs"
        );
    }

    // The client goes: the built-in host enumerates the gadget again.
    drop(c);
    g.run_until(&mut h, "the built-in host back", T, |g| {
        g.configured && g.address.is_some()
    })
    .unwrap();
    // ... and enumerates it again.
    given_back(&d, &mut h, &mut g, before, "the client's session");
    assert!(d.log_text().contains("let go of the device"));
}

#[test]
fn stalls_and_unlinks_reach_the_client_as_vhci_expects() {
    let (_d, sock, mut h, mut g) = daemon();
    let mut c = imported(&mut h, &mut g, &sock);

    // An IN transfer the gadget never feeds: unlinked, it ends with
    // RET_UNLINK -ECONNRESET and no RET_SUBMIT.
    c.submit(20, 0x81, 0x200, 512, [0; 8], &[]);
    c.unlink(21, 20);
    assert_eq!(
        c.recv(),
        Ret::Unlink {
            seqnum: 21,
            status: -104
        }
    );
    // An unlink of a transfer already given back: status 0.
    c.unlink(22, 3);
    assert_eq!(
        c.recv(),
        Ret::Unlink {
            seqnum: 22,
            status: 0
        }
    );
    // The next IN transfer gets the next data: nothing of the unlinked one.
    let payload = data(100, 7);
    let b = h.buffer(100).unwrap();
    h.write_buffer(&b, &payload).unwrap();
    let x = h.submit_buffer(0x81, 0, &b, 1).unwrap();
    c.submit(23, 0x81, 0x200, 512, [0; 8], &[]);
    let (st, _, got) = c.result(23);
    assert_eq!(st, 0);
    assert!(
        got == payload,
        "a short IN transfer carries the gadget's 100 bytes"
    );
    h.wait_completion(x, T).unwrap();
    // URB_SHORT_NOT_OK: the same short packet fails with -EREMOTEIO.
    let b = h.buffer(100).unwrap();
    let x = h.submit_buffer(0x81, 0, &b, 2).unwrap();
    c.submit(24, 0x81, 0x201, 512, [0; 8], &[]);
    assert_eq!(c.result(24).0, -121, "-EREMOTEIO");
    h.wait_completion(x, T).unwrap();

    // An unlink that overtakes its submission (vhci_hcd's transmit thread
    // sends pending unlinks after pending submissions, so one queued just
    // after its URB can go first): the submission, when it comes, is
    // answered as unlinked and never runs (no RET_SUBMIT follows).
    c.unlink(26, 27);
    c.submit(27, 0x81, 0x200, 512, [0; 8], &[]);
    assert_eq!(
        c.recv(),
        Ret::Unlink {
            seqnum: 26,
            status: -104
        }
    );

    // The gadget halts ep1in: -EPIPE; the client's CLEAR_FEATURE(HALT)
    // clears it and data flows again.
    h.set_halt(0x81, 1).unwrap();
    c.submit(30, 0x81, 0x200, 64, [0; 8], &[]);
    assert_eq!(c.result(30).0, -32, "-EPIPE");
    let mut c = with_gadget(&mut h, &mut g, move || {
        c.submit(31, 0x00, 0, 0, [0x02, 1, 0, 0, 0x81, 0, 0, 0], &[]);
        assert_eq!(c.result(31).0, 0, "CLEAR_FEATURE(ENDPOINT_HALT)");
        c
    });
    let b = h.buffer(64).unwrap();
    h.write_buffer(&b, &data(64, 9)).unwrap();
    let x = h.submit_buffer(0x81, 0, &b, 3).unwrap();
    c.submit(32, 0x81, 0x200, 64, [0; 8], &[]);
    let (st, _, got) = c.result(32);
    assert_eq!(st, 0);
    assert!(got == data(64, 9));
    h.wait_completion(x, T).unwrap();

    // A control request the gadget refuses: -EPIPE, and ep0 goes on.
    let mut c = with_gadget(&mut h, &mut g, move || {
        c.control_in(40, [0xc0, 0x7e, 0, 0, 0, 0, 4, 0]);
        assert_eq!(c.result(40).0, -32, "a vendor request the gadget stalls");
        c.control_in(41, GET_DEVICE);
        assert_eq!(c.result(41).0, 0);
        c
    });
    // An endpoint the device does not have.
    c.submit(50, 0x83, 0x200, 64, [0; 8], &[]);
    assert_eq!(c.result(50).0, -108, "-ESHUTDOWN");
}

#[test]
fn bad_usbip_input_closes_the_connection_and_the_server_keeps_serving() {
    let (d, sock, mut h, mut g) = daemon();
    // Not USB/IP at all, and a wrong version: closed without a reply.
    for bad in [b"GET / HTTP/1.0\r\n".to_vec(), {
        let mut b = op(0x8005);
        b[1] = 0x06;
        b
    }] {
        let mut s = UnixStream::connect(&sock).unwrap();
        s.write_all(&bad).unwrap();
        let mut c = Client {
            s,
            ins: HashMap::new(),
        };
        assert!(c.closed());
    }
    // An import of a bus id this server does not export: ST_NA.
    assert_eq!(Client::import(&sock, "2-1").0, 1);

    // After an import: each malformed command closes that connection, the
    // device goes back to the built-in host, and the next client is served.
    let bad_commands: Vec<Vec<u8>> = vec![
        // command 7
        [7u32, 1, 0, 0, 0]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .chain([0; 28])
            .collect(),
        // direction 5
        [1u32, 1, 0, 5, 1]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .chain([0; 28])
            .collect(),
        // endpoint 16
        [1u32, 1, 0, 1, 16]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .chain([0; 28])
            .collect(),
        // 1 GiB OUT transfer
        [1u32, 1, 0, 0, 2, 0, 1 << 30]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .chain([0; 20])
            .collect(),
        // negative length
        [1u32, 1, 0, 1, 1, 0, 0xffff_fff0]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .chain([0; 20])
            .collect(),
        // an OUT transfer whose data never comes (truncated)
        [1u32, 1, 0, 0, 2, 0, 4096]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .chain([0; 20 + 100])
            .collect(),
    ];
    for (i, bad) in bad_commands.into_iter().enumerate() {
        let s2 = sock.clone();
        let closed = with_gadget(&mut h, &mut g, move || {
            let (st, c) = Client::import(&s2, "1-1");
            assert_eq!(st, 0, "import {i}");
            let (mut c, _) = c.unwrap();
            c.s.write_all(&bad).unwrap();
            if i == 5 {
                c.s.shutdown(std::net::Shutdown::Write).unwrap();
            }
            c.closed()
        });
        assert!(closed, "bad command {i}: the connection is closed");
        // The device is the built-in host's again before the next client.
        given_back(&d, &mut h, &mut g, 0, &format!("bad command {i}"));
    }
    assert_eq!(devlist(&sock).len(), 1, "still serving");
    assert!(d.log_text().contains("closing the connection"));
}

#[test]
fn the_client_sees_the_unplug_when_the_gadget_goes_away() {
    let (_d, sock, mut h, mut g) = daemon();
    let mut c = imported(&mut h, &mut g, &sock);
    // A transfer in flight when the gadget pulls down ends the session:
    // vhci_hcd sees the connection close and unplugs the device.
    c.submit(20, 0x81, 0x200, 512, [0; 8], &[]);
    h.pullup(false).unwrap();
    let mut ended = false;
    for _ in 0..3 {
        match c.s.read(&mut [0u8; 48]) {
            Ok(0) | Err(_) => {
                ended = true;
                break;
            }
            // The transfer's RET_SUBMIT (-ESHUTDOWN) may come first.
            Ok(_) => continue,
        }
    }
    assert!(ended, "the connection closes when the gadget disconnects");
    // Without a gadget nothing is exported.
    let mut empty = false;
    for _ in 0..100 {
        if devlist(&sock).is_empty() {
            empty = true;
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(empty, "no device listed after the pull-down");
}

#[test]
fn a_tcp_listener_on_loopback_serves_the_device_list() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = Daemon::start(&["--usbip-listen", &format!("127.0.0.1:{port}")]);
    let (_h, _g) = d.configured();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&op(0x8005)).unwrap();
    let mut h = [0u8; 12];
    s.read_exact(&mut h).unwrap();
    assert_eq!(be32(&h[8..]), 1, "one device over TCP");
}

#[test]
fn a_listen_address_off_loopback_is_refused_with_the_reason() {
    let out = std::process::Command::new(daemon_binary())
        .args([
            "--socket-path",
            "/nonexistent/udc.sock",
            "--usbip-listen",
            "0.0.0.0:3240",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("no authentication"),
        "{err}"
    );
}

#[test]
fn isochronous_urbs_carry_their_packets_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("usbip.sock");
    let mut d = Daemon::start_at(
        dir.path(),
        &["--usbip-listen", &format!("unix:{}", sock.display())],
    );
    d.dir = DaemonDir::Owned(dir);
    let iso = |addr: u8| EndpointSpec {
        addr,
        xfer_type: 1,
        max_packet: [1023, 1024, 1024],
        interval: 1,
        max_burst: 0,
    };
    let mut h = d.harness();
    let mut g = FakeGadget::new().with_endpoints(vec![
        EndpointSpec::bulk(0x81),
        EndpointSpec::bulk(0x02),
        iso(0x83),
        iso(0x04),
    ]);
    g.connect_and_configure(&mut h, T).expect("enumeration");
    let mut c = imported(&mut h, &mut g, &sock);

    // IN: three packets of up to 1024 bytes; the gadget's requests give
    // 1000, 1024 and 10 bytes. The reply packs the data back to back and
    // describes each packet at its offset.
    let sizes = [1000usize, 1024, 10];
    let mut sent = Vec::new();
    let mut xs = Vec::new();
    for (i, n) in sizes.iter().enumerate() {
        let p = data(*n, 70 + i as u64);
        let b = h.buffer(*n as u64).unwrap();
        h.write_buffer(&b, &p).unwrap();
        xs.push(h.submit_buffer(0x83, 0, &b, 300 + i as u64).unwrap());
        sent.extend_from_slice(&p);
    }
    let mut b = Vec::new();
    for v in [1u32, 60, 0x0001_0001, 1, 3, 0x200, 3072, 0, 3, 1] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend_from_slice(&[0; 8]);
    for i in 0..3u32 {
        for v in [i * 1024, 1024, 0, 0] {
            b.extend_from_slice(&v.to_be_bytes());
        }
    }
    c.s.write_all(&b).unwrap();
    let mut h48 = [0u8; 48];
    c.s.read_exact(&mut h48).unwrap();
    assert_eq!((be32(&h48[0..]), be32(&h48[4..])), (3, 60), "RET_SUBMIT 60");
    assert_eq!(be32(&h48[20..]), 0, "status");
    assert_eq!(be32(&h48[24..]) as usize, 2034, "actual_length: the packets' sum");
    assert_eq!(be32(&h48[32..]), 3, "number_of_packets");
    assert_eq!(be32(&h48[36..]), 0, "error_count");
    let mut got = vec![0u8; 2034];
    c.s.read_exact(&mut got).unwrap();
    assert!(got == sent, "the packets' data, back to back");
    let mut descs = [0u8; 48];
    c.s.read_exact(&mut descs).unwrap();
    for (i, n) in sizes.iter().enumerate() {
        let d = &descs[i * 16..];
        assert_eq!(
            (be32(d), be32(&d[4..]), be32(&d[8..]), be32(&d[12..])),
            (i as u32 * 1024, 1024, *n as u32, 0)
        );
    }
    h.wait_completions(&xs, T).unwrap();

    // OUT: a 100-byte packet and a 1024-byte one, each into its own
    // gadget request.
    let payload = data(2048, 90);
    let bufs: Vec<_> = (0..2).map(|_| h.buffer(1024).unwrap()).collect();
    let xs: Vec<_> = bufs
        .iter()
        .enumerate()
        .map(|(i, b)| h.submit_buffer(0x04, 0, b, 400 + i as u64).unwrap())
        .collect();
    let mut b = Vec::new();
    for v in [1u32, 61, 0x0001_0001, 0, 4, 0, 2048, 0, 2, 1] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&payload);
    for (off, len) in [(0u32, 100u32), (1024, 1024)] {
        for v in [off, len, 0, 0] {
            b.extend_from_slice(&v.to_be_bytes());
        }
    }
    c.s.write_all(&b).unwrap();
    c.s.read_exact(&mut h48).unwrap();
    assert_eq!(
        (be32(&h48[4..]), be32(&h48[20..]), be32(&h48[24..])),
        (61, 0, 1124)
    );
    c.s.read_exact(&mut descs[..32]).unwrap();
    assert_eq!(be32(&descs[8..]), 100);
    assert_eq!(be32(&descs[24..]), 1024);
    let done = h.wait_completions(&xs, T).unwrap();
    assert_eq!(done[0].actual, 100);
    assert_eq!(h.read_buffer_prefix(&bufs[0], 100).unwrap(), payload[..100]);
    assert_eq!(h.read_buffer_prefix(&bufs[1], 1024).unwrap(), payload[1024..]);
}
