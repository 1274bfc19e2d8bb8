// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Endpoint addresses: bit 7 the direction, bits 3..0 the number.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::request::DIR_IN;

/// An endpoint address as descriptors and the virtio-udc wire carry it,
/// read and printed the way people write it: `ep1in`, `ep2out`, `0x81` or
/// `129` in, `ep0`/`ep1in`/`ep2out` out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EpAddress(pub u8);

impl EpAddress {
    /// The endpoint number (0-15) without the direction bit.
    pub fn number(self) -> u8 {
        self.0 & 0x0f
    }

    /// True for IN (device to host) endpoints.
    pub fn is_in(self) -> bool {
        self.0 & DIR_IN != 0
    }
}

/// Why a string is not an endpoint address.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseEpAddressError {
    #[error("endpoint {0:?}: say ep<N>in or ep<N>out")]
    NoDirection(String),
    #[error("endpoint {0:?} is not an endpoint address (ep1in, ep2out, 0x81, ...)")]
    NotAnAddress(String),
}

impl FromStr for EpAddress {
    type Err = ParseEpAddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let parsed = if let Some(rest) = t.strip_prefix("ep") {
            let (num, dir) = if let Some(n) = rest.strip_suffix("in") {
                (n, DIR_IN)
            } else if let Some(n) = rest.strip_suffix("out") {
                (n, 0)
            } else if rest == "0" {
                ("0", 0)
            } else {
                return Err(ParseEpAddressError::NoDirection(s.to_string()));
            };
            num.parse::<u8>().ok().filter(|n| *n <= 15).map(|n| n | dir)
        } else if let Some(hex) = t.strip_prefix("0x") {
            u8::from_str_radix(hex, 16).ok()
        } else {
            t.parse::<u8>().ok()
        };
        match parsed {
            // Bits 6..4 are reserved in an endpoint address.
            Some(a) if a & 0x70 == 0 => Ok(EpAddress(a)),
            _ => Err(ParseEpAddressError::NotAnAddress(s.to_string())),
        }
    }
}

impl fmt::Display for EpAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let num = self.number();
        if num == 0 {
            write!(f, "ep0")
        } else if self.is_in() {
            write!(f, "ep{num}in")
        } else {
            write!(f, "ep{num}out")
        }
    }
}

impl From<EpAddress> for u8 {
    fn from(a: EpAddress) -> u8 {
        a.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_addresses_parse_as_people_write_them() {
        let p = |s: &str| s.parse::<EpAddress>().map(u8::from);
        assert_eq!(p("ep1in"), Ok(0x81));
        assert_eq!(p("EP15OUT"), Ok(0x0f));
        assert_eq!(p("0x82"), Ok(0x82));
        assert_eq!(p("3"), Ok(3));
        assert_eq!(p("ep0"), Ok(0));
        assert!(p("0x91").is_err());
        assert!(p("ep16in").is_err());
        assert_eq!(p("ep1"), Err(ParseEpAddressError::NoDirection("ep1".into())));
        for a in [0x00u8, 0x81, 0x02, 0x8f] {
            assert_eq!(EpAddress(a).to_string().parse::<EpAddress>(), Ok(EpAddress(a)));
        }
    }

    #[test]
    fn names() {
        assert_eq!(EpAddress(0x00).to_string(), "ep0");
        assert_eq!(EpAddress(0x80).to_string(), "ep0");
        assert_eq!(EpAddress(0x81).to_string(), "ep1in");
        assert_eq!(EpAddress(0x02).to_string(), "ep2out");
    }
}
