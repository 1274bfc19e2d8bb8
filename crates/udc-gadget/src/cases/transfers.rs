// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Moving data with read()/write() and AIO: the host's view of the
//! descriptors, bulk transfers both ways from 1 byte to 8 MiB, short and
//! zero-length packets, and requests to the interface on ep0.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use crate::error::Error;
use crate::gadget;
use crate::support::{
    check, clone, join, pattern, read_thread, round_trip, setup, stream_clean, transfer_ok, verify,
    wait_ep0_event, write_thread, Ctx, Setup, IO_TIMEOUT, MAX_SOCKET_TRANSFER,
};
use udc_ch9::{Speed, DIR_IN};

/// Sizes for the read/write cases, around the packet size and up to 8 MiB.
/// Without scatter-gather f_fs kmallocs each read()/write() whole, and
/// above 4 MiB the page allocator warns and fails it with ENOMEM
/// (docs/kernel-bugs.md): there the largest is 2 MiB.
fn sizes(s: &Setup) -> Vec<usize> {
    let mps = s.mps;
    let largest = if s.sg { 8 << 20 } else { 2 << 20 };
    vec![1, mps - 1, mps, mps + 1, 4096, 65536, 1 << 20, largest]
}

/// The host's parsed descriptors are what this tool wrote.
pub(crate) fn enumeration(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let d = ctx.host.ok(json!({"op": "descriptors"}))?;
    let e = &d["enumerated"];
    let dev = &e["device"];
    check(
        dev["id_vendor"] == gadget::VENDOR && dev["id_product"] == gadget::PRODUCT,
        || {
            format!(
                "device ids {}:{} instead of {:04x}:{:04x}",
                dev["id_vendor"],
                dev["id_product"],
                gadget::VENDOR,
                gadget::PRODUCT
            )
        },
    )?;
    let strings = e["strings"].to_string();
    for want in [
        gadget::MANUFACTURER,
        gadget::PRODUCT_NAME,
        gadget::SERIAL,
        gadget::INTERFACE_NAME,
    ] {
        check(strings.contains(want), || {
            format!("string {want:?} missing from the host's strings {strings}")
        })?;
    }
    let ep0 = if s.speed == "super" { 9 } else { 64 };
    check(dev["max_packet_size0"] == ep0, || {
        format!(
            "bMaxPacketSize0 {} at {} speed, expected {ep0}",
            dev["max_packet_size0"], s.speed
        )
    })?;
    let configs = e["configurations"].as_array().cloned().unwrap_or_default();
    check(configs.len() == 1, || {
        format!("{} configurations, expected 1", configs.len())
    })?;
    let intfs = configs[0]["interfaces"].as_array().cloned().unwrap_or_default();
    check(intfs.len() == 1, || {
        format!("{} interfaces, expected 1", intfs.len())
    })?;
    let intf = &intfs[0];
    let want = gadget::FUNCTION.interface();
    check(
        intf["class"] == want.class && intf["subclass"] == want.subclass && intf["protocol"] == want.protocol,
        || {
            format!(
                "interface class {}/{}/{}, expected {}/{}/{}",
                intf["class"], intf["subclass"], intf["protocol"], want.class, want.subclass, want.protocol
            )
        },
    )?;
    // The function has descriptors for full speed and faster.
    let speed = match s.speed.parse::<Speed>() {
        Ok(sp) if sp >= Speed::Full => sp,
        _ => return Err(Error::Check(format!("unexpected speed {}", s.speed))),
    };
    let want_eps = gadget::FUNCTION.endpoints(speed);
    let eps = intf["endpoints"].as_array().cloned().unwrap_or_default();
    check(eps.len() == want_eps.len(), || {
        format!("{} endpoints, expected {}", eps.len(), want_eps.len())
    })?;
    for ((ep, addr), (want, companion)) in eps.iter().zip([s.ep_in, s.ep_out]).zip(&want_eps) {
        // The UDC numbers the endpoints; direction and the rest are ours.
        check(
            ep["address"] == addr
                && (addr & DIR_IN != 0) == want.is_in()
                && ep["attributes"] == want.attributes,
            || format!("endpoint {ep}: expected {want:?} at {addr:#04x}"),
        )?;
        check(
            ep["w_max_packet_size"] == want.max_packet_size && ep["interval"] == want.interval,
            || {
                format!(
                    "endpoint {addr:#04x}: wMaxPacketSize {} and bInterval {} at {} speed, expected {} and {}",
                    ep["w_max_packet_size"], ep["interval"], s.speed, want.max_packet_size, want.interval
                )
            },
        )?;
        let c = &ep["companion"];
        let companion_ok = match companion {
            None => c.is_null(),
            Some(w) => {
                c["max_burst"] == w.max_burst
                    && c["attributes"] == w.attributes
                    && c["bytes_per_interval"] == w.bytes_per_interval
            }
        };
        check(companion_ok, || {
            format!(
                "endpoint {addr:#04x}: SuperSpeed companion {c} at {} speed, expected {companion:?}",
                s.speed
            )
        })?;
    }
    ctx.notes.push(format!(
        "host read {} bytes of configuration",
        configs[0]["total_length"]
    ));
    Ok(())
}

/// Host OUT transfers of 1 byte to 8 MiB, each read whole by one read().
pub(crate) fn bulk_out_read(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let f = s.g.open_ep(2)?;
    for (i, n) in sizes(&s).into_iter().enumerate() {
        let seed = 1000 + i as u64;
        let what = format!("OUT {n} bytes");
        let reader = read_thread(clone(&f)?, n);
        if n <= MAX_SOCKET_TRANSFER {
            let r = ctx.host.send_out(s.ep_out, &pattern(seed, 0, n), false)?;
            transfer_ok(&r, n, &what)?;
        } else {
            ctx.host.stream_start(s.ep_out, &format!("prbs:{seed}"), n, 1)?;
        }
        let got = join(reader, &what)?;
        check(got.len() == n, || {
            format!("{what}: read() returned {} bytes", got.len())
        })?;
        verify(seed, 0, &got, &what)?;
        if n > MAX_SOCKET_TRANSFER {
            stream_clean(&mut ctx.host, s.ep_out, n as u64, &what)?;
        }
    }
    Ok(())
}

/// Guest write()s of 1 byte to 8 MiB, each read whole by the host.
pub(crate) fn bulk_in_write(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let f = s.g.open_ep(1)?;
    for (i, n) in sizes(&s).into_iter().enumerate() {
        let seed = 2000 + i as u64;
        let what = format!("IN {n} bytes");
        if n <= MAX_SOCKET_TRANSFER {
            let writer = write_thread(clone(&f)?, pattern(seed, 0, n));
            let (r, data) = ctx.host.read_in(s.ep_in, n)?;
            transfer_ok(&r, n, &what)?;
            verify(seed, 0, &data, &what)?;
            let w = join(writer, &what)?;
            check(w == n, || format!("{what}: write() returned {w}"))?;
        } else {
            ctx.host.stream_start(s.ep_in, &format!("prbs:{seed}"), n, 1)?;
            let w = clone(&f)?
                .write(&pattern(seed, 0, n))
                .map_err(|e| Error::Check(format!("{what}: write(): {e}")))?;
            check(w == n, || format!("{what}: write() returned {w}"))?;
            stream_clean(&mut ctx.host, s.ep_in, n as u64, &what)?;
        }
    }
    Ok(())
}

/// Groups of AIO reads in flight at once (io_submit on the endpoint file),
/// filled by a host stream, completing in order.
pub(crate) fn bulk_out_aio(ctx: &mut Ctx) -> Result<(), Error> {
    let mut s = setup(ctx)?;
    for (g, (size, count)) in [(65536usize, 4u64), (1 << 20, 4), (s.mps, 8)]
        .into_iter()
        .enumerate()
    {
        let seed = 3000 + g as u64;
        let what = format!("OUT AIO {count} x {size} bytes");
        for _ in 0..count {
            s.g.rx
                .submit_read(size)
                .map_err(|e| Error::Check(format!("{what}: io_submit: {e}")))?;
            let done =
                s.g.rx
                    .wait(Duration::ZERO)
                    .map_err(|e| Error::Check(format!("{what}: io_getevents: {e}")))?;
            check(done.is_none(), || {
                format!("{what}: a read completed before the host sent anything")
            })?;
        }
        ctx.host
            .stream_start(s.ep_out, &format!("prbs:{seed}"), size, count)?;
        for k in 0..count {
            let buf =
                s.g.rx
                    .wait_read(IO_TIMEOUT)
                    .map_err(|e| Error::Check(format!("{what}: read {k}: {e}")))?
                    .ok_or_else(|| Error::Check(format!("{what}: read {k} did not complete")))?;
            check(buf.len() == size, || {
                format!("{what}: read {k} got {} bytes", buf.len())
            })?;
            // FIFO: completion k carries the stream's k-th transfer.
            verify(seed, k * size as u64, &buf, &format!("{what}, completion {k}"))?;
        }
        stream_clean(&mut ctx.host, s.ep_out, count * size as u64, &what)?;
    }
    Ok(())
}

/// Groups of AIO writes in flight at once, checked by a verifying host
/// stream.
pub(crate) fn bulk_in_aio(ctx: &mut Ctx) -> Result<(), Error> {
    let mut s = setup(ctx)?;
    for (g, (size, count)) in [(65536usize, 4u64), (1 << 20, 4), (s.mps, 8)]
        .into_iter()
        .enumerate()
    {
        let seed = 4000 + g as u64;
        let what = format!("IN AIO {count} x {size} bytes");
        ctx.host
            .stream_start(s.ep_in, &format!("prbs:{seed}"), size, count)?;
        for k in 0..count {
            s.g.tx
                .submit_write(Bytes::from(pattern(seed, k * size as u64, size)))
                .map_err(|e| Error::Check(format!("{what}: io_submit {k}: {e}")))?;
        }
        s.g.tx
            .flush(IO_TIMEOUT)
            .map_err(|e| Error::Check(format!("{what}: completions: {e}")))?;
        stream_clean(&mut ctx.host, s.ep_in, count * size as u64, &what)?;
    }
    Ok(())
}

/// Transfers that end early: short packets and zero-length packets both
/// ways, and a ZLP ending an OUT transfer that fills whole packets.
pub(crate) fn short_and_zero_length(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let fout = s.g.open_ep(2)?;
    let fin = s.g.open_ep(1)?;

    // OUT: 100 bytes into a 4096-byte read: the short packet ends it.
    let reader = read_thread(clone(&fout)?, 4096);
    transfer_ok(
        &ctx.host.send_out(s.ep_out, &pattern(5001, 0, 100), false)?,
        100,
        "OUT short",
    )?;
    let got = join(reader, "OUT short")?;
    check(got.len() == 100, || {
        format!("OUT short: read() returned {} bytes, expected 100", got.len())
    })?;
    verify(5001, 0, &got, "OUT short")?;

    // OUT: a zero-length packet alone: read() returns 0.
    let reader = read_thread(clone(&fout)?, 4096);
    transfer_ok(&ctx.host.send_out(s.ep_out, &[], false)?, 0, "OUT zero-length")?;
    let got = join(reader, "OUT zero-length")?;
    check(got.is_empty(), || {
        format!("OUT zero-length: read() returned {} bytes, expected 0", got.len())
    })?;

    // OUT: two full packets then a ZLP end a larger read at 2 packets.
    let n = 2 * s.mps;
    let reader = read_thread(clone(&fout)?, 8 * s.mps);
    transfer_ok(
        &ctx.host.send_out(s.ep_out, &pattern(5002, 0, n), true)?,
        n,
        "OUT packets + ZLP",
    )?;
    let got = join(reader, "OUT packets + ZLP")?;
    check(got.len() == n, || {
        format!(
            "OUT packets + ZLP: read() returned {} bytes, expected {n}",
            got.len()
        )
    })?;
    verify(5002, 0, &got, "OUT packets + ZLP")?;

    // IN: 100 bytes written, the host asked for 4096: a short transfer.
    let writer = write_thread(clone(&fin)?, pattern(5003, 0, 100));
    let (r, data) = ctx.host.read_in(s.ep_in, 4096)?;
    transfer_ok(&r, 100, "IN short")?;
    verify(5003, 0, &data, "IN short")?;
    check(join(writer, "IN short")? == 100, || {
        "IN short: write() did not return 100".into()
    })?;

    // IN: a zero-length write() is a zero-length packet.
    let writer = write_thread(clone(&fin)?, Vec::new());
    let (r, _) = ctx.host.read_in(s.ep_in, 4096)?;
    transfer_ok(&r, 0, "IN zero-length")?;
    check(join(writer, "IN zero-length")? == 0, || {
        "IN zero-length: write() did not return 0".into()
    })?;

    // Nothing stray is left: one more exact transfer each way.
    let reader = read_thread(clone(&fout)?, 512);
    transfer_ok(
        &ctx.host.send_out(s.ep_out, &pattern(5004, 0, 300), false)?,
        300,
        "OUT after",
    )?;
    verify(
        5004,
        0,
        &join(reader, "OUT after")?,
        "OUT after (a stray ZLP would make this empty)",
    )?;
    Ok(())
}

/// Class and vendor requests to the interface reach the ep0 thread as
/// FunctionFS SETUP events, in both directions; it stalls them, as the
/// function has none, and the function keeps moving data afterwards.
pub(crate) fn ep0_requests_stall(ctx: &mut Ctx) -> Result<(), Error> {
    let s = setup(ctx)?;
    let interface = gadget::FUNCTION.interface().number;
    for (req, event) in [
        (
            json!({"op": "control", "request_type": 0xc1, "request": 1, "value": 0,
                "index": interface, "length": 4}),
            "setup-in",
        ),
        (
            json!({"op": "control", "request_type": 0x21, "request": 2, "value": 0,
                "index": interface, "length": 3, "data": "AQID"}),
            "setup-out",
        ),
    ] {
        let r = ctx.host.request(&req)?;
        check(r["ok"] == false && r["status"] == "stall", || {
            format!("control request {req}: the host got {r}, expected a stall")
        })?;
        wait_ep0_event(&s, event)?;
    }
    round_trip(ctx, &s, 9500)?;
    Ok(())
}
