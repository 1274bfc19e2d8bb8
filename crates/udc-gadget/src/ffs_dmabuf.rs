// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! FunctionFS's DMABUF interface (Linux 6.9+): FUNCTIONFS_DMABUF_ATTACH,
//! _DETACH and _TRANSFER on an endpoint file.
//!
//! Written here rather than taken from usb-gadget 1.3, whose
//! `dmabuf_transfer` passes a pointer to its request's reference instead
//! of the request (the kernel then reads the pointer's bits as `fd` and
//! `flags` and fails with EINVAL).

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::ioctl::ioctl_num_type as IoctlNum;

use crate::dmabuf::ioctl_result;

/// `struct usb_ffs_dmabuf_transfer_req` of include/uapi/linux/usb/functionfs.h.
#[repr(C, packed)]
pub struct TransferReq {
    pub fd: i32,
    pub flags: u32,
    pub length: u64,
}

pub const FUNCTIONFS_DMABUF_ATTACH: IoctlNum = nix::request_code_write!(b'g', 131, size_of::<libc::c_int>());
pub const FUNCTIONFS_DMABUF_DETACH: IoctlNum = nix::request_code_write!(b'g', 132, size_of::<libc::c_int>());
pub const FUNCTIONFS_DMABUF_TRANSFER: IoctlNum =
    nix::request_code_write!(b'g', 133, size_of::<TransferReq>());
nix::ioctl_write_ptr_bad!(ffs_dmabuf_attach, FUNCTIONFS_DMABUF_ATTACH, libc::c_int);
nix::ioctl_write_ptr_bad!(ffs_dmabuf_detach, FUNCTIONFS_DMABUF_DETACH, libc::c_int);
nix::ioctl_write_ptr_bad!(ffs_dmabuf_transfer, FUNCTIONFS_DMABUF_TRANSFER, TransferReq);

pub fn attach(ep: BorrowedFd<'_>, dmabuf: BorrowedFd<'_>) -> io::Result<()> {
    let fd: libc::c_int = dmabuf.as_raw_fd();
    // SAFETY: the kernel reads one int through the pointer.
    ioctl_result(unsafe { ffs_dmabuf_attach(ep.as_raw_fd(), &fd) })
}

pub fn detach(ep: BorrowedFd<'_>, dmabuf: BorrowedFd<'_>) -> io::Result<()> {
    let fd: libc::c_int = dmabuf.as_raw_fd();
    // SAFETY: the kernel reads one int through the pointer.
    ioctl_result(unsafe { ffs_dmabuf_detach(ep.as_raw_fd(), &fd) })
}

pub fn transfer(ep: BorrowedFd<'_>, dmabuf: BorrowedFd<'_>, length: u64, flags: u32) -> io::Result<()> {
    let req = TransferReq {
        fd: dmabuf.as_raw_fd(),
        flags,
        length,
    };
    // SAFETY: the kernel reads one TransferReq through the pointer.
    ioctl_result(unsafe { ffs_dmabuf_transfer(ep.as_raw_fd(), &req) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn ioctl_numbers_are_the_kernels() {
        // From include/uapi/linux/usb/functionfs.h, as the kernel computes them.
        assert_eq!(FUNCTIONFS_DMABUF_ATTACH, 0x4004_6783);
        assert_eq!(FUNCTIONFS_DMABUF_DETACH, 0x4004_6784);
        assert_eq!(FUNCTIONFS_DMABUF_TRANSFER, 0x4010_6785);
        assert_eq!(std::mem::size_of::<TransferReq>(), 16);
    }
}
