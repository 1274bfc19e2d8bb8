// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! USB chapter 9 as the host sees it: setup packets, descriptors, and the
//! checks a host applies to what a gadget sends.
//!
//! The host model is the only USB host a virtio-udc gadget ever meets. By
//! default it takes a configuration as Linux's usbcore does (`usbcore`:
//! the same fix-ups and skips, each recorded as a [`Defect`]); in strict
//! mode it refuses at the first rule broken, and every [`DescriptorError`]
//! names the configuration, interface, endpoint and field at fault and the
//! rule it breaks, so that a gadget developer can fix the descriptor from
//! the log line alone. Written from USB 2.0 and USB 3.2
//! chapter 9; the numbering follows Linux's `include/uapi/linux/usb/ch9.h`.
//!
//! The numbers, speeds and the setup packet come from the `udc-ch9` crate,
//! which the harness and the guest tool share; this module adds the
//! descriptors a host parses, one file per descriptor kind, and the rules in
//! `rules`.

mod bos;
mod configuration;
mod device;
mod endpoint;
mod error;
mod interface;
mod read;
mod rules;
mod string;
mod usbcore;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;

pub use udc_ch9::descriptor::*;
pub use udc_ch9::request::*;
pub use udc_ch9::{ParseSpeedError, Recipient, RequestKind, SetupPacket, Speed};

pub use bos::{parse_bos, Bos, DeviceCapability};
pub use configuration::{parse_configuration, parse_configuration_as, Configuration, Iad};
pub use device::{check_max_packet_size0, parse_device_descriptor, DeviceDescriptor};
pub use endpoint::{Endpoint, SsCompanion};
pub use error::DescriptorError;
pub use interface::Interface;
pub use read::RawDescriptor;
pub use string::{parse_langids, parse_string_descriptor};
pub use usbcore::{Action, Defect, DescriptorPolicy};
