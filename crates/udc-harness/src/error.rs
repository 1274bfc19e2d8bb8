// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The harness's error type.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while playing the guest driver.
///
/// A device that answers with a non-OK status is *not* an error here (tests
/// look at statuses); a device that breaks the virtqueue or wire protocol
/// (a used id that was never made available, a used length past the buffer,
/// a response of the wrong size) is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Building the guest memory map failed.
    #[error("guest memory setup: {0}")]
    MemorySetup(String),
    /// A guest memory access was outside guest memory.
    #[error("guest memory access at {gpa:#x} (+{len}): {source}")]
    Memory {
        gpa: u64,
        len: usize,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// The guest-physical allocator has no room.
    #[error("guest allocator: no room for {len} bytes aligned to {align}")]
    OutOfGuestMemory { len: u64, align: u64 },
    /// `free` of an address the allocator did not hand out.
    #[error("guest allocator: {0:#x} is not an allocated address")]
    BadFree(u64),
    /// A vhost-user request failed.
    #[error("vhost-user {what}: {source}")]
    Vhost {
        what: &'static str,
        #[source]
        source: vhost::Error,
    },
    /// The daemon's socket did not accept a connection in time.
    #[error("could not connect to {path:?} within {timeout:?}: {last}")]
    ConnectTimeout {
        path: PathBuf,
        timeout: Duration,
        last: String,
    },
    /// The device does not offer something the harness needs.
    #[error("device does not offer {0}")]
    NotOffered(String),
    /// Waiting for the device timed out.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    /// Not enough free descriptors in a queue.
    #[error("queue {queue}: chain needs {needed} descriptors, {free} free")]
    QueueFull { queue: u16, needed: usize, free: usize },
    /// The device put an id on the used ring that is not the head of a chain
    /// in flight (a device bug).
    #[error("queue {queue}: used ring names id {id}, which is not a chain in flight")]
    UnknownUsedId { queue: u16, id: u32 },
    /// The device reported more bytes written than the chain's writable part
    /// holds (a device bug).
    #[error("queue {queue}: head {head} used length {used_len} exceeds writable capacity {capacity}")]
    UsedLenTooLarge {
        queue: u16,
        head: u16,
        used_len: u32,
        capacity: u64,
    },
    /// A used length differs from what the wire spec requires.
    #[error("{what}: used length {got}, the spec requires {expected}")]
    BadUsedLen {
        what: &'static str,
        expected: u32,
        got: u32,
    },
    /// A command completed with a non-OK status where the caller required OK.
    #[error("command {opcode:#06x} (ep {ep:#04x}) failed with status {status} ({name})")]
    CommandFailed {
        opcode: u16,
        ep: u8,
        status: u32,
        name: String,
    },
    /// A caller passed something the harness cannot do.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The fake gadget saw something it does not accept.
    #[error("fake gadget: {0}")]
    Gadget(String),
}

impl Error {
    pub(crate) fn io(what: &'static str, source: std::io::Error) -> Self {
        Error::Io { what, source }
    }

    pub(crate) fn last_os(what: &'static str) -> Self {
        Error::Io {
            what,
            source: std::io::Error::last_os_error(),
        }
    }

    pub(crate) fn vhost(what: &'static str) -> impl FnOnce(vhost::Error) -> Error {
        move |source| Error::Vhost { what, source }
    }

    pub(crate) fn timeout(what: impl Into<String>, after: Duration) -> Self {
        Error::Timeout {
            what: what.into(),
            after,
        }
    }

    /// True for [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }
}

/// The harness's result type.
pub type Result<T> = std::result::Result<T, Error>;
