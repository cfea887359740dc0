"""Opens sockets of every family that reaches outside a network namespace or into the kernel: vsock (the
hypervisor), netlink (routing, audit, uevents), packet (raw frames), plus unix as a control. Tries to reach the
hypervisor's vsock port when a socket opens."""

import errno
import socket

FAMILIES = {
    "unix": (socket.AF_UNIX, socket.SOCK_STREAM, 0),
    "vsock": (getattr(socket, "AF_VSOCK", 40), socket.SOCK_STREAM, 0),
    "netlink_route": (socket.AF_NETLINK, socket.SOCK_RAW, 0),
    "netlink_audit": (socket.AF_NETLINK, socket.SOCK_RAW, 9),
    "netlink_uevent": (socket.AF_NETLINK, socket.SOCK_DGRAM, 15),
    "packet": (getattr(socket, "AF_PACKET", 17), socket.SOCK_RAW, 0),
    "bluetooth": (31, socket.SOCK_STREAM, 0),
    "tipc": (30, socket.SOCK_RDM, 0),
}


def run() -> dict:
    out = {}
    for name, (family, kind, proto) in FAMILIES.items():
        try:
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            out[name] = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            continue
        out[name] = "open"
        if name == "vsock":
            sock.settimeout(1)
            try:
                sock.connect((2, 9999))  # CID 2: the host
                out[name] = "connected"
            except OSError:
                pass
        sock.close()
    try:
        for end in socket.socketpair(socket.AF_UNIX):
            end.close()
        out["socketpair_unix"] = "open"
    except OSError as exc:
        out["socketpair_unix"] = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return out
