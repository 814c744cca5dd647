"""The last exec of every container process goes through a tiny static program in a sealed
memfd (CVE-2019-5736).

pyrunc forks the container's init from the Python that runs it, so until init execs the
user's program its /proc/self/exe is the host's interpreter. Were init to execve() the user's
path directly, the kernel would resolve `/proc/self/exe` (as args[0], as a `#!` interpreter,
as an ELF's PT_INTERP or through a symlink) in init's context: the container would run the
host's interpreter with its own loader, hold it as its /proc/self/exe and, once pyrunc exits,
reopen it for writing. A path check in Python cannot close that: the resolution happens in
the kernel during the exec.

So init (and `pyrunc exec`'s child, and every hook) execs this trampoline from a memfd,
`execveat(memfd, "", [MARK, path, *args], env, AT_EMPTY_PATH)`, and the trampoline does
`execve(path, args, env)`. From its first instruction the process's exe is the sealed memfd
and nothing of the host is mapped (no interpreter, no libpython, no host libc), so whatever
the user's path resolves to, /proc/self/exe included, is this program, never a host file.
Started by anyone else (argv[0] is not MARK: /proc/self/exe re-executed, a `#!/proc/self/exe`
script) it prints why and exits 127 instead of running its arguments, so such paths fail
the same way every time instead of looping.

runc answers the same threat with a sealed memfd copy of its whole binary (1.1) or a
read-only bind mount of it (1.2); for a Python runtime either means starting another
interpreter (~10+ ms on every container start), where this costs one exec of a 4 KiB
static program. PR_SET_MM_EXE_FILE cannot replace the exe of a process that still maps it.

The program is built here as bytes (x86_64 only so far; other machines keep the direct
exec and `available()` says so). On a failed exec it prints `pyrunc: exec PATH: REASON`
to stderr (the reason from a table of strerror texts built with it) and exits 127.
"""

from . import oslite as os
import struct

from . import linux

# argv[0] of the trampoline: its first 8 bytes tell it that pyrunc started it.
MARK = "pyrunc:exec"
_MARK8 = MARK.encode()[:8]

_BASE = 0x400000          # load address (ET_EXEC: fixed, no loader)
_HDRS = 64 + 2 * 56       # ELF header + PT_LOAD + PT_GNU_STACK program headers
_NERR = 134               # errno texts 0..133 (0: "unknown error"); then two messages
_PREFIX = _NERR           # table entry: "pyrunc: exec "
_NOT_OURS = _NERR + 1     # table entry: started by someone else

# x86_64 code. r14 holds the message table's address; syscalls keep rbx, rdi, r12-r14.
# At entry rsp points at argc, then argv[0..argc-1], NULL, envp..., NULL.
_X86_64 = [
    (b"\x4c\x8d\x35", "TABLE"),                  # lea  r14, [rip+table]
    (b"\x48\x8b\x0c\x24", None),                 # mov  rcx, [rsp]        ; argc
    (b"\x48\x83\xf9\x02", None),                 # cmp  rcx, 2            ; MARK and a path at least
    (b"\x72\x6d", None),                         # jb   not_ours
    (b"\x48\x8b\x44\x24\x08", None),             # mov  rax, [rsp+8]      ; argv[0]
    (b"\x48\xba", "MARK"),                       # movabs rdx, MARK[:8]
    (b"\x48\x39\x10", None),                     # cmp  [rax], rdx
    (b"\x75\x59", None),                         # jne  not_ours
    (b"\x48\x8b\x7c\x24\x10", None),             # mov  rdi, [rsp+16]     ; path = argv[1]
    (b"\x48\x8d\x74\x24\x18", None),             # lea  rsi, [rsp+24]     ; argv = &argv[2]
    (b"\x48\x8d\x54\xcc\x10", None),             # lea  rdx, [rsp+rcx*8+16] ; envp = &argv[argc+1]
    (b"\xb8\x3b\x00\x00\x00", None),             # mov  eax, 59           ; execve
    (b"\x0f\x05", None),                         # syscall                ; returns only on failure
    (b"\x48\xf7\xd8", None),                     # neg  rax               ; errno
    (b"\x49\x89\xc4", None),                     # mov  r12, rax
    (b"\x49\x89\xfd", None),                     # mov  r13, rdi          ; path
    (b"\xbb", "PREFIX"),                         # mov  ebx, PREFIX
    (b"\xe8\x46\x00\x00\x00", None),             # call put               ; "pyrunc: exec "
    (b"\x4c\x89\xee", None),                     # mov  rsi, r13
    (b"\x31\xd2", None),                         # xor  edx, edx
    (b"\x80\x3c\x16\x00", None),                 # 1: cmp byte [rsi+rdx], 0 ; strlen(path)
    (b"\x74\x05", None),                         # je   2f
    (b"\x48\xff\xc2", None),                     # inc  rdx
    (b"\xeb\xf5", None),                         # jmp  1b
    (b"\xbf\x02\x00\x00\x00", None),             # 2: mov edi, 2
    (b"\xb8\x01\x00\x00\x00", None),             # mov  eax, 1            ; write(2, path, len)
    (b"\x0f\x05", None),                         # syscall
    (b"\x31\xdb", None),                         # xor  ebx, ebx          ; entry 0 unless known
    (b"\x49\x81\xfc", "NERR"),                   # cmp  r12, NERR
    (b"\x49\x0f\x42\xdc", None),                 # cmovb rbx, r12
    (b"\xe8\x18\x00\x00\x00", None),             # call put               ; ": REASON\n"
    (b"\xeb\x0a", None),                         # jmp  out
    (b"\xbb", "NOT_OURS"),                       # not_ours: mov ebx, NOT_OURS
    (b"\xe8\x0c\x00\x00\x00", None),             # call put
    (b"\xbf\x7f\x00\x00\x00", None),             # out: mov edi, 127
    (b"\xb8\xe7\x00\x00\x00", None),             # mov  eax, 231          ; exit_group(127)
    (b"\x0f\x05", None),                         # syscall
    (b"\x41\x0f\xb7\x34\x9e", None),             # put: movzx esi, word [r14+rbx*4]   ; offset
    (b"\x41\x0f\xb7\x54\x9e\x02", None),         # movzx edx, word [r14+rbx*4+2]      ; length
    (b"\x4c\x01\xf6", None),                     # add  rsi, r14
    (b"\xbf\x02\x00\x00\x00", None),             # mov  edi, 2
    (b"\xb8\x01\x00\x00\x00", None),             # mov  eax, 1            ; write(2, msg, len)
    (b"\x0f\x05", None),                         # syscall
    (b"\xc3", None),                             # ret
]

_fd: tuple[int, int] | None = None   # (pid, fd): a forked child makes its own


def available() -> bool:
    return os.uname().machine == "x86_64"


def program() -> bytes:
    """The trampoline as an ELF64 executable for x86_64."""
    code_len = sum(len(op) + {None: 0, "TABLE": 4, "MARK": 8}.get(arg, 4) for op, arg in _X86_64)
    code = bytearray()
    for op, arg in _X86_64:
        code += op
        if arg == "TABLE":   # rip-relative: the table follows the code
            code += struct.pack("<i", code_len - (len(code) + 4))
        elif arg == "MARK":
            code += _MARK8
        elif arg is not None:
            code += struct.pack("<I", {"PREFIX": _PREFIX, "NOT_OURS": _NOT_OURS, "NERR": _NERR}[arg])
    assert len(code) == code_len
    texts = [b": unknown error\n"]
    texts += [f": {os.strerror(e)}\n".encode() for e in range(1, _NERR)]
    texts += [b"pyrunc: exec ",
              b"pyrunc: this is the runtime's exec trampoline (the container's "
              b"/proc/self/exe while pyrunc starts it); it runs nothing by itself\n"]
    table = bytearray()
    strings = bytearray()
    off = 4 * len(texts)
    for t in texts:
        table += struct.pack("<HH", off + len(strings), len(t))
        strings += t
    body = bytes(code) + bytes(table) + bytes(strings)
    size = _HDRS + len(body)
    ehdr = (b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)             # 64-bit, LE, SysV
            + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, _BASE + _HDRS,  # ET_EXEC, x86_64, entry
                          64, 0, 0, 64, 56, 2, 0, 0, 0))              # phoff, no sections
    load = struct.pack("<IIQQQQQQ", 1, 5, 0, _BASE, _BASE, size, size, 0x1000)  # PT_LOAD R+X
    stack = struct.pack("<IIQQQQQQ", 0x6474E551, 6, 0, 0, 0, 0, 0, 16)  # PT_GNU_STACK RW
    return ehdr + load + stack + body


def fd() -> int:
    """A sealed, close-on-exec memfd holding the trampoline, made once per process."""
    global _fd
    if _fd is None or _fd[0] != os.getpid():
        _fd = (os.getpid(), linux.sealed_memfd("pyrunc-exec", program(), exec_=True))
    return _fd[1]


def execve(path: str, args: list, env: dict, tfd: int = -1) -> None:
    """execve(path, args, env) through the trampoline in tfd (fd() by default); raises
    OSError when even the trampoline cannot be started. On machines without a trampoline,
    the direct exec."""
    if not available():
        os.execve(path, args, env)
    if tfd < 0:
        tfd = fd()
    argv = [MARK, path, *args]
    try:
        os.execve(tfd, argv, env)  # fexecve: execveat(fd, "", ..., AT_EMPTY_PATH)
    except OSError as e:
        # A seccomp profile may refuse execveat: the same memfd by its /proc path.
        if e.errno not in (1, 38):  # EPERM, ENOSYS
            raise
    os.execve(f"/proc/self/fd/{tfd}", argv, env)
