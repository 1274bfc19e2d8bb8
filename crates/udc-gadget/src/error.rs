// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The one error type of the guest tool: what a case, the demo, the bench
//! or a command ends with.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something the case needs is missing or cannot be set up.
    #[error("setup: {0}")]
    Setup(String),
    /// The host side did not answer as the protocol says.
    #[error("host: {0}")]
    Host(String),
    /// A check failed: the outcome differs from the expected one.
    #[error("{0}")]
    Check(String),
}
