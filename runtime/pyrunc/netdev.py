"""linux.netDevices (moving host interfaces into the container) and the container's loopback.

runtime-spec config-linux.md "Network Devices": each key names a host interface that is
moved into the container's network namespace, renamed to `name` when given (a `%d`
template lets the kernel pick a free name), with its permanent global-scope addresses
(IFA_F_PERMANENT, RT_SCOPE_UNIVERSE; the kernel drops all addresses on a move) re-added
inside, and set up. Nothing moves it back once moved (the spec forbids it): when the
namespace dies, the kernel returns physical devices to the initial namespace and
destroys virtual ones. Only a move() that fails half-way puts the devices it already
moved back, so a failed create leaves the host as it was.

pyroute2 costs over 100 ms of imports, so it is imported only inside move(), which the
runtime calls only when the config has netDevices. loopback_up() is one ioctl.
"""

from . import oslite as os
import struct

# _socket, not socket: loopback_up runs on every start with a new network namespace, and
# the socket module costs ~2 ms of imports (enum, selectors) for nothing used here.
import _socket

from ocispec.errors import OCIError

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFA_F_PERMANENT = 0x80
RT_SCOPE_UNIVERSE = 0


def loopback_up() -> None:
    """Bring `lo` up in this process's network namespace (a new one starts with it down)."""
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM, 0)
    try:
        req = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", _ioctl(s, SIOCGIFFLAGS, req))[1]
        if not flags & IFF_UP:
            _ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
    except OSError as e:
        raise OCIError(f"linux.namespaces: cannot bring up the loopback interface of "
                       f"the new network namespace: {e.strerror}", errno=e.errno) from None
    finally:
        s.close()


def _ioctl(s, req: int, arg: bytes) -> bytes:
    import fcntl
    return fcntl.ioctl(s.fileno(), req, arg)


def move(net_devices: dict, pid: int) -> None:
    """Move each host interface of linux.netDevices into the network namespace of pid,
    renamed, with its permanent global addresses, and up. Runs in the runtime's
    network namespace (create's parent), before the container process starts."""
    if not net_devices:
        return
    try:
        nsfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise OCIError(f"linux.netDevices: cannot open the network namespace of process "
                       f"{pid}: {e.strerror}", errno=e.errno) from None
    try:
        ours, theirs = os.stat("/proc/thread-self/ns/net"), os.fstat(nsfd)
        if (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino):
            raise OCIError("linux.netDevices: the container's network namespace is the "
                           "runtime's own: devices would not move anywhere")
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        with IPRoute() as host, IPRoute(use_socket=_netlink_socket_in(nsfd)) as inner:
            done = []  # what to undo if a later device fails: create leaves nothing behind
            try:
                for host_name, dev in net_devices.items():
                    where = f"linux.netDevices.{host_name}"
                    new = (dev or {}).get("name") or host_name
                    try:
                        _move_one(host, inner, nsfd, host_name, new, where, done)
                    except NetlinkError as e:
                        raise OCIError(f"{where}: {os.strerror(e.code)}",
                                       errno=e.code) from None
            except BaseException:
                _move_back(host, inner, done)
                raise
    finally:
        os.close(nsfd)


def _move_one(host, inner, nsfd: int, host_name: str, new: str, where: str,
              done: list) -> None:
    found = host.link_lookup(ifname=host_name)
    if not found:
        raise OCIError(f"{where}: no such network interface on the host")
    index = found[0]
    if "%d" not in new and inner.link_lookup(ifname=new):
        raise OCIError(f"{where}.name: {new!r} already exists in the container's "
                       "network namespace")
    was_up = bool(host.link("get", index=index)[0]["flags"] & IFF_UP)
    all_addrs = host.get_addr(index=index)
    addrs = [_addr_args(m) for m in all_addrs if _keep(m)]
    # The kernel drops every address on a move; an undo restores all permanent ones.
    home = [_addr_args(m) for m in all_addrs if _flags(m) & IFA_F_PERMANENT]
    # Down first so nothing on the host uses it mid-move (runc and youki do the same).
    host.link("set", index=index, state="down")
    undo = {"host_name": host_name, "addrs": home, "up": was_up, "index": index, "in": host}
    done.append(undo)
    before = {m["index"] for m in inner.get_links()}
    # Move and rename in one request: the new name never exists on the host, the old
    # one never in the container.
    host.link("set", index=index, net_ns_fd=nsfd, ifname=new)
    moved = [m["index"] for m in inner.get_links() if m["index"] not in before]
    if len(moved) != 1:
        raise OCIError(f"{where}: moved, but not found in the container's network namespace")
    undo.update(index=moved[0], **{"in": inner})
    for args in addrs:
        inner.addr("add", index=moved[0], **args)
    inner.link("set", index=moved[0], state="up")


def _move_back(host, inner, done: list) -> None:
    """Best effort: devices already moved go home under their old names, with their
    addresses and state; the error that got us here is the one to report."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        for undo in reversed(done):
            try:
                if undo["in"] is inner:
                    inner.link("set", index=undo["index"], state="down")
                    inner.link("set", index=undo["index"], net_ns_fd=own,
                               ifname=undo["host_name"])
                    index = host.link_lookup(ifname=undo["host_name"])[0]
                    for args in undo["addrs"]:
                        try:
                            host.addr("add", index=index, **args)
                        except Exception:
                            pass  # e.g. an IPv6 link-local address the kernel made again
                else:
                    index = undo["index"]
                if undo["up"]:
                    host.link("set", index=index, state="up")
            except Exception:
                pass
    finally:
        os.close(own)


def _flags(msg) -> int:
    flags = msg.get_attr("IFA_FLAGS")  # 32 bits; the header's field has only 8
    return msg["flags"] if flags is None else flags


def _keep(msg) -> bool:
    return msg["scope"] == RT_SCOPE_UNIVERSE and bool(_flags(msg) & IFA_F_PERMANENT)


def _addr_args(msg) -> dict:
    args = {"family": msg["family"], "prefixlen": msg["prefixlen"], "scope": msg["scope"],
            "address": msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")}
    peer = msg.get_attr("IFA_ADDRESS")
    if peer and peer != args["address"]:
        args["local"], args["address"] = args["address"], peer  # point-to-point
    broadcast = msg.get_attr("IFA_BROADCAST")
    if broadcast:
        args["broadcast"] = broadcast
    return args


def _netlink_socket_in(nsfd: int):
    """A route netlink socket that lives in the namespace nsfd: a socket belongs to the
    namespace its creator was in, so this thread visits nsfd just to create it."""
    import socket

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
