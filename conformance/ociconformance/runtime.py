"""A runtime binary driven through runc's command line, as conmon and containerd drive it."""

import json
import os
import subprocess
import time


class CaseFailed(Exception):
    """The runtime did not do what the spec requires; the message says what and how."""


class CaseSkipped(Exception):
    """The host lacks a feature the case needs; the message names the feature."""


def last_line(text: str) -> str:
    """The last non-empty line of a runtime's output: where runtimes put the error."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no message)"


class Runtime:
    def __init__(self, path: str, root: str, timeout: float = 10.0):
        self.path = path
        self.root = root
        self.timeout = timeout
        self.globals: list[str] = []  # extra global options, e.g. ["--log", FILE]

    def __call__(self, *args: str, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                 timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run one command; a non-zero exit is returned, a hang becomes CaseFailed."""
        argv = [self.path, "--root", self.root, *self.globals, *args]
        try:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                  text=True, timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired:
            raise CaseFailed(f"`{' '.join(args)}` did not return within "
                             f"{timeout or self.timeout:g}s") from None

    def ok(self, *args: str, **kw) -> subprocess.CompletedProcess:
        """Run a command that the spec says must succeed."""
        cp = self(*args, **kw)
        if cp.returncode != 0:
            raise CaseFailed(f"`{args[0]}` exited {cp.returncode}: "
                             f"{last_line((cp.stdout or '') + chr(10) + (cp.stderr or ''))}")
        return cp

    def fails(self, why: str, *args: str) -> subprocess.CompletedProcess:
        """Run a command that the spec says must fail."""
        cp = self(*args)
        if cp.returncode == 0:
            raise CaseFailed(f"`{' '.join(args)}` succeeded, but {why}")
        return cp

    def state(self, cid: str) -> dict:
        cp = self.ok("state", cid)
        try:
            return json.loads(cp.stdout)
        except ValueError:
            raise CaseFailed(f"`state {cid}` printed no JSON: {cp.stdout[:200]!r}") from None

    def exists(self, cid: str) -> bool:
        return self("state", cid).returncode == 0

    def wait_status(self, cid: str, wanted: str, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        st = self.state(cid)
        while st.get("status") != wanted:
            if time.monotonic() > deadline:
                raise CaseFailed(f"container {cid} is {st.get('status')!r}, "
                                 f"not {wanted!r}, after {timeout or self.timeout:g}s")
            time.sleep(0.02)
            st = self.state(cid)
        return st

    def create(self, cid: str, bundle: str, out: str, *extra: str) -> subprocess.CompletedProcess:
        """`create`, with the container's stdio (and the runtime's) going to files: a pipe
        would stay open as long as the container lives."""
        with open(out + ".out", "ab") as o, open(out + ".err", "ab") as e:
            argv = [self.path, "--root", self.root, *self.globals, "create", "--bundle", bundle,
                    *extra, cid]
            try:
                rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=o, stderr=e,
                                    timeout=self.timeout).returncode
            except subprocess.TimeoutExpired:
                raise CaseFailed(f"`create` did not return within {self.timeout:g}s") from None
        with open(out + ".err", errors="replace") as e:
            err = e.read()
        return subprocess.CompletedProcess(argv, rc, "", err)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def read(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()


def ns_inode(pid: int | str, ns: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{ns}")
