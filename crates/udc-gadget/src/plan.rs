// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The VM suite's cases, in the order they run (docs/vm-tier.md): the
//! catalogue, the reproducers of kernel bugs, then the DMABUF lifecycle
//! matrix.

use crate::case::{case, on_request, Case, Needs};
use crate::cases::*;
use crate::dmabuf_cases::*;
use crate::{findings, lifecycle, recipes};

/// Every case, in the order they run.
pub fn all() -> impl Iterator<Item = &'static Case> {
    CASES.iter().chain(lifecycle::CASES)
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
        "ffs-rw-above-4mib-without-sg",
        Needs::NoSg,
        findings::rw_above_4mib_without_sg,
    ),
];
