"""linux.netDevices (moving host interfaces into the container) and the container's loopback.

runtime-spec config-linux.md "Network Devices": each key names a host interface that is
moved into the container's network namespace, renamed to `name` when given (a `%d`
template lets the kernel pick a free name), with its permanent global-scope addresses
(IFA_F_PERMANENT, RT_SCOPE_UNIVERSE; the kernel drops all addresses on a move) re-added
inside, and set up. Nothing moves it back: when the namespace dies, the kernel returns
physical devices to the initial namespace and destroys virtual ones.

pyroute2 costs over 100 ms of imports, so it is imported only inside move(), which the
runtime calls only when the config has netDevices. loopback_up() is one ioctl.
"""

import os
import socket
import struct

from ocispec.errors import OCIError

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFA_F_PERMANENT = 0x80
RT_SCOPE_UNIVERSE = 0


def loopback_up() -> None:
    """Bring `lo` up in this process's network namespace (a new one starts with it down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 0) as s:
        try:
            req = struct.pack("16sH22x", b"lo", 0)
            flags = struct.unpack("16sH22x", _ioctl(s, SIOCGIFFLAGS, req))[1]
            if not flags & IFF_UP:
                _ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
        except OSError as e:
            raise OCIError(f"linux.namespaces: cannot bring up the loopback interface of "
                           f"the new network namespace: {e.strerror}", errno=e.errno) from None


def _ioctl(s: socket.socket, req: int, arg: bytes) -> bytes:
    import fcntl
    return fcntl.ioctl(s.fileno(), req, arg)


def move(net_devices: dict, pid: int) -> None:
    """Move each host interface of linux.netDevices into the network namespace of pid,
    renamed, with its permanent global addresses, and up. Runs in the runtime's
    network namespace (create's parent), before the container process starts."""
    if not net_devices:
        return
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        nsfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise OCIError(f"linux.netDevices: cannot open the network namespace of process "
                       f"{pid}: {e.strerror}", errno=e.errno) from None
    try:
        with IPRoute() as host, IPRoute(use_socket=_netlink_socket_in(nsfd)) as inner:
            for host_name, dev in net_devices.items():
                where = f"linux.netDevices.{host_name}"
                new = (dev or {}).get("name") or host_name
                try:
                    _move_one(host, inner, nsfd, host_name, new, where)
                except NetlinkError as e:
                    raise OCIError(f"{where}: {os.strerror(e.code)}", errno=e.code) from None
    finally:
        os.close(nsfd)


def _move_one(host, inner, nsfd: int, host_name: str, new: str, where: str) -> None:
    found = host.link_lookup(ifname=host_name)
    if not found:
        raise OCIError(f"{where}: no such network interface on the host")
    index = found[0]
    if "%d" not in new and inner.link_lookup(ifname=new):
        raise OCIError(f"{where}.name: {new!r} already exists in the container's "
                       "network namespace")
    # Down first so nothing on the host uses it mid-move (runc and youki do the same).
    host.link("set", index=index, state="down")
    addrs = [_addr_args(m) for m in host.get_addr(index=index) if _keep(m)]
    before = {m["index"] for m in inner.get_links()}
    # Move and rename in one request: the new name never exists on the host, the old
    # one never in the container.
    host.link("set", index=index, net_ns_fd=nsfd, ifname=new)
    moved = [m["index"] for m in inner.get_links() if m["index"] not in before]
    if len(moved) != 1:
        raise OCIError(f"{where}: moved, but not found in the container's network namespace")
    for args in addrs:
        inner.addr("add", index=moved[0], **args)
    inner.link("set", index=moved[0], state="up")


def _keep(msg) -> bool:
    flags = msg.get_attr("IFA_FLAGS")
    if flags is None:
        flags = msg["flags"]
    return msg["scope"] == RT_SCOPE_UNIVERSE and bool(flags & IFA_F_PERMANENT)


def _addr_args(msg) -> dict:
    args = {"family": msg["family"], "prefixlen": msg["prefixlen"],
            "address": msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")}
    peer = msg.get_attr("IFA_ADDRESS")
    if peer and peer != args["address"]:
        args["local"], args["address"] = args["address"], peer  # point-to-point
    broadcast = msg.get_attr("IFA_BROADCAST")
    if broadcast:
        args["broadcast"] = broadcast
    return args


def _netlink_socket_in(nsfd: int) -> socket.socket:
    """A route netlink socket that lives in the namespace nsfd: a socket belongs to the
    namespace its creator was in, so this thread visits nsfd just to create it."""
    from . import linux

    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            linux.setns(nsfd, linux.CLONE_NEWNET)
        except OSError as e:
            raise OCIError("linux.netDevices: cannot enter the container's network namespace: "
                           f"{os.strerror(e.errno)}", errno=e.errno) from None
        try:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)
        finally:
            linux.setns(own, linux.CLONE_NEWNET)  # failing here must not go unnoticed
    finally:
        os.close(own)
