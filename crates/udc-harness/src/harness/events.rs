// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The eventq: event buffers kept posted, events collected in delivery
//! order, and waits for the next one or one of a kind.

use std::time::{Duration, Instant};

use vhost_device_udc::wire::{self, VirtioUdcEvent, EVENT_SIZE};

use super::{Harness, RawChain};
use crate::error::{Error, Result};
use crate::usb::Event;

impl Harness {
    pub(super) fn post_event_buffer(&mut self) -> Result<()> {
        let gpa = self.alloc.alloc(EVENT_SIZE as u64, 16)?;
        self.repost_event_buffer(gpa)
    }

    /// Posts `n` more event buffers of 16 bytes and kicks the eventq.
    pub fn post_event_buffers(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            self.post_event_buffer()?;
        }
        self.eventq.kick()?;
        Ok(())
    }

    /// Whether the buffer of an event the harness took is posted again
    /// (default true). Off, the driver's supply of buffers runs out, for a
    /// test that wants the device to meet only the buffers it posts.
    pub fn set_event_repost(&mut self, on: bool) {
        self.repost_events = on;
    }

    /// Posts a hand-made eventq chain (see [`RawChain`]; `status_at` is
    /// not used) and kicks. What the device returns for it is not an event:
    /// [`Harness::raw_event_returns`] collects it.
    pub fn post_raw_event_chain(&mut self, chain: &RawChain) -> Result<u16> {
        self.ensure_connected()?;
        chain.write_tables(&self.mem)?;
        let head = self.eventq.add_raw_chain(&chain.ring, chain.writable_bytes())?;
        self.raw_event_heads.insert(head);
        self.eventq.kick()?;
        Ok(head)
    }

    /// Waits up to `timeout` until the device has returned `n` chains
    /// posted with [`Harness::post_raw_event_chain`], and takes what came
    /// back for them as `(head, used_len)` in used-ring order (fewer than
    /// `n` on timeout). Events delivered meanwhile are kept for
    /// [`Harness::next_event`].
    pub fn raw_event_returns(&mut self, n: usize, timeout: Duration) -> Result<Vec<(u16, u32)>> {
        let deadline = Instant::now() + timeout;
        while self.raw_event_returns.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.reap_events(left)?;
        }
        let take = n.min(self.raw_event_returns.len());
        Ok(self.raw_event_returns.drain(..take).collect())
    }

    fn repost_event_buffer(&mut self, gpa: u64) -> Result<()> {
        self.mem.fill(gpa, EVENT_SIZE, 0)?;
        let head = self.eventq.add_chain(&[(gpa, EVENT_SIZE as u32, true)])?;
        self.event_bufs.insert(head, gpa);
        Ok(())
    }

    /// Collects events the device has delivered, waiting up to `wait` for the
    /// first, and reposts their buffers.
    fn reap_events(&mut self, wait: Duration) -> Result<()> {
        let used = self.wait_used_on(1, wait)?;
        if used.is_empty() {
            return Ok(());
        }
        // Take every buffer of the batch before reposting any: a repost may
        // reuse the descriptor index of a later entry of the same batch.
        let mut bufs: Vec<(u64, u32)> = Vec::with_capacity(used.len());
        for &(head, len) in &used {
            if self.raw_event_heads.remove(&head) {
                self.raw_event_returns.push_back((head, len));
                continue;
            }
            let gpa = self
                .event_bufs
                .remove(&head)
                .expect("DriverQueue only returns heads in flight");
            bufs.push((gpa, len));
        }
        let mut err = None;
        for (gpa, len) in bufs {
            let ev: VirtioUdcEvent = self.mem.read_obj(gpa)?;
            if len as usize != EVENT_SIZE && err.is_none() {
                err = Some(Error::BadUsedLen {
                    what: "event",
                    expected: EVENT_SIZE as u32,
                    got: len,
                });
            }
            log::debug!("udc-harness: event {:?}", Event::from(&ev));
            self.events.push_back(ev);
            if self.repost_events {
                self.repost_event_buffer(gpa)?;
            } else {
                self.free(gpa)?;
            }
        }
        self.eventq.kick()?;
        err.map_or(Ok(()), Err)
    }

    /// The next event, waiting up to `timeout`; `None` on timeout.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<VirtioUdcEvent>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(Some(e));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            self.reap_events(left)?;
            if self.events.is_empty() && Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// The next event without waiting.
    pub fn try_event(&mut self) -> Result<Option<VirtioUdcEvent>> {
        self.next_event(Duration::ZERO)
    }

    /// The next event, decoded.
    pub fn next_decoded_event(&mut self, timeout: Duration) -> Result<Option<Event>> {
        Ok(self.next_event(timeout)?.map(Event::from))
    }

    /// The first event (in delivery order) that `pred` accepts, waiting up to
    /// `timeout`; events it passes over stay queued, in order, for
    /// [`Harness::next_event`].
    fn next_event_matching(
        &mut self,
        mut pred: impl FnMut(&Event) -> bool,
        timeout: Duration,
    ) -> Result<Option<VirtioUdcEvent>> {
        let deadline = Instant::now() + timeout;
        let mut scanned = 0;
        loop {
            while scanned < self.events.len() {
                if pred(&Event::from(&self.events[scanned])) {
                    return Ok(self.events.remove(scanned));
                }
                scanned += 1;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            self.reap_events(left)?;
            if scanned == self.events.len() && Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Waits for the next event of wire type `ty` (VIRTIO_UDC_EVT_*), leaving
    /// others queued; an error on timeout.
    pub fn expect_event(&mut self, ty: u16, timeout: Duration) -> Result<VirtioUdcEvent> {
        let mut f = |e: &Event| event_type(e) == ty;
        self.next_event_matching(&mut f, timeout)?
            .ok_or_else(|| Error::timeout(format!("event type {ty:#x}"), timeout))
    }

    /// Events received and not yet taken.
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// Event buffers currently posted on the eventq.
    pub fn posted_event_buffers(&self) -> usize {
        self.event_bufs.len()
    }
}

/// The wire type of a decoded event.
fn event_type(e: &Event) -> u16 {
    match e {
        Event::BusReset { .. } => wire::VIRTIO_UDC_EVT_BUS_RESET,
        Event::Setup(_) => wire::VIRTIO_UDC_EVT_SETUP,
        Event::Suspend => wire::VIRTIO_UDC_EVT_SUSPEND,
        Event::Resume => wire::VIRTIO_UDC_EVT_RESUME,
        Event::Disconnect => wire::VIRTIO_UDC_EVT_DISCONNECT,
        Event::Address(_) => wire::VIRTIO_UDC_EVT_ADDRESS,
        Event::EpHalt { .. } => wire::VIRTIO_UDC_EVT_EP_HALT,
        Event::Unknown(e) => u16::from(e.type_),
    }
}
