"""Bridge networking and published ports through the CNI plugins, as podman 4 (CNI backend)
and containerd's CRI do it.

A network is a CNI conflist (ROOT/cni/net.d/pybuild.conflist, made on first use, edit it to
change the bridge or subnet): bridge (+ host-local IPAM, its reservations under ROOT/cni/ipam)
-> portmap (the -p mappings as runtimeConfig.portMappings) -> firewall. Plugins are executed
as the CNI spec says: CNI_COMMAND/CNI_CONTAINERID/CNI_NETNS/CNI_IFNAME/CNI_PATH in the
environment, the plugin's config (name, cniVersion, prevResult, runtimeConfig) on stdin, a
result or an error document on stdout; DEL runs the chain in reverse with the cached result.

A bundle gets OCI hooks: createRuntime runs `pybuild network-hook attach` (the container's
netns is /proc/<pid>/ns/net of the state on stdin) and poststop `... detach`, so any runtime
that runs the bundle attaches and detaches it. A failed attach undoes what it did.
"""
import contextlib
import errno
import hashlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys

from ocispec.errors import OCIError

from .. import mounts as _mounts
from ..image.store import private_dir, write_atomic

CNI_VERSION = "1.0.0"
DEFAULT_CNI_PATH = "/usr/lib/cni:/opt/cni/bin"  # Debian's containernetworking-plugins, upstream's
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NETWORK_FILE = "network.json"
IFNAME = "eth0"
_TIMEOUT = 60
_MS_BIND = 4096


def cni_dir(root: str) -> str:
    return os.path.join(root, "cni")


def cni_path() -> str:
    return os.environ.get("PYBUILD_CNI_PATH") or DEFAULT_CNI_PATH


def default_conflist(root: str) -> dict:
    return {"cniVersion": CNI_VERSION, "name": "pybuild", "plugins": [
        {"type": "bridge", "bridge": "pybuild0", "isGateway": True, "ipMasq": True,
         "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.0.0/24"}]],
                  "routes": [{"dst": "0.0.0.0/0"}],
                  "dataDir": os.path.join(cni_dir(root), "ipam")}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "firewall", "backend": "iptables"}]}


def conflist_path(root: str) -> str:
    return os.path.join(cni_dir(root), "net.d", "pybuild.conflist")


def load_conflist(root: str) -> dict:
    path = conflist_path(root)
    if not os.path.exists(path):
        private_dir(os.path.dirname(path))
        write_atomic(path, json.dumps(default_conflist(root), indent=2).encode())
    try:
        with open(path) as f:
            conf = json.load(f)
    except ValueError as e:
        raise OCIError(f"{path}: not a CNI network list: {e}") from None
    if not isinstance(conf, dict) or not conf.get("name") or not isinstance(conf.get("plugins"), list) \
            or not all(isinstance(p, dict) and p.get("type") for p in conf["plugins"]):
        raise OCIError(f"{path}: a CNI network list needs a name and plugins with a type each")
    return conf


def parse_port(text: str) -> dict:
    """[IP:]HOST:CTR[/tcp|udp] -> a CNI portMappings entry."""
    spec, _, proto = text.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp"):
        raise OCIError(f"-p {text!r}: the protocol must be tcp or udp")
    parts = spec.split(":")
    if len(parts) == 2:
        ip, host, ctr = "", *parts
    elif len(parts) == 3:
        ip, host, ctr = parts
    else:
        raise OCIError(f"-p {text!r}: want [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]")
    if not host.isdigit() or not ctr.isdigit() or not (0 < int(host) < 65536) \
            or not (0 < int(ctr) < 65536):
        raise OCIError(f"-p {text!r}: want [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]")
    if ip:
        try:
            if ipaddress.ip_address(ip).version != 4:
                raise ValueError
        except ValueError:
            raise OCIError(f"-p {text!r}: {ip!r} is not an IPv4 address") from None
    m = {"hostPort": int(host), "containerPort": int(ctr), "protocol": proto}
    if ip:
        m["hostIP"] = ip
    return m


def _attachments(root: str) -> str:
    return os.path.join(cni_dir(root), "attachments")


def _live(att: dict) -> bool:
    """An attachment whose container still exists (its init's netns is the one recorded)."""
    try:
        return os.stat(f"/proc/{att['pid']}/ns/net").st_ino == att.get("netns_ino")
    except (OSError, KeyError, TypeError):
        return False


def _all_attachments(root: str) -> list[tuple[str, dict]]:
    d = _attachments(root)
    out = []
    for n in sorted(os.listdir(d)) if os.path.isdir(d) else ():
        with contextlib.suppress(OSError, ValueError):
            with open(os.path.join(d, n)) as f:
                out.append((os.path.join(d, n), json.load(f)))
    return out


def check_ports(root: str, ports: list) -> None:
    """A host port that a live container of ours publishes, or that a host socket holds,
    is an error naming it."""
    for path, att in _all_attachments(root):
        if not _live(att):  # its container is gone without a poststop: remove its rules now
            with contextlib.suppress(OCIError):
                _detach_record(root, path, att)
            continue
        for m in ports:
            for o in att.get("ports", ()):
                if (o["hostPort"], o["protocol"]) == (m["hostPort"], m["protocol"]) and \
                        (not o.get("hostIP") or not m.get("hostIP") or o["hostIP"] == m["hostIP"]):
                    raise OCIError(f"port {m['hostPort']}/{m['protocol']} is already published by "
                                   f"container {att.get('container_id')}")
    for m in ports:
        typ = socket.SOCK_STREAM if m["protocol"] == "tcp" else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, typ) as s:
            try:
                s.bind((m.get("hostIP", "0.0.0.0"), m["hostPort"]))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise OCIError(f"port {m.get('hostIP', '0.0.0.0')}:{m['hostPort']}/{m['protocol']} "
                                   "is already in use on the host; choose another host port with -p") from None
                if e.errno == errno.EADDRNOTAVAIL:
                    raise OCIError(f"-p: {m['hostIP']} is not an address of this host") from None
                raise


def check_plugins(conf: dict, path: str) -> None:
    dirs = [d for d in path.split(":") if d]
    for t in ["loopback"] + [p["type"] for p in conf["plugins"]] + \
            [p["ipam"]["type"] for p in conf["plugins"] if isinstance(p.get("ipam"), dict) and p["ipam"].get("type")]:
        if not any(os.access(os.path.join(d, t), os.X_OK) for d in dirs):
            raise OCIError(f"CNI plugin {t!r} not found in {path}: install Debian's "
                           "containernetworking-plugins (or set PYBUILD_CNI_PATH)")
    if any(p["type"] in ("portmap", "firewall") for p in conf["plugins"]) or \
            any(p.get("ipMasq") for p in conf["plugins"]):
        if not shutil.which("iptables", path=HOST_PATH):
            raise OCIError("iptables is not installed: the CNI bridge network's port and "
                           "firewall rules need it (apt-get install iptables)")


def prepare(root: str, bundle_dir: str, spec: dict, ports: list) -> None:
    """Check the network can be had (plugins, iptables, free ports), write BUNDLE/network.json
    and put the attach/detach hooks into the config.json `spec`."""
    conf = load_conflist(root)
    path = cni_path()
    check_plugins(conf, path)
    check_ports(root, ports)
    netfile = os.path.join(bundle_dir, NETWORK_FILE)
    write_atomic(netfile, json.dumps({"root": root, "conflist": conf, "cni_path": path,
                                      "ports": ports, "ifname": IFNAME}, indent=1).encode())
    hooks = spec.setdefault("hooks", {})
    env = [f"PATH={HOST_PATH}", "PYTHONPATH=" + os.pathsep.join(p for p in sys.path if p)]
    base = [sys.executable, "-m", "pybuild.cli", "network-hook"]
    hooks.setdefault("createRuntime", []).append(
        {"path": sys.executable, "args": base + ["attach", netfile], "env": env, "timeout": 120})
    hooks.setdefault("poststop", []).append(
        {"path": sys.executable, "args": base + ["detach", netfile], "env": env, "timeout": 120})


# -- the hooks' side -----------------------------------------------------------------------

def _key(state: dict, netfile: str) -> str:
    """CNI_CONTAINERID: the runtime's id plus the bundle, unique across state roots."""
    h = hashlib.sha256(os.path.realpath(netfile).encode()).hexdigest()[:12]
    return f"{state.get('id', 'x')}-{h}"


def _exec(plugin_conf: dict, command: str, cid: str, netns: str, ifname: str, path: str) -> dict:
    t = plugin_conf["type"]
    exe = next((os.path.join(d, t) for d in path.split(":")
                if d and os.access(os.path.join(d, t), os.X_OK)), None)
    if exe is None:
        raise OCIError(f"CNI plugin {t!r} not found in {path}: install containernetworking-plugins")
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": netns,
           "CNI_IFNAME": ifname, "CNI_PATH": path, "PATH": HOST_PATH}
    try:
        p = subprocess.run([exe], input=json.dumps(plugin_conf).encode(), env=env,
                           capture_output=True, timeout=_TIMEOUT, cwd="/")
    except subprocess.TimeoutExpired:
        raise OCIError(f"CNI plugin {t} {command}: no answer in {_TIMEOUT} s") from None
    if p.returncode != 0:
        msg = p.stderr.decode(errors="replace").strip()
        with contextlib.suppress(ValueError, AttributeError):
            doc = json.loads(p.stdout)
            msg = doc.get("msg", "") + (f": {doc['details']}" if doc.get("details") else "")
        raise OCIError(f"CNI plugin {t} {command} failed: {msg.splitlines()[-1] if msg else p.returncode}")
    if command != "ADD" or not p.stdout.strip():
        return {}
    return json.loads(p.stdout)


def _plugin_conf(conf: dict, plugin: dict, prev: dict | None, ports: list) -> dict:
    pc = dict(plugin, name=conf["name"], cniVersion=conf.get("cniVersion", CNI_VERSION))
    if prev:
        pc["prevResult"] = prev
    if (plugin.get("capabilities") or {}).get("portMappings"):
        pc["runtimeConfig"] = {"portMappings": ports}
    return pc


def _lo_conf() -> dict:
    return {"cniVersion": CNI_VERSION, "name": "lo", "type": "loopback"}


def attach(netfile: str, state: dict) -> dict:
    """createRuntime: ADD the container's netns to the network; undone on failure."""
    with open(netfile) as f:
        net = json.load(f)
    root, conf, path, ports = net["root"], net["conflist"], net["cni_path"], net["ports"]
    pid = state.get("pid")
    if not pid:
        raise OCIError("network attach: the container state has no pid")
    netns = f"/proc/{pid}/ns/net"
    cid = _key(state, netfile)
    att = {"container_id": state.get("id"), "key": cid, "pid": pid,
           "netns_ino": os.stat(netns).st_ino, "conflist": conf, "cni_path": path,
           "ports": ports, "ifname": net["ifname"], "result": None}
    private_dir(_attachments(root))
    rec = os.path.join(_attachments(root), cid + ".json")
    check_ports(root, ports)
    # The netns is pinned by a bind mount, as podman and the CRI do: DEL must run while it
    # exists (the bridge plugin finds the addresses whose masquerade rules it removes
    # there), and poststop runs after the container's last process is gone.
    pin = os.path.join(private_dir(os.path.join(cni_dir(root), "netns")), cid)
    att["netns_path"] = pin
    # recorded before ADD: a crash half-way leaves what prune/detach needs to undo it
    write_atomic(rec, json.dumps(att).encode())
    try:
        with open(pin, "x"):
            pass
        _mounts.mount(netns, pin, "none", _MS_BIND)
        netns = pin
        _exec(_lo_conf(), "ADD", cid, netns, "lo", path)
        prev = None
        for plugin in conf["plugins"]:
            prev = _exec(_plugin_conf(conf, plugin, prev, ports), "ADD", cid, netns,
                         net["ifname"], path) or prev
        att["result"] = prev
        write_atomic(rec, json.dumps(att).encode())
    except BaseException:
        with contextlib.suppress(OCIError, OSError):
            _detach_record(root, rec, att)
        raise
    return att


def detach(netfile: str, state: dict) -> None:
    """poststop: DEL in reverse order; then the bridge goes if nothing else uses it."""
    with open(netfile) as f:
        net = json.load(f)
    root = net["root"]
    rec = os.path.join(_attachments(root), _key(state, netfile) + ".json")
    try:
        with open(rec) as f:
            att = json.load(f)
    except FileNotFoundError:
        return  # never attached, or detached already
    _detach_record(root, rec, att)


def _detach_record(root: str, rec: str, att: dict) -> None:
    conf, path, cid = att["conflist"], att["cni_path"], att["key"]
    pin = att.get("netns_path")
    netns = pin if pin and _mounts.is_mountpoint(pin) else ""
    err = None
    prev = att.get("result")
    for plugin in reversed(conf["plugins"]):
        try:
            _exec(_plugin_conf(conf, plugin, prev, att.get("ports") or []), "DEL", cid, netns,
                  att["ifname"], path)
        except OCIError as e:  # keep removing the rest; report the first
            err = err or e
    if netns:
        _mounts.umount_detach(netns)
    if pin:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pin)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(rec)
    _drop_idle_bridge(root, conf)
    if err:
        raise err


def _drop_idle_bridge(root: str, conf: dict) -> None:
    """Delete the network's bridge when no attachment of this store uses it and no
    interface is enslaved to it (podman keeps it until `network rm`; we leave nothing)."""
    br = next((p.get("bridge") for p in conf["plugins"] if p["type"] == "bridge"), None)
    if not br or any(any(p.get("bridge") == br for p in a.get("conflist", {}).get("plugins", []))
                     for _, a in _all_attachments(root)):
        return
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=br)
        if not idx:
            return
        if any(link.get("master") == idx[0] for link in ipr.get_links()):
            return
        with contextlib.suppress(Exception):
            ipr.link("del", index=idx[0])


def hook_main(action: str, netfile: str) -> None:
    """`pybuild network-hook attach|detach NETFILE` with the OCI state on stdin."""
    try:
        state = json.load(sys.stdin)
    except ValueError:
        raise OCIError("network hook: stdin is not the container's state JSON") from None
    if action == "attach":
        attach(netfile, state)
    elif action == "detach":
        detach(netfile, state)
    else:
        raise OCIError(f"network-hook {action!r}: want attach or detach")


def addresses(root: str, container_id: str) -> list[str]:
    """The IPv4 addresses CNI gave a container id of a runtime (for messages and tests)."""
    out = []
    for _, att in _all_attachments(root):
        if att.get("container_id") == container_id and att.get("result"):
            out += [i["address"].split("/")[0] for i in att["result"].get("ips", [])]
    return out
