// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Tests against a real /dev/udmabuf. Where the kernel has none they fail
//! with that reason: `make test` does not run them there and lists them as
//! NOT RUN; the VM tier runs this binary inside a guest whose kernel has
//! udmabuf. Nothing here reads the source tree, so the binary can be copied.

use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use udmabuf::{memfd_for_udmabuf, CreateFlags, DmaBuf, Range, SyncDirection, Udmabuf};

fn dev() -> Udmabuf {
    Udmabuf::open().unwrap_or_else(|e| panic!("these tests need /dev/udmabuf: {e}"))
}

fn file(fd: &std::os::fd::OwnedFd) -> std::fs::File {
    std::fs::File::from(fd.try_clone().unwrap())
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn single_range_aliases_the_memfd_both_ways() {
    let memfd = memfd_for_udmabuf("single", 1 << 20).unwrap();
    let f = file(&memfd);
    let data = pattern(64 << 10, 1);
    f.write_all_at(&data, 128 << 10).unwrap();
    let buf = dev()
        .create(memfd.as_fd(), 128 << 10, 64 << 10, CreateFlags::default())
        .unwrap();
    assert_eq!(buf.size().unwrap(), 64 << 10);
    let mut map = buf.map().unwrap();
    {
        let _cpu = buf.cpu_access(SyncDirection::Read).unwrap();
        assert!(
            map.as_slice() == &data[..],
            "the DMABUF does not show the memfd's bytes"
        );
    }
    {
        let _cpu = buf.cpu_access(SyncDirection::Write).unwrap();
        map.as_mut_slice()[..4].copy_from_slice(b"udc!");
    }
    let mut back = [0u8; 4];
    f.read_exact_at(&mut back, 128 << 10).unwrap();
    assert_eq!(
        &back, b"udc!",
        "a write through the DMABUF did not reach the memfd"
    );
}

#[test]
fn list_of_ranges_from_two_memfds_is_one_buffer_in_order() {
    let a = memfd_for_udmabuf("a", 1 << 20).unwrap();
    let b = memfd_for_udmabuf("b", 1 << 20).unwrap();
    let (da, db) = (pattern(8192, 7), pattern(4096, 9));
    file(&a).write_all_at(&da, 4096).unwrap();
    file(&b).write_all_at(&db, 65536).unwrap();
    let items = [
        Range {
            memfd: b.as_fd(),
            offset: 65536,
            size: 4096,
        },
        Range {
            memfd: a.as_fd(),
            offset: 4096,
            size: 8192,
        },
    ];
    let buf = dev().create_list(&items, CreateFlags::default()).unwrap();
    assert_eq!(buf.size().unwrap(), 12288);
    let map = buf.map().unwrap();
    let _cpu = buf.cpu_access(SyncDirection::ReadWrite).unwrap();
    assert!(map.as_slice()[..4096] == db[..]);
    assert!(map.as_slice()[4096..] == da[..]);
}

#[test]
fn sync_start_and_end_work_explicitly() {
    let memfd = memfd_for_udmabuf("sync", 1 << 16).unwrap();
    let buf = dev()
        .create(memfd.as_fd(), 0, 1 << 16, CreateFlags::default())
        .unwrap();
    buf.sync_start(SyncDirection::ReadWrite).unwrap();
    buf.sync_end(SyncDirection::ReadWrite).unwrap();
    let fd = buf.into_fd();
    let again = DmaBuf::from_fd(fd);
    assert_eq!(again.size().unwrap(), 1 << 16);
}

#[test]
fn the_kernel_agrees_with_the_checks() {
    // A memfd without F_SEAL_SHRINK is refused before the ioctl, with a reason.
    let cname = std::ffi::CString::new("nos").unwrap();
    let fd =
        nix::sys::memfd::memfd_create(&cname, nix::sys::memfd::MemFdCreateFlag::MFD_ALLOW_SEALING).unwrap();
    nix::unistd::ftruncate(&fd, 1 << 16).unwrap();
    let e = dev()
        .create(fd.as_fd(), 0, 4096, CreateFlags::default())
        .unwrap_err();
    assert!(e.to_string().contains("F_SEAL_SHRINK"), "{e}");
}
