// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! FunctionFS's DMABUF interface (Linux 6.9+): FUNCTIONFS_DMABUF_ATTACH,
//! _DETACH and _TRANSFER on an endpoint file.
//!
//! Written here rather than taken from usb-gadget 1.3, whose
//! `dmabuf_transfer` passes a pointer to its request's reference instead
//! of the request (the kernel then reads the pointer's bits as `fd` and
//! `flags` and fails with EINVAL).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `struct usb_ffs_dmabuf_transfer_req` of include/uapi/linux/usb/functionfs.h.
#[repr(C, packed)]
pub struct TransferReq {
    pub fd: i32,
    pub flags: u32,
    pub length: u64,
}

const fn iow(nr: u64, size: u64) -> u64 {
    (1 << 30) | (size << 16) | ((b'g' as u64) << 8) | nr
}

pub const FUNCTIONFS_DMABUF_ATTACH: u64 = iow(131, 4);
pub const FUNCTIONFS_DMABUF_DETACH: u64 = iow(132, 4);
pub const FUNCTIONFS_DMABUF_TRANSFER: u64 = iow(133, std::mem::size_of::<TransferReq>() as u64);

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn attach(ep: BorrowedFd<'_>, dmabuf: BorrowedFd<'_>) -> io::Result<()> {
    let fd: libc::c_int = dmabuf.as_raw_fd();
    // SAFETY: the kernel reads one int through the pointer.
    check(unsafe { libc::ioctl(ep.as_raw_fd(), FUNCTIONFS_DMABUF_ATTACH as _, &fd) })
}

pub fn detach(ep: BorrowedFd<'_>, dmabuf: BorrowedFd<'_>) -> io::Result<()> {
    let fd: libc::c_int = dmabuf.as_raw_fd();
    // SAFETY: the kernel reads one int through the pointer.
    check(unsafe { libc::ioctl(ep.as_raw_fd(), FUNCTIONFS_DMABUF_DETACH as _, &fd) })
}

pub fn transfer(ep: BorrowedFd<'_>, dmabuf: BorrowedFd<'_>, length: u64, flags: u32) -> io::Result<()> {
    let req = TransferReq {
        fd: dmabuf.as_raw_fd(),
        flags,
        length,
    };
    // SAFETY: the kernel reads one TransferReq through the pointer.
    check(unsafe { libc::ioctl(ep.as_raw_fd(), FUNCTIONFS_DMABUF_TRANSFER as _, &req) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        // From include/uapi/linux/usb/functionfs.h, as the kernel computes them.
        assert_eq!(FUNCTIONFS_DMABUF_ATTACH, 0x4004_6783);
        assert_eq!(FUNCTIONFS_DMABUF_DETACH, 0x4004_6784);
        assert_eq!(FUNCTIONFS_DMABUF_TRANSFER, 0x4010_6785);
        assert_eq!(std::mem::size_of::<TransferReq>(), 16);
    }
}
