// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Taking a path for a listening Unix socket without destroying anything.
//!
//! A socket path left behind by a daemon that died must be reusable, but
//! the same path may hold another daemon's live socket or someone's file:
//! both must survive a mistyped `--socket-path`.

use std::io::ErrorKind;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Why a socket path cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum SocketPathError {
    #[error("{} exists and is not a socket; not removing it", .0.display())]
    NotASocket(PathBuf),
    #[error("{} is in use: another process is listening on it", .0.display())]
    InUse(PathBuf),
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Makes `path` free for a new listening socket: nothing there, or a stale
/// socket (nobody accepts on it), which is removed. A live socket or
/// anything that is not a socket is left alone, with an error.
pub fn claim_socket_path(path: &Path) -> Result<(), SocketPathError> {
    let io = |source| SocketPathError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(SocketPathError::NotASocket(path.to_path_buf()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(SocketPathError::InUse(path.to_path_buf())),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => std::fs::remove_file(path).map_err(io),
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn only_a_stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let free = dir.path().join("free");
        assert!(claim_socket_path(&free).is_ok());

        let file = dir.path().join("file");
        std::fs::write(&file, b"precious").unwrap();
        let e = claim_socket_path(&file).unwrap_err();
        assert!(e.to_string().contains("is not a socket"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"precious");

        let live = dir.path().join("live");
        let listener = UnixListener::bind(&live).unwrap();
        let e = claim_socket_path(&live).unwrap_err();
        assert!(e.to_string().contains("in use"), "{e}");
        assert!(live.exists());

        drop(listener);
        assert!(
            claim_socket_path(&live).is_ok(),
            "a socket nobody listens on is stale"
        );
        assert!(!live.exists());
    }
}
