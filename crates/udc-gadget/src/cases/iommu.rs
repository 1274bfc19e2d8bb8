// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The IOMMU mode's own case (docs/iommu.md): the controller's DMA goes
//! through a strict vIOMMU, and a DMABUF each way moves its data. With an
//! f_fs that maps OUT buffers for the wrong direction (patches/faults/),
//! the device's write is refused by the IOMMU: the OUT transfer's fence
//! signals EIO and the case fails with the daemon's fault report, which
//! `udc-vm --expect-fail` then asserts.

use std::os::fd::AsFd;

use crate::dmabuf::{self, GuestBuf, Source};
use crate::error::Error;
use crate::ffs_dmabuf;
use crate::gadget;
use crate::support::{check, fence_result, io_err, pattern, setup, transfer_ok, verify, Ctx, IO_TIMEOUT};

const SIZE: usize = 64 << 10;

/// A DMABUF IN and then OUT through the vIOMMU, each byte checked.
pub(crate) fn dmabuf_direction(ctx: &mut Ctx) -> Result<(), Error> {
    let udc = gadget::find_udc(ctx.udc.as_deref())?;
    let udc_name = udc.name().to_string_lossy().into_owned();
    let domain = dmabuf::iommu_domain(&udc_name).map_err(|e| {
        Error::Setup(format!(
            "the UDC's DMA does not go through an IOMMU ({e}): run this case with udc-vm --coherency viommu"
        ))
    })?;
    check(domain == "DMA", || {
        format!("the UDC's IOMMU domain is {domain}, not DMA: boot with iommu.strict=1 (udc-vm --coherency viommu does)")
    })?;
    let s = setup(ctx)?;
    let st = ctx.host.status()?;
    check(st["iommu"]["enabled"] == true, || {
        format!(
            "the daemon does not translate the device's addresses (the driver did not accept ACCESS_PLATFORM): {}",
            st["iommu"]
        )
    })?;
    ctx.notes.push(format!("UDC {udc_name}: IOMMU domain {domain}"));

    let mut buf = GuestBuf::new(Source::Udmabuf, SIZE).map_err(|e| Error::Setup(format!("udmabuf: {e}")))?;
    let ep_in = s.g.open_ep(1)?;
    let ep_out = s.g.open_ep(2)?;

    // IN: mapped DMA_TO_DEVICE, the device reads.
    buf.write(&pattern(17, 0, SIZE)).map_err(io_err("IN udmabuf"))?;
    ffs_dmabuf::attach(ep_in.as_fd(), buf.fd()).map_err(io_err("DMABUF_ATTACH on IN"))?;
    ffs_dmabuf::transfer(ep_in.as_fd(), buf.fd(), SIZE as u64, 0).map_err(io_err("DMABUF_TRANSFER on IN"))?;
    let (r, data) = ctx.host.read_in(s.ep_in, SIZE)?;
    transfer_ok(&r, SIZE, "IN DMABUF")?;
    verify(17, 0, &data, "IN DMABUF")?;
    check(buf.wait(libc::POLLOUT, IO_TIMEOUT), || {
        "IN DMABUF: the fence did not signal".into()
    })?;
    ffs_dmabuf::detach(ep_in.as_fd(), buf.fd()).map_err(io_err("DMABUF_DETACH on IN"))?;

    // OUT: mapped DMA_FROM_DEVICE, the device writes.
    buf.write(&vec![0xa5; SIZE]).map_err(io_err("OUT udmabuf"))?;
    ffs_dmabuf::attach(ep_out.as_fd(), buf.fd()).map_err(io_err("DMABUF_ATTACH on OUT"))?;
    ffs_dmabuf::transfer(ep_out.as_fd(), buf.fd(), SIZE as u64, 0)
        .map_err(io_err("DMABUF_TRANSFER on OUT"))?;
    let sync = buf
        .export_sync_file(dmabuf::SYNC_READ)
        .map_err(io_err("OUT DMABUF: EXPORT_SYNC_FILE"))?;
    let r = ctx.host.send_out(s.ep_out, &pattern(18, 0, SIZE), false)?;
    check(buf.wait(libc::POLLIN, IO_TIMEOUT), || {
        "OUT DMABUF: the fence did not signal".into()
    })?;
    let fence = fence_result(&sync, "OUT DMABUF")?;
    drop(sync);
    let ep = ctx.host.endpoint_status(s.ep_out)?;
    let faults = ep["stats"]["dma_faults"].as_u64().unwrap_or(0);
    if let Err(errno) = fence {
        let _ = ffs_dmabuf::detach(ep_out.as_fd(), buf.fd());
        return Err(Error::Check(format!(
            "OUT DMABUF: the fence signalled {} (the host's transfer ended {}); the device reports {faults} DMA fault(s), the last: {}",
            std::io::Error::from_raw_os_error(errno),
            r["status"],
            ep["last_dma_fault"].as_str().unwrap_or("none")
        )));
    }
    transfer_ok(&r, SIZE, "OUT DMABUF")?;
    check(faults == 0, || {
        format!(
            "OUT DMABUF: the transfer passed but the device counts {faults} DMA fault(s): {}",
            ep["last_dma_fault"]
        )
    })?;
    verify(
        18,
        0,
        &buf.read(SIZE).map_err(io_err("OUT udmabuf"))?,
        "OUT DMABUF",
    )?;
    ffs_dmabuf::detach(ep_out.as_fd(), buf.fd()).map_err(io_err("DMABUF_DETACH on OUT"))?;
    let st = ctx.host.status()?;
    ctx.notes.push(format!(
        "64 KiB udmabuf IN and OUT through the IOMMU; the daemon's IOTLB: {} updates, {} invalidations, {} misses",
        st["iommu"]["updates"], st["iommu"]["invalidations"], st["iommu"]["misses"]
    ));
    Ok(())
}
