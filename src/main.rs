// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! vhost-device-udc: the vhost-user backend of virtio-udc.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use log::{error, info, warn};
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use vhost_device_udc::config::{parse_speed, FileConfig};
use vhost_device_udc::control::ControlServer;
use vhost_device_udc::device::ControllerConfig;
use vhost_device_udc::host::{Host, HostConfig};
use vhost_device_udc::inject::InjectConfig;
use vhost_device_udc::traffic::Traffic;
use vhost_device_udc::usb::Speed;
use vhost_device_udc::vhu_udc::{Udc, VhostUserUdcBackend};
use vhost_device_udc::zerocopy;

/// A virtual USB device controller for QEMU guests: this daemon is the USB
/// host, the cable and the controller's DMA engine. The guest's virtio_udc
/// driver registers a UDC; any gadget bound to it is enumerated here and its
/// endpoints carry real data to and from guest memory.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// vhost-user socket to listen on; QEMU connects to it with
    /// `-chardev socket,path=PATH -device vhost-user-udc-pci,chardev=...`.
    #[arg(long, value_name = "PATH")]
    socket_path: PathBuf,

    /// TOML file describing the controller, the host and traffic streams
    /// (see docs/configuration.md). Command-line options override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Unix socket for the control protocol (docs/control-socket.md): list
    /// the device, send control requests, run transfers and streams, read
    /// statistics, change the host's behaviour.
    #[arg(long, value_name = "PATH")]
    control_socket: Option<PathBuf>,

    /// Host port speed: full, high or super. The bus runs at the lower of
    /// this and --max-speed. Default: high.
    #[arg(long, value_name = "SPEED", value_parser = parse_speed)]
    speed: Option<Speed>,

    /// Fastest speed the controller advertises to the guest: full, high or
    /// super. Default: super.
    #[arg(long, value_name = "SPEED", value_parser = parse_speed)]
    max_speed: Option<Speed>,

    /// Advertise no scatter-gather (one segment per request). FunctionFS's
    /// DMABUF interface then refuses to attach with -EPERM.
    #[arg(long)]
    no_sg: bool,

    /// Do not enumerate when the gadget pulls up; wait for the control
    /// socket's "enumerate".
    #[arg(long)]
    no_auto_enumerate: bool,

    /// Serve one vhost-user connection and exit when it ends, instead of
    /// waiting for the frontend to reconnect.
    #[arg(long)]
    once: bool,

    /// Delay or fault injection, KEY=VALUE or EP.KEY=VALUE (repeatable; see
    /// docs/injection.md), e.g. `latency=100us..2ms`, `ep2out.stall=nth:3`,
    /// `bandwidth=high-speed`. Applied over the config file's [inject].
    #[arg(long, value_name = "KEY=VALUE")]
    inject: Vec<String>,

    /// Seed of the injection's random choices: the same seed, settings and
    /// guest requests give the same injected events.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,

    /// Log level: error, warn, info, debug, trace (RUST_LOG overrides).
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    log_level: log::LevelFilter,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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

fn run(cli: Cli) -> Result<(), String> {
    let mut ctrl = ControllerConfig::default();
    let mut host_cfg = HostConfig::default();
    let mut inject = InjectConfig::default();
    let mut streams = Vec::new();
    if let Some(path) = &cli.config {
        let f = FileConfig::load(path).map_err(|e| e.to_string())?;
        streams = f
            .apply(&path.display().to_string(), &mut ctrl, &mut host_cfg, &mut inject)
            .map_err(|e| e.to_string())?;
    }
    for a in &cli.inject {
        inject
            .apply_assignment(a)
            .map_err(|e| format!("--inject {a}: {e}"))?;
    }
    if let Some(s) = cli.seed {
        inject.seed = s;
    }
    ctrl.check_injection(&inject)
        .map_err(|e| format!("--inject: {e}"))?;
    if let Some(s) = cli.speed {
        host_cfg.speed = s;
    }
    if let Some(s) = cli.max_speed {
        ctrl.max_speed = s;
    }
    if cli.no_sg {
        ctrl.sg = false;
    }
    if cli.no_auto_enumerate {
        host_cfg.auto_enumerate = false;
    }

    // First, before any thread exists: the signal mask is inherited.
    spawn_signal_thread(vec![Some(cli.socket_path.clone()), cli.control_socket.clone()]);
    zerocopy::report_availability();

    let udc = Udc::new(ctrl.clone());
    udc.lock().set_injection(inject);
    {
        let udc = udc.clone();
        std::thread::Builder::new()
            .name("timers".into())
            .spawn(move || udc.run_timers())
            .map_err(|e| format!("cannot start the timer thread: {e}"))?;
    }
    let host = Host::new(udc.clone(), host_cfg.clone());
    let traffic = Traffic::new(host.clone());
    let _control = match &cli.control_socket {
        Some(p) => Some(
            ControlServer::start(p, host.clone(), traffic.clone())
                .map_err(|e| format!("cannot listen on control socket {}: {e}", p.display()))?,
        ),
        None => None,
    };
    host.spawn();
    if !streams.is_empty() {
        start_streams_when_configured(host.clone(), traffic.clone(), streams);
    }

    info!(
        "vhost-device-udc: controller up to {} with {} endpoints, scatter-gather {}; host at {}; listening on {}",
        ctrl.max_speed,
        ctrl.endpoints.len() + 1,
        if ctrl.sg { "on" } else { "off" },
        host_cfg.speed,
        cli.socket_path.display()
    );
    // One listening socket for the daemon's whole life: a frontend that
    // reconnects at once queues on it instead of racing a re-bind.
    let mut listener = Listener::new(&cli.socket_path, true)
        .map_err(|e| format!("cannot listen on {}: {e}", cli.socket_path.display()))?;
    loop {
        // One daemon per connection: a VhostUserDaemon never resets its
        // owner, so serving QEMU again after it reconnects needs a new one.
        let backend =
            VhostUserUdcBackend::new(udc.clone()).map_err(|e| format!("cannot create the backend: {e}"))?;
        let mut daemon = VhostUserDaemon::new(
            "vhost-device-udc".to_string(),
            backend.clone(),
            GuestMemoryAtomic::new(GuestMemoryMmap::new()),
        )
        .map_err(|e| format!("cannot create the vhost-user daemon: {e}"))?;
        daemon
            .start(&mut listener)
            .map_err(|e| format!("cannot accept a vhost-user connection: {e}"))?;
        let result = daemon.wait();
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
            let _ = std::fs::remove_file(&cli.socket_path);
            return Ok(());
        }
    }
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
