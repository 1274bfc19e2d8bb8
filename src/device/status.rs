// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Status and statistics of the controller and each endpoint, for the
//! control socket.

use super::*;

/// Counters per endpoint, for the control socket and logs.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct EpStats {
    pub bytes: u64,
    pub guest_completed: u64,
    pub guest_errors: u64,
    pub host_completed: u64,
    pub host_errors: u64,
    /// Requests ended by a DMA fault (an access outside guest memory, or
    /// one the IOMMU refused).
    pub dma_faults: u64,
}

/// A snapshot of the device for the control socket.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceStatus {
    /// What the config space offers the driver.
    pub controller: ControllerStatus,
    pub pullup: bool,
    pub host_attached: bool,
    pub state: BusState,
    pub suspended: bool,
    pub speed: Option<Speed>,
    pub address: u8,
    pub configuration: u8,
    pub endpoints: Vec<EndpointStatus>,
}

/// The controller's configuration as the driver sees it.
#[derive(Clone, Debug, Serialize)]
pub struct ControllerStatus {
    pub max_speed: Speed,
    pub scatter_gather: bool,
    pub max_segments: u32,
    pub remote_wakeup: bool,
    /// Endpoints other than ep0.
    pub endpoints: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct EndpointStatus {
    pub address: u8,
    pub name: String,
    pub enabled: bool,
    pub transfer_type: Option<&'static str>,
    pub max_packet: Option<u16>,
    pub halted: bool,
    pub wedged: bool,
    pub guest_queued: usize,
    pub host_queued: usize,
    /// Requests whose data is done and whose completion waits (injection).
    pub completions_waiting: usize,
    /// Handles of held completions, for the control socket's `release`.
    pub held_completions: Vec<u64>,
    pub stats: EpStats,
    /// The last DMA fault's report line, as the daemon logged it.
    pub last_dma_fault: Option<String>,
}

impl<T: Debug> Device<T> {
    pub fn status(&self) -> DeviceStatus {
        let mut endpoints = vec![EndpointStatus {
            address: 0,
            name: "ep0".into(),
            enabled: true,
            transfer_type: Some("control"),
            max_packet: self.speed.map(|s| ep0_max_packet(s.to_wire())),
            halted: false,
            wedged: false,
            guest_queued: self.ep0.len(),
            host_queued: usize::from(self.control.is_some()),
            completions_waiting: 0,
            held_completions: Vec::new(),
            stats: self.ep0_stats,
            last_dma_fault: self.ep0_last_dma_fault.clone(),
        }];
        endpoints.extend(self.eps.iter().map(|e| EndpointStatus {
            address: e.cap.addr,
            name: ep_name(e.cap.addr),
            enabled: e.enabled.is_some(),
            transfer_type: e.enabled.map(|en| usb::transfer_type_name(en.ep_type)),
            max_packet: e.enabled.map(|en| en.max_packet),
            halted: e.halted,
            wedged: e.wedged,
            guest_queued: e.guest.len(),
            host_queued: e.host.len(),
            completions_waiting: e.finished.len(),
            held_completions: e.finished.iter().filter_map(|f| f.handle).collect(),
            stats: e.stats,
            last_dma_fault: e.last_dma_fault.clone(),
        }));
        DeviceStatus {
            controller: ControllerStatus {
                max_speed: self.cfg.max_speed,
                scatter_gather: self.cfg.sg,
                max_segments: self.cfg.segment_limit(),
                remote_wakeup: self.cfg.remote_wakeup,
                endpoints: self.cfg.endpoints.len(),
            },
            pullup: self.pullup,
            host_attached: self.host_attached,
            state: self.state,
            suspended: self.suspended,
            speed: self.speed,
            address: self.address,
            configuration: self.configuration,
            endpoints,
        }
    }
}
