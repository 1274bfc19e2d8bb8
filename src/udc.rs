// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The shared device: the handle every thread of the daemon (host model,
//! control socket, traffic engine, timers, the transport) talks to.
//!
//! Every call locks the [`Device`], runs, and when the lock is released
//! hands the outputs the calls produced to the transport's [`Rings`] in
//! the order they happened, so a completion an event implies is always
//! returned to the driver before the event. The host model sees only this
//! handle and the device model, never the transport.

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vm_memory::GuestAddress;

use crate::device::offlock::CopyBoard;
use crate::device::{BusView, ControllerConfig, Device, GuestMem, Output};

/// Where a transfer's status goes: its descriptor chain's head and the
/// regions of the chain the device may write. The device model carries it
/// untouched; only the transport reads it.
#[derive(Debug)]
pub struct ChainToken {
    pub head: u16,
    pub status_at: Vec<(GuestAddress, usize)>,
}

/// The transport's side of delivery: where the device's outputs go.
pub trait Rings: Send + Any {
    /// Returns completed transfers and posts events, in order. `mem` is
    /// the guest memory the driver last set, if any.
    fn deliver(&mut self, mem: Option<&GuestMem>, outputs: Vec<Output<ChainToken>>);
    /// Forgets the rings and whatever waits for them (the connection or
    /// the device was reset).
    fn clear(&mut self);
    /// For the transport to reach its own state behind the lock.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

struct Inner {
    dev: Device<ChainToken>,
    /// Which vhost-user connection is current; a backend of an earlier one
    /// (its worker thread may still see a late kick) must not touch state.
    connection: u64,
    rings: Box<dyn Rings>,
}

impl Inner {
    fn deliver(&mut self) {
        let outputs = self.dev.take_outputs();
        self.rings.deliver(self.dev.memory(), outputs);
    }
}

/// The shared device.
pub struct Udc {
    inner: Mutex<Inner>,
    /// Signalled when a hold changed the bus ([`Device::bus_view`]) while
    /// a thread waits on it in [`Udc::wait_until`] (the host model waits
    /// for the pull-up). Not after every hold: the lock is taken several
    /// times per transfer, and each needless wake-up is two context
    /// switches and a turn at the lock.
    changed: Condvar,
    /// Threads in [`Udc::wait_until`] now.
    waiters: AtomicUsize,
    /// Signalled when the timer thread must look at the deadlines again.
    timers: Condvar,
    /// When the timer thread wakes up on its own next, in nanoseconds
    /// since `epoch` (`u64::MAX`: it is running, not waiting). Written
    /// only under the lock, so a hold that brings a deadline earlier than
    /// this wakes it and no other hold needs to.
    timer_wake: AtomicU64,
    epoch: Instant,
    holds: HoldMeter,
    /// Copies outside the lock, for [`Udc::run_copy_helper`].
    copies: Arc<CopyBoard>,
    /// Set once a thread runs [`Udc::run_copy_helper`].
    helper: AtomicBool,
}

/// How long the device lock is held. Every thread of the daemon waits for
/// it, so the longest hold bounds how late a control-socket answer, a timer
/// or another endpoint's transfer can be; `status` reports it.
#[derive(Default)]
struct HoldMeter {
    count: AtomicU64,
    total_ns: AtomicU64,
    longest_ns: AtomicU64,
    /// Holds of 1 ms or more, and of 10 ms or more: one long hold (a
    /// preempted thread on a busy host) tells apart from many.
    over_1ms: AtomicU64,
    over_10ms: AtomicU64,
    /// The most guest-memory work one hold did, in bytes: unlike the
    /// times, it does not count a preemption, so it shows whether the
    /// budget held on a host of any speed or load.
    most_work: AtomicU64,
}

impl HoldMeter {
    /// A hold that began at `since` ends, having done `work` bytes of
    /// guest-memory work.
    fn record(&self, since: Instant, work: u64) {
        self.most_work.fetch_max(work, Ordering::Relaxed);
        let ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.total_ns.fetch_add(ns, Ordering::Relaxed);
        self.longest_ns.fetch_max(ns, Ordering::Relaxed);
        if ns >= 1_000_000 {
            self.over_1ms.fetch_add(1, Ordering::Relaxed);
        }
        if ns >= 10_000_000 {
            self.over_10ms.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The device lock's holds so far: how many, and the longest and mean hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockHolds {
    pub count: u64,
    pub longest: Duration,
    pub total: Duration,
    pub over_1ms: u64,
    pub over_10ms: u64,
    /// The most guest-memory work one hold did, in bytes.
    pub most_work: u64,
}

/// Rounds of copies outside the lock one holder runs after its hold
/// (`Udc::run_copies`): each round's landings may decide the next copies.
const COPY_ROUNDS: usize = 8;

/// A locked device. Dropping it delivers the outputs the calls produced.
pub struct UdcGuard<'a> {
    g: MutexGuard<'a, Inner>,
    udc: &'a Udc,
    /// When the lock was taken, for the hold meter.
    since: Instant,
    /// The bus when the lock was taken: waiters wake if it changed.
    bus: BusView,
}

impl std::ops::Deref for UdcGuard<'_> {
    type Target = Device<ChainToken>;
    fn deref(&self) -> &Self::Target {
        &self.g.dev
    }
}

impl std::ops::DerefMut for UdcGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.g.dev
    }
}

impl Drop for UdcGuard<'_> {
    fn drop(&mut self) {
        self.udc.end_hold(&mut self.g, self.since, self.bus);
        // The copies this hold decided, without the lock.
        self.udc.run_copies(&mut self.g);
    }
}

impl<'a> UdcGuard<'a> {
    /// A hold of the lock starts: the device gets its budget of work for
    /// it. `settle`: the holder may do anything, so every copy outside the
    /// lock is waited for and landed first; else (the data path) only those
    /// already done land.
    fn new(mut g: MutexGuard<'a, Inner>, udc: &'a Udc, settle: bool) -> Self {
        let since = Instant::now();
        g.dev.begin_hold();
        if settle {
            g.dev.settle_copies();
        } else {
            g.dev.land_copies();
        }
        UdcGuard {
            bus: g.dev.bus_view(),
            g,
            udc,
            since,
        }
    }
}

impl UdcGuard<'_> {
    /// The current connection's number (see [`Udc::end_connection`]).
    pub fn connection(&self) -> u64 {
        self.g.connection
    }

    /// Delivers the outputs so far now, before the guard drops (a command's
    /// completions go to the driver before the command's response).
    pub fn deliver(&mut self) {
        self.g.deliver();
    }

    /// The transport's rings, as the type it installed.
    ///
    /// # Panics
    ///
    /// If the rings are of another type: one transport per daemon.
    pub fn rings<R: Rings>(&mut self) -> &mut R {
        self.g
            .rings
            .as_any_mut()
            .downcast_mut::<R>()
            .expect("the rings are of the transport that installed them")
    }
}

impl Udc {
    pub fn new(cfg: ControllerConfig, rings: Box<dyn Rings>) -> Arc<Self> {
        let mut dev = Device::new(cfg);
        // Every hold ends in run_copies, so plain copies can leave the lock.
        let copies = dev.enable_offlock();
        Arc::new(Udc {
            inner: Mutex::new(Inner {
                dev,
                connection: 0,
                rings,
            }),
            changed: Condvar::new(),
            waiters: AtomicUsize::new(0),
            timers: Condvar::new(),
            timer_wake: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
            holds: HoldMeter::default(),
            copies,
            helper: AtomicBool::new(false),
        })
    }

    /// A hold that began at `since` with the bus at `bus` ends (the lock
    /// still held): its outputs go to the transport, waiters wake.
    fn end_hold(&self, g: &mut MutexGuard<'_, Inner>, since: Instant, bus: BusView) {
        g.deliver();
        self.wake_waiters(&g.dev, bus);
        self.holds.record(since, g.dev.hold_work());
    }

    /// Runs the copies the device decided (see `device::offlock`) with the
    /// lock let go, then lands them in a hold of their own, and so on for
    /// what the landings let move, for at most [`COPY_ROUNDS`] rounds: the
    /// holder has its own work to get back to. What is left then goes to
    /// the helper thread, or without one is copied and landed under the
    /// lock, as before copies left it.
    fn run_copies(&self, g: &mut MutexGuard<'_, Inner>) {
        for round in 0..=COPY_ROUNDS {
            if round == COPY_ROUNDS {
                let Some(board) = g.dev.release_copies() else {
                    return;
                };
                if self.helper.load(Ordering::SeqCst) {
                    // The helper thread goes on with them.
                    board.wake_helper();
                } else {
                    let (since, bus) = (Instant::now(), g.dev.bus_view());
                    g.dev.begin_hold();
                    g.dev.settle_copies();
                    self.end_hold(g, since, bus);
                }
                return;
            }
            let Some(board) = g.dev.release_copies() else {
                return;
            };
            MutexGuard::unlocked(g, || board.run_queued());
            let (since, bus) = (Instant::now(), g.dev.bus_view());
            g.dev.begin_hold();
            g.dev.land_copies();
            self.end_hold(g, since, bus);
        }
    }

    /// Runs copies the holders of the lock queued and could not run alone
    /// (see [`Udc::run_copies`]), for the daemon's life: on two CPUs, two
    /// copies at once. Each copy lands at once, as the holder's would.
    pub fn run_copy_helper(&self) -> ! {
        self.helper.store(true, Ordering::SeqCst);
        loop {
            self.copies.wait_queued();
            if self.copies.run_queued() > 0 {
                drop(self.lock_data());
            }
        }
    }

    /// At the end of a hold (the lock still held): wakes the threads that
    /// wait on the bus if the hold changed it from `bus`, and the timer
    /// thread if the device's next deadline is now earlier than the one it
    /// sleeps until.
    fn wake_waiters(&self, dev: &Device<ChainToken>, bus: BusView) {
        if self.waiters.load(Ordering::SeqCst) > 0 && dev.bus_view() != bus {
            self.changed.notify_all();
        }
        if let Some(d) = dev.next_deadline() {
            if self.since_epoch(d) < self.timer_wake.load(Ordering::SeqCst) {
                self.timers.notify_all();
            }
        }
    }

    /// `t` in nanoseconds since the epoch (0 for earlier).
    fn since_epoch(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// The device lock's holds since the daemon started.
    pub fn lock_holds(&self) -> LockHolds {
        LockHolds {
            count: self.holds.count.load(Ordering::Relaxed),
            longest: Duration::from_nanos(self.holds.longest_ns.load(Ordering::Relaxed)),
            total: Duration::from_nanos(self.holds.total_ns.load(Ordering::Relaxed)),
            over_1ms: self.holds.over_1ms.load(Ordering::Relaxed),
            over_10ms: self.holds.over_10ms.load(Ordering::Relaxed),
            most_work: self.holds.most_work.load(Ordering::Relaxed),
        }
    }

    /// Locks the device, every copy outside the lock landed first. Outputs
    /// are delivered when the guard drops.
    pub fn lock(&self) -> UdcGuard<'_> {
        UdcGuard::new(self.inner.lock(), self, true)
    }

    /// Locks the device for the data path: taking requests and transfers
    /// ([`Device::queue_xfer`], [`Device::submit_urb`], [`Device::reject`])
    /// and the rings, nothing else. Copies outside the lock go on meanwhile;
    /// those done land.
    pub fn lock_data(&self) -> UdcGuard<'_> {
        UdcGuard::new(self.inner.lock(), self, false)
    }

    /// Waits until `cond` holds or `timeout` passes; returns the guard and
    /// whether the condition held. `cond` is asked again when the bus
    /// changes ([`Device::bus_view`]) or [`Udc::poke`] is called, so it may
    /// look only at the bus.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&Device<ChainToken>) -> bool,
    ) -> (UdcGuard<'_>, bool) {
        let mut g = self.inner.lock();
        // Counted under the lock: a hold that changes the state after this
        // sees the waiter and wakes it.
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let res = self.changed.wait_while_for(&mut g, |i| !cond(&i.dev), timeout);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        (UdcGuard::new(g, self, true), !res.timed_out())
    }

    /// The frontend went away: forget its rings and whatever the driver had
    /// queued (a new connection starts from a device reset).
    pub fn end_connection(&self) {
        let mut g = self.lock();
        g.g.connection += 1;
        g.reset();
        // The frontend's memory goes with it: nothing may reach it now.
        g.forget_memory();
        g.g.rings.clear();
    }

    /// Wakes waiters without a change (shutdown).
    pub fn poke(&self) {
        self.changed.notify_all();
        self.timers.notify_all();
    }

    /// Runs what the device scheduled (delayed completions, pauses, the
    /// host's return after a disconnect: see [`Device::tick`]) on time, for
    /// the daemon's life. A hold that makes the next deadline earlier than
    /// the one it sleeps until wakes it, so a new deadline is never missed.
    pub fn run_timers(&self) -> ! {
        let mut g = self.inner.lock();
        loop {
            let now = Instant::now();
            self.timer_wake.store(u64::MAX, Ordering::SeqCst);
            match g.dev.next_deadline() {
                Some(d) if d <= now => {
                    // As of the deadline, not of when the thread woke: a
                    // late wake-up must not stretch pauses or lower a cap.
                    let since = Instant::now();
                    let bus = g.dev.bus_view();
                    g.dev.begin_hold();
                    g.dev.land_copies();
                    g.dev.tick(d);
                    self.end_hold(&mut g, since, bus);
                    self.run_copies(&mut g);
                    // Work left over from a spent budget is due at once:
                    // hand the lock to whoever waits for it first, so this
                    // loop cannot keep it from them.
                    MutexGuard::unlocked_fair(&mut g, || {});
                }
                next => {
                    let wait = next.map_or(Duration::from_millis(200), |d| d - now);
                    self.timer_wake
                        .store(self.since_epoch(now + wait), Ordering::SeqCst);
                    self.timers.wait_for(&mut g, wait);
                }
            }
        }
    }
}
