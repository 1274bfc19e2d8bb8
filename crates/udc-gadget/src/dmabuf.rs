// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Guest DMABUFs for FunctionFS's DMABUF interface: from /dev/udmabuf (a
//! sealed memfd; one scatterlist entry per page) or /dev/dma_heap/system
//! (chunks of up to 1 MiB), mapped for the CPU, with the CPU access
//! bracketed by DMA_BUF_IOCTL_SYNC and the fences read back as sync files.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use udmabuf::{memfd_for_udmabuf, CreateFlags, Udmabuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Udmabuf,
    Heap,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Udmabuf => "udmabuf",
            Source::Heap => "dma-heap",
        }
    }
}

/// The kernel's _IOC(dir, type, nr, size) on x86-64.
pub(crate) const fn ioc(dir: u64, ty: u8, nr: u64, size: u64) -> u64 {
    (dir << 30) | (size << 16) | ((ty as u64) << 8) | nr
}
const W: u64 = 1;
const RW: u64 = 3;

const DMA_BUF_IOCTL_SYNC: u64 = ioc(W, b'b', 0, 8);
const DMA_BUF_IOCTL_EXPORT_SYNC_FILE: u64 = ioc(RW, b'b', 2, 8);
const DMA_HEAP_IOCTL_ALLOC: u64 = ioc(RW, b'H', 0, 24);
const SYNC_IOC_FILE_INFO: u64 = ioc(RW, b'>', 4, 56);

pub const SYNC_READ: u64 = 1;
pub const SYNC_WRITE: u64 = 2;
pub const SYNC_START: u64 = 0;
pub const SYNC_END: u64 = 4;

#[repr(C)]
struct HeapAlloc {
    len: u64,
    fd: u32,
    fd_flags: u32,
    heap_flags: u64,
}

#[repr(C)]
struct ExportSyncFile {
    flags: u32,
    fd: i32,
}

#[repr(C)]
struct SyncFileInfo {
    name: [u8; 32],
    status: i32,
    flags: u32,
    num_fences: u32,
    pad: u32,
    sync_fence_info: u64,
}

/// `struct sync_fence_info`: one fence of a sync file.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FenceInfo {
    pub obj_name: [u8; 32],
    pub driver_name: [u8; 32],
    /// 1 signalled, 0 pending, negative: signalled with that error.
    pub status: i32,
    pub flags: u32,
    pub timestamp_ns: u64,
}

fn ioctl<T>(fd: BorrowedFd<'_>, req: u64, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` is the structure the request's number encodes.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg as *mut T) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Whether the guest kernel bounces every DMA mapping (`swiotlb=force` on
/// its command line, as `udc-vm --coherency swiotlb` boots it).
pub fn dma_bounces() -> bool {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("swiotlb="))
        .any(|v| v.split(',').any(|p| p == "force"))
}

/// A DMABUF and its CPU mapping.
pub struct GuestBuf {
    fd: OwnedFd,
    ptr: *mut u8,
    pub size: usize,
    pub source: Source,
    /// DMA_BUF_IOCTL_SYNC brackets the CPU's accesses. Not on a udmabuf
    /// when every mapping bounces: udmabuf (6.12) syncs a mapping of its
    /// own for its misc device there, whose bounce buffer then overwrites
    /// what any other device wrote since (docs/kernel-bugs.md; the case
    /// udmabuf-sync-keeps-other-writes shows it). The CPU mapping is the
    /// pages themselves on this coherent machine, so reading it after the
    /// fence is what a correct exporter's sync would give.
    sync: bool,
}

impl GuestBuf {
    pub fn new(source: Source, size: usize) -> io::Result<GuestBuf> {
        let fd = match source {
            Source::Udmabuf => {
                let memfd = memfd_for_udmabuf("udc-gadget", size as u64).map_err(io::Error::other)?;
                let dev = Udmabuf::open().map_err(io::Error::other)?;
                let buf = dev
                    .create(memfd.as_fd(), 0, size as u64, CreateFlags::default())
                    .map_err(io::Error::other)?;
                buf.into_fd()
            }
            Source::Heap => {
                let heap = File::open("/dev/dma_heap/system")?;
                let mut a = HeapAlloc {
                    len: size as u64,
                    fd: 0,
                    fd_flags: (libc::O_RDWR | libc::O_CLOEXEC) as u32,
                    heap_flags: 0,
                };
                ioctl(heap.as_fd(), DMA_HEAP_IOCTL_ALLOC, &mut a)?;
                // SAFETY: the ioctl returned a new descriptor we own.
                unsafe { OwnedFd::from_raw_fd(a.fd as i32) }
            }
        };
        // SAFETY: mapping `size` bytes of the DMABUF shared; unmapped in drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(GuestBuf {
            fd,
            ptr: ptr as *mut u8,
            size,
            source,
            sync: !(source == Source::Udmabuf && dma_bounces()),
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn sync(&self, flags: u64) -> io::Result<()> {
        if !self.sync {
            return Ok(());
        }
        // udmabuf (6.12) maps its own mapping in the direction of the first
        // bracket and syncs it in each bracket's: a read after a write
        // syncs against the map's direction, which DMA_API_DEBUG reports
        // (docs/kernel-bugs.md). Read-write brackets, valid for any access,
        // keep it to one direction; udmabuf-sync-keeps-other-writes is the
        // case that shows the bug.
        let flags = match self.source {
            Source::Udmabuf => flags | SYNC_READ | SYNC_WRITE,
            Source::Heap => flags,
        };
        self.sync_always(flags)
    }

    /// DMA_BUF_IOCTL_SYNC, whatever the kernel makes of it.
    pub fn sync_always(&self, flags: u64) -> io::Result<()> {
        let mut f = flags;
        ioctl(self.fd(), DMA_BUF_IOCTL_SYNC, &mut f)
    }

    /// Writes `data` from the CPU, bracketed by DMA_BUF_IOCTL_SYNC.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.sync(SYNC_START | SYNC_WRITE)?;
        // SAFETY: the mapping is `size` bytes; data is at most that.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.size)[..data.len()].copy_from_slice(data) };
        self.sync(SYNC_END | SYNC_WRITE)
    }

    /// Reads the first `len` bytes from the CPU, bracketed by DMA_BUF_IOCTL_SYNC.
    pub fn read(&self, len: usize) -> io::Result<Vec<u8>> {
        self.sync(SYNC_START | SYNC_READ)?;
        // SAFETY: the mapping is `size` bytes.
        let v = unsafe { std::slice::from_raw_parts(self.ptr, self.size)[..len].to_vec() };
        self.sync(SYNC_END | SYNC_READ)?;
        Ok(v)
    }

    /// Reads the first `len` bytes through the mapping without
    /// DMA_BUF_IOCTL_SYNC, as a buggy reader does: SYNC_START would wait for
    /// the device's fences, this does not.
    pub fn read_without_sync(&self, len: usize) -> Vec<u8> {
        // SAFETY: the mapping is `size` bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.size)[..len].to_vec() }
    }

    /// Writes `data` through the mapping without DMA_BUF_IOCTL_SYNC, as a
    /// buggy writer does: SYNC_START would wait for the device to finish
    /// reading, this does not.
    pub fn write_without_sync(&mut self, data: &[u8]) {
        // SAFETY: the mapping is `size` bytes; data is at most that.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.size)[..data.len()].copy_from_slice(data) };
    }

    /// Reads `out.len()` bytes at `offset` from the CPU, bracketed by
    /// DMA_BUF_IOCTL_SYNC: a spot check that does not copy the whole buffer.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> io::Result<()> {
        assert!(offset + out.len() <= self.size, "read_at past the buffer's end");
        self.sync(SYNC_START | SYNC_READ)?;
        // SAFETY: the mapping is `size` bytes and the range is inside it.
        out.copy_from_slice(unsafe { std::slice::from_raw_parts(self.ptr.add(offset), out.len()) });
        self.sync(SYNC_END | SYNC_READ)
    }

    /// Waits on the fences: POLLIN for writers (an OUT transfer filling
    /// the buffer), POLLOUT for all users (an IN transfer reading it).
    pub fn wait(&self, events: i16, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one pollfd that lives across the call.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
        n == 1 && pfd.revents & events != 0
    }

    /// A sync file of the fences a user of `flags` (SYNC_READ / SYNC_WRITE)
    /// must wait for (DMA_BUF_IOCTL_EXPORT_SYNC_FILE). Taken right after a
    /// transfer is queued, it holds that transfer's fence.
    pub fn export_sync_file(&self, flags: u64) -> io::Result<OwnedFd> {
        let mut e = ExportSyncFile {
            flags: flags as u32,
            fd: -1,
        };
        ioctl(self.fd(), DMA_BUF_IOCTL_EXPORT_SYNC_FILE, &mut e)?;
        // SAFETY: the ioctl returned a new descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(e.fd) })
    }
}

/// The fences of a sync file (SYNC_IOC_FILE_INFO), with their status.
///
/// This takes each fence's lock, as closing a sync file that was polled
/// does. A FunctionFS fence's lock lives in its DMABUF attachment, which
/// f_fs frees on detach or close while the fence lives on: use sync files
/// only while the DMABUF is attached, and wait on the DMABUF itself after
/// (docs/kernel-bugs.md).
pub fn sync_file_fences(sync: BorrowedFd<'_>) -> io::Result<Vec<FenceInfo>> {
    let mut info = SyncFileInfo {
        name: [0; 32],
        status: 0,
        flags: 0,
        num_fences: 0,
        pad: 0,
        sync_fence_info: 0,
    };
    ioctl(sync, SYNC_IOC_FILE_INFO, &mut info)?;
    let empty = FenceInfo {
        obj_name: [0; 32],
        driver_name: [0; 32],
        status: 0,
        flags: 0,
        timestamp_ns: 0,
    };
    let mut fences = vec![empty; info.num_fences as usize];
    if fences.is_empty() {
        return Ok(fences);
    }
    let mut info = SyncFileInfo {
        name: [0; 32],
        status: 0,
        flags: 0,
        num_fences: fences.len() as u32,
        pad: 0,
        sync_fence_info: fences.as_mut_ptr() as u64,
    };
    ioctl(sync, SYNC_IOC_FILE_INFO, &mut info)?;
    Ok(fences)
}

impl Drop for GuestBuf {
    fn drop(&mut self) {
        // SAFETY: unmapping what new() mapped.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.size) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        assert_eq!(DMA_BUF_IOCTL_SYNC, 0x4008_6200);
        assert_eq!(DMA_BUF_IOCTL_EXPORT_SYNC_FILE, 0xc008_6202);
        assert_eq!(DMA_HEAP_IOCTL_ALLOC, 0xc018_4800);
        assert_eq!(SYNC_IOC_FILE_INFO, 0xc038_3e04);
        assert_eq!(std::mem::size_of::<SyncFileInfo>(), 56);
        assert_eq!(std::mem::size_of::<FenceInfo>(), 80);
        assert_eq!(std::mem::size_of::<HeapAlloc>(), 24);
    }
}
