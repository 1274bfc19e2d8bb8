// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The controlq: commands and their responses, raw command chains, and
//! one method per command.

use std::time::{Duration, Instant};

use vhost_device_udc::wire::{self, Status, VirtioUdcCtrlReq, VirtioUdcCtrlResp, CTRL_RESP_SIZE};
use vm_memory::{ByteValued, Le16, Le32, Le64};

use super::{Harness, RawDesc};
use crate::error::{Error, Result};

/// A completed raw command chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawCompletion {
    pub used_len: u32,
    /// The contents of each harness-allocated writable descriptor, in chain
    /// order, after completion.
    pub writable: Vec<Vec<u8>>,
}

impl RawCompletion {
    /// The first writable buffer read as a control response, if it is at
    /// least 8 bytes.
    pub fn response(&self) -> Option<VirtioUdcCtrlResp> {
        self.writable
            .first()
            .and_then(|b| wire::read_struct::<VirtioUdcCtrlResp>(b))
    }
}

/// Convenience accessors for command responses.
pub trait CtrlRespExt {
    /// The raw status code.
    fn code(&self) -> u32;
    /// The result value.
    fn value(&self) -> u32;
    /// The status as an enum, if defined.
    fn status_enum(&self) -> Option<Status>;
    /// Status is OK.
    fn is_ok(&self) -> bool {
        self.code() == wire::VIRTIO_UDC_S_OK
    }
}

impl CtrlRespExt for VirtioUdcCtrlResp {
    fn code(&self) -> u32 {
        u32::from(self.status)
    }
    fn value(&self) -> u32 {
        u32::from(self.value)
    }
    fn status_enum(&self) -> Option<Status> {
        Status::from_wire(self.code())
    }
}

/// Arguments of EP_ENABLE: the daemon's own type, so both sides agree.
pub use vhost_device_udc::request::EpEnable;

/// A control request with every field but the opcode zero.
pub fn ctrl_req(opcode: u16) -> VirtioUdcCtrlReq {
    VirtioUdcCtrlReq {
        opcode: Le16::from(opcode),
        ..Default::default()
    }
}

#[derive(Debug)]
pub(super) struct CmdInFlight {
    pub(super) allocs: Vec<u64>,
}

impl Harness {
    /// Sends a command and waits (up to the default timeout) for its
    /// response. A non-OK status is returned, not an error; a used length
    /// other than 8 is an error.
    pub fn command(&mut self, req: VirtioUdcCtrlReq) -> Result<VirtioUdcCtrlResp> {
        self.command_timeout(req, self.opts.timeout)
    }

    /// [`Harness::command`] with an explicit timeout.
    fn command_timeout(&mut self, req: VirtioUdcCtrlReq, timeout: Duration) -> Result<VirtioUdcCtrlResp> {
        let r = self.raw_command_chain(
            &[
                RawDesc::Readable(req.as_slice().to_vec()),
                RawDesc::Writable(CTRL_RESP_SIZE as u32),
            ],
            timeout,
        )?;
        if r.used_len as usize != CTRL_RESP_SIZE {
            return Err(Error::BadUsedLen {
                what: "control response",
                expected: CTRL_RESP_SIZE as u32,
                got: r.used_len,
            });
        }
        Ok(r.response().expect("8-byte writable buffer"))
    }

    /// Sends a command and requires status OK; returns the response value.
    pub fn command_ok(&mut self, req: VirtioUdcCtrlReq) -> Result<u32> {
        let r = self.command(req)?;
        if !r.is_ok() {
            return Err(Error::CommandFailed {
                opcode: u16::from(req.opcode),
                ep: req.ep,
                status: r.code(),
                name: r
                    .status_enum()
                    .map(|s| s.spec_name().to_string())
                    .unwrap_or_else(|| "undefined".into()),
            });
        }
        Ok(r.value())
    }

    /// Sends arbitrary readable bytes as a command, with an 8-byte writable
    /// response buffer.
    pub fn raw_command(&mut self, bytes: &[u8]) -> Result<RawCompletion> {
        self.raw_command_chain(
            &[
                RawDesc::Readable(bytes.to_vec()),
                RawDesc::Writable(CTRL_RESP_SIZE as u32),
            ],
            self.opts.timeout,
        )
    }

    /// Sends an arbitrary chain on the controlq and waits for it.
    pub fn raw_command_chain(&mut self, parts: &[RawDesc], timeout: Duration) -> Result<RawCompletion> {
        self.ensure_connected()?;
        let (chain, allocs, writable) = self.build_chain(parts)?;
        let head = match self.controlq.add_chain(&chain) {
            Ok(h) => h,
            Err(e) => {
                self.free_all(&allocs);
                return Err(e);
            }
        };
        self.cmds.insert(head, CmdInFlight { allocs });
        self.controlq.kick()?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            for (h, len) in self.wait_used_on(0, left)? {
                let c = self.cmds.remove(&h);
                if h == head {
                    let mut out = Vec::new();
                    for &(gpa, l) in &writable {
                        out.push(self.mem.read(gpa, l as usize)?);
                    }
                    if let Some(c) = c {
                        self.free_all(&c.allocs);
                    }
                    return Ok(RawCompletion {
                        used_len: len,
                        writable: out,
                    });
                }
                // A command an earlier call gave up on.
                log::warn!("udc-harness: late command completion, head {h}, used {len}");
                if let Some(c) = c {
                    self.free_all(&c.allocs);
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::timeout(
                    format!("controlq response (head {head})"),
                    timeout,
                ));
            }
        }
    }

    /// PULLUP on or off.
    pub fn pullup(&mut self, on: bool) -> Result<VirtioUdcCtrlResp> {
        let mut r = ctrl_req(wire::VIRTIO_UDC_CMD_PULLUP);
        r.value = Le32::from(u32::from(on));
        self.command(r)
    }

    /// EP_ENABLE with interval, burst and mult 0.
    pub fn ep_enable(&mut self, ep: u8, ep_type: u8, max_packet: u16) -> Result<VirtioUdcCtrlResp> {
        self.ep_enable_with(EpEnable {
            ep,
            ep_type,
            max_packet,
            ..Default::default()
        })
    }

    /// EP_ENABLE with every argument.
    pub fn ep_enable_with(&mut self, e: EpEnable) -> Result<VirtioUdcCtrlResp> {
        let mut r = ctrl_req(wire::VIRTIO_UDC_CMD_EP_ENABLE);
        r.ep = e.ep;
        r.ep_type = e.ep_type;
        r.max_packet = Le16::from(e.max_packet);
        r.interval = e.interval;
        r.max_burst = e.max_burst;
        r.mult = e.mult;
        self.command(r)
    }

    fn ep_cmd(&mut self, opcode: u16, ep: u8, value: u32) -> Result<VirtioUdcCtrlResp> {
        let mut r = ctrl_req(opcode);
        r.ep = ep;
        r.value = Le32::from(value);
        self.command(r)
    }

    /// EP_DISABLE.
    pub fn ep_disable(&mut self, ep: u8) -> Result<VirtioUdcCtrlResp> {
        self.ep_cmd(wire::VIRTIO_UDC_CMD_EP_DISABLE, ep, 0)
    }

    /// EP_SET_HALT: 0 clear, 1 halt (on ep0: protocol stall), 2 wedge.
    pub fn set_halt(&mut self, ep: u8, value: u32) -> Result<VirtioUdcCtrlResp> {
        self.ep_cmd(wire::VIRTIO_UDC_CMD_EP_SET_HALT, ep, value)
    }

    /// XFER_CANCEL of the request with `tag` on `ep`.
    pub fn cancel(&mut self, ep: u8, tag: u64) -> Result<VirtioUdcCtrlResp> {
        let mut r = ctrl_req(wire::VIRTIO_UDC_CMD_XFER_CANCEL);
        r.ep = ep;
        r.tag = Le64::from(tag);
        self.command(r)
    }

    /// GET_FRAME.
    pub fn get_frame(&mut self) -> Result<VirtioUdcCtrlResp> {
        self.command(ctrl_req(wire::VIRTIO_UDC_CMD_GET_FRAME))
    }

    /// WAKEUP.
    pub fn wakeup(&mut self) -> Result<VirtioUdcCtrlResp> {
        self.command(ctrl_req(wire::VIRTIO_UDC_CMD_WAKEUP))
    }
}
