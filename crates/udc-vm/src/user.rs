// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `--user NAME`: QEMU and the daemon run as an unprivileged user instead
//! of as udc-vm's own (root) user, and the run shows that they did.
//!
//! Each child drops to the user's uid and primary gid before it executes,
//! with no supplementary groups, except that the daemon keeps the group
//! of the host's /dev/udmabuf when that device exists and grants its group
//! access (its one extra: host DMABUFs of guest memory). Neither keeps a
//! capability: a setuid from root to another user clears them all, and
//! no_new_privs keeps a setuid program from bringing any back. The run's
//! directory becomes the user's (0700), so the daemon can create its
//! sockets there and QEMU its logs.
//!
//! The proof is read back from the kernel, not assumed: /proc/PID/status
//! of each child (Uid, Gid, Groups, capabilities) and the owner and mode
//! of both sockets, recorded in OUT/privileges.txt; a child running as
//! root, with a capability or with an unexpected group, or a socket not
//! the user's own 0600, fails the run's `unprivileged` case.

use std::ffi::CString;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::Error;

/// The host's udmabuf device, which the daemon opens for host DMABUFs.
pub const UDMABUF: &str = "/dev/udmabuf";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The group through which the daemon may open /dev/udmabuf: its one
    /// supplementary group.
    pub udmabuf_gid: Option<u32>,
}

impl RunAs {
    /// The user `name` from the password database; udc-vm must be root to
    /// become it, and it must not be root itself.
    pub fn lookup(name: &str) -> Result<RunAs, Error> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Error::Usage(format!(
                "--user {name}: udc-vm must run as root to start QEMU and the daemon as another user"
            )));
        }
        let (uid, gid) = passwd(name)?;
        if uid == 0 || gid == 0 {
            return Err(Error::Usage(format!(
                "--user {name}: uid {uid}, gid {gid}: that is root's, not an unprivileged user"
            )));
        }
        let (udmabuf_gid, said) = udmabuf_group(Path::new(UDMABUF));
        eprintln!("udc-vm: QEMU and the daemon run as {name} (uid {uid}, gid {gid}); {said}");
        Ok(RunAs {
            name: name.to_string(),
            uid,
            gid,
            udmabuf_gid,
        })
    }

    /// Makes `cmd` drop to this user, keeping exactly `groups` as its
    /// supplementary groups, before it executes.
    pub fn apply(&self, cmd: &mut Command, groups: &[u32]) {
        let (uid, gid) = (self.uid, self.gid);
        let groups: Vec<libc::gid_t> = groups.to_vec();
        // std's own uid()/gid() would drop the supplementary groups but
        // runs pre_exec hooks after the setuid, too late to keep one: the
        // whole change is done here, in the order that works (groups and
        // gid while still root, uid last).
        // SAFETY: only async-signal-safe calls between fork and exec, on
        // data moved in before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let ok = |r: libc::c_int| {
                    if r == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                };
                ok(libc::setgroups(groups.len(), groups.as_ptr()))?;
                ok(libc::setgid(gid))?;
                ok(libc::setuid(uid))?;
                ok(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
            });
        }
    }

    /// Gives the run's directory to the user (0700), after checking that
    /// the user can reach it and read what QEMU opens.
    pub fn prepare(&self, out: &Path, readable: &[&Path]) -> Result<(), Error> {
        for dir in out.ancestors().skip(1).filter(|d| !d.as_os_str().is_empty()) {
            self.require(dir, 0o1, &format!("the run's directory {}", out.display()))?;
        }
        for f in readable {
            for dir in f.ancestors().skip(1).filter(|d| !d.as_os_str().is_empty()) {
                self.require(dir, 0o1, &f.display().to_string())?;
            }
            self.require(f, 0o4, &f.display().to_string())?;
        }
        let c = CString::new(out.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::Usage(format!("{}: a NUL in the path", out.display())))?;
        // SAFETY: a valid C string; chown changes only that directory.
        if unsafe { libc::chown(c.as_ptr(), self.uid, self.gid) } != 0 {
            return Err(Error::Io(format!(
                "chown {} to {}: {}",
                out.display(),
                self.name,
                std::io::Error::last_os_error()
            )));
        }
        std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::Io(format!("chmod 0700 {}: {e}", out.display())))
    }

    /// `path` grants this user `want` (4 read, 1 search/execute) by its
    /// mode bits.
    fn require(&self, path: &Path, want: u32, for_what: &str) -> Result<(), Error> {
        let m = std::fs::metadata(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        let mode = m.mode();
        let bits = if m.uid() == self.uid {
            mode >> 6
        } else if m.gid() == self.gid {
            mode >> 3
        } else {
            mode
        };
        if bits & want == want {
            return Ok(());
        }
        Err(Error::Usage(format!(
            "--user {}: it cannot {} {} (mode {:o}, owner {}:{}), needed for {for_what}; \
             use --out under a directory it can enter, such as /tmp",
            self.name,
            if want == 0o4 { "read" } else { "enter" },
            path.display(),
            mode & 0o7777,
            m.uid(),
            m.gid()
        )))
    }
}

/// uid and primary gid of `name`.
fn passwd(name: &str) -> Result<(u32, u32), Error> {
    let c = CString::new(name).map_err(|_| Error::Usage(format!("--user {name:?}: a NUL in the name")))?;
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and buf's length is given.
    let r = unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut result) };
    if r != 0 || result.is_null() {
        return Err(Error::Usage(format!(
            "--user {name}: no such user (scripts/setup-host.sh creates udc-runner)"
        )));
    }
    Ok((pw.pw_uid, pw.pw_gid))
}

/// The group that gives access to the udmabuf device at `dev`, and what to
/// say about it.
pub fn udmabuf_group(dev: &Path) -> (Option<u32>, String) {
    let Ok(m) = std::fs::metadata(dev) else {
        return (
            None,
            format!(
                "this host has no {}: the daemon gets no extra group and makes no host DMABUFs",
                dev.display()
            ),
        );
    };
    let mode = m.mode();
    if m.gid() != 0 && mode & 0o060 == 0o060 {
        (
            Some(m.gid()),
            format!(
                "the daemon keeps group {} for {} (mode {:o}) and no other",
                m.gid(),
                dev.display(),
                mode & 0o777
            ),
        )
    } else if mode & 0o006 == 0o006 {
        (
            None,
            format!("{} is open to every user: no extra group", dev.display()),
        )
    } else {
        (
            None,
            format!(
                "{} (mode {:o}, group {}) is not open to a group: the daemon will not open it \
                 (scripts/setup-host.sh gives it to group udmabuf)",
                dev.display(),
                mode & 0o777,
                m.gid()
            ),
        )
    }
}

/// What the kernel says about the children's privileges and the sockets.
#[derive(Clone, Debug, Default)]
pub struct Privileges {
    /// What was read, for the record.
    pub lines: Vec<String>,
    /// What is wrong with it; empty when the run was unprivileged.
    pub problems: Vec<String>,
}

impl Privileges {
    /// Records process `pid` (`who`) from /proc/PID/status.
    pub fn process(&mut self, who: &str, pid: u32, r: &RunAs, groups: &[u32]) {
        let path = format!("/proc/{pid}/status");
        let status = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) => {
                self.problems
                    .push(format!("{who} (pid {pid}): {path}: {e}: cannot show how it runs"));
                return;
            }
        };
        let problems = check_status(&status, r, groups);
        let fields: Vec<&str> = status
            .lines()
            .filter(|l| {
                [
                    "Uid:",
                    "Gid:",
                    "Groups:",
                    "CapInh:",
                    "CapPrm:",
                    "CapEff:",
                    "CapAmb:",
                    "NoNewPrivs:",
                ]
                .iter()
                .any(|k| l.starts_with(k))
            })
            .collect();
        self.lines.push(format!(
            "{who} (pid {pid}): {}",
            fields
                .iter()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join("; ")
        ));
        self.problems
            .extend(problems.into_iter().map(|p| format!("{who} (pid {pid}): {p}")));
    }

    /// Records the socket at `path` (`what`): the user's own, mode 0600.
    pub fn socket(&mut self, what: &str, path: &Path, r: &RunAs) {
        match std::fs::symlink_metadata(path) {
            Ok(m) => {
                self.lines.push(format!(
                    "{what} {}: owner {}:{}, mode {:04o}",
                    path.display(),
                    m.uid(),
                    m.gid(),
                    m.mode() & 0o7777
                ));
                if !m.file_type().is_socket() {
                    self.problems
                        .push(format!("{what} {}: not a socket", path.display()));
                }
                if m.uid() != r.uid {
                    self.problems.push(format!(
                        "{what} {}: owned by uid {}, not {} ({})",
                        path.display(),
                        m.uid(),
                        r.uid,
                        r.name
                    ));
                }
                if m.mode() & 0o7777 != 0o600 {
                    self.problems.push(format!(
                        "{what} {}: mode {:04o}, not 0600",
                        path.display(),
                        m.mode() & 0o7777
                    ));
                }
            }
            Err(e) => self.problems.push(format!("{what} {}: {e}", path.display())),
        }
    }
}

/// What is wrong with a /proc/PID/status for a process that should run as
/// `r` with exactly `groups` and no capabilities.
pub fn check_status(status: &str, r: &RunAs, groups: &[u32]) -> Vec<String> {
    let field = |k: &str| -> Option<Vec<&str>> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.split_whitespace().collect())
    };
    let mut problems = Vec::new();
    for (k, want) in [("Uid:", r.uid), ("Gid:", r.gid)] {
        match field(k) {
            Some(ids) if ids.len() == 4 && ids.iter().all(|v| v.parse() == Ok(want)) => {}
            Some(ids) => problems.push(format!(
                "{k} {} (real, effective, saved, file system), expected all {want}",
                ids.join(" ")
            )),
            None => problems.push(format!("no {k} line")),
        }
    }
    match field("Groups:") {
        Some(gs) => {
            let extra: Vec<&str> = gs
                .iter()
                .copied()
                .filter(|g| !g.parse::<u32>().is_ok_and(|g| groups.contains(&g)))
                .collect();
            if !extra.is_empty() {
                problems.push(format!(
                    "supplementary groups {} besides the allowed {groups:?}",
                    extra.join(" ")
                ));
            }
        }
        None => problems.push("no Groups: line".into()),
    }
    for k in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
        match field(k) {
            Some(v) if v.len() == 1 && u64::from_str_radix(v[0], 16) == Ok(0) => {}
            Some(v) => problems.push(format!("{k} {}: it holds capabilities", v.join(" "))),
            // CapAmb is missing only on kernels before 4.3.
            None if k == "CapAmb:" => {}
            None => problems.push(format!("no {k} line")),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner() -> RunAs {
        RunAs {
            name: "udc-runner".into(),
            uid: 998,
            gid: 997,
            udmabuf_gid: None,
        }
    }

    const UNPRIVILEGED: &str = "Name:\tqemu\nUid:\t998\t998\t998\t998\nGid:\t997\t997\t997\t997\n\
        Groups:\t\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
        CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n";

    #[test]
    fn an_unprivileged_process_passes() {
        assert!(check_status(UNPRIVILEGED, &runner(), &[]).is_empty());
    }

    #[test]
    fn root_ids_groups_and_capabilities_are_each_named() {
        let root = UNPRIVILEGED
            .replace("Uid:\t998\t998\t998\t998", "Uid:\t998\t0\t998\t0")
            .replace("Groups:\t", "Groups:\t0 27")
            .replace("CapEff:\t0000000000000000", "CapEff:\t000001ffffffffff");
        let p = check_status(&root, &runner(), &[]);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("Uid: 998 0 998 0"), "{p:?}");
        assert!(p[1].contains("supplementary groups 0 27"), "{p:?}");
        assert!(p[2].starts_with("CapEff: 000001ffffffffff"), "{p:?}");
        // The udmabuf group is the one allowed extra.
        let with_group = UNPRIVILEGED.replace("Groups:\t", "Groups:\t105");
        assert!(check_status(&with_group, &runner(), &[105]).is_empty());
        assert_eq!(check_status(&with_group, &runner(), &[]).len(), 1);
    }

    #[test]
    fn a_missing_device_gives_no_group() {
        let (g, said) = udmabuf_group(Path::new("/nonexistent/udmabuf"));
        assert_eq!(g, None);
        assert!(said.contains("no /nonexistent/udmabuf"), "{said}");
    }

    #[test]
    fn sockets_must_be_the_users_own_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let me = RunAs {
            // SAFETY: getuid and getgid have no preconditions.
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            ..runner()
        };
        let mut p = Privileges::default();
        p.socket("control socket", &path, &me);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.socket("control socket", &path, &runner());
        assert_eq!(p.problems.len(), 2, "{:?}", p.problems);
        assert!(p.problems[1].contains("mode 0755, not 0600"));
    }

    #[test]
    fn the_children_of_apply_run_as_the_user() {
        // Only root can change user; elsewhere this proves nothing.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let r = RunAs {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            udmabuf_gid: None,
        };
        let mut cmd = Command::new("cat");
        cmd.arg("/proc/self/status");
        r.apply(&mut cmd, &[]);
        let out = cmd.output().unwrap();
        let status = String::from_utf8_lossy(&out.stdout);
        assert!(check_status(&status, &r, &[]).is_empty(), "{status}");
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    }
}
