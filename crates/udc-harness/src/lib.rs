// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! udc-harness: a fake virtio-udc guest.
//!
//! It plays what the guest's `virtio_udc.ko` does, against the real
//! `vhost-device-udc` daemon over its vhost-user socket, with memfd guest
//! memory and no VMM:
//!
//! - [`GuestMemory`] and [`Allocator`]: a sealed memfd mapped as one or two
//!   guest-physical regions (optionally with a hole), and an allocator of
//!   guest-physical ranges;
//! - [`DriverQueue`]: the driver side of a split virtqueue;
//! - [`Harness`]: connection and setup over vhost-user, then commands,
//!   events, transfers and data buffers;
//! - [`FakeGadget`]: a scripted gadget that answers enumeration.
//!
//! ```no_run
//! use std::time::Duration;
//! use udc_harness::{FakeGadget, Harness, HarnessOptions};
//!
//! let mut h = Harness::connect("/tmp/udc.sock", HarnessOptions::default())?;
//! let mut g = FakeGadget::new();
//! g.connect_and_configure(&mut h, Duration::from_secs(10))?;
//! let buf = h.buffer(4096)?;
//! h.write_buffer(&buf, &[0x5a; 4096])?;
//! let x = h.submit_buffer(0x81, 0, &buf, 1)?;
//! let c = h.wait_completion(x, Duration::from_secs(5))?;
//! assert!(c.is_ok());
//! # Ok::<(), udc_harness::Error>(())
//! ```

#![warn(missing_debug_implementations)]

pub mod error;
pub mod gadget;
pub mod harness;
pub mod memory;
pub mod queue;
pub mod usb;

pub use error::{Error, Result};
pub use gadget::{EndpointSpec, FakeGadget, Malformation, SetupHook, SetupReply};
pub use harness::{
    ctrl_req, seg, xfer_bytes, xfer_req, BufferSpec, Completion, CtrlRespExt, DmaBuffer, EpEnable, Harness,
    HarnessOptions, IommuFrontend, Mapping, Miss, RawChain, RawCompletion, RawDesc, XferHandle, PERM_RO,
    PERM_RW, PERM_WO, RING_IOVA_OFFSET, SENTINEL, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_ACCESS_PLATFORM,
    VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
pub use memory::{
    align_up, Allocator, GuestMemory, MemoryLayout, RegionInfo, DEFAULT_MEM_SIZE, HIGH_REGION_GPA, PAGE_SIZE,
};
pub use queue::{write_raw_indirect_table, ChainPart, DriverQueue, RawNext, RawRingDesc};
pub use usb::{Event, SetupPacket};
/// The wire format, re-exported for convenience.
pub use vhost_device_udc::wire;
