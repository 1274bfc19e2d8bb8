//! The test gadget: one configfs gadget with one FunctionFS function (a
//! vendor-specific interface with a bulk IN and a bulk OUT endpoint),
//! set up with the `usb-gadget` crate. A thread services ep0 events for as
//! long as the gadget lives (FunctionFS needs ep0 read, or the host's
//! control requests to the interface would time out).

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use usb_gadget::function::custom::{
    Custom, Endpoint, EndpointDirection, EndpointReceiver, EndpointSender, Event, Interface,
};
use usb_gadget::{Class, Config, Gadget, Id, RegGadget, Strings, Udc};

use crate::Error;

pub const VENDOR: u16 = 0x1d6b;
pub const PRODUCT: u16 = 0x0104;
pub const MANUFACTURER: &str = "virtio-udc";
pub const PRODUCT_NAME: &str = "udc-gadget test function";
pub const SERIAL: &str = "0001";
pub const INTERFACE_NAME: &str = "udc-gadget bulk pair";

/// FunctionFS events seen by the ep0 thread, for cases that check them.
#[derive(Default, Debug)]
pub struct Ep0Log {
    pub events: Vec<String>,
}

/// A bound gadget. Dropping it unbinds and removes it.
pub struct TestGadget {
    pub reg: Option<RegGadget>,
    pub udc: Udc,
    pub tx: EndpointSender,
    pub rx: EndpointReceiver,
    pub ffs_dir: PathBuf,
    pub ep0_log: Arc<Mutex<Ep0Log>>,
    stop: Arc<AtomicBool>,
    ep0_thread: Option<JoinHandle<()>>,
}

/// The UDC to use: `name`, or the only one there is.
pub fn find_udc(name: Option<&str>) -> Result<Udc, Error> {
    let udcs = usb_gadget::udcs().map_err(|e| Error::Setup(format!("listing /sys/class/udc: {e}")))?;
    match name {
        Some(n) => udcs
            .into_iter()
            .find(|u| u.name() == n)
            .ok_or_else(|| Error::Setup(format!("no UDC named {n} in /sys/class/udc"))),
        None => udcs.into_iter().next().ok_or_else(|| {
            Error::Setup("no UDC in /sys/class/udc: is virtio_udc loaded and bound to the device?".into())
        }),
    }
}

impl TestGadget {
    /// Registers the gadget and binds it to `udc`.
    pub fn bind(udc: Udc) -> Result<TestGadget, Error> {
        // A gadget left by an earlier run would hold the UDC.
        let _ = usb_gadget::remove_all();
        let (tx, in_dir) = EndpointDirection::device_to_host();
        let (rx, out_dir) = EndpointDirection::host_to_device();
        let (custom, handle) = Custom::builder()
            .with_interface(
                Interface::new(Class::vendor_specific(0, 0), INTERFACE_NAME)
                    .with_endpoint(Endpoint::bulk(in_dir))
                    .with_endpoint(Endpoint::bulk(out_dir)),
            )
            .build();
        let reg = Gadget::new(
            Class::INTERFACE_SPECIFIC,
            Id::new(VENDOR, PRODUCT),
            Strings::new(MANUFACTURER, PRODUCT_NAME, SERIAL),
        )
        .with_config(Config::new("udc-gadget").with_function(handle))
        .bind(&udc)
        .map_err(|e| Error::Setup(format!("binding the gadget to UDC {:?}: {e}", udc.name())))?;
        let mut g = TestGadget {
            reg: Some(reg),
            udc,
            tx,
            rx,
            ffs_dir: PathBuf::new(),
            ep0_log: Arc::default(),
            stop: Arc::default(),
            ep0_thread: None,
        };
        g.start_ep0(custom)?;
        Ok(g)
    }

    fn start_ep0(&mut self, mut custom: Custom) -> Result<(), Error> {
        self.ffs_dir = custom
            .ffs_dir()
            .map_err(|e| Error::Setup(format!("FunctionFS directory: {e}")))?;
        let stop = self.stop.clone();
        let log = self.ep0_log.clone();
        self.ep0_thread = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match custom.event_timeout(Duration::from_millis(100)) {
                    Ok(Some(ev)) => {
                        let name = match &ev {
                            Event::Bind => "bind",
                            Event::Unbind => "unbind",
                            Event::Enable => "enable",
                            Event::Disable => "disable",
                            Event::Suspend => "suspend",
                            Event::Resume => "resume",
                            Event::SetupHostToDevice(_) => "setup-out",
                            Event::SetupDeviceToHost(_) => "setup-in",
                            _ => "unknown",
                        };
                        log.lock().unwrap().events.push(name.to_string());
                        // Class and vendor requests are not part of this
                        // function: dropping the setup event stalls them.
                        drop(ev);
                    }
                    Ok(None) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }));
        Ok(())
    }

    /// Path of FunctionFS endpoint file `n` (1: bulk IN, 2: bulk OUT).
    pub fn ep_path(&self, n: u32) -> PathBuf {
        self.ffs_dir.join(format!("ep{n}"))
    }

    /// Opens an endpoint file for plain read()/write().
    pub fn open_ep(&self, n: u32) -> Result<File, Error> {
        File::options()
            .read(true)
            .write(true)
            .open(self.ep_path(n))
            .map_err(|e| Error::Setup(format!("{}: {e}", self.ep_path(n).display())))
    }

    /// Unbinds from the UDC and binds again.
    pub fn unbind(&mut self) -> Result<(), Error> {
        self.reg
            .as_ref()
            .expect("registered")
            .bind(None)
            .map_err(|e| Error::Setup(format!("unbinding: {e}")))
    }

    pub fn rebind(&mut self) -> Result<(), Error> {
        self.reg
            .as_ref()
            .expect("registered")
            .bind(Some(&self.udc))
            .map_err(|e| Error::Setup(format!("binding again: {e}")))
    }

    /// Whether configfs still has the gadget bound to a UDC.
    pub fn bound_udc(&self) -> Option<String> {
        self.reg
            .as_ref()
            .and_then(|r| r.udc().ok().flatten())
            .map(|s| s.to_string_lossy().into_owned())
    }
}

impl Drop for TestGadget {
    fn drop(&mut self) {
        if let Some(reg) = self.reg.take() {
            let _ = reg.remove();
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ep0_thread.take() {
            let _ = t.join();
        }
    }
}
