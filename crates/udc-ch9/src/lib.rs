// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! USB chapter 9 without dependencies: the numbers of standard requests,
//! descriptor types, features and transfer types, bus speeds, the setup
//! packet and endpoint addresses.
//!
//! One definition for the three programs that speak USB here: the daemon's
//! host model, the harness (a fake guest driver) and the guest tool.
//! Written from USB 2.0 and USB 3.2 chapter 9; the numbering follows
//! Linux's `include/uapi/linux/usb/ch9.h`. Descriptor parsing and the rules a
//! host applies stay in the daemon, which is the only host.

pub mod descriptor;
pub mod endpoint;
pub mod request;
pub mod setup;
pub mod speed;

pub use descriptor::*;
pub use endpoint::{EpAddress, ParseEpAddressError};
pub use request::*;
pub use setup::{Recipient, RequestKind, SetupPacket};
pub use speed::{ParseSpeedError, Speed};
