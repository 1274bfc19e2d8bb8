// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The controller the guest sees: its configuration space, endpoint
//! capabilities and limits.

use super::*;

/// The most segments per request a controller may advertise. Each is 16
/// bytes of request that the device reads and keeps while the request is
/// queued, and a queue holds up to 1,024 requests: 65,536 (1 MiB per
/// request) covers a 256 MiB buffer in 4 KiB pages, four times FunctionFS's
/// largest DMABUF transfer in the suite.
pub const MAX_SEGMENTS: u32 = 65536;

/// One endpoint the controller offers (a config-space entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct EpCap {
    pub addr: u8,
    pub caps: u8,
    pub max_packet_limit: u16,
}

/// What the controller offers the driver: the content of the config space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerConfig {
    pub max_speed: Speed,
    pub sg: bool,
    pub max_segments: u32,
    pub remote_wakeup: bool,
    /// Endpoints other than ep0.
    pub endpoints: Vec<EpCap>,
}

impl Default for ControllerConfig {
    /// ep1-ep15 IN and ep1-ep14 OUT, every type, 1024-byte packets: enough
    /// for any gadget a user composes, like dummy_hcd's generous layout
    /// (29 is the most the configuration space holds).
    fn default() -> Self {
        let all = VIRTIO_UDC_EP_CAP_BULK | VIRTIO_UDC_EP_CAP_INT | VIRTIO_UDC_EP_CAP_ISO;
        let mut endpoints = Vec::new();
        for n in 1..=15u8 {
            for dir in [USB_DIR_IN, 0] {
                if n == 15 && dir == 0 {
                    continue;
                }
                endpoints.push(EpCap {
                    addr: n | dir,
                    caps: all,
                    max_packet_limit: 1024,
                });
            }
        }
        ControllerConfig {
            max_speed: Speed::Super,
            sg: true,
            max_segments: MIN_SG_SEGMENTS,
            remote_wakeup: true,
            endpoints,
        }
    }
}

impl ControllerConfig {
    /// The config space bytes the driver reads (section 4).
    pub fn to_wire(&self) -> VirtioUdcConfig {
        let mut c = VirtioUdcConfig::default();
        let mut flags = 0;
        if self.sg {
            flags |= VIRTIO_UDC_CONFIG_F_SG;
        }
        if self.remote_wakeup {
            flags |= VIRTIO_UDC_CONFIG_F_REMOTE_WAKEUP;
        }
        c.flags = flags.into();
        c.max_segments = (if self.sg { self.max_segments } else { 1 }).into();
        c.max_speed = self.max_speed.to_wire();
        c.eps[0] = VirtioUdcEpCap {
            addr: 0,
            caps: VIRTIO_UDC_EP_CAP_CONTROL,
            max_packet_limit: 512.into(),
            ..Default::default()
        };
        for (i, ep) in self.endpoints.iter().enumerate() {
            c.eps[i + 1] = VirtioUdcEpCap {
                addr: ep.addr,
                caps: ep.caps,
                max_packet_limit: ep.max_packet_limit.into(),
                ..Default::default()
            };
        }
        c.num_eps = (self.endpoints.len() + 1) as u8;
        c
    }

    /// The per-request segment limit in force.
    pub fn segment_limit(&self) -> u32 {
        if self.sg {
            self.max_segments
        } else {
            1
        }
    }

    pub fn has_endpoint(&self, addr: u8) -> bool {
        ep_num(addr) == 0 || self.endpoints.iter().any(|e| e.addr == addr)
    }

    /// Injection settings may only name endpoints this controller has.
    pub fn check_injection(&self, inject: &InjectConfig) -> Result<(), DeviceError> {
        match inject.endpoints.keys().find(|ep| !self.has_endpoint(**ep)) {
            Some(ep) => Err(DeviceError::NoEndpoint(EpAddress(*ep))),
            None => Ok(()),
        }
    }
}
