// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The wire format's tables as docs/virtio-udc.md writes them, read once for
//! the tests that hold the Rust and the C definitions against them.

use std::collections::BTreeMap;

pub const SPEC: &str = include_str!("../../docs/virtio-udc.md");

/// Per structure: its fields (name, offset, size) and its total size.
pub type Layouts = BTreeMap<String, (Vec<(String, usize, usize)>, usize)>;

/// Field (name, offset, size) lists of every `### struct NAME` table, and
/// the size the spec states under it.
pub fn spec_structs() -> Layouts {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in SPEC.lines() {
        if let Some(name) = line.strip_prefix("### struct ") {
            current = Some(name.trim().to_string());
            out.insert(name.trim().to_string(), (Vec::new(), 0));
            continue;
        }
        let Some(name) = current.clone() else { continue };
        if line.starts_with("## ") || line.starts_with("### ") {
            current = None;
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("Size: ")
            .or_else(|| line.strip_prefix("Total size: "))
        {
            let n: usize = rest.split_whitespace().next().unwrap().parse().unwrap();
            out.get_mut(&name).unwrap().1 = n;
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 6 || cells[1] == "offset" || cells[1].starts_with("---") {
            continue;
        }
        let (Ok(off), Ok(size)) = (cells[1].parse::<usize>(), cells[2].parse::<usize>()) else {
            continue;
        };
        out.get_mut(&name)
            .unwrap()
            .0
            .push((cells[4].to_string(), off, size));
    }
    out
}

/// Every `| value | NAME |` row whose NAME starts with VIRTIO_UDC_ or
/// VIRTIO_ID_; bit tables give `1 << bit`.
pub fn spec_constants() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut bits = false;
    for line in SPEC.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 {
            continue;
        }
        if cells[1] == "bit" || cells[1] == "value" {
            bits = cells[1] == "bit";
            continue;
        }
        let name = cells[2];
        if !name.starts_with("VIRTIO_UDC_") {
            continue;
        }
        let raw = cells[1];
        let v = if let Some(h) = raw.strip_prefix("0x") {
            u64::from_str_radix(h, 16).unwrap()
        } else {
            raw.parse::<u64>()
                .unwrap_or_else(|_| panic!("bad value {raw:?} for {name}"))
        };
        out.insert(name.to_string(), if bits { 1 << v } else { v });
    }
    out
}
