"""Leave the host as a case found it: no containers, processes, mounts or cgroups.

Order matters: containers first (the runtime's own `delete -f`), then what is left of
the processes, then mounts under the case's directory (deepest first, detached), then the
directory itself without ever crossing into another filesystem, then the cgroups.
"""

import ctypes
import json
import os
import signal
import stat
import time

from . import cgroupfs

_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


def _unescape(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    for code, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(code, ch)
    return path


def mounts_under(directory: str) -> list[str]:
    """Mount points at or below directory, in this mount namespace, deepest first."""
    directory = os.path.realpath(directory)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = _unescape(line.split()[4])
            if mp == directory or mp.startswith(directory + "/"):
                found.append(mp)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def unmount_under(directory: str) -> list[str]:
    """Detach every mount under directory; returns those still there afterwards."""
    for _ in range(5):
        left = mounts_under(directory)
        if not left:
            return []
        for mp in left:
            _libc.umount2(mp.encode(), MNT_DETACH)
    return mounts_under(directory)


def remove_tree(path: str) -> None:
    """rm -rf --one-file-system: never descends into a mount point, whether of another
    device or a bind mount of this one (same st_dev: found in mountinfo)."""
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(top.st_mode):
        os.unlink(path)
        return
    mountpoints = set(mounts_under(path))

    def walk(p: str) -> bool:
        clean = True
        for entry in os.scandir(p):
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if st.st_dev != top.st_dev or os.path.realpath(entry.path) in mountpoints:
                    # a mount we could not remove: leave it, and all beneath it, be
                    clean = False
                    continue
                if walk(entry.path):
                    os.rmdir(entry.path)
                else:
                    clean = False
            else:
                os.unlink(entry.path)
        return clean

    if os.path.realpath(path) not in mountpoints and walk(path):
        os.rmdir(path)


def kill_group(pgid: int) -> None:
    """SIGKILL the process group the case ran in (every process in it is ours)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def delete_containers(rt) -> list[str]:
    """`delete -f` every container in the case's own state dir; ids still there after."""
    try:
        ids = [d for d in os.listdir(rt.root) if not d.startswith(".")]
    except FileNotFoundError:
        return []
    left = []
    for cid in ids:
        pid = None
        try:
            cp = rt("state", cid, timeout=5)
            if cp.returncode == 0:
                pid = json.loads(cp.stdout).get("pid") or None
        except Exception:
            pass
        try:
            rt("delete", "-f", cid, timeout=10)
        except Exception:
            pass
        if pid and os.path.exists(f"/proc/{pid}"):
            try:  # the runtime left its container's init behind
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if rt("state", cid, timeout=5).returncode == 0:
            left.append(cid)
    return left


def remove_cgroups(token: str) -> list[str]:
    """Remove cgroups whose name holds the case's token, killing what is still in them
    (only our containers' processes can be in a cgroup named with our token)."""
    left = []
    for d in sorted(cgroupfs.find_named(token), key=lambda p: -p.count("/")):
        for attempt in range(50):
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                for pid in cgroupfs.procs(d):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.02)
        else:
            left.append(d)
    return left
