// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The client side of the control protocol: one request line, one answer
//! (`vhost-device-udc ctl`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {}: {source} (is the daemon running with --control-socket {}?)", .path.display(), .path.display())]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the daemon closed the connection without an answer")]
    NoAnswer,
    #[error("the answer is not JSON: {0}")]
    NotJson(serde_json::Error),
}

/// Sends `request` to the daemon's control socket at `path` and returns its
/// answer (which may itself say `"ok": false`).
pub fn request(path: &Path, request: &Value) -> Result<Value, ClientError> {
    let s = UnixStream::connect(path).map_err(|source| ClientError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    // The longest request a user types here is a control transfer, bounded
    // by the daemon's control timeout (at most an hour).
    s.set_read_timeout(Some(Duration::from_secs(3600)))?;
    let mut w = &s;
    writeln!(w, "{request}")?;
    let mut line = String::new();
    if BufReader::new(&s).read_line(&mut line)? == 0 {
        return Err(ClientError::NoAnswer);
    }
    serde_json::from_str(&line).map_err(ClientError::NotJson)
}
