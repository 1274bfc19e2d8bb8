// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The per-endpoint rules of chapter 9: wMaxPacketSize and bInterval by
//! transfer type and speed, endpoint number 0, reserved bits, and the
//! SuperSpeed companion's fields (USB 2.0 9.6.6, USB 3.2 9.6.6 and 9.6.7).

use super::endpoint::{Endpoint, SsCompanion};
use super::error::{field, DescriptorError};
use super::*;

/// The wMaxPacketSize rule for a transfer type at a speed, as the end of a
/// sentence starting "wMaxPacketSize N"; `None` if `mps` is allowed.
fn max_packet_rule(tt: u8, mps: u16, speed: Speed) -> Option<String> {
    let kind = transfer_type_name(tt);
    let exactly = |want: u16| -> Option<String> {
        if mps > want {
            Some(format!("is over {want}, the limit for {kind} at {speed}"))
        } else if mps < want {
            Some(format!(
                "is under {want}: {kind} at {speed} must be exactly {want}"
            ))
        } else {
            None
        }
    };
    let at_most = |limit: u16| -> Option<String> {
        (mps > limit).then(|| format!("is over {limit}, the limit for {kind} at {speed}"))
    };
    match (tt, speed) {
        (TRANSFER_CONTROL | TRANSFER_BULK, Speed::Full) => (!matches!(mps, 8 | 16 | 32 | 64))
            .then(|| format!("is not 8, 16, 32 or 64, the sizes {kind} allows at {speed}")),
        (TRANSFER_CONTROL, Speed::Low) => exactly(8),
        (TRANSFER_CONTROL, Speed::High) => exactly(64),
        (TRANSFER_CONTROL, _) => exactly(512),
        (TRANSFER_BULK, Speed::High) => exactly(512),
        (TRANSFER_BULK, _) => exactly(1024),
        (TRANSFER_INTERRUPT, _) if mps == 0 => {
            Some("is too small: an interrupt endpoint must carry at least 1 byte".to_string())
        }
        (TRANSFER_INTERRUPT, Speed::Low) => at_most(8),
        (TRANSFER_INTERRUPT, Speed::Full) => at_most(64),
        (TRANSFER_INTERRUPT, _) => at_most(1024),
        (_, Speed::Low | Speed::Full) => at_most(1023),
        (_, _) => at_most(1024),
    }
}

/// The bInterval rule for periodic endpoints, as the end of a sentence
/// starting "bInterval N"; `None` if allowed or not periodic.
fn interval_rule(tt: u8, interval: u8, speed: Speed) -> Option<String> {
    let kind = transfer_type_name(tt);
    let (max, unit) = match (tt, speed) {
        (TRANSFER_INTERRUPT, Speed::Low | Speed::Full) => (255, "a period of bInterval frames"),
        (TRANSFER_ISOCHRONOUS, Speed::Low | Speed::Full) => (16, "a period of 2^(bInterval-1) frames"),
        (TRANSFER_INTERRUPT | TRANSFER_ISOCHRONOUS, _) => (16, "a period of 2^(bInterval-1) microframes"),
        _ => return None,
    };
    (interval == 0 || interval > max)
        .then(|| format!("is out of range: {kind} at {speed} needs 1 to {max} ({unit})"))
}

/// Checks one endpoint of interface context `ictx` against the rules for
/// its transfer type at `speed`.
pub(super) fn validate_endpoint(ictx: &str, ep: &Endpoint, speed: Speed) -> Result<(), DescriptorError> {
    let tt = ep.transfer_type();
    let kind = transfer_type_name(tt);
    let ectx = format!("{ictx}: endpoint {:#04x} ({kind})", ep.address);
    if ep.number() == 0 {
        return Err(DescriptorError::EndpointZero {
            context: ictx.into(),
            address: ep.address,
        });
    }
    if ep.address & 0x70 != 0 {
        return Err(field(
            &ectx,
            "bEndpointAddress",
            format!("{:#04x}", ep.address),
            "bits 6..4 are reserved and must be zero",
        ));
    }
    if speed == Speed::Low && matches!(tt, TRANSFER_BULK | TRANSFER_ISOCHRONOUS) {
        return Err(DescriptorError::Invalid {
            context: ectx,
            problem: format!("{kind} endpoints do not exist at low speed"),
        });
    }
    let raw = format!("{:#06x}", ep.w_max_packet_size);
    if ep.w_max_packet_size & 0xe000 != 0 {
        return Err(field(
            &ectx,
            "wMaxPacketSize",
            raw,
            "bits 15..13 are reserved and must be zero",
        ));
    }
    if ep.mult != 0 {
        let periodic = matches!(tt, TRANSFER_INTERRUPT | TRANSFER_ISOCHRONOUS);
        let problem = match speed {
            Speed::High if periodic && ep.mult == 3 => Some(
                "bits 12..11 are 3, which is reserved (at most 2 additional transactions per microframe)"
                    .to_string(),
            ),
            Speed::High if periodic => None,
            Speed::High => Some(format!(
                "bits 12..11 (additional transactions per microframe) must be zero for {kind}"
            )),
            Speed::Super | Speed::SuperPlus => Some(format!(
                "bits 12..11 must be zero at {speed}, where bursts are set in the companion descriptor"
            )),
            Speed::Low | Speed::Full => Some(format!(
                "bits 12..11 (additional transactions per microframe) must be zero at {speed}"
            )),
        };
        if let Some(problem) = problem {
            return Err(field(&ectx, "wMaxPacketSize", raw, problem));
        }
    }
    if let Some(rule) = max_packet_rule(tt, ep.max_packet_size, speed) {
        return Err(DescriptorError::MaxPacketSize {
            context: ictx.into(),
            address: ep.address,
            transfer_type: tt,
            size: ep.max_packet_size,
            rule,
        });
    }
    if let Some(rule) = interval_rule(tt, ep.interval, speed) {
        return Err(DescriptorError::Interval {
            context: ictx.into(),
            address: ep.address,
            transfer_type: tt,
            interval: ep.interval,
            rule,
        });
    }
    if speed.is_superspeed() {
        let Some(c) = &ep.companion else {
            return Err(DescriptorError::MissingCompanion {
                context: ictx.into(),
                address: ep.address,
                transfer_type: tt,
                speed,
            });
        };
        if let Some(problem) = companion_problem(tt, ep.max_packet_size, c) {
            return Err(DescriptorError::Companion {
                context: ictx.into(),
                address: ep.address,
                transfer_type: tt,
                problem,
            });
        }
    }
    Ok(())
}

fn companion_problem(tt: u8, mps: u16, c: &SsCompanion) -> Option<String> {
    let kind = transfer_type_name(tt);
    let attrs = c.attributes;
    if tt == TRANSFER_CONTROL && c.max_burst != 0 {
        return Some(format!("bMaxBurst {} must be 0 for control", c.max_burst));
    }
    if c.max_burst > 15 {
        return Some(format!(
            "bMaxBurst {} is over 15 (16 packets per burst)",
            c.max_burst
        ));
    }
    let ssp_iso = tt == TRANSFER_ISOCHRONOUS && attrs & 0x80 != 0;
    match tt {
        TRANSFER_CONTROL | TRANSFER_INTERRUPT if attrs != 0 => {
            return Some(format!("bmAttributes {attrs:#04x} must be 0 for {kind}"));
        }
        TRANSFER_BULK if attrs & 0xe0 != 0 => {
            return Some(format!(
                "bmAttributes {attrs:#04x}: bits 7..5 are reserved and must be zero"
            ));
        }
        TRANSFER_BULK if attrs & 0x1f > 16 => {
            return Some(format!(
                "bmAttributes {attrs:#04x}: MaxStreams {} is over 16 (2^16 streams)",
                attrs & 0x1f
            ));
        }
        TRANSFER_ISOCHRONOUS if !ssp_iso && attrs & 3 == 3 => {
            return Some(format!(
                "bmAttributes {attrs:#04x}: Mult 3 is reserved (at most 2, meaning 3 bursts per service interval)"
            ));
        }
        _ => {}
    }
    if matches!(tt, TRANSFER_INTERRUPT | TRANSFER_ISOCHRONOUS) && !ssp_iso {
        if c.max_burst > 0 && mps != 1024 {
            return Some(format!(
                "bMaxBurst {} needs wMaxPacketSize 1024, not {mps}",
                c.max_burst
            ));
        }
        let mult = if tt == TRANSFER_ISOCHRONOUS {
            u32::from(attrs & 3)
        } else {
            0
        };
        let max = u32::from(mps) * (u32::from(c.max_burst) + 1) * (mult + 1);
        if u32::from(c.bytes_per_interval) > max {
            let mult_text = if tt == TRANSFER_ISOCHRONOUS {
                format!(" x (Mult {mult} + 1)")
            } else {
                String::new()
            };
            return Some(format!(
                "wBytesPerInterval {} is over {max}, what wMaxPacketSize {mps} x (bMaxBurst {} + 1){mult_text} can carry",
                c.bytes_per_interval, c.max_burst
            ));
        }
    }
    None
}
