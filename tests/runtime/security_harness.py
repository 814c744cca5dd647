"""Run pyrunc's privilege and seccomp steps in a forked child exactly in the order the init
does, then exec busybox, and report what the child printed and how it ended. Real kernel, real
capabilities, real seccomp: the tests need root."""

import os
from dataclasses import dataclass

BUSYBOX = "/bin/busybox"


@dataclass
class Result:
    status: int          # exit status, or -signal
    out: str
    err: str
    error: str | None    # str() of the exception our code raised in the child, if any


def run(argv, process=None, linux=None, state=None, before_exec=None, timeout=20) -> Result:
    from pyrunc import privileges

    process = dict(process or {})
    linux = linux or {}
    state = state or {"ociVersion": "1.2.0", "id": "security-test", "status": "created",
                      "pid": 0, "bundle": "/nonexistent", "annotations": {}}
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    exc_r, exc_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()  # own process group: tests signal it with kill 0
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            devnull = os.open("/dev/null", os.O_RDONLY)
            os.dup2(devnull, 0)
            # Only stdio and the (close-on-exec) exception pipe stay, as in the init.
            keep = {0, 1, 2, exc_w}
            for fd in map(int, os.listdir("/proc/self/fd")):
                if fd not in keep:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            st = dict(state, pid=os.getpid())
            sc = linux.get("seccomp")
            if sc:
                from pyrunc import seccomp
            privileges.prepare(process, linux)
            if sc and not process.get("noNewPrivileges"):
                seccomp.load(sc, st)
            privileges.finalize(process)
            if sc and process.get("noNewPrivileges"):
                seccomp.load(sc, st)
            if before_exec:
                before_exec()
            os.execv(argv[0], argv)
        except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
            try:
                os.write(exc_w, f"{type(e).__name__}: {e}".encode())
            finally:
                os._exit(111)
    for fd in (out_w, err_w, exc_w):
        os.close(fd)
    out = _read_all(out_r)
    err = _read_all(err_r)
    exc = _read_all(exc_r)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return Result(code, out, err, exc or None)


def _read_all(fd) -> str:
    chunks = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def status_field(out: str, name: str) -> str:
    for line in out.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{name} not in output:\n{out}")


def capmask(*names) -> str:
    from ocispec.tables import CAPABILITIES
    m = 0
    for n in names:
        m |= 1 << CAPABILITIES[n]
    return f"{m:016x}"


def sh(script: str) -> list[str]:
    return [BUSYBOX, "sh", "-c", script]
