// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Standard requests and the fields of bmRequestType and wValue that
//! name them (USB 2.0 tables 9-2, 9-4 and 9-6; USB 3.2 tables 9-5 and 9-7).

// Standard requests (bRequest), USB 2.0 table 9-4 and USB 3.2 table 9-5.
/// GET_STATUS: device, interface or endpoint status bits.
pub const REQ_GET_STATUS: u8 = 0x00;
/// CLEAR_FEATURE: clears ENDPOINT_HALT or DEVICE_REMOTE_WAKEUP.
pub const REQ_CLEAR_FEATURE: u8 = 0x01;
/// SET_FEATURE: halts an endpoint, arms remote wakeup, enters test modes.
pub const REQ_SET_FEATURE: u8 = 0x03;
/// SET_ADDRESS: moves the device from the default address to its own.
pub const REQ_SET_ADDRESS: u8 = 0x05;
/// GET_DESCRIPTOR: wValue is the type (high byte) and index (low byte).
pub const REQ_GET_DESCRIPTOR: u8 = 0x06;
/// SET_DESCRIPTOR: rarely implemented; listed so it can be named in logs.
pub const REQ_SET_DESCRIPTOR: u8 = 0x07;
/// GET_CONFIGURATION: the active bConfigurationValue (0: unconfigured).
pub const REQ_GET_CONFIGURATION: u8 = 0x08;
/// SET_CONFIGURATION: selects a configuration; 0 unconfigures.
pub const REQ_SET_CONFIGURATION: u8 = 0x09;
/// GET_INTERFACE: the alternate setting of one interface.
pub const REQ_GET_INTERFACE: u8 = 0x0a;
/// SET_INTERFACE: selects an alternate setting.
pub const REQ_SET_INTERFACE: u8 = 0x0b;
/// SYNCH_FRAME: isochronous frame pattern synchronisation.
pub const REQ_SYNCH_FRAME: u8 = 0x0c;
/// SET_SEL (SuperSpeed): system exit latencies for U1/U2.
pub const REQ_SET_SEL: u8 = 0x30;
/// SET_ISOCH_DELAY (SuperSpeed): the host's isochronous delay.
pub const REQ_SET_ISOCH_DELAY: u8 = 0x31;

// bmRequestType fields.
/// Direction bit of bmRequestType: device to host.
pub const DIR_IN: u8 = 0x80;
/// Direction bit of bmRequestType: host to device.
pub const DIR_OUT: u8 = 0x00;
/// The type bits (6..5) of bmRequestType.
pub const TYPE_MASK: u8 = 0x60;
/// Type: a chapter 9 request, answered by the device framework.
pub const TYPE_STANDARD: u8 = 0x00;
/// Type: defined by the interface's class specification.
pub const TYPE_CLASS: u8 = 0x20;
/// Type: vendor defined; what FunctionFS gadgets usually use.
pub const TYPE_VENDOR: u8 = 0x40;
/// The recipient bits (4..0) of bmRequestType.
pub const RECIP_MASK: u8 = 0x1f;
/// Recipient: the device.
pub const RECIP_DEVICE: u8 = 0x00;
/// Recipient: the interface in wIndex.
pub const RECIP_INTERFACE: u8 = 0x01;
/// Recipient: the endpoint in wIndex.
pub const RECIP_ENDPOINT: u8 = 0x02;
/// Recipient: other (hub ports and the like).
pub const RECIP_OTHER: u8 = 0x03;

// Feature selectors (wValue of SET_FEATURE / CLEAR_FEATURE).
/// Endpoint feature: halt (stall) the endpoint.
pub const FEATURE_ENDPOINT_HALT: u16 = 0;
/// Device feature: allow the device to wake the host.
pub const FEATURE_DEVICE_REMOTE_WAKEUP: u16 = 1;
/// Device feature: electrical test modes (high speed).
pub const FEATURE_TEST_MODE: u16 = 2;
/// Device feature (SuperSpeed): allow U1 entry.
pub const FEATURE_U1_ENABLE: u16 = 48;
/// Device feature (SuperSpeed): allow U2 entry.
pub const FEATURE_U2_ENABLE: u16 = 49;
/// Device feature (SuperSpeed): latency tolerance messages.
pub const FEATURE_LTM_ENABLE: u16 = 50;
