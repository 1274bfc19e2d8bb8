// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Guest DMABUFs for FunctionFS's DMABUF interface: from /dev/udmabuf (a
//! sealed memfd; one scatterlist entry per page) or /dev/dma_heap/system
//! (chunks of up to 1 MiB), mapped for the CPU, with the CPU access
//! bracketed by DMA_BUF_IOCTL_SYNC and the fences read back as sync files.

use std::fs::File;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::ioctl::ioctl_num_type as IoctlNum;

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

// The requests of include/uapi/linux/dma-buf.h, dma-heap.h and sync_file.h.
// nix lays out _IOC for the target, so the numbers are right off x86-64 too.
const DMA_BUF_IOCTL_SYNC: IoctlNum = nix::request_code_write!(b'b', 0, size_of::<u64>());
const DMA_BUF_IOCTL_EXPORT_SYNC_FILE: IoctlNum =
    nix::request_code_readwrite!(b'b', 2, size_of::<ExportSyncFile>());
const DMA_HEAP_IOCTL_ALLOC: IoctlNum = nix::request_code_readwrite!(b'H', 0, size_of::<HeapAlloc>());
const SYNC_IOC_FILE_INFO: IoctlNum = nix::request_code_readwrite!(b'>', 4, size_of::<SyncFileInfo>());
nix::ioctl_write_ptr_bad!(dma_buf_sync, DMA_BUF_IOCTL_SYNC, u64);
nix::ioctl_readwrite_bad!(
    dma_buf_export_sync_file,
    DMA_BUF_IOCTL_EXPORT_SYNC_FILE,
    ExportSyncFile
);
nix::ioctl_readwrite_bad!(dma_heap_alloc, DMA_HEAP_IOCTL_ALLOC, HeapAlloc);
nix::ioctl_readwrite_bad!(sync_file_info, SYNC_IOC_FILE_INFO, SyncFileInfo);

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

/// An ioctl's result as the rest of the tool's I/O reports errors.
pub(crate) fn ioctl_result(r: nix::Result<libc::c_int>) -> io::Result<()> {
    r.map(drop).map_err(io::Error::from)
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

/// How the guest's DMA reaches the UDC, for the cases' notes:
/// `swiotlb=force`, an IOMMU with the UDC's domain type (`DMA` when
/// strict), or `dma-direct`.
pub fn dma_mode() -> String {
    if dma_bounces() {
        return "swiotlb=force".into();
    }
    let domain = std::fs::read_dir("/sys/class/udc")
        .ok()
        .and_then(|mut udcs| udcs.next())
        .and_then(Result::ok)
        .and_then(|udc| iommu_domain(&udc.file_name().to_string_lossy()).ok());
    match domain {
        Some(t) => format!("IOMMU, domain {t}"),
        None => "dma-direct".into(),
    }
}

/// The IOMMU domain type of `udc`'s DMA device (sysfs: `DMA` when every
/// unmap is flushed at once, `DMA-FQ` when flushes are batched, `identity`
/// when the IOMMU passes addresses through), or why there is none.
pub fn iommu_domain(udc: &str) -> Result<String, String> {
    let path = format!("/sys/class/udc/{udc}/device/iommu_group/type");
    std::fs::read_to_string(&path)
        .map(|t| t.trim().to_string())
        .map_err(|e| format!("{path}: {e}"))
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
                // SAFETY: `a` is the request's structure, alive across the call.
                ioctl_result(unsafe { dma_heap_alloc(heap.as_raw_fd(), &mut a) })?;
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
        // SAFETY: the kernel reads the u64 of flags through the pointer.
        ioctl_result(unsafe { dma_buf_sync(self.fd().as_raw_fd(), &flags) })
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
        // SAFETY: `e` is the request's structure, alive across the call.
        ioctl_result(unsafe { dma_buf_export_sync_file(self.fd().as_raw_fd(), &mut e) })?;
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
    // SAFETY: `info` is the request's structure; with num_fences 0 the
    // kernel only counts the fences.
    ioctl_result(unsafe { sync_file_info(sync.as_raw_fd(), &mut info) })?;
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
    // SAFETY: sync_fence_info points at room for num_fences FenceInfos,
    // alive across the call.
    ioctl_result(unsafe { sync_file_info(sync.as_raw_fd(), &mut info) })?;
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

    /// The numbers the kernel computes on x86-64 and arm64: the structures'
    /// sizes and the directions given to nix are the uapi headers'.
    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
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
