"""`pyrunc update` flags -> a linux.resources dict, with runc's value syntax."""

import re

from ocispec.errors import OCIError

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp])?i?b?$", re.I)

# flag -> (section, key, kind); kinds: size (memory syntax, -1 = unlimited), int, str
FLAGS = {
    "memory": ("memory", "limit", "size"),
    "memory_reservation": ("memory", "reservation", "size"),
    "memory_swap": ("memory", "swap", "size"),
    "kernel_memory": ("memory", "kernel", "size"),
    "kernel_memory_tcp": ("memory", "kernelTCP", "size"),
    "cpu_shares": ("cpu", "shares", "uint"),
    "cpu_quota": ("cpu", "quota", "int"),
    "cpu_period": ("cpu", "period", "uint"),
    "cpu_rt_runtime": ("cpu", "realtimeRuntime", "int"),
    "cpu_rt_period": ("cpu", "realtimePeriod", "uint"),
    "cpuset_cpus": ("cpu", "cpus", "str"),
    "cpuset_mems": ("cpu", "mems", "str"),
    "pids_limit": ("pids", "limit", "int"),
    "blkio_weight": ("blockIO", "weight", "uint16"),
}


def ram_in_bytes(text: str) -> int:
    """'10M', '1.5g', '512k', '1024', '10MiB' -> bytes (binary units, as docker's units)."""
    m = _SIZE.match(text.strip())
    if not m:
        raise ValueError(f"invalid size: {text!r}")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def resources_from_update_flags(**flags) -> dict:
    """runc update's per-field flags (None or '' = not given) as linux.resources."""
    out = {}
    for name, value in flags.items():
        name = name.replace("-", "_").lstrip("_")
        if value is None or value == "":
            continue
        if name not in FLAGS:
            raise OCIError(f"update: unknown flag --{name.replace('_', '-')}")
        section, key, kind = FLAGS[name]
        flag = "--" + name.replace("_", "-")
        text = str(value).strip()
        try:
            if kind == "size":
                v = -1 if text == "-1" else ram_in_bytes(text)
            elif kind == "str":
                v = text
            else:
                v = int(text)
                if kind != "int" and v < 0:
                    raise ValueError("negative")
                if kind == "uint16" and v > 65535:
                    raise ValueError("above 65535")
        except ValueError as e:
            raise OCIError(f"update: invalid value for {flag}: {value!r} ({e})") from None
        out.setdefault(section, {})[key] = v
    return out
