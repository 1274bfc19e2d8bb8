#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Smoke test for the patched QEMU's vhost-user-udc-pci device.

No guest and no real back end: a tiny stub back end (StubBackend below)
answers the vhost-user handshake QEMU does at start-up, and the checks look
at QEMU from outside (device list, error messages, QMP, HMP).

    python3 qemu/tests/smoke.py [path/to/qemu-system-x86_64]

Without an argument it uses $QEMU, else runs qemu/build.sh for the path.
Prints one line per check and "N passed, N failed" at the end; exits 1 if
anything failed.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))

VHOST_USER_GET_FEATURES = 1
VHOST_USER_GET_PROTOCOL_FEATURES = 15
VHOST_USER_GET_CONFIG = 24
VIRTIO_F_VERSION_1 = 32
VIRTIO_F_IOMMU_PLATFORM = 33
VHOST_USER_F_PROTOCOL_FEATURES = 30
VHOST_USER_PROTOCOL_F_REPLY_ACK = 3
VHOST_USER_PROTOCOL_F_BACKEND_REQ = 5
VHOST_USER_PROTOCOL_F_CONFIG = 9
VHOST_USER_FLAG_NEED_REPLY = 0x8

RESULTS = []


def check(name, ok, detail=""):
    RESULTS.append(ok)
    line = f"{'ok  ' if ok else 'FAIL'} {name}"
    if detail and not ok:
        line += f": {detail}"
    print(line, flush=True)


class StubBackend:
    """Answers just enough vhost-user for QEMU to realize the device.

    mode "ok": features, protocol features (CONFIG), GET_CONFIG.
    mode "close": accept and close at once.
    mode "noconfig": offer protocol features without CONFIG.
    mode "platform": also offer VIRTIO_F_IOMMU_PLATFORM, with the
    REPLY_ACK and BACKEND_REQ protocol features QEMU then requires, as
    vhost-device-udc does.
    Serves connections one after another; `requests` records every
    request number received, `connections` counts accepted connections.
    """

    def __init__(self, path, mode="ok"):
        self.path, self.mode = path, mode
        self.requests, self.connections = [], 0
        self.conn = None
        if os.path.exists(path):
            os.unlink(path)
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(1)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _recv(self, n):
        buf = b""
        while len(buf) < n:
            chunk, fds, _, _ = socket.recv_fds(self.conn, n - len(buf), 16)
            for fd in fds:
                os.close(fd)
            if not chunk:
                return None
            buf += chunk
        return buf

    def _reply(self, req, payload):
        hdr = struct.pack("<III", req, 0x1 | 0x4, len(payload))
        self.conn.sendall(hdr + payload)

    def _serve(self):
        while True:
            hdr = self._recv(12)
            if hdr is None:
                return
            req, flags, size = struct.unpack("<III", hdr)
            body = self._recv(size) if size else b""
            if body is None:
                return
            self.requests.append(req)
            if req == VHOST_USER_GET_FEATURES:
                feats = (1 << VIRTIO_F_VERSION_1) | (1 << VHOST_USER_F_PROTOCOL_FEATURES)
                if self.mode == "platform":
                    feats |= 1 << VIRTIO_F_IOMMU_PLATFORM
                self._reply(req, struct.pack("<Q", feats))
            elif req == VHOST_USER_GET_PROTOCOL_FEATURES:
                pf = 0 if self.mode == "noconfig" else 1 << VHOST_USER_PROTOCOL_F_CONFIG
                if self.mode == "platform":
                    pf |= (1 << VHOST_USER_PROTOCOL_F_REPLY_ACK) | (1 << VHOST_USER_PROTOCOL_F_BACKEND_REQ)
                self._reply(req, struct.pack("<Q", pf))
            elif req == VHOST_USER_GET_CONFIG:
                off, sz, fl = struct.unpack("<III", body[:12])
                self._reply(req, struct.pack("<III", off, sz, fl) + bytes(sz))
            elif flags & VHOST_USER_FLAG_NEED_REPLY:
                self._reply(req, struct.pack("<Q", 0))

    def _run(self):
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            self.connections += 1
            self.conn = conn
            if self.mode != "close":
                try:
                    self._serve()
                except OSError:
                    pass
            conn.close()

    def drop(self):
        """Close the current connection, as a crashing back end would."""
        if self.conn:
            try:
                self.conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

    def stop(self):
        self.srv.close()
        self.drop()


class Qmp:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        deadline = time.time() + 10
        while True:
            try:
                self.sock.connect(path)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        self.f = self.sock.makefile("rw")
        json.loads(self.f.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            msg = json.loads(self.f.readline())
            if "return" in msg:
                return msg["return"]
            if "error" in msg:
                raise RuntimeError(msg["error"])

    def hmp(self, line):
        return self.cmd("human-monitor-command", **{"command-line": line})


def base_args(sock, extra_chardev=""):
    return ["-machine", "q35,memory-backend=mem",
            "-object", "memory-backend-memfd,id=mem,size=256M,share=on",
            "-chardev", f"socket,id=c0,path={sock}{extra_chardev}",
            "-display", "none", "-nic", "none"]


def run_fail(qemu, args, timeout=20):
    p = subprocess.run([qemu] + args, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stderr.strip()


def main():
    if len(sys.argv) > 1:
        qemu = sys.argv[1]
    elif os.environ.get("QEMU"):
        qemu = os.environ["QEMU"]
    else:
        out = subprocess.run([os.path.join(HERE, "..", "build.sh")], check=True,
                             stdout=subprocess.PIPE, text=True).stdout
        qemu = out.strip().splitlines()[-1]
    tmp = tempfile.mkdtemp(prefix="udc-smoke-")
    sock = os.path.join(tmp, "udc.sock")

    # 1. device list and properties
    out = subprocess.run([qemu, "-device", "help"], capture_output=True, text=True).stdout
    check("-device help lists vhost-user-udc-pci", '"vhost-user-udc-pci"' in out)
    check("-device help lists vhost-user-udc", '"vhost-user-udc"' in out)
    out = subprocess.run([qemu, "-device", "vhost-user-udc-pci,help"],
                         capture_output=True, text=True).stdout
    for prop in ("chardev=<str>", "vq_size=<uint32>       -  (default: 1024)",
                 "vectors=<uint32>"):
        check(f"vhost-user-udc-pci has {prop.split('=')[0]}", prop in out, out[:200])

    # 2. failures are quick and clear
    rc, err = run_fail(qemu, base_args(os.path.join(tmp, "nonexistent.sock")) +
                       ["-device", "vhost-user-udc-pci,chardev=c0"])
    check("no listener: exit 1, 'Failed to connect'",
          rc == 1 and "Failed to connect" in err, f"rc={rc} {err}")
    for mode, needle in (("close", "vhost_backend_init failed"),
                         ("noconfig", "VHOST_USER_PROTOCOL_F_CONFIG")):
        be = StubBackend(sock, mode)
        rc, err = run_fail(qemu, base_args(sock) + ["-device", "vhost-user-udc-pci,chardev=c0"])
        be.stop()
        check(f"back end '{mode}': exit 1, '{needle}'", rc == 1 and needle in err,
              f"rc={rc} {err}")
    be = StubBackend(sock, "ok")
    rc, err = run_fail(qemu, base_args(sock) + ["-device", "vhost-user-udc-pci,chardev=c0,vq_size=100"])
    be.stop()
    check("vq_size=100 rejected", rc == 1 and "power of 2" in err, f"rc={rc} {err}")

    # 3. iommu_platform: VIRTIO_F_IOMMU_PLATFORM reaches the driver only
    # when asked for, and needs a back end that offers it.
    def host_features(extra, mode):
        be = StubBackend(sock, mode)
        qmp_path = os.path.join(tmp, "qmp-iommu.sock")
        proc = subprocess.Popen([qemu] + base_args(sock) + extra +
                                ["-qmp", f"unix:{qmp_path},server=on,wait=off"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            qmp = Qmp(qmp_path)
            st = qmp.cmd("x-query-virtio-status", path="/machine/peripheral/udc0/virtio-backend")
            qmp.cmd("quit")
            proc.wait(timeout=10)
            return json.dumps(st["host-features"])
        except (OSError, RuntimeError, ValueError) as e:
            return f"no answer: {e}; qemu: {proc.stderr.read() if proc.poll() is not None else ''}"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            be.stop()

    feats = host_features(["-device", "vhost-user-udc-pci,chardev=c0,id=udc0"], "platform")
    check("back end offers IOMMU_PLATFORM, iommu_platform=off: the driver is not offered it",
          "VIRTIO_F_VERSION_1" in feats and "VIRTIO_F_IOMMU_PLATFORM" not in feats, feats)
    intel = ["-machine", "kernel-irqchip=split", "-device", "intel-iommu,intremap=on,device-iotlb=on"]
    feats = host_features(intel + ["-device", "vhost-user-udc-pci,chardev=c0,id=udc0,iommu_platform=on"],
                          "platform")
    check("intel-iommu, iommu_platform=on: the driver is offered IOMMU_PLATFORM",
          "VIRTIO_F_IOMMU_PLATFORM" in feats, feats)
    feats = host_features(["-device", "virtio-iommu-pci",
                           "-device", "vhost-user-udc-pci,chardev=c0,id=udc0,iommu_platform=on"], "platform")
    check("virtio-iommu, iommu_platform=on: the driver is offered IOMMU_PLATFORM",
          "VIRTIO_F_IOMMU_PLATFORM" in feats, feats)
    be = StubBackend(sock, "ok")
    rc, err = run_fail(qemu, base_args(sock) + intel +
                       ["-device", "vhost-user-udc-pci,chardev=c0,iommu_platform=on"])
    be.stop()
    check("iommu_platform=on, back end without IOMMU_PLATFORM: exit 1, 'not supported'",
          rc == 1 and "iommu_platform=true is not supported by the device" in err, f"rc={rc} {err}")

    # 4. a running device: IDs, class, virtio status, reconnect
    be = StubBackend(sock, "ok")
    qmp_path = os.path.join(tmp, "qmp.sock")
    proc = subprocess.Popen([qemu] + base_args(sock, ",reconnect-ms=200") +
                            ["-device", "vhost-user-udc-pci,chardev=c0,id=udc0",
                             "-qmp", f"unix:{qmp_path},server=on,wait=off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        qmp = Qmp(qmp_path)
        dev = None
        for bus in qmp.cmd("query-pci"):
            for d in bus["devices"]:
                if d.get("qdev_id") == "udc0":
                    dev = d
        check("PCI ID 1af4:107f", dev is not None and dev["id"]["vendor"] == 0x1af4
              and dev["id"]["device"] == 0x107f, str(dev and dev["id"]))
        check("PCI class 0x0c03", dev is not None and dev["class_info"]["class"] == 0x0c03,
              str(dev and dev["class_info"]))
        # SeaBIOS maps q35's MMCONFIG at 0xb0000000; device 2 -> +0x10000.
        time.sleep(2)
        slot = dev["slot"] if dev else 0
        xp = qmp.hmp(f"xp /1bx {0xb0000000 + (slot << 15) + 9:#x}")
        check("PCI prog-if 0xfe (USB device)", xp.strip().endswith("0xfe"), xp.strip())
        path = "/machine/peripheral/udc0/virtio-backend"
        st = qmp.cmd("x-query-virtio-status", path=path)
        check("virtio device-id 63, name virtio-udc, 3 queues",
              st["device-id"] == 63 and st["name"] == "virtio-udc" and st["num-vqs"] == 3,
              str({k: st[k] for k in ("device-id", "name", "num-vqs")}))
        check("handshake done (protocol features negotiated)",
              VHOST_USER_GET_PROTOCOL_FEATURES in be.requests, str(be.requests))

        # back end goes away and comes back (chardev reconnect-ms)
        first = be.connections
        be.drop()
        deadline = time.time() + 10
        while be.connections == first and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        check("reconnect: QEMU reconnects and redoes the handshake",
              be.connections == first + 1 and
              be.requests.count(VHOST_USER_GET_FEATURES) >= 3,
              f"connections={be.connections} requests={be.requests}")
        check("reconnect: QEMU still running", proc.poll() is None)
        st = qmp.cmd("x-query-virtio-status", path=path)
        check("reconnect: device still answers x-query-virtio-status",
              st["device-id"] == 63)
        qmp.cmd("quit")
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        be.stop()
    err = proc.stderr.read()
    if err.strip():
        print("qemu stderr:\n" + err.strip())

    passed = sum(RESULTS)
    failed = len(RESULTS) - passed
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
