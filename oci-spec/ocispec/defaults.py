"""The default runtime config, as `runc spec` writes it (and `runc spec --rootless`), and
the one docker and BuildKit run a container with (container_spec: their capability set,
device rules, masked paths and seccomp profile).

pyrunc's `spec` command prints the first; pybuild's image-to-bundle conversion starts from it,
its RUN steps from the second. The mounts, masked and read-only paths, device rules and the
seccomp profile here are the one copy of those lists.
"""
import os

from .tables import ALLOWED_DEVICES

OCI_VERSION = "1.2.0"
DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RUNC_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

MOUNTS = [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
     "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
     "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
]
MASKED_PATHS = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
NAMESPACES = ["pid", "network", "ipc", "uts", "mount"]


def _deepcopy(x):
    # `copy` (and the weakref it imports) costs ~2 ms: this module is on pyrunc's start-up path
    # (cgroups take ALLOWED_DEVICES from it), and the functions that copy are not.
    import copy

    return copy.deepcopy(x)


def runc_spec(*, rootless: bool = False, uid: int | None = None, gid: int | None = None,
              oci_version: str = OCI_VERSION, args=("sh",), terminal: bool = True) -> dict:
    """The config.json `runc spec [--rootless]` writes (ociVersion aside)."""
    caps = list(RUNC_CAPS)
    spec = {
        "ociVersion": oci_version,
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": [DEFAULT_PATH_ENV] + (["TERM=xterm"] if terminal else []),
            "cwd": "/",
            "capabilities": {s: list(caps) for s in ("bounding", "effective", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": _deepcopy(MOUNTS),
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in NAMESPACES],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
    if rootless:
        # runc's ToRootless: own user namespace mapping us to root, no new network
        # namespace, /sys bound from the host, no devpts gid and no device cgroup rules.
        lx = spec["linux"]
        lx["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid() if uid is None else uid, "size": 1}]
        lx["gidMappings"] = [{"containerID": 0, "hostID": os.getegid() if gid is None else gid, "size": 1}]
        lx["namespaces"] = [n for n in lx["namespaces"] if n["type"] != "network"] + [{"type": "user"}]
        del lx["resources"]
        for m in spec["mounts"]:
            if m["destination"] == "/dev/pts":
                m["options"] = [o for o in m["options"] if o != "gid=5"]
            if m["destination"] == "/sys":
                m.update(type="none", source="/sys", options=["rbind", "nosuid", "noexec", "nodev", "ro"])
    return spec


# -- what a docker/BuildKit container gets beyond `runc spec` ---------------------------------
# (containerd's default spec, which BuildKit starts every RUN from, plus moby's seccomp profile)

# containerd's defaultUnixCaps (= docker's default set), in bounding/effective/permitted.
DEFAULT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
# containerd and moby also hide the RAPL energy counters (CVE-2020-8694).
CONTAINER_MASKED_PATHS = MASKED_PATHS + ["/sys/devices/virtual/powercap"]


def device_rules() -> list:
    """linux.resources.devices denying every device but runc's allowed ones, spelled out so a
    runtime that does not append them itself (any but runc and pyrunc) gives the same."""
    return [{"allow": False, "access": "rwm"}] + _deepcopy(ALLOWED_DEVICES)


# moby's profiles/seccomp/default.json, the profile docker and BuildKit load into every
# container: deny (EPERM) by default, allow this list, and more where a capability, an
# architecture or a kernel version lets it. Left out, so denied: kexec_*, *_module, mount,
# umount, pivot_root, unshare, setns, keyctl, add_key, request_key, bpf, perf_event_open,
# userfaultfd, open_by_handle_at, syslog, reboot, swapon, acct, ptrace on kernels < 4.8, and
# io_uring_* (whose operations seccomp cannot see; moby#46762, containerd#9320), ...
_SECCOMP_ALLOW = """
accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2
dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64
fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchown fchown32 fchownat fcntl
fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64
fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_time64 futex_waitv
futimesat getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32 getgid
getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp getpid getppid
getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list
getrusage getsid getsockname getsockopt get_thread_area gettid gettimeofday getuid getuid32
getxattr inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl
io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup
io_submit ipc kill landlock_add_rule
landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat listen
listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise membarrier
memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2
mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend
mq_timedsend_time64 mq_unlink mremap msgctl msgget msgrcv msgsnd msync munlock munlockall
munmap name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause pidfd_open
pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl
pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev
pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64
recvmsg remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir rseq
rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr
sched_getparam sched_get_priority_max sched_get_priority_min sched_getscheduler
sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr
sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid
setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority setregid
setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit
set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32 setxattr
shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn
socketcall socketpair splice stat stat64 statfs statfs64 statx symlink symlinkat sync
sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete timer_getoverrun
timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime
timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate truncate64 ugetrlimit
umask uname unlink unlinkat utime utimensat utimensat_time64 utimes vfork vmsplice wait4
waitid waitpid write writev
""".split()


def _eq(index, value, op="SCMP_CMP_EQ") -> dict:
    return {"index": index, "value": value, "valueTwo": 0, "op": op}


_CLONE_NS_FLAGS = 2114060288  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
# The conditional rules of moby's profile, in its order: (names, action, args, includes,
# excludes). includes/excludes: "caps" (all in / any in the bounding set), "arches" (Go
# architecture names), "minKernel".
_SECCOMP_RULES = [
    (["process_vm_readv", "process_vm_writev", "ptrace"], "SCMP_ACT_ALLOW", None,
     {"minKernel": (4, 8)}, {}),
    (["socket"], "SCMP_ACT_ALLOW", [_eq(0, 40, "SCMP_CMP_NE")], {}, {}),  # no AF_VSOCK
] + [(["personality"], "SCMP_ACT_ALLOW", [_eq(0, v)], {}, {})
     for v in (0, 8, 131072, 131080, 4294967295)] + [
    (["sync_file_range2", "swapcontext"], "SCMP_ACT_ALLOW", None, {"arches": ["ppc64le"]}, {}),
    (["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush",
      "set_tls"], "SCMP_ACT_ALLOW", None, {"arches": ["arm", "arm64"]}, {}),
    (["arch_prctl"], "SCMP_ACT_ALLOW", None, {"arches": ["amd64", "x32"]}, {}),
    (["modify_ldt"], "SCMP_ACT_ALLOW", None, {"arches": ["amd64", "x32", "x86"]}, {}),
    (["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"], "SCMP_ACT_ALLOW", None,
     {"arches": ["s390", "s390x"]}, {}),
    (["riscv_flush_icache"], "SCMP_ACT_ALLOW", None, {"arches": ["riscv64"]}, {}),
    (["open_by_handle_at"], "SCMP_ACT_ALLOW", None, {"caps": ["CAP_DAC_READ_SEARCH"]}, {}),
    (["bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
      "lookup_dcookie", "mount", "mount_setattr", "move_mount", "open_tree", "perf_event_open",
      "quotactl", "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog", "umount",
      "umount2", "unshare"], "SCMP_ACT_ALLOW", None, {"caps": ["CAP_SYS_ADMIN"]}, {}),
    # clone without namespace flags
    (["clone"], "SCMP_ACT_ALLOW", [_eq(0, _CLONE_NS_FLAGS, "SCMP_CMP_MASKED_EQ")], {},
     {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}),
    (["clone"], "SCMP_ACT_ALLOW", [_eq(1, _CLONE_NS_FLAGS, "SCMP_CMP_MASKED_EQ")],
     {"arches": ["s390", "s390x"]}, {"caps": ["CAP_SYS_ADMIN"]}),
    # clone3's flags are in memory seccomp cannot read: ENOSYS makes libc fall back to clone
    (["clone3"], ("SCMP_ACT_ERRNO", 38), None, {}, {"caps": ["CAP_SYS_ADMIN"]}),
    (["reboot"], "SCMP_ACT_ALLOW", None, {"caps": ["CAP_SYS_BOOT"]}, {}),
    (["chroot"], "SCMP_ACT_ALLOW", None, {"caps": ["CAP_SYS_CHROOT"]}, {}),
    (["delete_module", "init_module", "finit_module"], "SCMP_ACT_ALLOW", None,
     {"caps": ["CAP_SYS_MODULE"]}, {}),
    (["acct"], "SCMP_ACT_ALLOW", None, {"caps": ["CAP_SYS_PACCT"]}, {}),
    (["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev",
      "ptrace"], "SCMP_ACT_ALLOW", None, {"caps": ["CAP_SYS_PTRACE"]}, {}),
    (["iopl", "ioperm"], "SCMP_ACT_ALLOW", None, {"caps": ["CAP_SYS_RAWIO"]}, {}),
    (["settimeofday", "stime", "clock_settime", "clock_settime64"], "SCMP_ACT_ALLOW", None,
     {"caps": ["CAP_SYS_TIME"]}, {}),
    (["vhangup"], "SCMP_ACT_ALLOW", None, {"caps": ["CAP_SYS_TTY_CONFIG"]}, {}),
    (["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"], "SCMP_ACT_ALLOW",
     None, {"caps": ["CAP_SYS_NICE"]}, {}),
    (["syslog"], "SCMP_ACT_ALLOW", None, {"caps": ["CAP_SYSLOG"]}, {}),
    (["bpf"], "SCMP_ACT_ALLOW", None, {"caps": ["CAP_BPF"]}, {}),
    (["perf_event_open"], "SCMP_ACT_ALLOW", None, {"caps": ["CAP_PERFMON"]}, {}),
]
# uname machine -> (Go architecture name, the seccomp architectures moby's archMap lists)
_SECCOMP_ARCH = {
    "x86_64": ("amd64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
    "aarch64": ("arm64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]),
    "s390x": ("s390x", ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"]),
    "riscv64": ("riscv64", ["SCMP_ARCH_RISCV64"]),
    "ppc64le": ("ppc64le", ["SCMP_ARCH_PPC64LE"]),
}


def _kernel() -> tuple:
    rel = os.uname().release
    parts = []
    for p in rel.split("-", 1)[0].split(".")[:2]:
        parts.append(int("".join(c for c in p if c.isdigit()) or 0))
    return tuple(parts)


def seccomp_profile(caps=DEFAULT_CAPS, machine: str | None = None,
                    kernel: tuple | None = None) -> dict:
    """linux.seccomp as docker and BuildKit give a container with bounding set `caps`
    (moby's seccomp.GetDefaultProfile): the default profile resolved for this machine's
    architecture and kernel."""
    machine = machine or os.uname().machine
    goarch, arches = _SECCOMP_ARCH.get(machine, (machine, []))
    kernel = kernel or _kernel()
    caps = set(caps)
    syscalls = [{"names": list(_SECCOMP_ALLOW), "action": "SCMP_ACT_ALLOW"}]
    for names, action, args, inc, exc in _SECCOMP_RULES:
        if not set(inc.get("caps", ())) <= caps or caps & set(exc.get("caps", ())):
            continue
        if "arches" in inc and goarch not in inc["arches"]:
            continue
        if goarch in exc.get("arches", ()):
            continue
        if "minKernel" in inc and kernel < inc["minKernel"]:
            continue
        rule = {"names": list(names)}
        if isinstance(action, tuple):
            rule["action"], rule["errnoRet"] = action
        else:
            rule["action"] = action
        if args:
            rule["args"] = _deepcopy(args)
        syscalls.append(rule)
    return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
            "architectures": list(arches), "syscalls": syscalls}


def container_spec(*, args=("sh",), caps=DEFAULT_CAPS, terminal: bool = False) -> dict:
    """The config docker, containerd and BuildKit run a container with: `runc spec`, plus
    docker's capability set (no ambient ones), setuid allowed (noNewPrivileges false), no
    rlimits, runc's device rules spelled out, containerd's masked paths and moby's seccomp
    profile resolved for `caps`. Callers override process, root, hostname and namespaces."""
    spec = runc_spec(args=args, terminal=terminal)
    p = spec["process"]
    p["capabilities"] = {s: list(caps) for s in ("bounding", "effective", "permitted")}
    p["noNewPrivileges"] = False
    del p["rlimits"]
    for m in spec["mounts"]:
        if m["destination"] == "/proc":
            m["options"] = ["nosuid", "noexec", "nodev"]
    lx = spec["linux"]
    lx["resources"] = {"devices": device_rules()}
    lx["maskedPaths"] = list(CONTAINER_MASKED_PATHS)
    lx["seccomp"] = seccomp_profile(caps)
    return spec
