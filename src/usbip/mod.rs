// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! A USB/IP server (docs/usbip.md): exports the device the guest's gadget
//! presents, so an unmodified host stack (vhci_hcd, in the guest itself, in
//! a second VM or on a host) drives it as a USB device.
//!
//! - [`wire`]: the protocol's messages (pure);
//! - [`session`]: one imported device's URB stream;
//! - this module: the listening socket, OP_REQ_DEVLIST and OP_REQ_IMPORT,
//!   and handing the device between the built-in host and a client.
//!
//! One client at a time imports the device; while it does, the built-in
//! host stands aside (no enumeration, no control-socket transfers).

pub mod session;
pub mod wire;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::thread;

use log::{info, warn};

use crate::enumerate::Enumerated;
use crate::host::{Host, HostError};
use crate::socket_path::{claim_socket_path, SocketPathError};
use wire::{DeviceInfo, InterfaceInfo, OpHeader, BUSID_LEN, OP_HEADER_LEN};

/// The bus id the device is exported as (one device on one bus).
pub const BUSID: &str = "1-1";
/// The bus number in the device record; with the address it makes the
/// devid of every command (`busnum << 16 | devnum`).
pub const BUSNUM: u32 = 1;

/// Where the server listens: `--usbip-listen`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// A Unix stream socket (`unix:PATH`, or any value with a `/`).
    Unix(PathBuf),
    /// A TCP port on a loopback address (`127.0.0.1:3240`, `[::1]:3240`,
    /// `localhost:3240`, or a bare port on 127.0.0.1).
    Tcp(SocketAddr),
}

/// Why `--usbip-listen` is not an address the server takes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListenAddrError {
    #[error("{0:?} is not unix:PATH, a path, HOST:PORT or PORT")]
    Syntax(String),
    #[error("{0} is not a loopback address: USB/IP has no authentication, and the exported device is the gadget's memory; listen on 127.0.0.1 or ::1 (or a Unix socket) and forward it if you must")]
    NotLoopback(SocketAddr),
}

impl FromStr for ListenAddr {
    type Err = ListenAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(ListenAddrError::Syntax(s.into()));
            }
            return Ok(ListenAddr::Unix(p.into()));
        }
        if s.contains('/') {
            return Ok(ListenAddr::Unix(s.into()));
        }
        if let Ok(port) = s.parse::<u16>() {
            return Ok(ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], port))));
        }
        let addrs: Vec<SocketAddr> = s
            .to_socket_addrs()
            .map_err(|_| ListenAddrError::Syntax(s.into()))?
            .collect();
        let first = *addrs.first().ok_or_else(|| ListenAddrError::Syntax(s.into()))?;
        match addrs.iter().find(|a| a.ip().is_loopback()) {
            Some(a) => Ok(ListenAddr::Tcp(*a)),
            None => Err(ListenAddrError::NotLoopback(first)),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: ListenAddr, source: io::Error },
    #[error(transparent)]
    SocketPath(#[from] SocketPathError),
    #[error("cannot start its thread: {0}")]
    Thread(io::Error),
}

/// A connected client's byte stream, TCP or Unix.
pub trait Stream: Read + Write + Send {
    fn try_clone_box(&self) -> io::Result<Box<dyn Stream>>;
    /// Ends the connection both ways (wakes a blocked reader).
    fn shutdown(&self);
}

impl Stream for TcpStream {
    fn try_clone_box(&self) -> io::Result<Box<dyn Stream>> {
        Ok(Box::new(self.try_clone()?))
    }

    fn shutdown(&self) {
        let _ = TcpStream::shutdown(self, std::net::Shutdown::Both);
    }
}

impl Stream for UnixStream {
    fn try_clone_box(&self) -> io::Result<Box<dyn Stream>> {
        Ok(Box::new(self.try_clone()?))
    }

    fn shutdown(&self) {
        let _ = UnixStream::shutdown(self, std::net::Shutdown::Both);
    }
}

/// Waits for the next client: its stream and a name for log lines.
type Accept = dyn FnMut() -> io::Result<(Box<dyn Stream>, String)> + Send;

/// The running server; a Unix socket's path is removed when it is dropped.
pub struct UsbipServer {
    addr: ListenAddr,
}

impl UsbipServer {
    pub fn start(addr: &ListenAddr, host: Arc<Host>) -> Result<UsbipServer, StartError> {
        let bind_err = |source| StartError::Bind {
            addr: addr.clone(),
            source,
        };
        let accept: Box<Accept> = match addr {
            ListenAddr::Unix(p) => {
                claim_socket_path(p)?;
                let l = UnixListener::bind(p).map_err(bind_err)?;
                let mut n = 0u64;
                Box::new(move || {
                    let (s, _) = l.accept()?;
                    n += 1;
                    Ok((Box::new(s) as Box<dyn Stream>, format!("unix client {n}")))
                })
            }
            ListenAddr::Tcp(a) => {
                let l = TcpListener::bind(a).map_err(bind_err)?;
                Box::new(move || {
                    let (s, peer) = l.accept()?;
                    // Commands and results are small and latency-bound.
                    let _ = s.set_nodelay(true);
                    Ok((Box::new(s) as Box<dyn Stream>, peer.to_string()))
                })
            }
        };
        let mut accept = accept;
        thread::Builder::new()
            .name("usbip".into())
            .spawn(move || loop {
                match accept() {
                    Ok((stream, peer)) => {
                        let host = host.clone();
                        let spawned = thread::Builder::new()
                            .name("usbip-client".into())
                            .spawn(move || serve(&host, stream, &peer));
                        if let Err(e) = spawned {
                            warn!("usbip: cannot start a client thread: {e}");
                        }
                    }
                    Err(e) => {
                        warn!("usbip: accept failed: {e}");
                        thread::sleep(std::time::Duration::from_millis(100));
                    }
                }
            })
            .map_err(StartError::Thread)?;
        info!("usbip: listening on {addr} (bus id {BUSID})");
        Ok(UsbipServer { addr: addr.clone() })
    }

    pub fn addr(&self) -> &ListenAddr {
        &self.addr
    }
}

impl Drop for UsbipServer {
    fn drop(&mut self) {
        if let ListenAddr::Unix(p) = &self.addr {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// One connection: an OP_* request, and after a successful import the
/// session until it ends.
fn serve(host: &Arc<Host>, mut stream: Box<dyn Stream>, peer: &str) {
    let mut h = [0u8; OP_HEADER_LEN];
    if let Err(e) = stream.read_exact(&mut h) {
        info!("usbip {peer}: closed before a request ({e})");
        return;
    }
    let op = match OpHeader::parse(&h) {
        Ok(op) => op,
        Err(e) => {
            warn!("usbip {peer}: {e}; closing the connection");
            return;
        }
    };
    let r = match op.code {
        wire::OP_REQ_DEVLIST => devlist(host, &mut *stream),
        _ => import(host, stream, peer),
    };
    if let Err(e) = r {
        info!("usbip {peer}: connection ended: {e}");
    }
}

fn devlist(host: &Host, stream: &mut dyn Stream) -> io::Result<()> {
    let mut reply = OpHeader::reply(wire::OP_REP_DEVLIST, wire::ST_OK).to_vec();
    match exported_device(host) {
        Some(d) => {
            reply.extend_from_slice(&1u32.to_be_bytes());
            reply.extend_from_slice(&d.encode_with_interfaces());
        }
        None => reply.extend_from_slice(&0u32.to_be_bytes()),
    }
    stream.write_all(&reply)
}

fn import(host: &Arc<Host>, mut stream: Box<dyn Stream>, peer: &str) -> io::Result<()> {
    let mut b = [0u8; BUSID_LEN];
    stream.read_exact(&mut b)?;
    let refuse =
        |stream: &mut Box<dyn Stream>, st: u32| stream.write_all(&OpHeader::reply(wire::OP_REP_IMPORT, st));
    let busid = match wire::parse_busid(&b) {
        Ok(id) => id,
        Err(e) => {
            warn!("usbip {peer}: OP_REQ_IMPORT: {e}");
            return refuse(&mut stream, wire::ST_NA);
        }
    };
    if busid != BUSID {
        warn!("usbip {peer}: OP_REQ_IMPORT of bus id {busid:?}: this server exports {BUSID}");
        return refuse(&mut stream, wire::ST_NA);
    }
    if exported_device(host).is_none() {
        warn!("usbip {peer}: OP_REQ_IMPORT: no device (the gadget has not pulled up, or did not enumerate)");
        return refuse(&mut stream, wire::ST_NA);
    }
    let who = format!("USB/IP client {peer}");
    let speed = match host.hand_over(&who) {
        Ok(speed) => speed,
        Err(HostError::InUse(o)) => {
            warn!("usbip {peer}: OP_REQ_IMPORT: the device is in use by {o}");
            return refuse(&mut stream, wire::ST_DEV_BUSY);
        }
        Err(e) => {
            warn!("usbip {peer}: OP_REQ_IMPORT: {e}");
            return refuse(&mut stream, wire::ST_DEV_ERR);
        }
    };
    // Read after the hand-over, which waited for an enumeration under way:
    // the device as it is now, not as an earlier gadget was.
    let Some(mut info) = host.view().enumerated.as_ref().map(device_info) else {
        warn!("usbip {peer}: OP_REQ_IMPORT: the device was never enumerated");
        host.take_back();
        return refuse(&mut stream, wire::ST_DEV_ERR);
    };
    info.speed = speed;
    info.devnum = u32::from(host.config().address);
    info.configuration_value = 0;
    let mut reply = OpHeader::reply(wire::OP_REP_IMPORT, wire::ST_OK).to_vec();
    reply.extend_from_slice(&info.encode_device());
    let result = stream
        .write_all(&reply)
        .and_then(|_| session::run(host.clone(), stream, who.clone()));
    match &result {
        Ok(c) => info!(
            "usbip {peer}: session over: {} transfers, {} unlinks, {} refused",
            c.submitted, c.unlinked, c.refused
        ),
        Err(e) => info!("usbip {peer}: session over: {e}"),
    }
    host.take_back();
    result.map(|_| ())
}

/// The device as a client sees it before importing it: what the built-in
/// host read when it enumerated (enumerating now if it has not, and no
/// client holds the device). None without a gadget.
fn exported_device(host: &Host) -> Option<DeviceInfo> {
    let view = host.view();
    let e = match view.enumerated {
        Some(e) => e,
        None if view.owner.is_none() && host.udc().lock().pullup() => match host.enumerated_or_enumerate() {
            Ok(e) => e,
            Err(err) => {
                warn!("usbip: the device did not enumerate, so it is not exported: {err}");
                return None;
            }
        },
        None => return None,
    };
    if !host.udc().lock().pullup() {
        return None;
    }
    Some(device_info(&e))
}

/// The device record of an enumerated device.
pub fn device_info(e: &Enumerated) -> DeviceInfo {
    let config = e
        .configurations
        .iter()
        .find(|c| c.value == e.active_configuration)
        .or_else(|| e.configurations.first());
    let interfaces = config
        .map(|c| {
            c.interfaces
                .iter()
                .filter(|i| i.alternate == 0)
                .map(|i| InterfaceInfo {
                    class: i.class,
                    subclass: i.subclass,
                    protocol: i.protocol,
                })
                .collect()
        })
        .unwrap_or_default();
    DeviceInfo {
        path: format!("/sys/devices/virtio-udc/usb{BUSNUM}/{BUSID}"),
        busid: BUSID.into(),
        busnum: BUSNUM,
        devnum: u32::from(e.address),
        speed: e.speed,
        id_vendor: e.device.id_vendor,
        id_product: e.device.id_product,
        bcd_device: e.device.bcd_device,
        device_class: e.device.device_class,
        device_subclass: e.device.device_subclass,
        device_protocol: e.device.device_protocol,
        configuration_value: e.active_configuration,
        num_configurations: e.device.num_configurations,
        interfaces,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_and_only_loopback_is_taken() {
        assert_eq!(
            "unix:/run/u.sock".parse(),
            Ok(ListenAddr::Unix("/run/u.sock".into()))
        );
        assert_eq!("./u.sock".parse(), Ok(ListenAddr::Unix("./u.sock".into())));
        assert_eq!(
            "3240".parse(),
            Ok(ListenAddr::Tcp("127.0.0.1:3240".parse().unwrap()))
        );
        assert_eq!(
            "127.0.0.1:0".parse(),
            Ok(ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()))
        );
        assert_eq!(
            "[::1]:3240".parse(),
            Ok(ListenAddr::Tcp("[::1]:3240".parse().unwrap()))
        );
        let e = "0.0.0.0:3240".parse::<ListenAddr>().unwrap_err();
        assert!(e.to_string().contains("not a loopback address"), "{e}");
        assert!(matches!(
            "unix:".parse::<ListenAddr>(),
            Err(ListenAddrError::Syntax(_))
        ));
        assert!(matches!(
            "no port".parse::<ListenAddr>(),
            Err(ListenAddrError::Syntax(_))
        ));
    }
}
