// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Bus speeds: their order, names and Linux's numbering.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Bus speed. The order is meaningful (`Full < High < Super`): the bus runs
/// at the lower of the host's and the device's speeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Speed {
    Low,
    Full,
    High,
    Super,
    SuperPlus,
}

impl Speed {
    /// Decodes a speed from the device's config space and BUS_RESET events,
    /// which carry Linux's `enum usb_device_speed`; `None` for UNKNOWN (0),
    /// wireless (4) and anything newer than this host knows.
    pub fn from_wire(v: u8) -> Option<Speed> {
        match v {
            1 => Some(Speed::Low),
            2 => Some(Speed::Full),
            3 => Some(Speed::High),
            5 => Some(Speed::Super),
            6 => Some(Speed::SuperPlus),
            _ => None,
        }
    }

    /// The `enum usb_device_speed` value the guest's driver expects.
    pub fn to_wire(self) -> u8 {
        match self {
            Speed::Low => 1,
            Speed::Full => 2,
            Speed::High => 3,
            Speed::Super => 5,
            Speed::SuperPlus => 6,
        }
    }

    /// The name [`FromStr`] accepts, for configuration files and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Speed::Low => "low",
            Speed::Full => "full",
            Speed::High => "high",
            Speed::Super => "super",
            Speed::SuperPlus => "super-plus",
        }
    }

    /// ep0's packet size in bytes, which the host needs before it has the
    /// whole device descriptor.
    pub fn ep0_max_packet(self) -> u16 {
        match self {
            Speed::Low => 8,
            Speed::Full | Speed::High => 64,
            Speed::Super | Speed::SuperPlus => 512,
        }
    }

    /// SuperSpeed and faster: endpoints need companion descriptors and
    /// bMaxPacketSize0 is an exponent.
    pub fn is_superspeed(self) -> bool {
        self >= Speed::Super
    }

    /// The largest bulk packet at this speed, which is what a bulk endpoint
    /// should declare (USB 2.0 5.8.3, USB 3.2 9.6.6); `None` at low speed,
    /// which has no bulk transfers.
    pub fn bulk_max_packet(self) -> Option<u16> {
        match self {
            Speed::Low => None,
            Speed::Full => Some(64),
            Speed::High => Some(512),
            Speed::Super | Speed::SuperPlus => Some(1024),
        }
    }
}

/// Prose, as in "wMaxPacketSize 1024 is over 512, the limit for bulk at
/// high speed"; use [`Speed::name`] for the machine-readable form.
impl fmt::Display for Speed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Speed::Low => "low speed",
            Speed::Full => "full speed",
            Speed::High => "high speed",
            Speed::Super => "SuperSpeed",
            Speed::SuperPlus => "SuperSpeedPlus",
        })
    }
}

/// A speed name that is not one of those [`Speed::name`] produces.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown speed {0:?}: use low, full, high, super or super-plus")]
pub struct ParseSpeedError(pub String);

impl FromStr for Speed {
    type Err = ParseSpeedError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "low" => Ok(Speed::Low),
            "full" => Ok(Speed::Full),
            "high" => Ok(Speed::High),
            "super" => Ok(Speed::Super),
            "super-plus" | "superplus" | "super_plus" => Ok(Speed::SuperPlus),
            _ => Err(ParseSpeedError(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_wire_names_and_order() {
        for s in [
            Speed::Low,
            Speed::Full,
            Speed::High,
            Speed::Super,
            Speed::SuperPlus,
        ] {
            assert_eq!(Speed::from_wire(s.to_wire()), Some(s));
            assert_eq!(s.name().parse::<Speed>(), Ok(s));
        }
        assert_eq!(Speed::High.to_wire(), 3);
        assert_eq!(Speed::Super.to_wire(), 5);
        assert_eq!(Speed::from_wire(0), None);
        assert_eq!(Speed::from_wire(4), None);
        assert_eq!("Super-Plus".parse::<Speed>(), Ok(Speed::SuperPlus));
        assert!("warp".parse::<Speed>().unwrap_err().to_string().contains("warp"));
        assert!(Speed::Full < Speed::High && Speed::High < Speed::Super);
        assert_eq!(Speed::Super.to_string(), "SuperSpeed");
        assert_eq!(Speed::Super.ep0_max_packet(), 512);
        assert_eq!(Speed::High.bulk_max_packet(), Some(512));
        assert_eq!(Speed::Low.bulk_max_packet(), None);
    }
}
