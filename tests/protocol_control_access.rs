// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The control socket as a neighbour sees it: who may connect, what needs
//! the daemon's explicit permission, what a misbehaving client costs, and
//! that starting a daemon never destroys what is at its socket paths.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// The user the "other user" checks run as.
const NOBODY: u32 = 65534;

/// Runs a tiny client as `nobody`: connects to `path`, sends a status
/// request and prints the reply, or the connection error.
fn connect_as_nobody(path: &std::path::Path) -> String {
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect failed:", e.strerror)
    sys.exit(0)
try:
    s.sendall(b'{"op":"status"}\n')
except OSError:
    pass  # a refused client is told why, then disconnected
print(s.makefile().readline().strip())
"#;
    let out = Command::new("setpriv")
        .args(["--reuid", &NOBODY.to_string(), "--regid", &NOBODY.to_string(), "--clear-groups"])
        .args(["/usr/bin/python3", "-c", script])
        .arg(path)
        .output()
        .expect("setpriv and /usr/bin/python3 run a client as another user (util-linux and python3 are in scripts/setup-host.sh)");
    assert!(out.status.success(), "the client as nobody failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The vhost-user socket hands whoever connects the guest's memory: it is
/// the daemon's user's alone (QEMU runs as that user, or as root).
#[test]
fn the_vhost_user_socket_is_its_owners_alone() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test switches to another user and needs root (make test runs as root)"
    );
    let d = Daemon::start(&[]);
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the vhost-user socket's mode");
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let got = connect_as_nobody(&d.socket);
    assert!(got.contains("connect failed: Permission denied"), "{got}");
}

#[test]
fn the_control_socket_answers_only_its_users() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test switches to another user and needs root (make test runs as root)"
    );
    // Default: 0600, so another user cannot even connect.
    let d = Daemon::start(&[]);
    let mode = std::fs::metadata(&d.control).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the control socket's mode");
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let got = connect_as_nobody(&d.control);
    assert!(got.contains("connect failed: Permission denied"), "{got}");

    // A mode that lets everyone connect still answers only the daemon's
    // users: the peer's credentials are checked.
    let d = Daemon::start(&["--control-socket-mode", "0666"]);
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let got = connect_as_nobody(&d.control);
    let reply: serde_json::Value = serde_json::from_str(&got).unwrap_or_else(|e| panic!("{e}: {got}"));
    assert_eq!(reply["ok"], false, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("uid 65534"), "{reply}");
    assert!(
        d.log_text().contains("connection refused: uid 65534"),
        "{}",
        d.log_text()
    );

    // ... unless it is allowed.
    let d = Daemon::start(&["--control-socket-mode", "0666", "--control-allow-uid", "65534"]);
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let got = connect_as_nobody(&d.control);
    assert!(got.contains(r#""ok":true"#), "{got}");
    d.ctl().ok(json!({"op": "status"}));
}

#[test]
fn crash_and_file_sources_need_the_daemon_s_permission() {
    let files = tempfile::tempdir().unwrap();
    let inside = files.path().join("inside.bin");
    std::fs::write(&inside, data(4096, 1)).unwrap();
    let outside = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(outside.path(), b"secret").unwrap();

    let d = Daemon::start(&[]);
    let mut ctl = d.ctl();
    let r = ctl.req(json!({"op": "crash"}));
    assert!(
        r["error"].as_str().unwrap().contains("--control-allow-crash"),
        "{r}"
    );
    let src = format!("file:{}", inside.display());
    let r = ctl.req(json!({"op": "stream_start", "ep": "ep1in", "pattern": src}));
    assert!(r["error"].as_str().unwrap().contains("--control-file-dir"), "{r}");
    ctl.ok(json!({"op": "status"}));

    let d = Daemon::start(&["--control-file-dir", files.path().to_str().unwrap()]);
    let mut ctl = d.ctl();
    for sneaky in [
        format!("file:{}", outside.path().display()),
        // Both in the same temporary directory: `..` leads from one to the other.
        format!(
            "file:{}/../{}",
            files.path().display(),
            outside.path().file_name().unwrap().to_string_lossy()
        ),
    ] {
        let r = ctl.req(json!({"op": "stream_start", "ep": "ep1in", "pattern": sneaky}));
        assert!(r["error"].as_str().unwrap().contains("outside"), "{sneaky}: {r}");
    }
    std::os::unix::fs::symlink(outside.path(), files.path().join("link.bin")).unwrap();
    let link = format!("file:{}", files.path().join("link.bin").display());
    let r = ctl.req(json!({"op": "stream_start", "ep": "ep1in", "pattern": link}));
    assert!(
        r["error"].as_str().unwrap().contains("outside"),
        "a link out: {r}"
    );
    let r = ctl
        .req(json!({"op": "stream_start", "ep": "ep1in", "pattern": format!("file:{}", inside.display())}));
    assert_eq!(r["ok"], true, "a file inside the directory: {r}");
}

#[test]
fn socket_paths_that_are_files_or_in_use_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let precious = dir.path().join("udc.ctl");
    std::fs::write(&precious, b"precious").unwrap();
    let out = Command::new(daemon_binary())
        .arg("--socket-path")
        .arg(dir.path().join("udc.sock"))
        .arg("--control-socket")
        .arg(&precious)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exists and is not a socket; not removing it"),
        "{err}"
    );
    assert_eq!(std::fs::read(&precious).unwrap(), b"precious");

    // A second daemon on a live daemon's sockets stops and the first goes on.
    let first = Daemon::start(&[]);
    for (vhost, control) in [
        (first.socket.clone(), dir.path().join("other.ctl")),
        (dir.path().join("other.sock"), first.control.clone()),
    ] {
        let out = Command::new(daemon_binary())
            .arg("--socket-path")
            .arg(&vhost)
            .arg("--control-socket")
            .arg(&control)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is in use"), "{err}");
    }
    let (_h, _g) = first.configured();
    first.ctl().ok(json!({"op": "status"}));
}

#[test]
fn malformed_lines_are_answered_and_the_socket_goes_on() {
    let d = Daemon::start(&[]);
    let s = UnixStream::connect(&d.control).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut reply = String::new();

    w.write_all(b"{\"op\":\"st\xffatus\"}\n").unwrap();
    r.read_line(&mut reply).unwrap();
    assert!(reply.contains("not UTF-8"), "{reply}");
    reply.clear();
    w.write_all(b"{\"op\":\"status\"}\n").unwrap();
    r.read_line(&mut reply).unwrap();
    assert!(
        reply.contains(r#""ok":true"#),
        "the same connection goes on: {reply}"
    );

    // Longer than any request may be: answered, and that connection ends.
    let mut long = vec![b'x'; (32 << 20) + 16];
    long.push(b'\n');
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&long);
    });
    reply.clear();
    r.read_line(&mut reply).unwrap();
    assert!(reply.contains("request line longer than"), "{reply}");
    let _ = writer.join();
    d.ctl().ok(json!({"op": "status"}));
}

#[test]
fn five_hundred_clients_with_long_lines_cost_bounded_memory() {
    let d = Daemon::start(&[]);
    let pid = d.pid();
    let before = rss_kib(pid);
    // Each sends 1 MiB of a line that never ends, as far as the socket
    // buffer takes it, and keeps the connection open.
    let chunk = vec![b'y'; 1 << 20];
    let mut clients = Vec::new();
    for _ in 0..500 {
        let s = UnixStream::connect(&d.control).unwrap();
        s.set_nonblocking(true).unwrap();
        let mut sent = 0;
        while sent < chunk.len() {
            match (&s).write(&chunk[sent..]) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        clients.push(s);
    }
    std::thread::sleep(Duration::from_secs(2));
    let mut ctl = d.ctl();
    let start = Instant::now();
    ctl.ok(json!({"op": "status"}));
    let answered_in = start.elapsed();
    let after = rss_kib(pid);
    eprintln!(
        "500 clients with unfinished 1 MiB lines: daemon RSS {before} KiB -> {after} KiB; status answered in {answered_in:?}"
    );
    // Two long lines at a time (2 x 32 MiB) plus 64 KiB and a small stack
    // per client: far below what 500 unbounded buffers would take.
    assert!(
        after < before + 160 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
    assert!(
        answered_in < Duration::from_secs(5),
        "status took {answered_in:?}"
    );
    drop(clients);
}
