// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! A "newc" cpio archive writer: the runner appends one to the image's
//! initramfs to hand the guest its /udc/run.sh. Linux unpacks concatenated
//! archives in order; an uncompressed one must start at a 4-byte boundary.

/// One archive entry.
pub enum Entry<'a> {
    Dir(&'a str),
    File {
        path: &'a str,
        mode: u32,
        data: &'a [u8],
    },
}

fn header(out: &mut Vec<u8>, ino: u32, mode: u32, size: usize, name: &str) {
    let namesize = name.len() + 1;
    let fields = [ino, mode, 0, 0, 1, 0, size as u32, 0, 0, 0, 0, namesize as u32, 0];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// The archive holding `entries`, with its trailer.
pub fn archive(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let ino = i as u32 + 1;
        match e {
            Entry::Dir(path) => header(&mut out, ino, 0o040755, 0, path),
            Entry::File { path, mode, data } => {
                header(&mut out, ino, 0o100000 | mode, data.len(), path);
                out.extend_from_slice(data);
                pad4(&mut out);
            }
        }
    }
    header(&mut out, 0, 0, 0, "TRAILER!!!");
    out
}

/// `base` (a compressed initramfs) followed by `extra`, `extra` aligned to
/// 4 bytes as the kernel's unpacker requires.
pub fn append(base: &[u8], extra: &[u8]) -> Vec<u8> {
    let mut out = base.to_vec();
    pad4(&mut out);
    out.extend_from_slice(extra);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_lists_and_extracts_what_we_wrote() {
        let a = archive(&[
            Entry::Dir("udc"),
            Entry::File {
                path: "udc/run.sh",
                mode: 0o755,
                data: b"echo hi\n",
            },
        ]);
        assert_eq!(a.len() % 4, 0);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.cpio"), &a).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("cpio -idm --quiet < a.cpio && cat udc/run.sh && stat -c %a udc/run.sh")
            .current_dir(dir.path())
            .output()
            .expect("cpio runs (apt-get install cpio)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "echo hi\n755\n");
    }

    #[test]
    fn appended_archive_starts_on_a_4_byte_boundary() {
        let joined = append(&[1, 2, 3, 4, 5], b"0707");
        assert_eq!(&joined[8..], b"0707");
        assert_eq!(&joined[5..8], &[0, 0, 0]);
    }
}
