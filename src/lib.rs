// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! vhost-device-udc: the vhost-user backend of virtio-udc, a virtual USB
//! device controller. The guest runs a gadget; this side is the USB host,
//! the cable and the controller's DMA engine.
//!
//! Module edges:
//! - [`wire`]: the wire format of docs/virtio-udc.md, nothing else;
//! - [`request`]: untrusted guest bytes to checked requests (pure);
//! - [`dma`]: copies between segment lists in guest memory and host buffers;
//! - [`device`]: the device model (endpoints, bus, ep0), transport-free;
//! - [`udc`]: the shared device handle: a lock around the device model
//!   that delivers its outputs to the transport's rings;
//! - [`vhu_udc`]: the vhost-user transport around the device model;
//! - [`desc_chain`]: descriptor chains taken apart with bounds, and the
//!   heads the device holds (no lock, no ring state);
//! - [`iommu`]: the device's IOMMU (IOTLB, misses to the front end) and
//!   the vhost-user relay that carries the IOTLB protocol for the crates;
//! - [`usb`], [`enumerate`], [`host`]: the USB host (chapter 9 types and
//!   descriptor validation, the enumeration procedure, the host thread);
//! - [`traffic`]: host-side traffic streams; [`control`]: the control socket;
//! - [`zerocopy`]: host DMABUFs over guest pages; [`config`]: the TOML file.
//! - [`log_limit`]: rate limits for log lines a guest can trigger.
//! - [`usbip`]: the USB/IP server that exports the gadget to an outside host.

pub mod capture;
pub mod cli;
pub mod config;
pub mod control;
pub mod desc_chain;
pub mod device;
pub mod dma;
pub mod enumerate;
pub mod host;
pub mod inject;
pub mod iommu;
pub mod log_limit;
pub mod lsusb;
pub mod race;
pub mod request;
pub mod socket_path;
pub mod traffic;
pub mod udc;
pub mod usb;
pub mod usbip;
pub mod vhu_udc;
pub mod wire;
pub mod zerocopy;
