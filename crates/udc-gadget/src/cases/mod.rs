// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The cases of the VM suite, by subject. Each case sets up the gadget,
//! drives both ends of the bus (FunctionFS in the guest, the host through
//! the control channel), checks both, and tears down; crate::suite lists
//! them.
//!
//! - `transfers`: enumeration, read()/write() and AIO, short and
//!   zero-length packets, ep0 requests;
//! - `dmabuf`: the FunctionFS DMABUF catalogue;
//! - `lifecycle`: the bus, the gadget, the driver and the daemon going
//!   away and coming back, and the DMABUF lifecycle matrix;
//! - `recipes`: injection seen through FunctionFS, the recipes of
//!   docs/recipes.md;
//! - `findings`: what the suite found in the kernel, and the reproducers
//!   of f_fs bugs;
//! - `ffs_test`: the kernel's own tools/usb/ffs-test.c, unmodified;
//! - `iommu`: DMABUFs through a strict vIOMMU, where a wrong DMA direction
//!   is a fault.

pub mod dmabuf;
pub mod ffs_test;
pub mod findings;
pub mod iommu;
pub mod lifecycle;
pub mod recipes;
pub mod transfers;
