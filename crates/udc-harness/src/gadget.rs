// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! A scripted gadget that answers the host's control requests the way
//! Linux's composite framework with one FunctionFS function would.

use std::time::{Duration, Instant};

use vhost_device_udc::wire::{self, VirtioUdcEvent};

use crate::error::{Error, Result};
use crate::harness::{BufferSpec, Completion, DmaBuffer, EpEnable, Harness, XferHandle};
use crate::usb::*;

/// How often the gadget looks at ep0 completions while no event arrives.
const EP0_POLL: Duration = Duration::from_millis(2);

/// One non-control endpoint of the gadget's single interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    /// bEndpointAddress.
    pub addr: u8,
    /// USB_XFER_* (bmAttributes bits 1..0).
    pub xfer_type: u8,
    /// wMaxPacketSize at full, high and SuperSpeed.
    pub max_packet: [u16; 3],
    /// bInterval (interrupt and isochronous).
    pub interval: u8,
    /// SuperSpeed companion bMaxBurst.
    pub max_burst: u8,
}

impl EndpointSpec {
    /// A bulk endpoint: 64 / 512 / 1024 bytes.
    pub fn bulk(addr: u8) -> Self {
        EndpointSpec {
            addr,
            xfer_type: wire::USB_XFER_BULK,
            max_packet: [64, 512, 1024],
            interval: 0,
            max_burst: 0,
        }
    }

    /// An interrupt endpoint of `max_packet` bytes at every speed.
    pub fn interrupt(addr: u8, max_packet: u16, interval: u8) -> Self {
        EndpointSpec {
            addr,
            xfer_type: wire::USB_XFER_INT,
            max_packet: [max_packet; 3],
            interval,
            max_burst: 0,
        }
    }

    /// wMaxPacketSize at `speed`.
    pub fn max_packet_for(&self, speed: u8) -> u16 {
        match speed {
            wire::VIRTIO_UDC_SPEED_SUPER | wire::VIRTIO_UDC_SPEED_SUPER_PLUS => self.max_packet[2],
            wire::VIRTIO_UDC_SPEED_HIGH => self.max_packet[1],
            _ => self.max_packet[0],
        }
    }
}

/// A deliberate defect in the descriptors the gadget returns, to test the
/// host model's validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Malformation {
    /// The configuration's wTotalLength is larger than the bytes sent.
    ConfigTotalLengthTooLarge,
    /// The configuration's wTotalLength is smaller than the bytes sent.
    ConfigTotalLengthTooSmall,
    /// The device descriptor's bLength is this value instead of 18.
    DeviceDescLength(u8),
    /// bMaxPacketSize0 is this value.
    Ep0MaxPacket(u8),
    /// The interface's bNumEndpoints counts one more endpoint than follows.
    NumEndpointsTooMany,
    /// The first endpoint descriptor has bLength 0.
    ZeroLengthDescriptor,
    /// The first endpoint's wMaxPacketSize is above its speed's limit.
    MaxPacketTooLarge,
    /// The first endpoint's wMaxPacketSize is 0 (as tools/usb/ffs-test.c
    /// leaves its full-speed endpoints for the kernel to fill in).
    MaxPacketZero,
    /// SuperSpeed endpoints come without their companion descriptors.
    MissingSsCompanion,
    /// The first endpoint's address is this value instead.
    EndpointAddress(u8),
    /// String descriptors have an odd bLength.
    OddStringLength,
    /// The BOS's wTotalLength is larger than the bytes sent.
    BosTotalLengthTooLarge,
    /// Answer GET_DESCRIPTOR(desc_type, index) with these bytes verbatim.
    Replace {
        desc_type: u8,
        index: u8,
        bytes: Vec<u8>,
    },
}

/// What the gadget does with a SETUP (from a hook, or its own logic).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetupReply {
    /// IN data stage with these bytes (truncated to wLength; F_ZERO when
    /// shorter than wLength and a multiple of ep0's packet size).
    In(Vec<u8>),
    /// IN data stage exactly as given (no truncation, caller picks F_ZERO).
    InRaw { data: Vec<u8>, zero: bool },
    /// OUT data stage: receive wLength bytes (recorded in `out_data`).
    Out,
    /// No data stage: acknowledge with a zero-length request.
    Ack,
    /// Acknowledge after this delay (delayed status).
    DelayedAck(Duration),
    /// Protocol stall (EP_SET_HALT ep0 1).
    Stall,
    /// Do nothing (let the host time out).
    Ignore,
}

/// A hook that may answer a SETUP before the gadget's own logic does.
pub type SetupHook = Box<dyn FnMut(&SetupPacket) -> Option<SetupReply> + Send>;

#[derive(Debug)]
enum Ep0Kind {
    In,
    Out,
    Status { set_config: Option<u8> },
}

#[derive(Debug)]
struct Ep0Req {
    handle: XferHandle,
    setup: SetupPacket,
    kind: Ep0Kind,
    buf: Option<DmaBuffer>,
}

/// A scripted gadget: descriptors, strings, a configuration with one
/// vendor-class interface, and the state it reached.
pub struct FakeGadget {
    pub vendor_id: u16,
    pub product_id: u16,
    pub bcd_device: u16,
    /// Overrides bcdUSB (default 0x0320 at SuperSpeed, else 0x0210).
    pub bcd_usb: Option<u16>,
    pub manufacturer: String,
    pub product: String,
    pub serial: String,
    pub interface_class: u8,
    pub endpoints: Vec<EndpointSpec>,
    pub config_value: u8,
    pub self_powered: bool,
    pub remote_wakeup: bool,
    pub max_power_ma: u16,
    /// Endpoint the zero-length status request goes to (0x80 or 0x00).
    pub status_ep: u8,
    /// Delay the status stage of SET_CONFIGURATION by this much.
    pub status_delay: Option<Duration>,
    /// Defects to put into the descriptors.
    pub malformations: Vec<Malformation>,
    hook: Option<SetupHook>,

    /// Speed of the last BUS_RESET.
    pub speed: Option<u8>,
    /// Address from the last ADDRESS event.
    pub address: Option<u32>,
    /// Current configuration value (0: unconfigured), as SET_CONFIGURATION
    /// set it.
    pub configuration: u8,
    /// SET_CONFIGURATION's status stage completed OK.
    pub configured: bool,
    pub suspended: bool,
    pub disconnected: bool,
    /// Endpoints enabled with EP_ENABLE and not since disabled.
    pub enabled_eps: Vec<u8>,
    /// Every event, decoded, in order.
    pub events: Vec<Event>,
    /// Every SETUP, in order.
    pub setups: Vec<SetupPacket>,
    /// SETUPs the gadget refused with a stall.
    pub stalled: Vec<SetupPacket>,
    /// OUT data stages received.
    pub out_data: Vec<(SetupPacket, Vec<u8>)>,
    /// ep0 requests that completed other than OK.
    pub ep0_failures: Vec<(SetupPacket, Completion)>,
    /// EP_HALT events `(ep, halted)`.
    pub halt_events: Vec<(u8, bool)>,
    ep0_pending: Vec<Ep0Req>,
    delayed: Option<(Instant, SetupPacket, Option<u8>)>,
}

impl std::fmt::Debug for FakeGadget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGadget")
            .field("vendor_id", &format_args!("{:#06x}", self.vendor_id))
            .field("product_id", &format_args!("{:#06x}", self.product_id))
            .field("endpoints", &self.endpoints)
            .field("malformations", &self.malformations)
            .field("hook", &self.hook.is_some())
            .field("speed", &self.speed)
            .field("address", &self.address)
            .field("configuration", &self.configuration)
            .field("configured", &self.configured)
            .field("enabled_eps", &self.enabled_eps)
            .field("setups", &self.setups)
            .field("stalled", &self.stalled)
            .field("ep0_failures", &self.ep0_failures)
            .field("ep0_pending", &self.ep0_pending)
            .finish()
    }
}

impl Default for FakeGadget {
    fn default() -> Self {
        Self::new()
    }
}

fn le16(v: u16) -> [u8; 2] {
    v.to_le_bytes()
}

fn is_ss(speed: u8) -> bool {
    speed >= wire::VIRTIO_UDC_SPEED_SUPER
}

impl FakeGadget {
    /// The default gadget: vendor-class interface, bulk IN 0x81, bulk OUT
    /// 0x02, strings "virtio-udc" / "udc-harness gadget" / "0001".
    pub fn new() -> Self {
        FakeGadget {
            vendor_id: 0x1d6b,
            product_id: 0x0104,
            bcd_device: 0x0100,
            bcd_usb: None,
            manufacturer: "virtio-udc".into(),
            product: "udc-harness gadget".into(),
            serial: "0001".into(),
            interface_class: 0xff,
            endpoints: vec![EndpointSpec::bulk(0x81), EndpointSpec::bulk(0x02)],
            config_value: 1,
            self_powered: false,
            remote_wakeup: false,
            max_power_ma: 100,
            status_ep: 0x80,
            status_delay: None,
            malformations: Vec::new(),
            hook: None,
            speed: None,
            address: None,
            configuration: 0,
            configured: false,
            suspended: false,
            disconnected: false,
            enabled_eps: Vec::new(),
            events: Vec::new(),
            setups: Vec::new(),
            stalled: Vec::new(),
            out_data: Vec::new(),
            ep0_failures: Vec::new(),
            halt_events: Vec::new(),
            ep0_pending: Vec::new(),
            delayed: None,
        }
    }

    /// The default gadget, but with one bulk IN and one bulk OUT endpoint
    /// picked from a device's configuration space (the lowest-numbered
    /// bulk-capable ones), with max packet sizes clamped to their limits.
    /// Falls back to 0x81 / 0x02 where the config has none.
    pub fn for_config(cfg: &wire::VirtioUdcConfig) -> Self {
        let n = usize::from(cfg.num_eps).min(wire::MAX_EPS);
        let pick = |want_in: bool, default: u8| {
            cfg.eps[..n]
                .iter()
                .filter(|e| {
                    e.addr & 0x0f != 0
                        && wire::ep_is_in(e.addr) == want_in
                        && e.caps & wire::VIRTIO_UDC_EP_CAP_BULK != 0
                })
                .min_by_key(|e| e.addr & 0x0f)
                .map(|e| {
                    let lim = u16::from(e.max_packet_limit).max(8);
                    let mut s = EndpointSpec::bulk(e.addr);
                    for m in &mut s.max_packet {
                        *m = (*m).min(lim);
                    }
                    s
                })
                .unwrap_or_else(|| EndpointSpec::bulk(default))
        };
        Self::new().with_endpoints(vec![pick(true, 0x81), pick(false, 0x02)])
    }

    /// Builder: endpoints.
    pub fn with_endpoints(mut self, eps: Vec<EndpointSpec>) -> Self {
        self.endpoints = eps;
        self
    }

    /// Builder: add a malformation.
    pub fn with_malformation(mut self, m: Malformation) -> Self {
        self.malformations.push(m);
        self
    }

    /// Builder: delay SET_CONFIGURATION's status stage.
    pub fn with_status_delay(mut self, d: Duration) -> Self {
        self.status_delay = Some(d);
        self
    }

    /// Builder: a hook consulted first for every SETUP; `None` lets the
    /// gadget's own logic answer (class and vendor requests stall then).
    pub fn with_hook(
        mut self,
        hook: impl FnMut(&SetupPacket) -> Option<SetupReply> + Send + 'static,
    ) -> Self {
        self.hook = Some(Box::new(hook));
        self
    }

    /// Sets or clears the hook.
    pub fn set_hook(&mut self, hook: Option<SetupHook>) {
        self.hook = hook;
    }

    fn has(&self, m: &Malformation) -> bool {
        self.malformations.contains(m)
    }

    /// bcdUSB at `speed`.
    pub fn bcd_usb_for(&self, speed: u8) -> u16 {
        self.bcd_usb.unwrap_or(if is_ss(speed) { 0x0320 } else { 0x0210 })
    }

    /// The device descriptor at `speed`.
    pub fn device_descriptor(&self, speed: u8) -> Vec<u8> {
        let mps0 = if is_ss(speed) { 9 } else { 64 };
        let mut d = vec![18, DT_DEVICE];
        d.extend_from_slice(&le16(self.bcd_usb_for(speed)));
        d.extend_from_slice(&[0, 0, 0, mps0]);
        d.extend_from_slice(&le16(self.vendor_id));
        d.extend_from_slice(&le16(self.product_id));
        d.extend_from_slice(&le16(self.bcd_device));
        d.extend_from_slice(&[1, 2, 3, 1]);
        for m in &self.malformations {
            match m {
                Malformation::DeviceDescLength(l) => d[0] = *l,
                Malformation::Ep0MaxPacket(v) => d[7] = *v,
                _ => {}
            }
        }
        d
    }

    /// The device qualifier (what the device would be at the other of
    /// full/high speed).
    pub fn device_qualifier(&self) -> Vec<u8> {
        let mut d = vec![10, DT_DEVICE_QUALIFIER];
        d.extend_from_slice(&le16(0x0200));
        d.extend_from_slice(&[0, 0, 0, 64, 1, 0]);
        d
    }

    /// The configuration bundle (configuration, interface, endpoints, SS
    /// companions) at `speed`, with descriptor type `dt` (CONFIG or
    /// OTHER_SPEED_CONFIG).
    pub fn config_descriptor(&self, speed: u8, dt: u8) -> Vec<u8> {
        let ss = is_ss(speed);
        let mut attrs = 0x80;
        if self.self_powered {
            attrs |= 0x40;
        }
        if self.remote_wakeup {
            attrs |= 0x20;
        }
        let power = if ss {
            self.max_power_ma.div_ceil(8)
        } else {
            self.max_power_ma.div_ceil(2)
        }
        .min(255) as u8;
        let mut d = vec![9, dt, 0, 0, 1, self.config_value, 0, attrs, power];
        let mut n_eps = self.endpoints.len() as u8;
        if self.has(&Malformation::NumEndpointsTooMany) {
            n_eps += 1;
        }
        d.extend_from_slice(&[9, DT_INTERFACE, 0, 0, n_eps, self.interface_class, 0, 0, 0]);
        for (i, ep) in self.endpoints.iter().enumerate() {
            let first = i == 0;
            let mut mp = ep.max_packet_for(speed);
            if first && self.has(&Malformation::MaxPacketTooLarge) {
                mp = if ss {
                    2048
                } else if speed == wire::VIRTIO_UDC_SPEED_HIGH {
                    1024
                } else {
                    128
                };
            }
            if first && self.has(&Malformation::MaxPacketZero) {
                mp = 0;
            }
            let mut addr = ep.addr;
            if first {
                for m in &self.malformations {
                    if let Malformation::EndpointAddress(a) = m {
                        addr = *a;
                    }
                }
            }
            let interval = match ep.xfer_type {
                wire::USB_XFER_BULK | wire::USB_XFER_CONTROL => 0,
                _ => ep.interval,
            };
            let blen = if first && self.has(&Malformation::ZeroLengthDescriptor) {
                0
            } else {
                7
            };
            d.extend_from_slice(&[blen, DT_ENDPOINT, addr, ep.xfer_type]);
            d.extend_from_slice(&le16(mp));
            d.push(interval);
            if ss && !self.has(&Malformation::MissingSsCompanion) {
                let bpi = match ep.xfer_type {
                    wire::USB_XFER_BULK => 0,
                    _ => mp.saturating_mul(u16::from(ep.max_burst) + 1),
                };
                d.extend_from_slice(&[6, DT_SS_ENDPOINT_COMP, ep.max_burst, 0]);
                d.extend_from_slice(&le16(bpi));
            }
        }
        let mut total = d.len() as u16;
        if self.has(&Malformation::ConfigTotalLengthTooLarge) {
            total += 16;
        }
        if self.has(&Malformation::ConfigTotalLengthTooSmall) {
            total -= 4;
        }
        d[2..4].copy_from_slice(&le16(total));
        d
    }

    /// The BOS: USB 2.0 extension (LPM) and SuperSpeed USB device
    /// capability.
    pub fn bos_descriptor(&self) -> Vec<u8> {
        let mut d = vec![5, DT_BOS, 0, 0, 2];
        d.extend_from_slice(&[7, DT_DEVICE_CAPABILITY, CAP_USB20_EXTENSION]);
        d.extend_from_slice(&0x0000_0002u32.to_le_bytes());
        d.extend_from_slice(&[10, DT_DEVICE_CAPABILITY, CAP_SUPERSPEED_USB, 0]);
        // wSpeedsSupported: full, high, super; bFunctionalitySupport: full.
        d.extend_from_slice(&le16(0x000e));
        d.extend_from_slice(&[1, 0x0a]);
        d.extend_from_slice(&le16(0x07ff));
        let mut total = d.len() as u16;
        if self.has(&Malformation::BosTotalLengthTooLarge) {
            total += 8;
        }
        d[2..4].copy_from_slice(&le16(total));
        d
    }

    /// String descriptor `index` (0: language IDs), if it exists.
    pub fn string_descriptor(&self, index: u8) -> Option<Vec<u8>> {
        let mut d = match index {
            0 => vec![4, DT_STRING, 0x09, 0x04],
            1 => string_descriptor(&self.manufacturer),
            2 => string_descriptor(&self.product),
            3 => string_descriptor(&self.serial),
            _ => return None,
        };
        if self.has(&Malformation::OddStringLength) {
            d[0] |= 1;
        }
        Some(d)
    }

    /// What GET_DESCRIPTOR returns at `speed`, or `None` for a stall.
    pub fn get_descriptor(&self, speed: u8, setup: &SetupPacket) -> Option<Vec<u8>> {
        let (dt, idx) = (setup.descriptor_type(), setup.descriptor_index());
        for m in &self.malformations {
            if let Malformation::Replace {
                desc_type,
                index,
                bytes,
            } = m
            {
                if *desc_type == dt && *index == idx {
                    return Some(bytes.clone());
                }
            }
        }
        match dt {
            DT_DEVICE => Some(self.device_descriptor(speed)),
            DT_CONFIG if idx == 0 => Some(self.config_descriptor(speed, DT_CONFIG)),
            DT_STRING => {
                if idx != 0 && setup.index != 0x0409 {
                    return None;
                }
                self.string_descriptor(idx)
            }
            DT_DEVICE_QUALIFIER if !is_ss(speed) => Some(self.device_qualifier()),
            DT_OTHER_SPEED_CONFIG if !is_ss(speed) && idx == 0 => {
                let other = if speed == wire::VIRTIO_UDC_SPEED_HIGH {
                    wire::VIRTIO_UDC_SPEED_FULL
                } else {
                    wire::VIRTIO_UDC_SPEED_HIGH
                };
                Some(self.config_descriptor(other, DT_OTHER_SPEED_CONFIG))
            }
            DT_BOS if self.bcd_usb_for(speed) >= 0x0201 => Some(self.bos_descriptor()),
            _ => None,
        }
    }

    /// The gadget's own answer to a SETUP (no hook).
    pub fn default_reply(&self, setup: &SetupPacket) -> SetupReply {
        let speed = self.speed.unwrap_or(wire::VIRTIO_UDC_SPEED_HIGH);
        if !setup.is_standard() {
            return SetupReply::Stall;
        }
        let recip = setup.request_type & RECIP_MASK;
        match (setup.request, recip, setup.is_in()) {
            (REQ_GET_DESCRIPTOR, RECIP_DEVICE, true) => self
                .get_descriptor(speed, setup)
                .map(SetupReply::In)
                .unwrap_or(SetupReply::Stall),
            (REQ_SET_CONFIGURATION, RECIP_DEVICE, false) => {
                if setup.value == 0 || setup.value == u16::from(self.config_value) {
                    match self.status_delay {
                        Some(d) => SetupReply::DelayedAck(d),
                        None => SetupReply::Ack,
                    }
                } else {
                    SetupReply::Stall
                }
            }
            (REQ_GET_CONFIGURATION, RECIP_DEVICE, true) => SetupReply::In(vec![self.configuration]),
            (REQ_SET_INTERFACE, RECIP_INTERFACE, false)
                if self.configuration != 0 && setup.index == 0 && setup.value == 0 =>
            {
                SetupReply::Ack
            }
            (REQ_GET_INTERFACE, RECIP_INTERFACE, true) if self.configuration != 0 && setup.index == 0 => {
                SetupReply::In(vec![0])
            }
            (REQ_GET_STATUS, RECIP_INTERFACE, true) if self.configuration != 0 && setup.index == 0 => {
                SetupReply::In(vec![0, 0])
            }
            _ => SetupReply::Stall,
        }
    }

    fn ep0_mps(&self) -> u32 {
        u32::from(wire::ep0_max_packet(
            self.speed.unwrap_or(wire::VIRTIO_UDC_SPEED_HIGH),
        ))
    }

    fn set_config_of(setup: &SetupPacket) -> Option<u8> {
        (setup.is_standard()
            && setup.request_type & RECIP_MASK == RECIP_DEVICE
            && setup.request == REQ_SET_CONFIGURATION)
            .then_some(setup.value as u8)
    }

    fn disable_all(&mut self, h: &mut Harness) -> Result<()> {
        for ep in std::mem::take(&mut self.enabled_eps) {
            h.command_ok({
                let mut r = crate::harness::ctrl_req(wire::VIRTIO_UDC_CMD_EP_DISABLE);
                r.ep = ep;
                r
            })?;
        }
        Ok(())
    }

    fn apply_set_config(&mut self, h: &mut Harness, value: u8) -> Result<()> {
        // Like composite's set_config(): reset the old configuration first.
        self.disable_all(h)?;
        self.configuration = value;
        if value == 0 {
            return Ok(());
        }
        let speed = self.speed.unwrap_or(wire::VIRTIO_UDC_SPEED_HIGH);
        for ep in self.endpoints.clone() {
            let r = h.ep_enable_with(EpEnable {
                ep: ep.addr,
                ep_type: ep.xfer_type,
                max_packet: ep.max_packet_for(speed),
                interval: ep.interval,
                max_burst: if is_ss(speed) { ep.max_burst } else { 0 },
                mult: 0,
            })?;
            if u32::from(r.status) != wire::VIRTIO_UDC_S_OK {
                return Err(Error::CommandFailed {
                    opcode: wire::VIRTIO_UDC_CMD_EP_ENABLE,
                    ep: ep.addr,
                    status: u32::from(r.status),
                    name: wire::Status::from_wire(u32::from(r.status))
                        .map(|s| s.spec_name().to_string())
                        .unwrap_or_default(),
                });
            }
            self.enabled_eps.push(ep.addr);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn queue_ep0(
        &mut self,
        h: &mut Harness,
        setup: SetupPacket,
        ep: u8,
        flags: u8,
        data: Option<&[u8]>,
        len: u32,
        kind: Ep0Kind,
    ) -> Result<()> {
        let tag = h.next_tag();
        let (handle, buf) = if len == 0 {
            (h.submit(ep, flags, 0, &[], tag)?, None)
        } else {
            let buf = h.alloc_buffer(&BufferSpec::contiguous(u64::from(len)))?;
            if let Some(d) = data {
                h.write_buffer(&buf, d)?;
            }
            (h.submit_buffer(ep, flags, &buf, tag)?, Some(buf))
        };
        self.ep0_pending.push(Ep0Req {
            handle,
            setup,
            kind,
            buf,
        });
        Ok(())
    }

    fn ack(&mut self, h: &mut Harness, setup: SetupPacket, set_config: Option<u8>) -> Result<()> {
        if let Some(v) = set_config {
            self.apply_set_config(h, v)?;
        }
        let ep = self.status_ep;
        self.queue_ep0(h, setup, ep, 0, None, 0, Ep0Kind::Status { set_config })
    }

    /// Carries out `reply` for `setup`.
    pub fn do_reply(&mut self, h: &mut Harness, setup: SetupPacket, reply: SetupReply) -> Result<()> {
        let set_config = Self::set_config_of(&setup);
        match reply {
            SetupReply::In(data) if setup.length > 0 => {
                let len = data.len().min(usize::from(setup.length)) as u32;
                let zero = len < u32::from(setup.length) && len % self.ep0_mps() == 0;
                let flags = if zero { wire::VIRTIO_UDC_XFER_F_ZERO } else { 0 };
                self.queue_ep0(
                    h,
                    setup,
                    0x80,
                    flags,
                    Some(&data[..len as usize]),
                    len,
                    Ep0Kind::In,
                )
            }
            SetupReply::InRaw { data, zero } => {
                let flags = if zero { wire::VIRTIO_UDC_XFER_F_ZERO } else { 0 };
                let len = data.len() as u32;
                self.queue_ep0(h, setup, 0x80, flags, Some(&data), len, Ep0Kind::In)
            }
            SetupReply::Out if setup.length > 0 => {
                let len = u32::from(setup.length);
                self.queue_ep0(h, setup, 0x00, 0, None, len, Ep0Kind::Out)
            }
            SetupReply::In(_) | SetupReply::Out | SetupReply::Ack => self.ack(h, setup, set_config),
            SetupReply::DelayedAck(d) => {
                self.delayed = Some((Instant::now() + d, setup, set_config));
                Ok(())
            }
            SetupReply::Stall => {
                self.stalled.push(setup);
                h.command_ok({
                    let mut r = crate::harness::ctrl_req(wire::VIRTIO_UDC_CMD_EP_SET_HALT);
                    r.ep = 0;
                    r.value = vm_memory::Le32::from(1);
                    r
                })
                .map(|_| ())
            }
            SetupReply::Ignore => Ok(()),
        }
    }

    fn handle_setup(&mut self, h: &mut Harness, setup: SetupPacket) -> Result<()> {
        self.setups.push(setup);
        // A new SETUP ends any delayed status of the previous transfer.
        self.delayed = None;
        let reply = match self.hook.as_mut().and_then(|f| f(&setup)) {
            Some(r) => r,
            None => self.default_reply(&setup),
        };
        log::debug!("udc-harness gadget: {setup:?} -> {reply:?}");
        self.do_reply(h, setup, reply)
    }

    /// Reacts to one event.
    pub fn handle_event(&mut self, h: &mut Harness, ev: &VirtioUdcEvent) -> Result<()> {
        let e = Event::from(ev);
        self.events.push(e);
        match e {
            Event::BusReset { speed } => {
                self.speed = Some(speed);
                self.address = None;
                self.configuration = 0;
                self.configured = false;
                self.suspended = false;
                self.disconnected = false;
                self.enabled_eps.clear();
                self.delayed = None;
            }
            Event::Setup(p) => self.handle_setup(h, p)?,
            Event::Address(a) => self.address = Some(a),
            Event::Suspend => self.suspended = true,
            Event::Resume => self.suspended = false,
            Event::Disconnect => {
                self.disconnected = true;
                self.configuration = 0;
                self.configured = false;
                self.enabled_eps.clear();
                self.delayed = None;
            }
            Event::EpHalt { ep, halted } => self.halt_events.push((ep, halted)),
            Event::Unknown(_) => {
                return Err(Error::Gadget(format!("unknown event {ev:?}")));
            }
        }
        Ok(())
    }

    /// Collects finished ep0 requests and frees their buffers.
    pub fn reap_ep0(&mut self, h: &mut Harness) -> Result<()> {
        let mut i = 0;
        while i < self.ep0_pending.len() {
            let Some(c) = h.try_completion(self.ep0_pending[i].handle)? else {
                i += 1;
                continue;
            };
            let r = self.ep0_pending.remove(i);
            if c.is_ok() {
                match r.kind {
                    Ep0Kind::Out => {
                        if let Some(b) = &r.buf {
                            let d = h.read_buffer_prefix(b, u64::from(c.actual))?;
                            self.out_data.push((r.setup, d));
                        }
                    }
                    Ep0Kind::Status { set_config } => {
                        if let Some(v) = set_config {
                            self.configured = v != 0;
                        }
                    }
                    Ep0Kind::In => {}
                }
            } else {
                self.ep0_failures.push((r.setup, c));
            }
            if let Some(b) = r.buf {
                h.free_buffer(b)?;
            }
        }
        Ok(())
    }

    fn fire_delayed(&mut self, h: &mut Harness) -> Result<()> {
        if let Some((at, setup, set_config)) = self.delayed {
            if Instant::now() >= at {
                self.delayed = None;
                self.ack(h, setup, set_config)?;
            }
        }
        Ok(())
    }

    /// Processes events until `done(self)` holds, or errors after `timeout`.
    pub fn run_until(
        &mut self,
        h: &mut Harness,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&FakeGadget) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.reap_ep0(h)?;
            if done(self) {
                return Ok(());
            }
            self.fire_delayed(h)?;
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::timeout(
                    format!(
                        "gadget: {what} (speed {:?}, address {:?}, {} setups, last {:?}, stalled {:?}, ep0 failures {:?})",
                        self.speed,
                        self.address,
                        self.setups.len(),
                        self.setups.last(),
                        self.stalled,
                        self.ep0_failures
                    ),
                    timeout,
                ));
            }
            let mut wait = (deadline - now).min(EP0_POLL);
            if let Some((at, _, _)) = self.delayed {
                wait = wait.min(at.saturating_duration_since(now));
            }
            if let Some(ev) = h.next_event(wait)? {
                self.handle_event(h, &ev)?;
            }
        }
    }

    /// Processes events until SET_CONFIGURATION's status stage completes.
    pub fn run_until_configured(&mut self, h: &mut Harness, timeout: Duration) -> Result<()> {
        self.run_until(h, "configured", timeout, |g| g.configured)
    }

    /// Processes events for `d`, whatever happens.
    pub fn run_for(&mut self, h: &mut Harness, d: Duration) -> Result<()> {
        match self.run_until(h, "run_for", d, |_| false) {
            Err(e) if e.is_timeout() => Ok(()),
            r => r,
        }
    }

    /// PULLUP 1, then [`FakeGadget::run_until_configured`].
    pub fn connect_and_configure(&mut self, h: &mut Harness, timeout: Duration) -> Result<()> {
        let mut r = crate::harness::ctrl_req(wire::VIRTIO_UDC_CMD_PULLUP);
        r.value = vm_memory::Le32::from(1);
        h.command_ok(r)?;
        self.run_until_configured(h, timeout)
    }

    /// ep0 requests queued and not yet completed.
    pub fn ep0_in_flight(&self) -> usize {
        self.ep0_pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks a configuration bundle the way a host parser does.
    fn walk(d: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i + 2 <= d.len() {
            let l = d[i] as usize;
            assert!(l >= 2 && i + l <= d.len(), "bad descriptor at {i}");
            out.push((d[i + 1], d[i..i + l].to_vec()));
            i += l;
        }
        assert_eq!(i, d.len());
        out
    }

    #[test]
    fn device_descriptor_per_speed() {
        let g = FakeGadget::new();
        let hs = g.device_descriptor(wire::VIRTIO_UDC_SPEED_HIGH);
        assert_eq!(hs.len(), 18);
        assert_eq!(&hs[2..4], &[0x10, 0x02]);
        assert_eq!(hs[7], 64);
        let ss = g.device_descriptor(wire::VIRTIO_UDC_SPEED_SUPER);
        assert_eq!(&ss[2..4], &[0x20, 0x03]);
        assert_eq!(ss[7], 9);
        assert_eq!(&ss[8..10], &le16(0x1d6b));
        assert_eq!(&ss[14..18], &[1, 2, 3, 1]);
    }

    #[test]
    fn config_bundles_per_speed() {
        let g = FakeGadget::new();
        for (speed, mp, companions) in [
            (wire::VIRTIO_UDC_SPEED_FULL, 64u16, false),
            (wire::VIRTIO_UDC_SPEED_HIGH, 512, false),
            (wire::VIRTIO_UDC_SPEED_SUPER, 1024, true),
        ] {
            let c = g.config_descriptor(speed, DT_CONFIG);
            assert_eq!(u16::from_le_bytes([c[2], c[3]]) as usize, c.len());
            let ds = walk(&c);
            let types: Vec<u8> = ds.iter().map(|d| d.0).collect();
            if companions {
                assert_eq!(types, vec![2, 4, 5, 0x30, 5, 0x30]);
            } else {
                assert_eq!(types, vec![2, 4, 5, 5]);
            }
            let eps: Vec<&Vec<u8>> = ds.iter().filter(|d| d.0 == 5).map(|d| &d.1).collect();
            assert_eq!(eps[0][2], 0x81);
            assert_eq!(eps[1][2], 0x02);
            assert_eq!(eps[0][3], 2);
            assert_eq!(u16::from_le_bytes([eps[0][4], eps[0][5]]), mp);
            assert_eq!(ds[1].1[4], 2, "bNumEndpoints");
            assert_eq!(ds[1].1[5], 0xff, "vendor class");
        }
    }

    #[test]
    fn strings_and_bos() {
        let g = FakeGadget::new();
        assert_eq!(g.string_descriptor(0).unwrap(), vec![4, 3, 0x09, 0x04]);
        assert_eq!(g.string_descriptor(1).unwrap(), string_descriptor("virtio-udc"));
        assert_eq!(
            g.string_descriptor(2).unwrap(),
            string_descriptor("udc-harness gadget")
        );
        assert_eq!(g.string_descriptor(3).unwrap(), string_descriptor("0001"));
        assert!(g.string_descriptor(4).is_none());
        let b = g.bos_descriptor();
        assert_eq!(u16::from_le_bytes([b[2], b[3]]) as usize, b.len());
        let caps = walk(&b);
        assert_eq!(caps.len(), 3);
        assert_eq!(caps[1].1[2], CAP_USB20_EXTENSION);
        assert_eq!(caps[2].1[2], CAP_SUPERSPEED_USB);
    }

    #[test]
    fn default_replies_follow_composite() {
        let mut g = FakeGadget::new();
        g.speed = Some(wire::VIRTIO_UDC_SPEED_SUPER);
        let gd = |t: u8, i: u8, lang: u16, len: u16| SetupPacket {
            request_type: 0x80,
            request: REQ_GET_DESCRIPTOR,
            value: (u16::from(t) << 8) | u16::from(i),
            index: lang,
            length: len,
        };
        assert!(matches!(g.default_reply(&gd(1, 0, 0, 64)), SetupReply::In(d) if d.len() == 18));
        assert!(matches!(g.default_reply(&gd(15, 0, 0, 5)), SetupReply::In(_)));
        assert_eq!(
            g.default_reply(&gd(6, 0, 0, 10)),
            SetupReply::Stall,
            "no qualifier at SS"
        );
        assert_eq!(g.default_reply(&gd(3, 1, 0x0407, 255)), SetupReply::Stall);
        assert!(matches!(
            g.default_reply(&gd(3, 1, 0x0409, 255)),
            SetupReply::In(_)
        ));
        g.speed = Some(wire::VIRTIO_UDC_SPEED_HIGH);
        assert!(matches!(g.default_reply(&gd(6, 0, 0, 10)), SetupReply::In(d) if d.len() == 10));
        assert!(
            matches!(g.default_reply(&gd(7, 0, 0, 255)), SetupReply::In(d) if d[1] == DT_OTHER_SPEED_CONFIG && d[22..24] == [64, 0])
        );
        let set_cfg = |v: u16| SetupPacket {
            request_type: 0,
            request: REQ_SET_CONFIGURATION,
            value: v,
            index: 0,
            length: 0,
        };
        assert_eq!(g.default_reply(&set_cfg(1)), SetupReply::Ack);
        assert_eq!(g.default_reply(&set_cfg(0)), SetupReply::Ack);
        assert_eq!(g.default_reply(&set_cfg(2)), SetupReply::Stall);
        g.status_delay = Some(Duration::from_millis(5));
        assert_eq!(
            g.default_reply(&set_cfg(1)),
            SetupReply::DelayedAck(Duration::from_millis(5))
        );
        let vendor = SetupPacket {
            request_type: 0xc0,
            request: 1,
            ..Default::default()
        };
        assert_eq!(g.default_reply(&vendor), SetupReply::Stall);
    }

    #[test]
    fn endpoints_picked_from_a_config() {
        use vm_memory::Le16;
        let mut cfg = wire::VirtioUdcConfig {
            num_eps: 4,
            ..Default::default()
        };
        cfg.eps[0].caps = wire::VIRTIO_UDC_EP_CAP_CONTROL;
        cfg.eps[1].addr = 0x83;
        cfg.eps[1].caps = wire::VIRTIO_UDC_EP_CAP_BULK;
        cfg.eps[1].max_packet_limit = Le16::from(512);
        cfg.eps[2].addr = 0x01;
        cfg.eps[2].caps = wire::VIRTIO_UDC_EP_CAP_INT;
        cfg.eps[2].max_packet_limit = Le16::from(1024);
        cfg.eps[3].addr = 0x05;
        cfg.eps[3].caps = wire::VIRTIO_UDC_EP_CAP_BULK | wire::VIRTIO_UDC_EP_CAP_INT;
        cfg.eps[3].max_packet_limit = Le16::from(1024);
        let g = FakeGadget::for_config(&cfg);
        assert_eq!(g.endpoints[0].addr, 0x83);
        assert_eq!(g.endpoints[0].max_packet, [64, 512, 512]);
        assert_eq!(g.endpoints[1].addr, 0x05);
        assert_eq!(g.endpoints[1].max_packet, [64, 512, 1024]);
    }

    #[test]
    fn malformations_change_the_bytes() {
        let hs = wire::VIRTIO_UDC_SPEED_HIGH;
        let ss = wire::VIRTIO_UDC_SPEED_SUPER;
        let g = FakeGadget::new().with_malformation(Malformation::ConfigTotalLengthTooLarge);
        let c = g.config_descriptor(hs, DT_CONFIG);
        assert_eq!(u16::from_le_bytes([c[2], c[3]]) as usize, c.len() + 16);
        let g = FakeGadget::new().with_malformation(Malformation::MissingSsCompanion);
        assert_eq!(g.config_descriptor(ss, DT_CONFIG).len(), 9 + 9 + 14);
        let g = FakeGadget::new().with_malformation(Malformation::ZeroLengthDescriptor);
        assert_eq!(g.config_descriptor(hs, DT_CONFIG)[18], 0);
        let g = FakeGadget::new().with_malformation(Malformation::EndpointAddress(0x8f));
        assert_eq!(g.config_descriptor(hs, DT_CONFIG)[20], 0x8f);
        let g = FakeGadget::new().with_malformation(Malformation::DeviceDescLength(17));
        assert_eq!(g.device_descriptor(hs)[0], 17);
        let g = FakeGadget::new().with_malformation(Malformation::Replace {
            desc_type: DT_DEVICE,
            index: 0,
            bytes: vec![1, 2, 3],
        });
        let p = SetupPacket {
            request_type: 0x80,
            request: REQ_GET_DESCRIPTOR,
            value: 0x0100,
            index: 0,
            length: 64,
        };
        assert_eq!(g.get_descriptor(hs, &p), Some(vec![1, 2, 3]));
        let g = FakeGadget::new().with_hook(|p| (p.request == 0x42).then_some(SetupReply::Out));
        assert!(format!("{g:?}").contains("hook: true"));
    }
}
