"""pyrunc.console end to end: a real pty from a devpts newinstance, sent over a real unix
socket to a separate listener process (tests/runtime/recvtty.py), as conmon would receive it.

The "container" is a child in a private mount namespace (util-linux unshare) with a fresh
devpts on DEV/pts, which calls console.connect + console.setup_in_init(dev=DEV) and execs
busybox sh; nothing here touches the host's /dev.
"""

import os
import subprocess
import sys
import tempfile
import termios

import pytest

from pyrunc import console

HERE = os.path.dirname(os.path.abspath(__file__))
BUSYBOX = "/bin/busybox"

# Inside the container: is stdin a tty, its size, a controlling terminal (/dev/tty opens
# only with one), DEV/console the same file as stdin, no pty master left, and typed input.
CHECK = r"""
tty
stty size
echo ctty-ok > /dev/tty
[ "$DEV/console" -ef /proc/self/fd/0 ] && echo console-ok
for f in /proc/$$/fd/*; do readlink $f; done | grep -q ptmx && echo master-leaked
read line
echo "got:$line"
"""

# Runs in the new mount namespace: a devpts instance of its own, then pyrunc.console.
SETUP = r"""
set -e
mount -t tmpfs pyrunc-console "$DEV"
mkdir "$DEV/pts"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$DEV/pts"
ln -s pts/ptmx "$DEV/ptmx"
exec "$PY" -c "$PYCODE"
"""

PYCODE = r"""
import json, os, sys
from pyrunc import console
fd = os.environ.get("SOCK_FD")
fd = int(fd) if fd else console.connect(os.environ["SOCK"])
size = json.loads(os.environ["SIZE"]) if os.environ.get("SIZE") else None
console.setup_in_init(fd, size, dev=os.environ["DEV"])
os.execv(os.environ["BUSYBOX"], ["sh", "-c", os.environ["CHECK"]])
"""


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="pyrunc-console-")
    os.mkdir(os.path.join(d, "dev"))
    yield d
    subprocess.run(["rm", "-rf", "--one-file-system", d], check=True)
    with open("/proc/self/mountinfo") as f:
        assert d not in f.read()


def container(workdir, sock=None, sock_fd=None, size=None, **kw):
    env = {"DEV": os.path.join(workdir, "dev"), "PY": sys.executable, "PYCODE": PYCODE,
           "BUSYBOX": BUSYBOX, "CHECK": CHECK, "PATH": os.environ["PATH"],
           "SOCK": sock or "", "SOCK_FD": "" if sock_fd is None else str(sock_fd),
           "SIZE": "" if size is None else __import__("json").dumps(size)}
    return subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                             "sh", "-c", SETUP], env=env, **kw)


def test_console_socket_master_reaches_listener(workdir):
    sock = os.path.join(workdir, "console.sock")
    listener = subprocess.Popen([sys.executable, os.path.join(HERE, "recvtty.py"), sock,
                                 "--input", "hello pty\n"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert listener.stdout.readline() == b"listening\n"
        child = container(workdir, sock=sock, size={"height": 33, "width": 101},
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, cerr = child.communicate(timeout=30)
        assert child.returncode == 0, cerr.decode()
        out, err = listener.communicate(timeout=30)
    finally:
        listener.kill()
        listener.wait()
    assert listener.returncode == 0, err.decode()
    dev = os.path.join(workdir, "dev")
    assert err.decode().strip() == f"name={dev}/pts/0"
    lines = out.decode().replace("\r\n", "\n").splitlines()
    assert f"{dev}/pts/0" in lines  # `tty`: stdin is the container's pty
    assert "33 101" in lines  # `stty size`: consoleSize
    assert "ctty-ok" in lines and "console-ok" in lines
    assert "master-leaked" not in lines
    assert "got:hello pty" in lines  # typed through the master, read by the container


def test_no_console_size(workdir):
    sock = os.path.join(workdir, "console.sock")
    listener = subprocess.Popen([sys.executable, os.path.join(HERE, "recvtty.py"), sock,
                                 "--input", "x\n"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    try:
        assert listener.stdout.readline() == b"listening\n"
        child = container(workdir, sock=sock, stderr=subprocess.PIPE)
        assert child.wait(timeout=30) == 0, child.stderr.read().decode()
        out, _ = listener.communicate(timeout=30)
    finally:
        listener.kill()
        listener.wait()
    lines = out.decode().replace("\r\n", "\n").splitlines()
    # The kernel's 0x0 stays (busybox stty then fails to print it): nothing set a size.
    assert not any(line[:1].isdigit() for line in lines)
    assert "console-ok" in lines and "got:x" in lines


def test_connect_error_names_the_socket(workdir):
    missing = os.path.join(workdir, "nobody-listens.sock")
    with pytest.raises(console.OCIError, match=rf"^--console-socket {missing}: cannot connect: "
                       "No such file or directory$"):
        console.connect(missing)


def test_foreground_terminal_with_pipe_stdin(workdir):
    term = console.ForegroundTerminal()
    inp = os.path.join(workdir, "stdin")
    with open(inp, "w") as f:
        f.write("from pipe\n")
    outp = os.path.join(workdir, "stdout")
    child = container(workdir, sock_fd=term.child_fd, size={"height": 7, "width": 9},
                      pass_fds=(term.child_fd,), stderr=subprocess.PIPE)
    try:
        term.receive(timeout=30)
        with open(inp, "rb") as i, open(outp, "wb") as o:
            term.copy(child.pid, stdin=i.fileno(), stdout=o.fileno())
        assert child.wait(timeout=30) == 0, child.stderr.read().decode()
    finally:
        child.kill()
        child.wait()
    lines = open(outp, "rb").read().decode().replace("\r\n", "\n").splitlines()
    assert "7 9" in lines and "console-ok" in lines and "got:from pipe" in lines
    assert term.master == -1 and term.child_fd == -1


def test_foreground_terminal_raw_mode_winsize_and_restore(workdir):
    # The caller's own terminal is a pty we hold both ends of.
    outer_master, outer_slave = os.openpty()
    console.set_size(outer_slave, 40, 120)
    before = termios.tcgetattr(outer_slave)
    term = console.ForegroundTerminal()
    outp = os.path.join(workdir, "stdout")
    child = container(workdir, sock_fd=term.child_fd, pass_fds=(term.child_fd,),
                      stderr=subprocess.PIPE)
    try:
        term.receive(timeout=30)
        os.write(outer_master, b"typed\n")
        raw_seen = []
        # Observe raw mode from inside copy(): it copies the window size once raw.
        orig = term._copy_winsize

        def spy(fd):
            raw_seen.append(termios.tcgetattr(fd)[3] & termios.ICANON == 0)
            orig(fd)
        term._copy_winsize = spy
        with open(outp, "wb") as o:
            term.copy(child.pid, stdin=outer_slave, stdout=o.fileno())
        assert child.wait(timeout=30) == 0, child.stderr.read().decode()
    finally:
        child.kill()
        child.wait()
    lines = open(outp, "rb").read().decode().replace("\r\n", "\n").splitlines()
    assert "40 120" in lines  # the caller's window size, copied onto the container's pty
    assert "got:typed" in lines
    assert raw_seen == [True]
    assert termios.tcgetattr(outer_slave) == before  # restored
    os.close(outer_slave)
    os.close(outer_master)


def test_receive_fails_when_container_dies_first():
    term = console.ForegroundTerminal()
    child = subprocess.Popen(["true"], pass_fds=(term.child_fd,))
    child.wait()
    with pytest.raises(console.OCIError, match="exited before sending its terminal"):
        term.receive(timeout=10)
    term.close()
