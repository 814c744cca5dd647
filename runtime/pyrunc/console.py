"""process.terminal: the container's pty, handed to whoever listens on --console-socket.

The protocol is runc's (conmon, containerd and runc's recvtty speak it): the container's
init opens a pty in the container's own devpts, sends the MASTER over the unix socket as
one message whose payload is the pty's name and whose SCM_RIGHTS carries the fd, and keeps
the slave as its stdio and controlling terminal. The master never stays in the container.

Only imported when a process has a terminal, so the imports below cost nothing otherwise.
"""

import array
import errno
import fcntl
from . import oslite as os
import select
import signal
import socket
import _stat as stat  # the C module: the stat module is Python on top of it
import struct
import termios

from ocispec.errors import OCIError

# Not in Python's termios module (include/uapi/asm-generic/ioctls.h).
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441


def connect(path: str) -> int:
    """Connect to --console-socket PATH in the runtime's namespaces; returns the fd,
    inheritable so the container's init gets it."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise OCIError(f"--console-socket {path}: cannot connect: {e.strerror}",
                       errno=e.errno) from None
    fd = s.detach()
    os.set_inheritable(fd, True)
    return fd


def setup_in_init(sock_fd: int, size: dict | None = None, mount_console: bool = True,
                  dev: str = "/dev", uid: int | None = None) -> None:
    """In the container (after pivot_root, with devpts on DEV/pts): make a pty, send its
    master over sock_fd, and make the slave this process's controlling terminal and
    stdin/stdout/stderr. size: process.consoleSize ({"height", "width"}).
    mount_console: bind the slave onto DEV/console (init; not for exec).
    uid: process.user.uid, made the terminal's owner (as runc's fixStdioPermissions), so
    a process that is not root can still open its own tty by name.
    Closes sock_fd."""
    try:
        master = _open_master(f"{dev}/ptmx")
        try:
            n = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))[0]
            name = f"{dev}/pts/{n}"
            slave = _open_slave(master, name)
            if uid:
                try:
                    os.fchown(slave, uid, -1)  # the gid stays devpts's (tty, by gid=5)
                except OSError as e:
                    # runc too leaves it: uid unmapped here, or /dev read-only.
                    if e.errno not in (errno.EINVAL, errno.EPERM, errno.EROFS):
                        raise OCIError(f"process.terminal: cannot give {name} to uid {uid}: "
                                       f"{e.strerror}", errno=e.errno) from None
            if size:
                set_size(master, size.get("height", 0), size.get("width", 0))
            if mount_console:
                _mount_console(slave, f"{dev}/console")
            _send_fd(sock_fd, name, master)
        finally:
            os.close(master)  # the master lives on only in the listener
    finally:
        os.close(sock_fd)
    try:
        os.setsid()
    except PermissionError:
        pass  # already a session leader (a caller did setsid first)
    try:
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    except OSError as e:
        raise OCIError(f"process.terminal: cannot make {name} the controlling terminal: "
                       f"{e.strerror}", errno=e.errno) from None
    for std in (0, 1, 2):
        os.dup2(slave, std)  # dup2 clears O_CLOEXEC on the copies
    os.close(slave)


def set_size(fd: int, height: int, width: int) -> None:
    """TIOCSWINSZ: rows x columns of the terminal fd (master or slave)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def get_size(fd: int) -> tuple[int, int]:
    """(rows, columns) of the terminal fd."""
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols


def recv_master(sock_fd: int) -> tuple[str, int]:
    """The listener's side: receive (pty name, master fd) from one message."""
    s = socket.socket(fileno=os.dup(sock_fd))
    try:
        fds = array.array("i")
        msg, anc, _flags, _addr = s.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
    finally:
        s.close()
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    if not fds:
        raise OCIError("console socket: the container sent no terminal fd"
                       + (f" ({msg.decode(errors='replace')})" if msg else ""))
    for extra in fds[1:]:
        os.close(extra)
    return msg.decode(errors="replace"), fds[0]


def _open_master(ptmx: str) -> int:
    try:
        master = os.open(ptmx, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise OCIError(f"process.terminal: cannot open {ptmx}: {e.strerror} "
                       "(is devpts mounted on /dev/pts with ptmxmode=0666?)",
                       errno=e.errno) from None
    st = os.fstat(master)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(5, 2):
        os.close(master)
        raise OCIError(f"process.terminal: {ptmx} is not the pty multiplexer (char 5:2); "
                       "refusing to use it")
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))  # unlockpt
    return master


def _open_slave(master: int, name: str) -> int:
    # TIOCGPTPEER opens the slave through the master, not through a path someone could swap.
    try:
        fd = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        fd = os.open(name, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    if fd > 2:
        return fd
    # Above stdio, so the dup2s onto 0, 1, 2 below never dup an fd onto itself.
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return high


def _mount_console(slave: int, console: str) -> None:
    """Bind the pty open at slave onto console. Both ends are fds: the file checked here
    is the file mounted on, whatever replaces the name meanwhile (CVE-2025-52565)."""
    from . import linux

    try:
        # An empty file to bind onto; the mode is what runc gives /dev/console.
        fd = os.open(console, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        os.fchmod(fd, 0o666)
    except FileExistsError:
        fd = os.open(console, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise OCIError(f"process.terminal: cannot create {console}: {e.strerror}", errno=e.errno) from None
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
            what = "a symlink" if stat.S_ISLNK(mode) else "not a file or character device"
            raise OCIError(f"process.terminal: {console} in the container is {what}; refusing to "
                           "mount the terminal on it")
        linux.bind_fd(slave, fd)
    except OSError as e:
        raise OCIError(f"process.terminal: cannot bind the terminal onto {console}: "
                       f"{os.strerror(e.errno)}", errno=e.errno) from None
    finally:
        os.close(fd)


def _send_fd(sock_fd: int, name: str, fd: int) -> None:
    s = socket.socket(fileno=os.dup(sock_fd))
    try:
        s.sendmsg([name.encode()],
                  [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
    except OSError as e:
        raise OCIError(f"console socket: cannot send the terminal: {e.strerror}",
                       errno=e.errno) from None
    finally:
        s.close()


class ForegroundTerminal:
    """`run -t` / `exec -t` without --console-socket: the runtime itself is the listener.

        term = ForegroundTerminal()          # before create: term.child_fd is the socket
        ... container init calls setup_in_init(term.child_fd, ...) ...
        term.receive()                       # after create: the master arrives
        term.copy(pid)                       # until process pid exits; restores the tty

    The caller's stdin is put in raw mode while copying (when it is a terminal) and its
    window size is copied onto the container's terminal, also on SIGWINCH. EOF on a
    non-terminal stdin is passed on as ^D, as if typed.
    """

    def __init__(self):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock = a
        self.child_fd = b.detach()
        os.set_inheritable(self.child_fd, True)
        self.master = -1

    def receive(self, timeout: float | None = 10.0, stdin: int = 0) -> int:
        """Wait for the container's master; closes our copy of child_fd first, so a
        container that dies before sending makes this fail instead of hang. The caller's
        window size goes onto the container's terminal at once (as runc does), so the
        process sees it from its first instruction, before `start`."""
        self.close_child_fd()
        if not select.select([self._sock], [], [], timeout)[0]:
            raise OCIError("process.terminal: the container did not send its terminal "
                           f"within {timeout}s")
        try:
            _, self.master = recv_master(self._sock.fileno())
        except OCIError:
            raise OCIError("process.terminal: the container exited before sending its "
                           "terminal") from None
        self._sock.close()
        if os.isatty(stdin):
            self._copy_winsize(stdin)
        return self.master

    def close_child_fd(self) -> None:
        if self.child_fd >= 0:
            os.close(self.child_fd)
            self.child_fd = -1

    def copy(self, pid: int, stdin: int = 0, stdout: int = 1) -> None:
        """Copy stdin -> master and master -> stdout until process pid exits and its
        output is drained, then restore the caller's terminal and close the master."""
        pidfd = os.pidfd_open(pid)
        is_tty = os.isatty(stdin)
        saved = termios.tcgetattr(stdin) if is_tty else None
        old_winch = None
        try:
            if is_tty:
                import tty
                tty.setraw(stdin, termios.TCSANOW)
                self._copy_winsize(stdin)
                old_winch = signal.signal(signal.SIGWINCH,
                                          lambda *_: self._copy_winsize(stdin))
            self._pump(pidfd, stdin, stdout)
        finally:
            if old_winch is not None:
                signal.signal(signal.SIGWINCH, old_winch)
            if saved is not None:
                termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
            os.close(pidfd)
            self.close()

    def _copy_winsize(self, tty_fd: int) -> None:
        try:
            set_size(self.master, *get_size(tty_fd))
        except OSError:
            pass

    def _pump(self, pidfd: int, stdin: int, stdout: int) -> None:
        import gc

        gc.enable()  # a relay that may last hours: cycles are collected again
        readers = [self.master, stdin, pidfd]
        while True:
            try:
                ready = select.select(readers, [], [])[0]
            except InterruptedError:
                continue
            if self.master in ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # EIO: every slave fd is closed
                    data = b""
                if not data:
                    return
                _write_all(stdout, data)
            if stdin in ready:
                data = os.read(stdin, 65536)
                if data:
                    _write_all(self.master, data)
                else:
                    readers.remove(stdin)
                    _write_all(self.master, b"\x04")
            if pidfd in ready:
                # The process is gone: drain what it wrote, without waiting on
                # descendants that may keep the slave open.
                while select.select([self.master], [], [], 0)[0]:
                    try:
                        data = os.read(self.master, 65536)
                    except OSError:
                        return
                    if not data:
                        return
                    _write_all(stdout, data)
                return

    def close(self) -> None:
        self.close_child_fd()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        self._sock.close()


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]
