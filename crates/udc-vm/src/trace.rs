// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Kernel trace events for a run (`--trace EVENTS`): the guest's init
//! turns them on in tracefs before anything runs and streams
//! `trace_pipe` to a virtio serial port, which QEMU writes to
//! `OUT/trace.txt` as it comes, so the events before a hang or a panic
//! are on the host too. The driver's own events are `virtio_udc:*`
//! (request queued, dequeued, given back; controller events); the gadget
//! core's are `gadget:*`.

use std::path::Path;

/// The virtio serial port the guest streams the events to.
pub const PORT: &str = "udc-trace";

/// What the guest's init prints for an event tracefs does not know.
pub const ENABLE_FAILED: &str = "udc-init: FAILED to enable trace event";

/// `--trace`'s arguments (each a comma-separated list) as tracefs's
/// `set_event` takes them: `SYSTEM:EVENT`, `SYSTEM:PATTERN*`, or a bare
/// `SYSTEM` for all of its events. Order kept, repeats dropped.
pub fn events(args: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for tok in args.iter().flat_map(|a| a.split(',')).map(str::trim) {
        if tok.is_empty() {
            continue;
        }
        let (system, event) = tok.split_once(':').unwrap_or((tok, "*"));
        let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let pattern = |s: &str| word(s.trim_end_matches('*')) || s == "*";
        if !word(system) || !pattern(event) {
            return Err(format!(
                "--trace {tok}: an event is SYSTEM, SYSTEM:EVENT or SYSTEM:PREFIX* as \
                 /sys/kernel/tracing/available_events lists them (e.g. virtio_udc, \
                 gadget:usb_gadget_giveback_request)"
            ));
        }
        let ev = format!("{system}:{event}");
        if !out.contains(&ev) {
            out.push(ev);
        }
    }
    Ok(out)
}

/// The kernel command line words that ask the guest's init for `events`:
/// `udc.trace=` for init, and the kernel's own dump of the trace buffer to
/// the console on an oops (what `trace_pipe` had not streamed yet).
pub fn cmdline(events: &[String]) -> String {
    format!("udc.trace={} ftrace_dump_on_oops", events.join(","))
}

/// QEMU's arguments for the port the events go out on, into `file`.
pub fn qemu_args(file: &Path) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!("file,id=trace,path={}", file.display()),
        "-device".into(),
        format!("virtserialport,chardev=trace,name={PORT}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(args: &[&str]) -> Result<Vec<String>, String> {
        events(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn a_bare_system_means_all_of_its_events() {
        assert_eq!(
            ev(&["virtio_udc,gadget:usb_gadget_giveback_request", "gadget:usb_ep_*"]).unwrap(),
            [
                "virtio_udc:*",
                "gadget:usb_gadget_giveback_request",
                "gadget:usb_ep_*"
            ]
        );
        assert_eq!(ev(&["virtio_udc", "virtio_udc:*", ""]).unwrap(), ["virtio_udc:*"]);
    }

    #[test]
    fn what_tracefs_would_not_take_is_refused_with_the_form() {
        for bad in ["a b", "gadget:", ":x", "x:y:z", "../x", "x;reboot", "a*b:c"] {
            let e = ev(&[bad]).unwrap_err();
            assert!(e.contains("SYSTEM:EVENT"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_guest_is_asked_on_its_command_line() {
        let e = ev(&["virtio_udc,gadget:usb_ep_queue"]).unwrap();
        assert_eq!(
            cmdline(&e),
            "udc.trace=virtio_udc:*,gadget:usb_ep_queue ftrace_dump_on_oops"
        );
        assert_eq!(
            qemu_args(Path::new("/out/trace.txt")).join(" "),
            "-chardev file,id=trace,path=/out/trace.txt -device virtserialport,chardev=trace,name=udc-trace"
        );
    }
}
