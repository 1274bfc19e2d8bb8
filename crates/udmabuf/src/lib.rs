// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! A safe wrapper for Linux's `/dev/udmabuf`: DMABUFs made of memfd pages.
//!
//! virtio-udc uses it to give host programs the very pages a guest transfer
//! lives in (the guest's RAM is a memfd), zero-copy. The kernel refuses a bad
//! request with a bare `EINVAL`; this crate checks every condition it knows
//! first (page alignment, bounds, the memfd's seals, the list limit) and says
//! which one failed, for which range.
//!
//! ```no_run
//! use std::os::fd::AsFd;
//! use udmabuf::{memfd_for_udmabuf, CreateFlags, Range, SyncDirection, Udmabuf};
//!
//! let memfd = memfd_for_udmabuf("buf", 2 << 20)?;
//! let dev = Udmabuf::open()?;
//! let buf = dev.create(memfd.as_fd(), 0, 1 << 20, CreateFlags::default())?;
//! {
//!     let _cpu = buf.cpu_access(SyncDirection::Read)?; // DMA_BUF_IOCTL_SYNC start/end
//!     let map = buf.map()?;
//!     assert_eq!(map.as_slice().len(), 1 << 20);
//! }
//! # Ok::<(), udmabuf::Error>(())
//! ```

use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// Where the device lives.
pub const DEVICE_PATH: &str = "/dev/udmabuf";
/// Most ranges one UDMABUF_CREATE_LIST takes (the kernel's `list_limit`).
pub const LIST_LIMIT: usize = 1024;
/// The kernel's default `udmabuf.size_limit_mb`.
pub const DEFAULT_SIZE_LIMIT: u64 = 64 << 20;

/// `struct udmabuf_create` (include/uapi/linux/udmabuf.h).
#[repr(C)]
struct UdmabufCreate {
    memfd: u32,
    flags: u32,
    offset: u64,
    size: u64,
}

/// `struct udmabuf_create_item`.
#[repr(C)]
#[derive(Clone, Copy)]
struct UdmabufCreateItem {
    memfd: u32,
    pad: u32,
    offset: u64,
    size: u64,
}

/// `struct udmabuf_create_list` without its flexible array.
#[repr(C)]
#[derive(Clone, Copy)]
struct UdmabufCreateListHeader {
    flags: u32,
    count: u32,
}

const _: () = assert!(std::mem::size_of::<UdmabufCreate>() == 24);
const _: () = assert!(std::mem::size_of::<UdmabufCreateItem>() == 24);
const _: () = assert!(std::mem::size_of::<UdmabufCreateListHeader>() == 8);

const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;

nix::ioctl_write_ptr!(ioctl_create, b'u', 0x42, UdmabufCreate);
// The list ioctl's number encodes the size of the header only.
nix::ioctl_write_ptr_bad!(
    ioctl_create_list,
    nix::request_code_write!(b'u', 0x43, std::mem::size_of::<UdmabufCreateListHeader>()),
    UdmabufCreateListHeader
);
nix::ioctl_write_ptr!(ioctl_dma_buf_sync, b'b', 0, u64);

const DMA_BUF_SYNC_READ: u64 = 1;
const DMA_BUF_SYNC_WRITE: u64 = 2;
const DMA_BUF_SYNC_START: u64 = 0;
const DMA_BUF_SYNC_END: u64 = 4;

/// Everything that can go wrong, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} is missing: this kernel has no CONFIG_UDMABUF (or the module is not loaded)", path.display())]
    DeviceMissing { path: PathBuf },
    #[error("{} exists but cannot be opened read-write: permission denied", path.display())]
    PermissionDenied { path: PathBuf },
    #[error("cannot open {}: {source}", path.display())]
    Open { path: PathBuf, source: std::io::Error },
    #[error("range {index}: the file is not a memfd (udmabuf takes only memfd pages)")]
    NotMemfd { index: usize },
    #[error("range {index}: the memfd lacks F_SEAL_SHRINK (udmabuf needs it so the pages cannot go away)")]
    MissingSealShrink { index: usize },
    #[error("range {index}: the memfd has F_SEAL_WRITE (udmabuf refuses write-sealed memfds)")]
    HasSealWrite { index: usize },
    #[error(
        "range {index}: offset {offset:#x} and size {size:#x} must be multiples of the page size ({page})"
    )]
    Unaligned {
        index: usize,
        offset: u64,
        size: u64,
        page: u64,
    },
    #[error("range {index}: size is 0")]
    Empty { index: usize },
    #[error("range {index}: {offset:#x}+{size:#x} runs past the memfd's end ({file_size:#x})")]
    OutOfBounds {
        index: usize,
        offset: u64,
        size: u64,
        file_size: u64,
    },
    #[error("{count} ranges: udmabuf takes 1 to {LIST_LIMIT}")]
    BadCount { count: usize },
    #[error("range {index}: cannot inspect the memfd: {source}")]
    Inspect { index: usize, source: Errno },
    #[error("{op} failed: {source}{}", hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Ioctl {
        op: &'static str,
        source: Errno,
        hint: Option<String>,
    },
    #[error("mapping the DMABUF failed: {0}")]
    Map(Errno),
    #[error("cannot create a memfd: {0}")]
    Memfd(Errno),
}

pub type Result<T> = std::result::Result<T, Error>;

/// One piece of a memfd that becomes part of a DMABUF.
#[derive(Clone, Copy, Debug)]
pub struct Range<'a> {
    pub memfd: BorrowedFd<'a>,
    pub offset: u64,
    pub size: u64,
}

/// Flags of the new DMABUF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreateFlags {
    /// Close the DMABUF fd on exec (default: yes).
    pub cloexec: bool,
}

impl Default for CreateFlags {
    fn default() -> Self {
        CreateFlags { cloexec: true }
    }
}

impl CreateFlags {
    fn bits(self) -> u32 {
        if self.cloexec {
            UDMABUF_FLAGS_CLOEXEC
        } else {
            0
        }
    }
}

/// The page size the kernel uses for alignment checks.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// Checks one range the way the kernel will, so failures come with a reason.
/// Needs no /dev/udmabuf.
pub fn check_range(index: usize, r: &Range<'_>) -> Result<()> {
    let page = page_size();
    if r.size == 0 {
        return Err(Error::Empty { index });
    }
    if r.offset % page != 0 || r.size % page != 0 {
        return Err(Error::Unaligned {
            index,
            offset: r.offset,
            size: r.size,
            page,
        });
    }
    let seals =
        nix::fcntl::fcntl(r.memfd.as_raw_fd(), nix::fcntl::FcntlArg::F_GET_SEALS).map_err(|e| match e {
            Errno::EINVAL => Error::NotMemfd { index },
            e => Error::Inspect { index, source: e },
        })?;
    if seals & libc::F_SEAL_SHRINK == 0 {
        return Err(Error::MissingSealShrink { index });
    }
    if seals & libc::F_SEAL_WRITE != 0 {
        return Err(Error::HasSealWrite { index });
    }
    let st = nix::sys::stat::fstat(r.memfd.as_raw_fd()).map_err(|e| Error::Inspect { index, source: e })?;
    let file_size = st.st_size as u64;
    match r.offset.checked_add(r.size) {
        Some(end) if end <= file_size => Ok(()),
        _ => Err(Error::OutOfBounds {
            index,
            offset: r.offset,
            size: r.size,
            file_size,
        }),
    }
}

/// Checks a whole list: its length and every range.
pub fn check_list(items: &[Range<'_>]) -> Result<()> {
    if items.is_empty() || items.len() > LIST_LIMIT {
        return Err(Error::BadCount { count: items.len() });
    }
    items.iter().enumerate().try_for_each(|(i, r)| check_range(i, r))
}

fn ioctl_error(op: &'static str, e: Errno, total: u64) -> Error {
    let hint = (matches!(e, Errno::EINVAL | Errno::E2BIG | Errno::ENOMEM) && total > DEFAULT_SIZE_LIMIT).then(|| {
        format!(
            "{} MiB is over udmabuf's default size limit of 64 MiB; raise it with udmabuf.size_limit_mb= on the kernel command line",
            total >> 20
        )
    });
    Error::Ioctl { op, source: e, hint }
}

/// An open `/dev/udmabuf`.
#[derive(Debug)]
pub struct Udmabuf {
    dev: std::fs::File,
}

impl Udmabuf {
    pub fn open() -> Result<Self> {
        Self::open_path(DEVICE_PATH)
    }

    pub fn open_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
        {
            Ok(dev) => Ok(Udmabuf { dev }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::DeviceMissing { path: path.into() })
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                Err(Error::PermissionDenied { path: path.into() })
            }
            Err(source) => Err(Error::Open {
                path: path.into(),
                source,
            }),
        }
    }

    /// A DMABUF over one memfd range (UDMABUF_CREATE).
    pub fn create(
        &self,
        memfd: BorrowedFd<'_>,
        offset: u64,
        size: u64,
        flags: CreateFlags,
    ) -> Result<DmaBuf> {
        check_range(0, &Range { memfd, offset, size })?;
        let arg = UdmabufCreate {
            memfd: memfd.as_raw_fd() as u32,
            flags: flags.bits(),
            offset,
            size,
        };
        // SAFETY: `arg` is a valid udmabuf_create that outlives the call.
        let fd = unsafe { ioctl_create(self.dev.as_raw_fd(), &arg) }
            .map_err(|e| ioctl_error("UDMABUF_CREATE", e, size))?;
        // SAFETY: on success the ioctl returns a new fd that we own.
        Ok(DmaBuf {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// A DMABUF over several ranges, in order (UDMABUF_CREATE_LIST).
    pub fn create_list(&self, items: &[Range<'_>], flags: CreateFlags) -> Result<DmaBuf> {
        check_list(items)?;
        let total = items.iter().map(|r| r.size).sum();
        // Header and items in one buffer, laid out as the kernel reads them.
        let words = (8 + 24 * items.len()).div_ceil(8);
        let mut buf = vec![0u64; words];
        let base = buf.as_mut_ptr() as *mut u8;
        let hdr = UdmabufCreateListHeader {
            flags: flags.bits(),
            count: items.len() as u32,
        };
        // SAFETY: `buf` is 8-byte aligned and holds the header plus every
        // item; the writes stay inside it.
        unsafe {
            std::ptr::write(base as *mut UdmabufCreateListHeader, hdr);
            for (i, r) in items.iter().enumerate() {
                let item = UdmabufCreateItem {
                    memfd: r.memfd.as_raw_fd() as u32,
                    pad: 0,
                    offset: r.offset,
                    size: r.size,
                };
                std::ptr::write(base.add(8 + 24 * i) as *mut UdmabufCreateItem, item);
            }
        }
        // SAFETY: the buffer is a valid udmabuf_create_list with `count`
        // items and outlives the call.
        let fd = unsafe { ioctl_create_list(self.dev.as_raw_fd(), base as *const UdmabufCreateListHeader) }
            .map_err(|e| ioctl_error("UDMABUF_CREATE_LIST", e, total))?;
        // SAFETY: on success the ioctl returns a new fd that we own.
        Ok(DmaBuf {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }
}

/// Which CPU access a DMA_BUF_IOCTL_SYNC brackets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncDirection {
    Read,
    Write,
    ReadWrite,
}

impl SyncDirection {
    fn bits(self) -> u64 {
        match self {
            SyncDirection::Read => DMA_BUF_SYNC_READ,
            SyncDirection::Write => DMA_BUF_SYNC_WRITE,
            SyncDirection::ReadWrite => DMA_BUF_SYNC_READ | DMA_BUF_SYNC_WRITE,
        }
    }
}

/// A DMABUF file descriptor.
#[derive(Debug)]
pub struct DmaBuf {
    fd: OwnedFd,
}

impl AsFd for DmaBuf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl DmaBuf {
    /// Wraps a DMABUF fd received from elsewhere (a socket, FunctionFS).
    pub fn from_fd(fd: OwnedFd) -> Self {
        DmaBuf { fd }
    }

    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Its size in bytes (a DMABUF reports it through lseek).
    pub fn size(&self) -> Result<u64> {
        nix::unistd::lseek(self.fd.as_raw_fd(), 0, nix::unistd::Whence::SeekEnd)
            .map(|s| s as u64)
            .map_err(|e| Error::Ioctl {
                op: "lseek",
                source: e,
                hint: None,
            })
    }

    fn sync(&self, flags: u64) -> Result<()> {
        loop {
            // SAFETY: `flags` is a valid dma_buf_sync for the call.
            match unsafe { ioctl_dma_buf_sync(self.fd.as_raw_fd(), &flags) } {
                Ok(_) => return Ok(()),
                // The uapi says to retry on these.
                Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
                Err(e) => {
                    return Err(Error::Ioctl {
                        op: "DMA_BUF_IOCTL_SYNC",
                        source: e,
                        hint: None,
                    })
                }
            }
        }
    }

    /// Begins CPU access (DMA_BUF_SYNC_START).
    pub fn sync_start(&self, dir: SyncDirection) -> Result<()> {
        self.sync(DMA_BUF_SYNC_START | dir.bits())
    }

    /// Ends CPU access (DMA_BUF_SYNC_END).
    pub fn sync_end(&self, dir: SyncDirection) -> Result<()> {
        self.sync(DMA_BUF_SYNC_END | dir.bits())
    }

    /// Brackets CPU access: START now, END when the guard drops.
    pub fn cpu_access(&self, dir: SyncDirection) -> Result<SyncGuard<'_>> {
        self.sync_start(dir)?;
        Ok(SyncGuard { buf: self, dir })
    }

    /// Maps the whole DMABUF shared, read-write.
    pub fn map(&self) -> Result<Mapping> {
        let len = self.size()? as usize;
        let Some(nz) = std::num::NonZeroUsize::new(len) else {
            return Err(Error::Map(Errno::EINVAL));
        };
        // SAFETY: a fresh shared mapping of a file we hold; unmapped on drop.
        let ptr = unsafe {
            nix::sys::mman::mmap(
                None,
                nz,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
                &self.fd,
                0,
            )
        }
        .map_err(Error::Map)?;
        Ok(Mapping { ptr, len })
    }
}

/// Ends CPU access when dropped.
#[derive(Debug)]
pub struct SyncGuard<'a> {
    buf: &'a DmaBuf,
    dir: SyncDirection,
}

impl Drop for SyncGuard<'_> {
    fn drop(&mut self) {
        let _ = self.buf.sync_end(self.dir);
    }
}

/// A DMABUF's pages mapped into this process.
#[derive(Debug)]
pub struct Mapping {
    ptr: std::ptr::NonNull<std::ffi::c_void>,
    len: usize,
}

impl Mapping {
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` bytes, readable, alive while self is.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr() as *const u8, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and writable; &mut self makes it unique here.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr() as *mut u8, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what map() mapped.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr, self.len) };
    }
}

/// A memfd udmabuf accepts: sealable, `size` bytes, F_SEAL_SHRINK set (and
/// F_SEAL_WRITE not).
pub fn memfd_for_udmabuf(name: &str, size: u64) -> Result<OwnedFd> {
    let cname = std::ffi::CString::new(name).map_err(|_| Error::Memfd(Errno::EINVAL))?;
    let fd = nix::sys::memfd::memfd_create(
        &cname,
        nix::sys::memfd::MemFdCreateFlag::MFD_ALLOW_SEALING | nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map_err(Error::Memfd)?;
    nix::unistd::ftruncate(&fd, size as i64).map_err(Error::Memfd)?;
    nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_ADD_SEALS(nix::fcntl::SealFlag::F_SEAL_SHRINK),
    )
    .map_err(Error::Memfd)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd(size: u64, seals: libc::c_int) -> OwnedFd {
        let cname = std::ffi::CString::new("t").unwrap();
        let fd = nix::sys::memfd::memfd_create(&cname, nix::sys::memfd::MemFdCreateFlag::MFD_ALLOW_SEALING)
            .unwrap();
        nix::unistd::ftruncate(&fd, size as i64).unwrap();
        if seals != 0 {
            nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_ADD_SEALS(nix::fcntl::SealFlag::from_bits_truncate(seals)),
            )
            .unwrap();
        }
        fd
    }

    #[test]
    fn a_proper_memfd_passes() {
        let f = memfd_for_udmabuf("ok", 1 << 20).unwrap();
        check_range(
            0,
            &Range {
                memfd: f.as_fd(),
                offset: 4096,
                size: 8192,
            },
        )
        .unwrap();
    }

    #[test]
    fn each_condition_has_its_error() {
        let page = page_size();
        let good = memfd(1 << 20, libc::F_SEAL_SHRINK);
        let r = |fd: &OwnedFd, offset, size| Range {
            memfd: unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) },
            offset,
            size,
        };
        assert!(matches!(
            check_range(3, &r(&good, 1, page)),
            Err(Error::Unaligned { index: 3, .. })
        ));
        assert!(matches!(
            check_range(0, &r(&good, 0, page + 1)),
            Err(Error::Unaligned { .. })
        ));
        assert!(matches!(
            check_range(0, &r(&good, 0, 0)),
            Err(Error::Empty { .. })
        ));
        assert!(matches!(
            check_range(0, &r(&good, 1 << 20, page)),
            Err(Error::OutOfBounds { .. })
        ));
        assert!(matches!(
            check_range(0, &r(&good, u64::MAX - page + 1, page)),
            Err(Error::OutOfBounds { .. })
        ));
        let unsealed = memfd(1 << 20, 0);
        assert!(matches!(
            check_range(0, &r(&unsealed, 0, page)),
            Err(Error::MissingSealShrink { .. })
        ));
        let wsealed = memfd(1 << 20, libc::F_SEAL_SHRINK | libc::F_SEAL_WRITE);
        assert!(matches!(
            check_range(0, &r(&wsealed, 0, page)),
            Err(Error::HasSealWrite { .. })
        ));
        let file = tempfile_fd();
        assert!(matches!(
            check_range(0, &r(&file, 0, page)),
            Err(Error::NotMemfd { .. })
        ));
    }

    fn tempfile_fd() -> OwnedFd {
        let path = std::env::temp_dir().join(format!("udmabuf-test-{}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(1 << 20).unwrap();
        let _ = std::fs::remove_file(&path);
        f.into()
    }

    #[test]
    fn list_length_is_checked() {
        assert!(matches!(check_list(&[]), Err(Error::BadCount { count: 0 })));
        let f = memfd_for_udmabuf("l", 1 << 20).unwrap();
        let items = vec![
            Range {
                memfd: f.as_fd(),
                offset: 0,
                size: 4096
            };
            LIST_LIMIT + 1
        ];
        assert!(matches!(check_list(&items), Err(Error::BadCount { .. })));
        check_list(&items[..LIST_LIMIT]).unwrap();
    }

    #[test]
    fn missing_device_says_so() {
        let e = Udmabuf::open_path("/nonexistent/udmabuf").unwrap_err();
        assert!(e.to_string().contains("CONFIG_UDMABUF"), "{e}");
    }

    #[test]
    fn size_limit_hint() {
        let e = ioctl_error("UDMABUF_CREATE", Errno::EINVAL, 128 << 20);
        assert!(e.to_string().contains("size_limit_mb"), "{e}");
        let e = ioctl_error("UDMABUF_CREATE", Errno::EINVAL, 1 << 20);
        assert!(!e.to_string().contains("size_limit_mb"), "{e}");
    }
}
