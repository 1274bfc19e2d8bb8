// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The VM suite's cases, in the order they run (docs/vm-tier.md): the
//! catalogue, the reproducers of kernel bugs, then the DMABUF lifecycle
//! matrix.

use super::{case, on_request, Case, Needs};
use crate::cases::dmabuf::*;
use crate::cases::lifecycle::{
    bus_events, daemon_crash, rmmod_insmod, run_ordering, unbind_rebind, Op, State,
};
use crate::cases::transfers::*;
use crate::cases::{ffs_test, findings, iommu, recipes};
use crate::error::Error;
use crate::support::Ctx;

/// Every case, in the order they run.
pub fn all() -> impl Iterator<Item = &'static Case> {
    CASES.iter().chain(LIFECYCLE)
}

const CASES: &[Case] = &[
    case("enumeration", Needs::Any, enumeration),
    case("bulk-out-read", Needs::Any, bulk_out_read),
    case("bulk-in-write", Needs::Any, bulk_in_write),
    case("bulk-out-aio", Needs::Any, bulk_out_aio),
    case("bulk-in-aio", Needs::Any, bulk_in_aio),
    case("short-and-zero-length", Needs::Any, short_and_zero_length),
    case(
        "ep0-class-and-vendor-requests-stall",
        Needs::Any,
        ep0_requests_stall,
    ),
    case("bus-suspend-resume-reset-disconnect", Needs::Any, bus_events),
    case("dmabuf-sizes-udmabuf-and-heap", Needs::Sg, dmabuf_sizes),
    case("dmabuf-fifo-and-fence-order", Needs::Sg, dmabuf_fifo),
    case("dmabuf-bad-requests-and-detach-pending", Needs::Sg, dmabuf_errors),
    case(
        "dmabuf-close-with-transfers-pending",
        Needs::Sg,
        dmabuf_close_pending,
    ),
    case(
        "dmabuf-endpoint-disabled-mid-transfer",
        Needs::Sg,
        dmabuf_disabled,
    ),
    case(
        "dmabuf-mixed-with-read-write-keeps-order",
        Needs::Sg,
        dmabuf_mixed,
    ),
    case("dmabuf-attach-without-sg", Needs::NoSg, dmabuf_without_sg),
    case(
        "injection-faults-and-delays-reach-functionfs",
        Needs::Any,
        recipes::faults_reach_functionfs,
    ),
    case(
        "injection-same-seed-same-events",
        Needs::Any,
        recipes::seed_reproduces_events,
    ),
    case(
        "injection-reorder-breaks-fence-order",
        Needs::Sg,
        recipes::reorder_breaks_fence_order,
    ),
    case(
        "recipe-dmabuf-hold-5s-then-detach",
        Needs::Sg,
        recipes::hold_then_detach,
    ),
    case(
        "recipe-out-poison-catches-early-reader",
        Needs::Sg,
        recipes::poison_catches_early_reader,
    ),
    case(
        "recipe-in-checksum-catches-writer-in-flight",
        Needs::Sg,
        recipes::checksum_catches_writer,
    ),
    case(
        "coherency-dmabuf-next-to-read-write",
        Needs::Sg,
        recipes::coherency_dmabuf_next_to_read_write,
    ),
    case(
        "dmabuf-in-attached-before-enumeration",
        Needs::Sg,
        findings::dmabuf_in_attached_before_enumeration,
    ),
    case(
        "udmabuf-sync-keeps-other-writes",
        Needs::Any,
        findings::udmabuf_sync_keeps_other_writes,
    ),
    case("unbind-rebind", Needs::Any, unbind_rebind),
    case("rmmod-insmod-with-transfers-queued", Needs::Any, rmmod_insmod),
    case("daemon-crash-and-restart", Needs::Any, daemon_crash),
    // Reproducers of f_fs bugs (docs/kernel-bugs.md, patches/linux/).
    on_request(
        "ffs-fence-outlives-detach",
        Needs::Sg,
        findings::dmabuf_fence_outlives_detach,
    ),
    on_request(
        "ffs-rw-large-under-swiotlb",
        Needs::Sg,
        findings::rw_large_under_swiotlb,
    ),
    on_request(
        "ffs-detach-leaves-mapping",
        Needs::Sg,
        findings::detach_leaves_mapping,
    ),
    on_request(
        "ffs-rw-above-4mib-without-sg",
        Needs::NoSg,
        findings::rw_above_4mib_without_sg,
    ),
    // The kernel's tools/usb/ffs-test.c, unmodified: at high speed, and at
    // full speed, where stock f_fs gives its wMaxPacketSize 0 back to the
    // host (patches/linux/0007).
    on_request("ffs-test-high-speed", Needs::Any, ffs_test::high_speed),
    on_request("ffs-test-full-speed", Needs::Any, ffs_test::full_speed),
    // DMABUFs through a strict vIOMMU (udc-vm --coherency viommu): with
    // the OUT direction reversed in f_fs (patches/faults/) the device's
    // write is an IOMMU fault.
    on_request("iommu-direction", Needs::Sg, iommu::dmabuf_direction),
];

/// A case function per ordering, named `lifecycle-OP-STATE`.
macro_rules! orderings {
    ($($f:ident: $name:literal = $op:ident, $state:ident;)*) => {
        $(fn $f(ctx: &mut Ctx) -> Result<(), Error> {
            run_ordering(ctx, State::$state, Op::$op)
        })*
        /// The DMABUF lifecycle matrix (crate::cases::lifecycle), run
        /// only when named.
        const LIFECYCLE: &[Case] = &[
            $(on_request($name, Needs::Sg, $f),)*
        ];
    };
}

orderings! {
    attach_not_bound: "lifecycle-attach-not-bound" = Attach, NotBound;
    attach_not_enumerated: "lifecycle-attach-not-enumerated" = Attach, NotEnumerated;
    attach_configured: "lifecycle-attach-configured" = Attach, Configured;
    attach_endpoint_disabled: "lifecycle-attach-endpoint-disabled" = Attach, EndpointDisabled;
    attach_suspended: "lifecycle-attach-suspended" = Attach, Suspended;
    attach_udc_unbound: "lifecycle-attach-udc-unbound" = Attach, UdcUnbound;
    attach_driver_removed: "lifecycle-attach-driver-removed" = Attach, DriverRemoved;
    attach_daemon_gone: "lifecycle-attach-daemon-gone" = Attach, DaemonGone;
    transfer_not_bound: "lifecycle-transfer-not-bound" = Transfer, NotBound;
    transfer_not_enumerated: "lifecycle-transfer-not-enumerated" = Transfer, NotEnumerated;
    transfer_configured: "lifecycle-transfer-configured" = Transfer, Configured;
    transfer_endpoint_disabled: "lifecycle-transfer-endpoint-disabled" = Transfer, EndpointDisabled;
    transfer_suspended: "lifecycle-transfer-suspended" = Transfer, Suspended;
    transfer_udc_unbound: "lifecycle-transfer-udc-unbound" = Transfer, UdcUnbound;
    transfer_driver_removed: "lifecycle-transfer-driver-removed" = Transfer, DriverRemoved;
    transfer_daemon_gone: "lifecycle-transfer-daemon-gone" = Transfer, DaemonGone;
    detach_not_bound: "lifecycle-detach-not-bound" = Detach, NotBound;
    detach_not_enumerated: "lifecycle-detach-not-enumerated" = Detach, NotEnumerated;
    detach_configured: "lifecycle-detach-configured" = Detach, Configured;
    detach_endpoint_disabled: "lifecycle-detach-endpoint-disabled" = Detach, EndpointDisabled;
    detach_suspended: "lifecycle-detach-suspended" = Detach, Suspended;
    detach_udc_unbound: "lifecycle-detach-udc-unbound" = Detach, UdcUnbound;
    detach_driver_removed: "lifecycle-detach-driver-removed" = Detach, DriverRemoved;
    detach_daemon_gone: "lifecycle-detach-daemon-gone" = Detach, DaemonGone;
    close_not_bound: "lifecycle-close-not-bound" = Close, NotBound;
    close_not_enumerated: "lifecycle-close-not-enumerated" = Close, NotEnumerated;
    close_configured: "lifecycle-close-configured" = Close, Configured;
    close_endpoint_disabled: "lifecycle-close-endpoint-disabled" = Close, EndpointDisabled;
    close_suspended: "lifecycle-close-suspended" = Close, Suspended;
    close_udc_unbound: "lifecycle-close-udc-unbound" = Close, UdcUnbound;
    close_driver_removed: "lifecycle-close-driver-removed" = Close, DriverRemoved;
    close_daemon_gone: "lifecycle-close-daemon-gone" = Close, DaemonGone;
}
