// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! docs/virtio-udc.md is the wire format's single source of truth: this test
//! reads its tables and checks the Rust definitions against them, both ways
//! (every documented field and constant exists in Rust with the documented
//! offset, size or value; every Rust field and constant is documented).

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};

use vhost_device_udc::wire::*;

mod spec;

use spec::{spec_constants, spec_structs, Layouts, SPEC};

macro_rules! fields {
    ($t:ty { $($f:ident : $cname:literal),* $(,)? }) => {
        vec![$(($cname.to_string(), offset_of!($t, $f), {
            let v: $t = Default::default();
            std::mem::size_of_val(&v.$f)
        })),*]
    };
}

fn rust_structs() -> Layouts {
    let mut m = BTreeMap::new();
    m.insert(
        "virtio_udc_config".into(),
        (
            fields!(VirtioUdcConfig {
                flags: "flags",
                max_segments: "max_segments",
                max_speed: "max_speed",
                num_eps: "num_eps",
                reserved: "reserved",
                reserved2: "reserved2",
                eps: "eps"
            }),
            size_of::<VirtioUdcConfig>(),
        ),
    );
    m.insert(
        "virtio_udc_ep_cap".into(),
        (
            fields!(VirtioUdcEpCap {
                addr: "addr",
                caps: "caps",
                max_packet_limit: "max_packet_limit",
                max_streams: "max_streams",
                reserved: "reserved"
            }),
            size_of::<VirtioUdcEpCap>(),
        ),
    );
    m.insert(
        "virtio_udc_xfer_req".into(),
        (
            fields!(VirtioUdcXferReq {
                opcode: "opcode",
                ep: "ep",
                flags: "flags",
                length: "length",
                num_segs: "num_segs",
                reserved: "reserved",
                tag: "tag"
            }),
            size_of::<VirtioUdcXferReq>(),
        ),
    );
    m.insert(
        "virtio_udc_seg".into(),
        (
            fields!(VirtioUdcSeg {
                addr: "addr",
                len: "len",
                reserved: "reserved"
            }),
            size_of::<VirtioUdcSeg>(),
        ),
    );
    m.insert(
        "virtio_udc_xfer_status".into(),
        (
            fields!(VirtioUdcXferStatus {
                status: "status",
                actual: "actual"
            }),
            size_of::<VirtioUdcXferStatus>(),
        ),
    );
    m.insert(
        "virtio_udc_ctrl_req".into(),
        (
            fields!(VirtioUdcCtrlReq {
                opcode: "opcode",
                ep: "ep",
                ep_type: "ep_type",
                value: "value",
                max_packet: "max_packet",
                interval: "interval",
                max_burst: "max_burst",
                mult: "mult",
                reserved: "reserved",
                tag: "tag"
            }),
            size_of::<VirtioUdcCtrlReq>(),
        ),
    );
    m.insert(
        "virtio_udc_ctrl_resp".into(),
        (
            fields!(VirtioUdcCtrlResp {
                status: "status",
                value: "value"
            }),
            size_of::<VirtioUdcCtrlResp>(),
        ),
    );
    m.insert(
        "virtio_udc_event".into(),
        (
            fields!(VirtioUdcEvent {
                type_: "type",
                ep: "ep",
                reserved: "reserved",
                value: "value",
                setup: "setup"
            }),
            size_of::<VirtioUdcEvent>(),
        ),
    );
    m
}

fn rust_constants() -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    macro_rules! c {
        ($($n:ident),* $(,)?) => { $( m.insert(stringify!($n).to_string(), $n as u64); )* };
    }
    c!(
        VIRTIO_UDC_CONFIG_F_SG,
        VIRTIO_UDC_CONFIG_F_REMOTE_WAKEUP,
        VIRTIO_UDC_EP_CAP_CONTROL,
        VIRTIO_UDC_EP_CAP_ISO,
        VIRTIO_UDC_EP_CAP_BULK,
        VIRTIO_UDC_EP_CAP_INT,
        VIRTIO_UDC_SPEED_UNKNOWN,
        VIRTIO_UDC_SPEED_LOW,
        VIRTIO_UDC_SPEED_FULL,
        VIRTIO_UDC_SPEED_HIGH,
        VIRTIO_UDC_SPEED_SUPER,
        VIRTIO_UDC_SPEED_SUPER_PLUS,
        VIRTIO_UDC_XFER_F_ZERO,
        VIRTIO_UDC_XFER_OP_TRANSFER,
        VIRTIO_UDC_CMD_PULLUP,
        VIRTIO_UDC_CMD_EP_ENABLE,
        VIRTIO_UDC_CMD_EP_DISABLE,
        VIRTIO_UDC_CMD_EP_SET_HALT,
        VIRTIO_UDC_CMD_EP_FIFO_STATUS,
        VIRTIO_UDC_CMD_EP_FIFO_FLUSH,
        VIRTIO_UDC_CMD_XFER_CANCEL,
        VIRTIO_UDC_CMD_GET_FRAME,
        VIRTIO_UDC_CMD_WAKEUP,
        VIRTIO_UDC_CMD_SET_SELFPOWERED,
        VIRTIO_UDC_EVT_BUS_RESET,
        VIRTIO_UDC_EVT_SETUP,
        VIRTIO_UDC_EVT_SUSPEND,
        VIRTIO_UDC_EVT_RESUME,
        VIRTIO_UDC_EVT_DISCONNECT,
        VIRTIO_UDC_EVT_ADDRESS,
        VIRTIO_UDC_EVT_EP_HALT,
        VIRTIO_UDC_S_OK,
        VIRTIO_UDC_S_SHUTDOWN,
        VIRTIO_UDC_S_CANCELLED,
        VIRTIO_UDC_S_STALL,
        VIRTIO_UDC_S_OVERFLOW,
        VIRTIO_UDC_S_PROTO,
        VIRTIO_UDC_S_DMA_FAULT,
        VIRTIO_UDC_S_INVALID,
        VIRTIO_UDC_S_UNSUPPORTED,
        VIRTIO_UDC_S_BUSY,
        VIRTIO_UDC_S_NOT_FOUND,
    );
    m
}

#[test]
fn structs_match_the_spec_tables() {
    let spec = spec_structs();
    let rust = rust_structs();
    assert_eq!(
        spec.keys().collect::<Vec<_>>(),
        rust.keys().collect::<Vec<_>>(),
        "the spec and src/wire.rs define different structures"
    );
    for (name, (fields, size)) in &spec {
        let (rfields, rsize) = &rust[name];
        assert_eq!(
            size, rsize,
            "{name}: the spec says {size} bytes, Rust has {rsize}"
        );
        assert_eq!(
            fields, rfields,
            "{name}: fields (name, offset, size) differ from the spec's table"
        );
        // The table covers the structure with no gap or overlap.
        let mut at = 0;
        for (f, off, sz) in fields {
            assert_eq!(*off, at, "{name}.{f}: gap or overlap before it");
            at += sz;
        }
        assert_eq!(at, *size, "{name}: fields do not add up to its size");
    }
}

#[test]
fn constants_match_the_spec_tables() {
    let spec = spec_constants();
    let rust = rust_constants();
    for (name, v) in &spec {
        assert_eq!(rust.get(name), Some(v), "{name}: the spec says {v:#x}");
    }
    for name in rust.keys() {
        assert!(
            spec.contains_key(name),
            "{name} is defined in Rust but not in the spec"
        );
    }
}

#[test]
fn status_errno_column_matches_rust() {
    for line in SPEC.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[2].starts_with("VIRTIO_UDC_S_") {
            continue;
        }
        let v: u32 = cells[1].parse().unwrap();
        let st = Status::from_wire(v).unwrap();
        assert_eq!(st.spec_name(), cells[2]);
        let errno = match cells[3] {
            "0" => 0,
            "-ESHUTDOWN" => -libc::ESHUTDOWN,
            "-ECONNRESET" => -libc::ECONNRESET,
            "-EPIPE" => -libc::EPIPE,
            "-EOVERFLOW" => -libc::EOVERFLOW,
            "-EPROTO" => -libc::EPROTO,
            "-EIO" => -libc::EIO,
            "-EINVAL" => -libc::EINVAL,
            "-EOPNOTSUPP" => -libc::EOPNOTSUPP,
            "-EAGAIN" => -libc::EAGAIN,
            other => panic!("unknown errno {other} in the spec"),
        };
        assert_eq!(st.errno(), errno, "{}", cells[2]);
    }
}

#[test]
fn device_id_matches_the_spec() {
    assert!(SPEC.contains(&format!(
        "| virtio device ID | **{VIRTIO_ID_UDC}** (provisional) |"
    )));
    assert!(SPEC.contains(&format!("**{:#06x}**", VIRTIO_PCI_DEVICE_ID_UDC)));
    assert!(SPEC.contains(&format!("| {} | controlq |", CONTROLQ)));
    assert!(SPEC.contains(&format!("| {} | eventq |", EVENTQ)));
    assert!(SPEC.contains(&format!("| {} | xferq |", XFERQ)));
}

/// The QEMU series defines the device ID once, in standard-headers'
/// virtio_ids.h where QEMU keeps virtio IDs, and the queue count and config
/// size in the device's header; they must be the spec's.
#[test]
fn qemu_patch_matches_the_spec() {
    let patches: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/qemu/patches"))
        .expect("qemu/patches")
        .filter_map(|e| e.ok())
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    // `+#define NAME VALUE` lines of the patches that add NAME.
    let defines = |name: &str| -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        for (i, p) in patches.iter().enumerate() {
            for line in p.lines() {
                let w: Vec<&str> = line.split_whitespace().collect();
                if w.len() >= 3 && w[0] == "+#define" && w[1] == name {
                    out.push((i, w[2].parse().unwrap()));
                }
            }
        }
        out
    };
    let id = defines("VIRTIO_ID_UDC");
    assert_eq!(id.len(), 1, "the QEMU series defines VIRTIO_ID_UDC once: {id:?}");
    assert_eq!(id[0].1, u64::from(VIRTIO_ID_UDC));
    let ids_patch = &patches[id[0].0];
    assert!(
        ids_patch.contains("+++ b/include/standard-headers/linux/virtio_ids.h"),
        "VIRTIO_ID_UDC belongs in include/standard-headers/linux/virtio_ids.h"
    );
    let one = |name: &str| -> u64 {
        let d = defines(name);
        assert_eq!(d.len(), 1, "the QEMU series defines {name} once: {d:?}");
        d[0].1
    };
    assert_eq!(one("VIRTIO_UDC_NUM_VQS"), NUM_QUEUES as u64);
    assert_eq!(one("VIRTIO_UDC_CONFIG_SIZE"), CONFIG_SIZE as u64);
}

/// The series is numbered 1/N to N/N in file order (01/N with ten or
/// more) and every patch is signed off by its author.
#[test]
fn qemu_series_is_numbered_and_signed_off() {
    let mut names: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/qemu/patches"))
        .expect("qemu/patches")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".patch"))
        .collect();
    names.sort();
    let n = names.len();
    for (i, name) in names.iter().enumerate() {
        assert!(
            name.starts_with(&format!("{:04}-", i + 1)),
            "{name}: expected number {}",
            i + 1
        );
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("qemu/patches")
                .join(name),
        )
        .unwrap();
        // As git format-patch numbers them: padded to the width of N.
        let number = format!("{:0width$}/{n}", i + 1, width = n.to_string().len());
        assert!(
            text.contains(&format!("Subject: [PATCH {number}] ")),
            "{name}: its Subject is not [PATCH {number}]"
        );
        let author = text
            .lines()
            .find_map(|l| l.strip_prefix("From: "))
            .unwrap_or_else(|| panic!("{name}: no From: line"));
        assert!(
            text.contains(&format!("\nSigned-off-by: {author}\n")),
            "{name}: not signed off by its author {author}"
        );
    }
}
