// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Who may use the control socket, and what the riskier requests need.
//!
//! The control socket hands out DMABUFs of guest pages, moves data to and
//! from the gadget, and can end the daemon: on a host shared by several
//! users or CI jobs it must answer only those it was started for. So the
//! socket is created 0600 (or the mode and group the operator names), every
//! connection's peer credentials (SO_PEERCRED) are checked against root, the
//! daemon's own user, the socket's group and the uids allowed on the command
//! line, and two requests are off unless the daemon was started with them:
//! `crash` (`--control-allow-crash`) and `file:` stream sources
//! (`--control-file-dir`, and then only files inside that directory).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{Gid, Group, Uid};

use crate::socket_path::{claim_socket_path, SocketPathError};

/// The control socket's access options (`vhost-device-udc --help`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ControlArgs {
    /// File mode of the control socket, in octal. Whoever can connect can
    /// read and write the guest's transfer buffers.
    #[arg(long, value_name = "MODE", default_value = "0600", value_parser = parse_mode)]
    pub control_socket_mode: u32,

    /// Group of the control socket (a name or a number); its members may
    /// connect when the mode lets them (e.g. --control-socket-mode 0660).
    #[arg(long, value_name = "GROUP")]
    pub control_socket_group: Option<String>,

    /// Another user allowed to connect besides root and the daemon's own
    /// user (repeatable).
    #[arg(long, value_name = "UID")]
    pub control_allow_uid: Vec<u32>,

    /// Accept the `crash` request, which ends the daemon at once (for
    /// testing how QEMU and the guest recover from a lost back end).
    #[arg(long)]
    pub control_allow_crash: bool,

    /// Accept `file:PATH` stream sources for files inside DIR; without it
    /// the control socket cannot make the daemon read files.
    #[arg(long, value_name = "DIR")]
    pub control_file_dir: Option<PathBuf>,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!(
            "{s:?} is not a file mode: give octal digits such as 0600 or 0660"
        )),
    }
}

/// Why the control socket's options or its creation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("--control-socket-group {0}: no such group")]
    NoGroup(String),
    #[error("--control-socket-group {name}: {source}")]
    GroupLookup { name: String, source: nix::Error },
    #[error("--control-file-dir {}: {source}", .path.display())]
    FileDir { path: PathBuf, source: std::io::Error },
    #[error("--control-file-dir {}: not a directory", .0.display())]
    FileDirNotADirectory(PathBuf),
    #[error(transparent)]
    SocketPath(#[from] SocketPathError),
    #[error("cannot create the socket: {0}")]
    Bind(std::io::Error),
    #[error("cannot set the socket's mode {mode:04o}: {source}")]
    Mode { mode: u32, source: std::io::Error },
    #[error("cannot give the socket to group {gid}: {source}")]
    Group { gid: u32, source: nix::Error },
}

/// The control socket's access rules, checked and resolved.
#[derive(Debug, Clone)]
pub struct ControlPolicy {
    mode: u32,
    group: Option<Gid>,
    allowed_uids: Vec<Uid>,
    allow_crash: bool,
    /// Canonical.
    file_dir: Option<PathBuf>,
}

impl Default for ControlPolicy {
    /// The safe default: 0600, the daemon's user and root, no crash, no
    /// files.
    fn default() -> Self {
        ControlPolicy {
            mode: 0o600,
            group: None,
            allowed_uids: Vec::new(),
            allow_crash: false,
            file_dir: None,
        }
    }
}

impl TryFrom<ControlArgs> for ControlPolicy {
    type Error = AccessError;

    fn try_from(a: ControlArgs) -> Result<Self, AccessError> {
        let group = match a.control_socket_group {
            None => None,
            Some(name) => Some(match name.parse::<u32>() {
                Ok(gid) => Gid::from_raw(gid),
                Err(_) => match Group::from_name(&name) {
                    Ok(Some(g)) => g.gid,
                    Ok(None) => return Err(AccessError::NoGroup(name)),
                    Err(source) => return Err(AccessError::GroupLookup { name, source }),
                },
            }),
        };
        let file_dir = match a.control_file_dir {
            None => None,
            Some(path) => {
                let dir = path.canonicalize().map_err(|source| AccessError::FileDir {
                    path: path.clone(),
                    source,
                })?;
                if !dir.is_dir() {
                    return Err(AccessError::FileDirNotADirectory(path));
                }
                Some(dir)
            }
        };
        Ok(ControlPolicy {
            mode: a.control_socket_mode,
            group,
            allowed_uids: a.control_allow_uid.into_iter().map(Uid::from_raw).collect(),
            allow_crash: a.control_allow_crash,
            file_dir,
        })
    }
}

impl ControlPolicy {
    /// Creates the listening socket at `path` with the policy's mode and
    /// group. Only a stale socket at `path` is replaced (see
    /// [`claim_socket_path`]); the socket never exists with a wider mode
    /// than asked for, as it is created under a umask that allows only the
    /// owner.
    pub fn bind(&self, path: &Path) -> Result<UnixListener, AccessError> {
        claim_socket_path(path)?;
        let old = umask(Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        umask(old);
        let listener = bound.map_err(AccessError::Bind)?;
        if let Some(gid) = self.group {
            nix::unistd::chown(path, None, Some(gid)).map_err(|source| AccessError::Group {
                gid: gid.as_raw(),
                source,
            })?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(self.mode)).map_err(|source| {
            AccessError::Mode {
                mode: self.mode,
                source,
            }
        })?;
        Ok(listener)
    }

    /// Whether the peer of `stream` may use the socket; `Err` says why not.
    pub fn admit(&self, stream: &UnixStream) -> Result<(), String> {
        let cred = getsockopt(stream, PeerCredentials)
            .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
        let uid = Uid::from_raw(cred.uid());
        let gid = Gid::from_raw(cred.gid());
        let allowed = uid.is_root()
            || uid == Uid::effective()
            || self.allowed_uids.contains(&uid)
            || self.group == Some(gid);
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "uid {} (gid {}, pid {}) may not use this control socket; the daemon allows root, uid {}{}",
                cred.uid(),
                cred.gid(),
                cred.pid(),
                Uid::effective(),
                self.also_allowed()
            ))
        }
    }

    fn also_allowed(&self) -> String {
        let mut s = String::new();
        for u in &self.allowed_uids {
            s.push_str(&format!(", uid {u}"));
        }
        if let Some(g) = self.group {
            s.push_str(&format!(" and group {g}"));
        }
        s
    }

    /// Whether `crash` may end the daemon.
    pub fn check_crash(&self) -> Result<(), String> {
        if self.allow_crash {
            Ok(())
        } else {
            Err("crash is off: start the daemon with --control-allow-crash to allow it".into())
        }
    }

    /// Whether a capture may be written at `path`: only a new file directly
    /// or below the allowed directory (the daemon writes where a client
    /// says, so not anywhere it could write).
    pub fn check_capture_path(&self, path: &str) -> Result<PathBuf, String> {
        let Some(dir) = &self.file_dir else {
            return Err(format!(
                "{path}: captures to files are off: start the daemon with --control-file-dir DIR to allow them in DIR"
            ));
        };
        let p = Path::new(path);
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            return Err(format!("{path}: not a file name"));
        };
        // The directory canonical, so neither `..` nor a link leads out;
        // the file itself is created new (never through a link).
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let real = parent.canonicalize().map_err(|e| format!("{path}: {e}"))?;
        if !real.starts_with(dir) {
            return Err(format!(
                "{path}: outside {}, the directory captures may go to",
                dir.display()
            ));
        }
        Ok(real.join(name))
    }

    /// Whether a stream source (`pattern` of stream_start) may be used:
    /// patterns always, `file:PATH` only inside the allowed directory.
    pub fn check_source(&self, source: &str) -> Result<(), String> {
        let Some(path) = source.strip_prefix("file:") else {
            return Ok(());
        };
        let Some(dir) = &self.file_dir else {
            return Err(format!(
                "{source}: file sources are off: start the daemon with --control-file-dir DIR to allow files in DIR"
            ));
        };
        // Canonical, so neither `..` nor a symbolic link leads out.
        let real = Path::new(path)
            .canonicalize()
            .map_err(|e| format!("{source}: {e}"))?;
        if real.starts_with(dir) {
            Ok(())
        } else {
            Err(format!(
                "{source}: outside {}, the directory file sources may come from",
                dir.display()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode("0600"), Ok(0o600));
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert_eq!(parse_mode("0o640"), Ok(0o640));
        assert!(parse_mode("0999").unwrap_err().contains("not a file mode"));
        assert!(parse_mode("01777").is_err());
    }

    #[test]
    fn crash_and_files_are_off_by_default() {
        let p = ControlPolicy::default();
        assert!(p.check_crash().unwrap_err().contains("--control-allow-crash"));
        assert!(p.check_source("prbs:7").is_ok());
        assert!(p
            .check_source("file:/etc/passwd")
            .unwrap_err()
            .contains("--control-file-dir"));
    }

    #[test]
    fn captures_go_only_into_the_file_directory() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("files");
        std::fs::create_dir(&allowed).unwrap();
        let p = ControlPolicy {
            file_dir: Some(allowed.canonicalize().unwrap()),
            ..ControlPolicy::default()
        };
        let inside = allowed.join("bus.pcap");
        assert_eq!(
            p.check_capture_path(inside.to_str().unwrap()).unwrap(),
            allowed.canonicalize().unwrap().join("bus.pcap")
        );
        let sneaky = format!("{}/../bus.pcap", allowed.display());
        assert!(p.check_capture_path(&sneaky).unwrap_err().contains("outside"));
        assert!(ControlPolicy::default()
            .check_capture_path(inside.to_str().unwrap())
            .unwrap_err()
            .contains("--control-file-dir"));
    }

    #[test]
    fn file_sources_stay_inside_their_directory() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("allowed");
        std::fs::create_dir(&allowed).unwrap();
        std::fs::write(allowed.join("in.bin"), b"x").unwrap();
        std::fs::write(root.path().join("out.bin"), b"x").unwrap();
        std::os::unix::fs::symlink(root.path().join("out.bin"), allowed.join("link.bin")).unwrap();
        let p = ControlPolicy::try_from(ControlArgs {
            control_socket_mode: 0o600,
            control_file_dir: Some(allowed.clone()),
            ..Default::default()
        })
        .unwrap();
        let src = |name: &str| format!("file:{}", allowed.join(name).display());
        assert!(p.check_source(&src("in.bin")).is_ok());
        assert!(p
            .check_source(&src("../out.bin"))
            .unwrap_err()
            .contains("outside"));
        assert!(p.check_source(&src("link.bin")).unwrap_err().contains("outside"));
        assert!(p.check_source(&src("missing.bin")).is_err());
    }

    #[test]
    fn the_socket_is_created_with_the_mode_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl");
        let p = ControlPolicy::default();
        let _l = p.bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let me = UnixStream::connect(&path).unwrap();
        assert!(p.admit(&me).is_ok(), "the daemon's own user may connect");
    }
}
