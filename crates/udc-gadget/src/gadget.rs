// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The test gadget: one configfs gadget with one FunctionFS function (a
//! vendor-specific interface with a bulk IN and a bulk OUT endpoint).
//! The `usb-gadget` crate creates the configfs gadget and mounts
//! FunctionFS; our own layer (crate::ffs, crate::aio) writes the
//! descriptors, serves ep0 and runs AIO on the endpoint files.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use usb_gadget::function::custom::Custom;
use usb_gadget::{Class, Config, Gadget, Id, RegGadget, Strings, Udc};

use crate::aio::AioEndpoint;
use crate::error::Error;
use crate::ffs::{BulkEndpoint, BulkFunction, Ep0, Ep0Log};

pub const VENDOR: u16 = 0x1d6b;
pub const PRODUCT: u16 = 0x0104;
pub const MANUFACTURER: &str = "virtio-udc";
pub const PRODUCT_NAME: &str = "udc-gadget test function";
pub const SERIAL: &str = "0001";
pub const INTERFACE_NAME: &str = "udc-gadget bulk pair";

/// The function's descriptors, the one source of what the guest writes to
/// FunctionFS and of what the enumeration case expects the host to read:
/// vendor class, `ep1` bulk IN, `ep2` bulk OUT.
pub const FUNCTION: BulkFunction = BulkFunction {
    class: 0xff,
    subclass: 0,
    protocol: 0,
    name: INTERFACE_NAME,
    endpoints: &[
        BulkEndpoint {
            address: 0x81,
            interval: 0,
        },
        // bInterval 1 as the usb-gadget crate wrote it before us.
        BulkEndpoint {
            address: 0x02,
            interval: 1,
        },
    ],
};

/// AIO requests in flight per endpoint at most.
pub const AIO_DEPTH: usize = 16;

/// A bound gadget. Dropping it closes the endpoint files and ep0 (the
/// fields drop in this order), then unbinds and removes the gadget, which
/// unmounts FunctionFS.
pub struct TestGadget {
    /// AIO on `ep1`, bulk IN.
    pub tx: AioEndpoint,
    /// AIO on `ep2`, bulk OUT.
    pub rx: AioEndpoint,
    _ep0: Ep0,
    pub ep0_log: Arc<Mutex<Ep0Log>>,
    pub ffs_dir: PathBuf,
    pub udc: Udc,
    reg: RegGadget,
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

/// A configfs gadget of one FunctionFS function, registered (not bound)
/// with FunctionFS mounted but without descriptors (whoever serves ep0
/// writes them: our layer, or a program such as ffs-test); the
/// registration and the mount point. A gadget left by an earlier run,
/// which would hold the UDC, is removed first.
pub fn register_ffs_gadget(id: Id, product: &str, config: &str) -> Result<(RegGadget, PathBuf), Error> {
    let _ = usb_gadget::remove_all();
    let mut builder = Custom::builder();
    builder.ffs_no_init = true;
    let (mut custom, handle) = builder.build();
    let reg = Gadget::new(
        Class::INTERFACE_SPECIFIC,
        id,
        Strings::new(MANUFACTURER, product, SERIAL),
    )
    .with_config(Config::new(config).with_function(handle))
    .register()
    .map_err(|e| Error::Setup(format!("registering the gadget in configfs: {e}")))?;
    let ffs_dir = custom
        .ffs_dir()
        .map_err(|e| Error::Setup(format!("FunctionFS directory: {e}")))?;
    Ok((reg, ffs_dir))
}

impl TestGadget {
    /// Registers the gadget, writes the function's descriptors and binds
    /// it to `udc`.
    pub fn bind(udc: Udc) -> Result<TestGadget, Error> {
        Self::bind_as(udc, Id::new(VENDOR, PRODUCT))
    }

    /// As [`TestGadget::bind`], with other vendor and product ids (those
    /// a host driver binds by, such as usbtest's 0525:a4a4).
    pub fn bind_as(udc: Udc, id: Id) -> Result<TestGadget, Error> {
        let mut g = TestGadget::unbound_as(udc, id)?;
        g.rebind()?;
        Ok(g)
    }

    /// Registers the gadget and writes the function's descriptors (the
    /// endpoint files exist), without binding it to `udc`: FunctionFS is
    /// ready, the function is not bound yet.
    pub fn unbound(udc: Udc) -> Result<TestGadget, Error> {
        Self::unbound_as(udc, Id::new(VENDOR, PRODUCT))
    }

    fn unbound_as(udc: Udc, id: Id) -> Result<TestGadget, Error> {
        let (reg, ffs_dir) = register_ffs_gadget(id, PRODUCT_NAME, "udc-gadget")?;
        let ep0_log = Arc::default();
        // The endpoint files exist once ep0 has the descriptors, and the
        // UDC accepts the gadget only then.
        let ep0 = Ep0::start(&ffs_dir, &FUNCTION, Arc::clone(&ep0_log))?;
        let tx = AioEndpoint::open(&ffs_dir.join("ep1"), AIO_DEPTH)?;
        let rx = AioEndpoint::open(&ffs_dir.join("ep2"), AIO_DEPTH)?;
        Ok(TestGadget {
            tx,
            rx,
            _ep0: ep0,
            ep0_log,
            ffs_dir,
            udc,
            reg,
        })
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
            .bind(None)
            .map_err(|e| Error::Setup(format!("unbinding: {e}")))
    }

    /// Binds to the UDC (again).
    pub fn rebind(&mut self) -> Result<(), Error> {
        self.reg
            .bind(Some(&self.udc))
            .map_err(|e| Error::Setup(format!("binding the gadget to UDC {:?}: {e}", self.udc.name())))
    }

    /// Whether configfs still has the gadget bound to a UDC.
    pub fn bound_udc(&self) -> Option<String> {
        self.reg
            .udc()
            .ok()
            .flatten()
            .map(|s| s.to_string_lossy().into_owned())
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// `udc-gadget serve`: binds the test gadget to `udc` (default: the only
/// UDC) and keeps it bound until SIGINT or SIGTERM.
pub fn serve(udc: Option<&str>) -> Result<(), Error> {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let udc = find_udc(udc)?;
    let name = udc.name().to_string_lossy().into_owned();
    let g = TestGadget::bind(udc)?;
    println!(
        "udc-gadget: bound to UDC {name}; FunctionFS at {} (ep1: bulk IN, ep2: bulk OUT)",
        g.ffs_dir.display()
    );
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(g);
    println!("udc-gadget: unbound");
    Ok(())
}
