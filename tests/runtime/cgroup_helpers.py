"""Shared pieces of the cgroup tests: unique names, real processes, leftover checks."""

import os
import signal
import subprocess
import uuid

import pytest

from ociconformance.host import blkio_weight_file
from pyrunc.cgroups import Manager, paths

BUSYBOX = "/bin/busybox"
PREFIX = "cgtest-"


# The blkio weight file this host's I/O scheduler offers (None without BFQ or CFQ, where
# neither runc nor pyrunc can set a weight): tests set a weight only where it exists.
BLKIO_WEIGHT = blkio_weight_file()
NO_WEIGHT = "this host's I/O scheduler offers no blkio weight (no BFQ or CFQ)"


def unique(tag: str = "") -> str:
    return f"{PREFIX}{tag}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def leftovers(name: str) -> list:
    """Every directory called `name` (or starting with it) under any cgroup hierarchy."""
    v1, v2 = paths.mounts()
    roots = {mp for mp, _, _ in v1.values()}
    if v2:
        roots.add(v2[0])
    found = []
    for root in roots:
        for dirpath, dirnames, _ in os.walk(root):
            for dn in dirnames:
                if dn.startswith(name):
                    found.append(os.path.join(dirpath, dn))
    return found


class Procs:
    """Processes a test started; killed by pid at the end."""

    def __init__(self):
        self.procs = []

    def gated(self, script: str) -> subprocess.Popen:
        """A busybox shell that waits for a line on stdin before running `script`, so it can
        be put in a cgroup first and then allocate, fork or open files there."""
        p = subprocess.Popen([BUSYBOX, "sh", "-c", f"read _go; {script}"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        self.procs.append(p)
        return p

    def sleeper(self) -> subprocess.Popen:
        p = subprocess.Popen([BUSYBOX, "sleep", "1000"])
        self.procs.append(p)
        return p

    def kill_all(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()


def go(p: subprocess.Popen) -> None:
    p.stdin.write(b"go\n")
    p.stdin.flush()


@pytest.fixture
def procs():
    ps = Procs()
    yield ps
    ps.kill_all()


@pytest.fixture
def cg(procs):
    """Make managers with unique names; destroy them all and check nothing is left."""
    made = []

    def make(path_fmt: str = "{name}", *, container_id=None, systemd=False, create=True):
        name = unique()
        m = Manager.for_container(container_id or name, path_fmt.format(name=name),
                                  systemd=systemd)
        m.test_name = name
        made.append(m)
        if create:
            m.create()
        return m

    yield make
    procs.kill_all()
    for m in made:
        # grandchildren our shells forked: in our test cgroup, so ours to kill
        for pid in m.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        m.destroy()
    for m in made:
        assert leftovers(m.test_name) == []
