// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Where the daemon listens: a path taken without destroying anything, or
//! a listening socket a supervisor passed.
//!
//! A socket path left behind by a daemon that died must be reusable, but
//! the same path may hold another daemon's live socket or someone's file:
//! both must survive a mistyped `--socket-path`. A `--socket-fd` must be a
//! listening Unix stream socket, checked before the daemon relies on it.

use std::io::ErrorKind;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    getsockname, getsockopt, sockopt, AddressFamily, SockType, SockaddrLike, SockaddrStorage,
};

/// Why a passed file descriptor cannot be listened on.
#[derive(Debug, thiserror::Error)]
pub enum SocketFdError {
    #[error("file descriptor {0} is not open")]
    NotOpen(RawFd),
    #[error("file descriptor {0} is not a socket")]
    NotASocket(RawFd),
    #[error("file descriptor {fd} is not a Unix stream socket (it is {what})")]
    WrongKind { fd: RawFd, what: String },
    #[error(
        "file descriptor {0} is a Unix stream socket that is not listening (call listen() before passing it)"
    )]
    NotListening(RawFd),
}

/// Takes ownership of `fd`, a listening Unix stream socket a supervisor
/// (systemd, libvirt, a test runner) passed to the daemon. Anything else is
/// refused with what it is, and left open.
pub fn listener_from_fd(fd: RawFd) -> Result<UnixListener, SocketFdError> {
    if fd < 0 || nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
        return Err(SocketFdError::NotOpen(fd));
    }
    // SAFETY: fd is open (checked above) and stays open for this borrow.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let ty = getsockopt(&borrowed, sockopt::SockType).map_err(|_| SocketFdError::NotASocket(fd))?;
    let family = getsockname::<SockaddrStorage>(fd).ok().and_then(|a| a.family());
    if family != Some(AddressFamily::Unix) || ty != SockType::Stream {
        return Err(SocketFdError::WrongKind {
            fd,
            what: format!("{family:?} {ty:?}"),
        });
    }
    if !getsockopt(&borrowed, sockopt::AcceptConn).unwrap_or(false) {
        return Err(SocketFdError::NotListening(fd));
    }
    // SAFETY: a checked, open, listening socket the daemon was given to
    // own; nothing else in the daemon knows this number.
    Ok(UnixListener::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

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
    use std::os::fd::{AsRawFd, IntoRawFd};

    #[test]
    fn a_passed_fd_must_be_a_listening_unix_stream_socket() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        assert!(matches!(
            listener_from_fd(file.as_raw_fd()),
            Err(SocketFdError::NotASocket(_))
        ));
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(matches!(
            listener_from_fd(a.as_raw_fd()),
            Err(SocketFdError::NotListening(_))
        ));
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = listener_from_fd(udp.as_raw_fd()).unwrap_err();
        assert!(e.to_string().contains("not a Unix stream socket"), "{e}");
        assert!(matches!(listener_from_fd(-1), Err(SocketFdError::NotOpen(-1))));

        let path = dir.path().join("s");
        let fd = UnixListener::bind(&path).unwrap().into_raw_fd();
        let l = listener_from_fd(fd).unwrap();
        let _c = UnixStream::connect(&path).unwrap();
        assert!(l.accept().is_ok(), "the passed socket accepts");
    }

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
