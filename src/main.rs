// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! vhost-device-udc: the vhost-user backend of virtio-udc.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use log::{error, info, warn};
use nix::sys::stat::{umask, Mode};
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use vhost_device_udc::cli::{capabilities, Cli, Command, CtlRequest};
use vhost_device_udc::config::{ConfigError, DaemonConfig};
use vhost_device_udc::control::client;
use vhost_device_udc::control::{AccessError, ControlPolicy, ControlServer, StartError};
use vhost_device_udc::host::Host;
use vhost_device_udc::iommu::relay::{PrivateSocket, Relay};
use vhost_device_udc::iommu::DeviceIommu;
use vhost_device_udc::socket_path::{claim_socket_path, listener_from_fd, SocketFdError, SocketPathError};
use vhost_device_udc::traffic::Traffic;
use vhost_device_udc::udc::Udc;
use vhost_device_udc::usbip::UsbipServer;
use vhost_device_udc::vhu_udc::{VhostUserUdcBackend, VringRings};
use vhost_device_udc::zerocopy;

/// Why the daemon stops with a failure.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start the timer thread: {0}")]
    TimerThread(std::io::Error),
    #[error("cannot start the copy helper thread: {0}")]
    CopyThread(std::io::Error),
    #[error("control socket options: {0}")]
    ControlOptions(AccessError),
    #[error("cannot listen on control socket {}: {source}", .path.display())]
    ControlSocket { path: PathBuf, source: StartError },
    #[error("cannot listen on {}: {source}", .path.display())]
    SocketPath { path: PathBuf, source: SocketPathError },
    #[error("--pcap: {0}")]
    Capture(vhost_device_udc::host::HostError),
    #[error("--socket-fd: {0}")]
    SocketFd(SocketFdError),
    #[error("cannot listen on {}: {source}", .path.display())]
    Listen {
        path: PathBuf,
        source: vhost::vhost_user::Error,
    },
    #[error("cannot create the backend: {0}")]
    Backend(std::io::Error),
    #[error("cannot create the vhost-user daemon: {0}")]
    Daemon(vhost_user_backend::Error),
    #[error("cannot accept a vhost-user connection: {0}")]
    Accept(vhost_user_backend::Error),
    #[error("cannot accept a vhost-user connection: {0}")]
    AcceptFrontend(vhost::vhost_user::Error),
    #[error("cannot start the vhost-user relay: {0}")]
    Relay(std::io::Error),
    #[error("--usbip-listen: {0}")]
    Usbip(vhost_device_udc::usbip::StartError),
}

fn main() -> ExitCode {
    // Before parsing: vhost-user.rst has every other option ignored, so a
    // management tool's probe never fails on them.
    if std::env::args_os().skip(1).any(|a| a == "--print-capabilities") {
        println!("{}", capabilities());
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse();
    if let Some(Command::Ctl {
        control_socket,
        request,
    }) = &cli.command
    {
        return ctl(control_socket, request);
    }
    env_logger::Builder::new()
        .filter_level(cli.log_level)
        .parse_default_env()
        .format_timestamp_micros()
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("vhost-device-udc: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let DaemonConfig {
        controller: ctrl,
        host: host_cfg,
        inject,
        streams,
    } = DaemonConfig::try_from(cli.config)?;
    let control_policy = ControlPolicy::try_from(cli.control).map_err(Error::ControlOptions)?;

    // First, before any thread exists: the signal mask is inherited.
    let usbip_path = match &cli.usbip_listen {
        Some(vhost_device_udc::usbip::ListenAddr::Unix(p)) => Some(p.clone()),
        _ => None,
    };
    spawn_signal_thread(vec![
        cli.socket_path.clone(),
        cli.control_socket.clone(),
        usbip_path,
    ]);
    zerocopy::report_availability();

    let udc = Udc::new(ctrl.clone(), Box::<VringRings>::default());
    udc.lock().set_injection(inject);
    {
        let udc = udc.clone();
        std::thread::Builder::new()
            .name("timers".into())
            .spawn(move || udc.run_timers())
            .map_err(Error::TimerThread)?;
    }
    {
        let udc = udc.clone();
        std::thread::Builder::new()
            .name("copies".into())
            .spawn(move || udc.run_copy_helper())
            .map_err(Error::CopyThread)?;
    }
    let host = Host::new(udc.clone(), host_cfg.clone());
    if let Some(p) = &cli.pcap {
        host.start_capture(p, cli.pcap_snaplen).map_err(Error::Capture)?;
    }
    let traffic = Traffic::new(host.clone());
    let _control = match &cli.control_socket {
        Some(p) => Some(
            ControlServer::start(p, control_policy, host.clone(), traffic.clone()).map_err(|source| {
                Error::ControlSocket {
                    path: p.clone(),
                    source,
                }
            })?,
        ),
        None => None,
    };
    let _usbip = match &cli.usbip_listen {
        Some(a) => Some(UsbipServer::start(a, host.clone()).map_err(Error::Usbip)?),
        None => None,
    };
    host.spawn();
    if !streams.is_empty() {
        start_streams_when_configured(host.clone(), traffic.clone(), streams);
    }

    let listener = listen(cli.socket_path.as_deref(), cli.socket_fd)?;
    info!(
        "vhost-device-udc: controller up to {} with {} endpoints, scatter-gather {}; host at {}; listening on {}",
        ctrl.max_speed,
        ctrl.endpoints.len() + 1,
        if ctrl.sg { "on" } else { "off" },
        host_cfg.speed,
        cli.socket_path
            .as_ref()
            .map_or_else(|| format!("file descriptor {}", cli.socket_fd.unwrap_or(-1)), |p| p.display().to_string())
    );
    loop {
        // One daemon per connection: a VhostUserDaemon never resets its
        // owner, so serving QEMU again after it reconnects needs a new one.
        let iommu = DeviceIommu::new(std::time::Duration::from_millis(cli.iotlb_miss_timeout));
        let backend = VhostUserUdcBackend::with_iommu(udc.clone(), iommu.clone())
            .map_err(Error::Backend)?
            .with_poll(std::time::Duration::from_micros(cli.poll_us));
        let mut daemon = VhostUserDaemon::new(
            "vhost-device-udc".to_string(),
            backend.clone(),
            GuestMemoryAtomic::new(GuestMemoryMmap::new()),
        )
        .map_err(Error::Daemon)?;
        // The front end talks to the relay, the relay to the request
        // handler over a private socket (docs/iommu.md: the crates do not
        // carry the IOTLB protocol yet).
        let frontend = accept(&listener)?;
        let private = PrivateSocket::new().map_err(Error::Relay)?;
        let to_handler = private.connect().map_err(Error::Relay)?;
        let relay =
            Relay::start(frontend, to_handler, iommu, Arc::new(backend.clone())).map_err(Error::Relay)?;
        let mut inner = Listener::from(private.listener.try_clone().map_err(Error::Relay)?);
        daemon.start(&mut inner).map_err(Error::Accept)?;
        drop(inner);
        drop(private);
        let result = daemon.wait();
        relay.join();
        // The vring worker threads end with the connection.
        backend.notify_exit();
        // Whatever the guest had queued is gone with the connection.
        traffic.stop_all();
        udc.end_connection();
        match result {
            Ok(()) => info!("frontend disconnected"),
            Err(e) => warn!("vhost-user connection ended: {e}"),
        }
        if cli.once {
            if let Some(p) = &cli.socket_path {
                let _ = std::fs::remove_file(p);
            }
            return Ok(());
        }
    }
}

/// The next front end on the public socket.
fn accept(listener: &Listener) -> Result<std::os::unix::net::UnixStream, Error> {
    loop {
        if let Some(s) = listener.accept().map_err(Error::AcceptFrontend)? {
            return Ok(s);
        }
    }
}

/// `vhost-device-udc ctl`: one request to a running daemon, its answer on
/// stdout (an lsusb text as text, anything else as JSON); a failed request
/// exits 1 with the daemon's reason.
fn ctl(path: &Path, request: &CtlRequest) -> ExitCode {
    let req = match request {
        CtlRequest::Lsusb { verbose } => serde_json::json!({"op": "lsusb", "verbose": verbose}),
        CtlRequest::Status => serde_json::json!({"op": "status"}),
        CtlRequest::Raw { request } => match serde_json::from_str(request) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("vhost-device-udc ctl: the request is not JSON: {e}");
                return ExitCode::from(2);
            }
        },
    };
    match client::request(path, &req) {
        Ok(answer) if answer["ok"] == false => {
            eprintln!(
                "vhost-device-udc ctl: {}",
                answer["error"].as_str().unwrap_or("failed")
            );
            ExitCode::FAILURE
        }
        Ok(answer) => {
            match answer["text"].as_str() {
                Some(text) if matches!(request, CtlRequest::Lsusb { .. }) => print!("{text}"),
                _ => println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default()),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vhost-device-udc ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The vhost-user listening socket: one for the daemon's whole life, so a
/// frontend that reconnects at once queues on it instead of racing a
/// re-bind. A path replaces only a stale socket, never another daemon's or
/// a file; a passed descriptor must be a listening Unix stream socket.
fn listen(socket_path: Option<&Path>, socket_fd: Option<i32>) -> Result<Listener, Error> {
    if let Some(fd) = socket_fd {
        return listener_from_fd(fd).map(Listener::from).map_err(Error::SocketFd);
    }
    let path = socket_path
        .expect("clap requires --socket-path without --socket-fd")
        .to_path_buf();
    claim_socket_path(&path).map_err(|source| Error::SocketPath {
        path: path.clone(),
        source,
    })?;
    // Mode 0600, never wider even for a moment (bound under a umask that
    // allows only the owner): whoever connects is the frontend, and the
    // frontend hands over the guest's memory. QEMU runs as the daemon's
    // user (or root). No other thread creates files at this point.
    let old_umask = umask(Mode::from_bits_truncate(0o177));
    let listener = Listener::new(&path, false);
    umask(old_umask);
    listener.map_err(|source| Error::Listen { path, source })
}

/// Starts the configured streams once the gadget is configured, and again
/// after every re-enumeration.
fn start_streams_when_configured(
    host: Arc<Host>,
    traffic: Arc<Traffic>,
    streams: Vec<vhost_device_udc::traffic::StreamSpec>,
) {
    std::thread::Builder::new()
        .name("stream-starter".into())
        .spawn(move || {
            let mut session = u64::MAX;
            loop {
                if host.wait_configured(std::time::Duration::from_millis(500)) {
                    let s = host.udc().lock().session();
                    if s != session {
                        session = s;
                        traffic.stop_all();
                        for spec in &streams {
                            if let Err(e) = traffic.start(spec.clone()) {
                                warn!("stream on {:#04x}: {e}", spec.ep);
                            }
                        }
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        })
        .expect("spawning the stream starter");
}

/// SIGINT and SIGTERM end the daemon cleanly: sockets removed, exit 0.
fn spawn_signal_thread(paths: Vec<Option<PathBuf>>) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    // Blocked here, before other threads start, so every thread inherits the
    // mask and only this one receives them.
    if let Err(e) = set.thread_block() {
        warn!("cannot block signals: {e}");
        return;
    }
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = set.wait() {
                info!("{sig:?}: shutting down");
                for p in paths.iter().flatten() {
                    let _ = std::fs::remove_file(p);
                }
                std::process::exit(0);
            }
        })
        .expect("spawning the signal thread");
}
