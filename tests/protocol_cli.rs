// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Protocol tier: the daemon's vhost-user program conventions
//! (vhost-user.rst): `--print-capabilities`, a listening socket passed as
//! `--socket-fd`, `-s`.

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use udc_harness::{FakeGadget, Harness, HarnessOptions};

#[test]
fn capabilities_are_json_with_the_device_type() {
    // Every other option is ignored, even a bad one's value.
    let out = Command::new(daemon_binary())
        .args(["--print-capabilities", "--max-speed", "warp"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["type"], "udc");
    assert!(v["features"].is_array(), "{v}");
}

/// A supervisor binds and listens, then passes the socket: the daemon
/// serves a frontend on it, and a descriptor that is not a listening Unix
/// socket is refused with what it is.
#[test]
fn a_passed_listening_socket_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("udc.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let fd = listener.as_raw_fd();
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut cmd = Command::new(daemon_binary());
    cmd.args(["--socket-fd", &fd.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SAFETY: between fork and exec only async-signal-safe fcntl runs: the
    // child keeps the socket open across exec, as a supervisor passes it.
    unsafe {
        cmd.pre_exec(move || {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(listener);
    let mut h =
        Harness::connect(&path, HarnessOptions::default()).expect("the daemon serves the passed socket");
    let mut g = FakeGadget::new();
    g.connect_and_configure(&mut h, T)
        .expect("enumeration over the passed socket");
    drop(h);
    let _ = child.kill();
    let _ = child.wait();

    let out = Command::new(daemon_binary())
        .args(["--socket-fd", "0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--socket-fd: file descriptor 0 is not a socket"),
        "{err}"
    );
}

#[test]
fn s_is_short_for_socket_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("udc.sock");
    let mut child = Command::new(daemon_binary())
        .arg("-s")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + T;
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never listened on -s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(Harness::connect(&path, HarnessOptions::default()).is_ok());
    let _ = child.kill();
    let _ = child.wait();
}

/// `vhost-device-udc ctl lsusb [-v]` shows the enumerated device as lsusb
/// does, with usb.ids' names; `ctl` against no daemon says so and fails.
#[test]
fn ctl_lsusb_shows_the_device_the_host_saw() {
    let d = Daemon::start(&["--speed", "super"]);
    let (_h, _g) = d.configured();
    let ctl = |args: &[&str]| {
        Command::new(daemon_binary())
            .arg("ctl")
            .arg("-c")
            .arg(&d.control)
            .args(args)
            .output()
            .unwrap()
    };
    let out = ctl(&["lsusb"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        std::path::Path::new("/usr/share/misc/usb.ids").exists(),
        "usb.ids is missing: scripts/setup-host.sh installs it (apt-get install usb.ids)"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("Bus 001 Device 001: ID 1d6b:0104 Linux Foundation"),
        "{text}"
    );

    let out = ctl(&["lsusb", "-v"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "idVendor",
        "  idVendor           0x1d6b Linux Foundation",
        "bcdUSB",
        "Configuration Descriptor:",
        "Interface Descriptor:",
        "bEndpointAddress     0x81 EP 1 IN",
        "bEndpointAddress     0x02 EP 2 OUT",
        "Transfer Type            Bulk",
        "1x 1024 bytes",
    ] {
        assert!(text.contains(want), "lsusb -v lacks {want:?}:\n{text}");
    }

    let out = ctl(&["raw", r#"{"op":"bus","action":"warp"}"#]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("warp"), "{out:?}");

    let out = Command::new(daemon_binary())
        .args(["ctl", "-c", "/nonexistent/udc.ctl", "status"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot connect to /nonexistent/udc.ctl"),
        "{out:?}"
    );
}
