#!/usr/bin/env python3
"""A stand-in for conmon/containerd/runc's recvtty: the listener end of --console-socket.

    recvtty.py SOCKET [--input TEXT]

Listens on the unix socket SOCKET and prints "listening" on stdout; accepts one
connection and receives one message carrying a pty master (SCM_RIGHTS); prints
"name=<payload>" on stderr; writes TEXT to the master; then copies everything the
container writes to its terminal onto stdout until the terminal closes.
Standard library only and no pyrunc code, so it checks pyrunc's side of the protocol.
"""

import array
import os
import socket
import sys


def main(argv):
    path = argv[1]
    text = argv[argv.index("--input") + 1].encode() if "--input" in argv else b""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    print("listening", flush=True)
    conn, _ = srv.accept()
    fds = array.array("i")
    msg, anc, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    conn.close()
    srv.close()
    if not fds:
        print(f"recvtty: no fd received (payload {msg!r})", file=sys.stderr)
        return 2
    master = fds[0]
    print(f"name={msg.decode()}", file=sys.stderr, flush=True)
    if text:
        os.write(master, text)
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the container closed its last slave fd
            break
        if not data:
            break
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
