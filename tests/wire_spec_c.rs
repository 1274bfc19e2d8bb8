// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The guest driver's C header (the uapi header
//! images/virtio-udc/include/uapi/linux/virtio_udc.h, and the device ID in
//! images/virtio-udc/compat/virtio_ids.h, the line a submission adds to
//! <linux/virtio_ids.h>) against the wire format's single source of truth,
//! docs/virtio-udc.md: every documented structure, field and constant is in
//! the headers with the documented offset, size or value, as the C compiler
//! lays it out, and the headers have nothing the spec does not document.
//!
//! The test writes a small C program that includes the headers and prints
//! `offsetof`/`sizeof` of every field the spec's tables name and the value
//! of every constant, compiles it with the host's C compiler and compares.
//! The uapi header compiles in user space as it is (`<linux/const.h>`,
//! `<linux/types.h>` from the host's kernel headers), as a uapi header must.

use std::collections::BTreeMap;
use std::process::Command;

mod spec;

use spec::{spec_constants, spec_structs, SPEC};
const HEADER: &str = include_str!("../images/virtio-udc/include/uapi/linux/virtio_udc.h");
const HEADER_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/images/virtio-udc/include/uapi/linux/virtio_udc.h"
);
const IDS: &str = include_str!("../images/virtio-udc/compat/virtio_ids.h");
const IDS_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/images/virtio-udc/compat/virtio_ids.h"
);

/// (struct, field, offset, size) rows of the spec's tables.
type FieldRows = Vec<(String, String, usize, usize)>;

/// Field rows and struct sizes from the spec tables.
fn spec_rows() -> (FieldRows, BTreeMap<String, usize>) {
    let mut fields = Vec::new();
    let mut sizes = BTreeMap::new();
    for (name, (rows, size)) in spec_structs() {
        if size > 0 {
            sizes.insert(name.clone(), size);
        }
        for (field, off, len) in rows {
            fields.push((name.clone(), field, off, len));
        }
    }
    (fields, sizes)
}

/// The header's own definitions that the spec names in prose or tables of
/// another shape, with the spec's value (checked below too).
fn header_extras() -> BTreeMap<&'static str, u64> {
    BTreeMap::from([
        ("VIRTIO_ID_UDC", 63),
        ("VIRTIO_UDC_VQ_CONTROL", 0),
        ("VIRTIO_UDC_VQ_EVENT", 1),
        ("VIRTIO_UDC_VQ_XFER", 2),
        ("VIRTIO_UDC_NUM_VQS", 3),
        ("VIRTIO_UDC_MAX_EPS", 30),
    ])
}

/// Field names of every `struct NAME { ... };` in the header, in order.
fn header_struct_fields() -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in HEADER.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("struct ").filter(|r| r.ends_with(" {")) {
            current = Some((rest.trim_end_matches(" {").to_string(), Vec::new()));
            continue;
        }
        if t == "};" {
            if let Some((name, f)) = current.take() {
                out.insert(name, f);
            }
            continue;
        }
        if let Some((_, f)) = current.as_mut() {
            let decl = t.trim_end_matches(';');
            let last = decl.split_whitespace().last().unwrap_or("");
            f.push(last.split('[').next().unwrap().to_string());
        }
    }
    out
}

/// Compiles and runs the probe program; returns its output lines.
fn run_probe(fields: &[(String, String, usize, usize)], consts: &[String]) -> Vec<String> {
    let mut c = String::from("#include <stddef.h>\n#include <stdio.h>\n");
    c += &format!("#include \"{HEADER_PATH}\"\n#include \"{IDS_PATH}\"\n\nint main(void)\n{{\n");
    for (s, f, _, _) in fields {
        c += &format!(
            "\tprintf(\"F {s} {f} %zu %zu\\n\", offsetof(struct {s}, {f}), sizeof(((struct {s} *)0)->{f}));\n"
        );
    }
    let mut structs: Vec<&String> = fields.iter().map(|f| &f.0).collect();
    structs.dedup();
    for s in structs {
        c += &format!("\tprintf(\"S {s} %zu\\n\", sizeof(struct {s}));\n");
    }
    for k in consts {
        c += &format!("\tprintf(\"C {k} %llu\\n\", (unsigned long long)({k}));\n");
    }
    c += "\treturn 0;\n}\n";

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("probe.c");
    let bin = dir.path().join("probe");
    std::fs::write(&src, c).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=gnu11", "-Wall", "-Werror", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc}: {e}"));
    assert!(
        out.status.success(),
        "the header does not compile with the spec's names:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&bin).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn c_header_matches_the_spec() {
    let (fields, sizes) = spec_rows();
    let spec_consts = spec_constants();
    let mut consts: Vec<String> = spec_consts.keys().cloned().collect();
    consts.extend(header_extras().keys().map(|k| k.to_string()));
    let lines = run_probe(&fields, &consts);

    for (s, f, off, size) in &fields {
        let want = format!("F {s} {f} {off} {size}");
        assert!(
            lines.contains(&want),
            "{s}.{f}: the spec says offset {off}, size {size}; the header gives {:?}",
            lines.iter().find(|l| l.starts_with(&format!("F {s} {f} ")))
        );
    }
    for (s, size) in &sizes {
        assert!(
            lines.contains(&format!("S {s} {size}")),
            "struct {s}: the spec says {size} bytes"
        );
    }
    for (k, v) in spec_consts
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .chain(header_extras())
    {
        assert!(lines.contains(&format!("C {k} {v}")), "{k}: the spec says {v}");
    }
}

#[test]
fn c_header_has_nothing_the_spec_lacks() {
    let (fields, _) = spec_rows();
    let spec_consts = spec_constants();
    let extras = header_extras();
    for line in HEADER.lines().chain(IDS.lines()) {
        let mut words = line.split_whitespace();
        if words.next() != Some("#define") {
            continue;
        }
        let name = words.next().unwrap();
        if name == "_LINUX_VIRTIO_UDC_H" || name == "_VIRTIO_UDC_COMPAT_VIRTIO_IDS_H" {
            continue;
        }
        assert!(
            spec_consts.contains_key(name) || extras.contains_key(name),
            "the header defines {name}, which the spec does not document"
        );
    }
    for (s, hfields) in header_struct_fields() {
        let sfields: Vec<&String> = fields.iter().filter(|f| f.0 == s).map(|f| &f.1).collect();
        assert!(
            !sfields.is_empty(),
            "the header has struct {s}, which the spec does not document"
        );
        assert_eq!(
            hfields.iter().collect::<Vec<_>>(),
            sfields,
            "struct {s}: the header's fields differ from the spec's table"
        );
    }
}

/// The uapi header is user-space clean: `_BITUL`, not the kernel-only `BIT`,
/// and the device ID in the virtio_ids-style file, not in the wire header.
#[test]
fn c_header_is_a_uapi_header() {
    assert!(!HEADER.contains("BIT("), "uapi headers use _BITUL(), not BIT()");
    assert!(!HEADER.contains("<linux/bits.h>"));
    assert!(!HEADER.contains("#define VIRTIO_ID_UDC"));
    assert_eq!(
        IDS.lines()
            .filter(|l| l.starts_with("#define VIRTIO_ID_UDC"))
            .count(),
        1
    );
}

#[test]
fn header_extras_agree_with_the_spec_prose() {
    assert!(SPEC.contains("| virtio device ID | **63** (provisional) |"));
    assert!(SPEC.contains("| 0 | controlq |"));
    assert!(SPEC.contains("| 1 | eventq |"));
    assert!(SPEC.contains("| 2 | xferq |"));
    assert!(SPEC.contains("struct virtio_udc_ep_cap[30]"));
    assert_eq!(vhost_device_udc::wire::MAX_EPS, 30);
    assert_eq!(vhost_device_udc::wire::NUM_QUEUES, 3);
}
