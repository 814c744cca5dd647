"""What a case gets: the runtime, fresh bundles, unique ids, and short ways to assert."""

import os
import re

from . import cgroupfs
from .bundle import Bundle
from .runtime import CaseFailed, CaseSkipped, Runtime, last_line, read


class Context:
    def __init__(self, runtime: str, workdir: str, token: str, timeout: float):
        self.workdir = workdir
        self.token = token  # in every container id and cgroup name this case makes
        self.rt = Runtime(runtime, os.path.join(workdir, "state"), timeout)
        self._n = 0

    def new_id(self) -> str:
        self._n += 1
        return f"{self.token}-{self._n}"

    def path(self, *parts: str) -> str:
        return os.path.join(self.workdir, *parts)

    def bundle(self) -> Bundle:
        self._n += 1
        return Bundle(self.path(f"bundle{self._n}"))

    # --- lifecycle shortcuts -------------------------------------------------------------

    def create(self, bundle: Bundle, cid: str | None = None, *extra: str) -> str:
        """Write the bundle's config and create a container that must come up."""
        cid = cid or self.new_id()
        bundle.write()
        cp = self.rt.create(cid, bundle.path, self.path(cid), *extra)
        if cp.returncode != 0:
            raise CaseFailed(f"create exited {cp.returncode}: {last_line(cp.stderr)}")
        return cid

    def control(self) -> None:
        """A default container must run first, so that a refusal the case expects is a
        refusal of the invalid value, not a runtime that refuses everything."""
        try:
            self.run(self.bundle(), "true")
        except CaseFailed as e:
            raise CaseFailed(f"control run of the default config failed: {e}") from None

    def create_fails(self, bundle: Bundle, why: str) -> str:
        """Create a container the spec says must be refused; return the runtime's error."""
        cid = self.new_id()
        bundle.write()
        cp = self.rt.create(cid, bundle.path, self.path(cid))
        if cp.returncode == 0:
            raise CaseFailed(f"create succeeded, but {why}")
        if self.rt.exists(cid):
            raise CaseFailed(f"create failed but left container {cid} behind")
        self.check_no_cgroups(cid, "a failed create")
        return last_line(cp.stderr)

    def check_no_cgroups(self, cid: str, after: str) -> None:
        """No cgroup named for the container (runtimes name it by id) survives."""
        pat = re.compile(re.escape(cid) + r"(?![0-9])")
        left = [d for d in cgroupfs.find_named(cid) if pat.search(os.path.basename(d))]
        if left:
            raise CaseFailed(f"{after} left cgroups behind: {left}")

    def output(self, cid: str) -> str:
        return read(self.path(cid) + ".out")

    def run(self, bundle: Bundle, script: str) -> str:
        """Run `sh -c script` in the bundle through create/start/wait/delete; its stdout."""
        bundle.config["process"]["args"] = ["/bin/sh", "-c", script]
        cid = self.create(bundle)
        self.rt.ok("start", cid)
        self.rt.wait_status(cid, "stopped")
        self.rt.ok("delete", cid)
        return self.output(cid)

    # --- assertions ----------------------------------------------------------------------

    @staticmethod
    def check(cond, message: str) -> None:
        if not cond:
            raise CaseFailed(message)

    @staticmethod
    def require(feature_missing: str | None) -> None:
        """Skip when a host probe says a feature is missing (probe returns its name)."""
        if feature_missing:
            raise CaseSkipped(feature_missing)


def parse_kv(out: str) -> dict:
    """`key=value` lines printed by a case script."""
    kv = {}
    for line in out.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            kv[k.strip()] = v.strip()
    return kv
