// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Host folders in the guest (`--rodir` / `--rwdir HOST[:GUEST]`), as
//! virtme-ng shares them: one virtio-9p device per folder, mounted by the
//! guest's init before anything runs, so `udc-vm run --rwdir
//! ~/work:/mnt -- /mnt/my-test.sh` runs a program of your own against the
//! gadget stack and returns its exit status.
//!
//! QEMU serves the folder with `security_model=none`: the guest's root
//! reads and writes as the user QEMU runs as (root, or `--user`), and a
//! file the guest makes belongs to that user on the host.

use std::path::PathBuf;
use std::str::FromStr;

/// One `--rodir` / `--rwdir` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The host folder (absolute once checked).
    pub host: PathBuf,
    /// Where the guest mounts it.
    pub guest: String,
    pub writable: bool,
}

/// `HOST:GUEST`, or `DIR` for the same path on both sides. Writability is
/// the flag's, set by [`Share::read_only`] and [`Share::read_write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareSpec {
    host: PathBuf,
    guest: String,
}

impl FromStr for ShareSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (host, guest) = match s.split_once(':') {
            Some((h, g)) => (h, g),
            None => (s, s),
        };
        if host.is_empty() {
            return Err("no host folder: say HOST:GUEST, or DIR for the same path in the guest".into());
        }
        // The guest's init reads one share per line; the rest of the line
        // is the path, so spaces are fine and line breaks are not.
        if !guest.starts_with('/') || guest.contains(['\n', '\r', '\0']) {
            return Err(format!("guest path {guest:?} must be absolute, on one line"));
        }
        let guest = guest.trim_end_matches('/');
        if guest.is_empty() || ["/proc", "/sys", "/dev", "/udc", "/etc/udc"].contains(&guest) {
            return Err(format!(
                "cannot mount a host folder over {:?}: the guest needs it",
                if guest.is_empty() { "/" } else { guest }
            ));
        }
        Ok(ShareSpec {
            host: PathBuf::from(host),
            guest: guest.to_string(),
        })
    }
}

impl Share {
    fn new(spec: &ShareSpec, writable: bool) -> Result<Share, String> {
        let flag = if writable { "--rwdir" } else { "--rodir" };
        let host =
            std::path::absolute(&spec.host).map_err(|e| format!("{flag} {}: {e}", spec.host.display()))?;
        match std::fs::metadata(&host) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("{flag} {}: not a folder", host.display())),
            Err(e) => return Err(format!("{flag} {}: {e}", host.display())),
        }
        Ok(Share {
            host,
            guest: spec.guest.clone(),
            writable,
        })
    }

    /// The shares of `--rodir` and `--rwdir`, checked: each host folder
    /// exists, and no two mount at the same guest path.
    pub fn all(rodirs: &[ShareSpec], rwdirs: &[ShareSpec]) -> Result<Vec<Share>, String> {
        let mut shares = Vec::new();
        for s in rodirs {
            shares.push(Share::new(s, false)?);
        }
        for s in rwdirs {
            shares.push(Share::new(s, true)?);
        }
        for (i, a) in shares.iter().enumerate() {
            if shares[..i].iter().any(|b| b.guest == a.guest) {
                return Err(format!(
                    "two host folders would mount at {} in the guest",
                    a.guest
                ));
            }
        }
        Ok(shares)
    }
}

/// The 9p mount tag of the `n`th share.
fn tag(n: usize) -> String {
    format!("udc-share{n}")
}

/// QEMU's options for the shares: a `local` fsdev and a virtio-9p-pci
/// device each.
pub fn qemu_args(shares: &[Share]) -> Vec<String> {
    let mut a = Vec::new();
    for (n, s) in shares.iter().enumerate() {
        // QEMU's option syntax doubles a comma inside a value.
        let path = s.host.display().to_string().replace(',', ",,");
        let ro = if s.writable { "" } else { ",readonly=on" };
        a.push("-fsdev".to_string());
        a.push(format!("local,id=fs{n},path={path},security_model=none{ro}"));
        a.push("-device".to_string());
        a.push(format!("virtio-9p-pci,fsdev=fs{n},mount_tag={}", tag(n)));
    }
    a
}

/// What the guest's init reads from /etc/udc/shares: `TAG ro|rw PATH` a
/// line, the path last so that it may hold spaces.
pub fn guest_table(shares: &[Share]) -> String {
    shares
        .iter()
        .enumerate()
        .map(|(n, s)| {
            format!(
                "{} {} {}\n",
                tag(n),
                if s.writable { "rw" } else { "ro" },
                s.guest
            )
        })
        .collect()
}

/// Where the guest's init says a share failed to mount.
pub const MOUNT_FAILED: &str = "udc-init: FAILED to mount host folder";

/// For messages: `HOST on GUEST (ro)`.
pub fn describe(s: &Share) -> String {
    format!(
        "{} on {} ({})",
        s.host.display(),
        s.guest,
        if s.writable { "read-write" } else { "read-only" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_is_host_colon_guest_or_one_path_for_both() {
        let s: ShareSpec = "/srv/work:/mnt/w/".parse().unwrap();
        assert_eq!(s.host, PathBuf::from("/srv/work"));
        assert_eq!(s.guest, "/mnt/w");
        let s: ShareSpec = "/srv/work".parse().unwrap();
        assert_eq!(s.guest, "/srv/work");
    }

    #[test]
    fn guest_paths_the_guest_needs_or_relative_ones_are_refused() {
        for bad in [
            "/srv:/",
            "/srv:/proc",
            "/srv:/dev/",
            "/srv:mnt",
            "/srv:/a\nb",
            ":/mnt",
            "rel",
        ] {
            assert!(bad.parse::<ShareSpec>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_missing_or_plain_file_host_folder_is_refused_with_its_name() {
        let e = Share::all(&["/no/such/dir:/mnt".parse().unwrap()], &[]).unwrap_err();
        assert!(e.starts_with("--rodir /no/such/dir: "), "{e}");
        let f = std::env::temp_dir().join(format!("udc-share-test-{}", std::process::id()));
        std::fs::write(&f, b"x").unwrap();
        let e = Share::all(&[], &[format!("{}:/mnt", f.display()).parse().unwrap()]).unwrap_err();
        std::fs::remove_file(&f).unwrap();
        assert!(e.ends_with("not a folder"), "{e}");
    }

    #[test]
    fn two_shares_on_one_guest_path_are_refused() {
        let tmp = std::env::temp_dir();
        let spec: ShareSpec = format!("{}:/mnt", tmp.display()).parse().unwrap();
        assert!(Share::all(std::slice::from_ref(&spec), std::slice::from_ref(&spec)).is_err());
    }

    #[test]
    fn each_share_is_a_9p_device_and_a_line_of_the_guest_table() {
        let shares = [
            Share {
                host: "/srv/a,b".into(),
                guest: "/mnt/my dir".into(),
                writable: false,
            },
            Share {
                host: "/srv/c".into(),
                guest: "/c".into(),
                writable: true,
            },
        ];
        assert_eq!(
            qemu_args(&shares).join(" "),
            "-fsdev local,id=fs0,path=/srv/a,,b,security_model=none,readonly=on \
             -device virtio-9p-pci,fsdev=fs0,mount_tag=udc-share0 \
             -fsdev local,id=fs1,path=/srv/c,security_model=none \
             -device virtio-9p-pci,fsdev=fs1,mount_tag=udc-share1"
        );
        assert_eq!(
            guest_table(&shares),
            "udc-share0 ro /mnt/my dir\nudc-share1 rw /c\n"
        );
    }
}
