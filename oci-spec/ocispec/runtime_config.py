"""Fast semantic validation of a runtime config.json (runtime-spec 1.2, Linux).

pyrunc's `create` runs validate_config() on every container start, before touching the
kernel, so this is plain code over dicts: standard library only, no schema engine. It checks
types, required fields, names against ocispec.tables and the rules that tie fields together
(mappings need a user namespace, net.* sysctls need a network namespace, ...). The first
problem raises a SpecError such as
`config.json: process.rlimits[2].type: unknown rlimit "RLIMIT_FOO"`.
Unknown properties are ignored, as the spec requires.
"""
from . import tables as T
from .errors import SpecError

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1
_I64 = (-(1 << 63), (1 << 63) - 1)
_ACCESS = frozenset("rwm")
_MOUNT_ATTR_NAMES = frozenset(T.MOUNT_FLAGS) | frozenset(T.PROPAGATION) | \
    frozenset(T.RECURSIVE_MOUNT_ATTRS) | frozenset(T.EXTRA_MOUNT_OPTIONS)
_CAPS = T.CAPABILITIES
# sysctl prefixes -> namespace the key needs (runc's libcontainer/configs/validate).
_IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                          "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"})
_TIME_CLOCKS = ("boottime", "monotonic")


class _V:
    __slots__ = ("src",)

    def __init__(self, source):
        self.src = source

    def err(self, path, reason):
        raise SpecError(path, reason, source=self.src)

    # -- primitive checks ----------------------------------------------------------------

    def obj(self, v, path, required=False):
        if v is None:
            if required:
                self.err(path, "required object is missing")
            return False
        if type(v) is not dict:
            self.err(path, f"must be an object, not {_tname(v)}")
        return True

    def arr(self, v, path, required=False):
        if v is None:
            if required:
                self.err(path, "required array is missing")
            return ()
        if type(v) is not list:
            self.err(path, f"must be an array, not {_tname(v)}")
        return v

    def string(self, v, path, required=False):
        if v is None:
            if required:
                self.err(path, "required string is missing")
            return False
        if type(v) is not str:
            self.err(path, f"must be a string, not {_tname(v)}")
        return True

    def strings(self, v, path):
        for i, s in enumerate(self.arr(v, path)):
            if type(s) is not str:
                self.err(f"{path}[{i}]", f"must be a string, not {_tname(s)}")
        return v or ()

    def boolean(self, v, path):
        if v is not None and type(v) is not bool:
            self.err(path, f"must be a boolean, not {_tname(v)}")

    def integer(self, v, path, lo, hi, required=False, what="integer"):
        if v is None:
            if required:
                self.err(path, f"required {what} is missing")
            return
        if type(v) is not int:
            self.err(path, f"must be an {what}, not {_tname(v)}")
        if not lo <= v <= hi:
            self.err(path, f"{v} is out of range for {what} ({lo}..{hi})")

    def u32(self, v, path, required=False):
        self.integer(v, path, 0, _U32, required, "uint32")

    def u64(self, v, path, required=False):
        self.integer(v, path, 0, _U64, required, "uint64")

    def i64(self, v, path, required=False):
        self.integer(v, path, _I64[0], _I64[1], required, "int64")

    def abspath(self, v, path, required=False):
        if self.string(v, path, required):
            if not v.startswith("/"):
                self.err(path, f"{v!r} must be an absolute path")
            if "\0" in v:
                self.err(path, "must not contain NUL")

    def str_map(self, v, path):
        if self.obj(v, path):
            for k, s in v.items():
                if type(s) is not str:
                    self.err(f"{path}.{k}", f"must be a string, not {_tname(s)}")

    def enum(self, v, path, names, what, required=True):
        if v is None:
            if required:
                self.err(path, f"required {what} is missing")
            return
        if type(v) is not str:
            self.err(path, f"must be a string, not {_tname(v)}")
        if v not in names:
            self.err(path, f'unknown {what} "{v}"')

    # -- sections ------------------------------------------------------------------------

    def config(self, c):
        if type(c) is not dict:
            self.err("", f"must be a JSON object, not {_tname(c)}")
        v = c.get("ociVersion")
        self.string(v, "ociVersion", True)
        if not _is_version(v):
            self.err("ociVersion", f'"{v}" is not a runtime-spec 1.x version')
        root = c.get("root")
        self.obj(root, "root", True)
        p = root.get("path")
        self.string(p, "root.path", True)
        if not p:
            self.err("root.path", "must not be empty")
        self.boolean(root.get("readonly"), "root.readonly")
        self.string(c.get("hostname"), "hostname")
        self.string(c.get("domainname"), "domainname")
        self.str_map(c.get("annotations"), "annotations")
        for i, m in enumerate(self.arr(c.get("mounts"), "mounts")):
            self.mount(m, f"mounts[{i}]")
        if c.get("process") is not None:
            self.process(c["process"])
        if c.get("hooks") is not None:
            self.hooks(c["hooks"])
        linux = c.get("linux")
        ns = {}
        if self.obj(linux, "linux"):
            ns = self.linux(linux)
        self.cross(c, linux or {}, ns)

    def ifname(self, name, path):
        # dev_valid_name() in the kernel's net/core/dev.c
        if (not name or len(name) >= 16 or name in (".", "..")
                or any(ch in "/:" or ch.isspace() for ch in name)):
            self.err(path, f'invalid network interface name "{name}"')

    def mapping(self, m, path):
        self.obj(m, path, True)
        self.u32(m.get("containerID"), f"{path}.containerID", True)
        self.u32(m.get("hostID"), f"{path}.hostID", True)
        self.u32(m.get("size"), f"{path}.size", True)

    def mount(self, m, path):
        self.obj(m, path, True)
        d = m.get("destination")
        self.string(d, f"{path}.destination", True)
        if not d or "\0" in d:
            self.err(f"{path}.destination", "must be a non-empty path")
        self.string(m.get("source"), f"{path}.source")
        self.string(m.get("type"), f"{path}.type")
        opts = self.strings(m.get("options"), f"{path}.options")
        for i, o in enumerate(opts):
            # Names we do not know are filesystem data (mode=755, size=64k, newinstance):
            # only a comma, which would smuggle several options in one, is wrong.
            if not o or "," in o:
                self.err(f"{path}.options[{i}]", f'invalid mount option "{o}"')
        for key in ("uidMappings", "gidMappings"):
            for i, mp in enumerate(self.arr(m.get(key), f"{path}.{key}")):
                self.mapping(mp, f"{path}.{key}[{i}]")
        if (m.get("uidMappings") is None) != (m.get("gidMappings") is None):
            self.err(f"{path}.uidMappings", "uidMappings and gidMappings go together")
        bind = m.get("type") == "bind" or "bind" in opts or "rbind" in opts
        if ("idmap" in opts or "ridmap" in opts or m.get("uidMappings") is not None) and not bind:
            self.err(f"{path}.options", "idmap is only supported on bind mounts")
        if bind and not m.get("source"):
            self.err(f"{path}.source", "a bind mount needs a source")

    def process(self, p, P="process"):
        """process (or a process.json for exec, with P the path prefix: '' for none)."""
        self.obj(p, P or "", True)
        P = P + "." if P else ""
        self.boolean(p.get("terminal"), f"{P}terminal")
        cs = p.get("consoleSize")
        if self.obj(cs, f"{P}consoleSize"):
            self.u32(cs.get("height"), f"{P}consoleSize.height", True)
            self.u32(cs.get("width"), f"{P}consoleSize.width", True)
        self.abspath(p.get("cwd"), f"{P}cwd", True)
        for i, e in enumerate(self.strings(p.get("env"), f"{P}env")):
            if "=" not in e or e.startswith("="):
                self.err(f"{P}env[{i}]", f'"{e}" is not KEY=value')
        args = p.get("args")
        self.strings(args, f"{P}args")
        if not args:
            self.err(f"{P}args", "must not be empty")
        user = p.get("user")
        if not self.obj(user, f"{P}user"):
            user = {"uid": 0, "gid": 0}  # runc treats a missing user as root
        self.u32(user.get("uid"), f"{P}user.uid", True)
        self.u32(user.get("gid"), f"{P}user.gid", True)
        self.u32(user.get("umask"), f"{P}user.umask")
        for i, g in enumerate(self.arr(user.get("additionalGids"), f"{P}user.additionalGids")):
            self.u32(g, f"{P}user.additionalGids[{i}]", True)
        caps = p.get("capabilities")
        if self.obj(caps, f"{P}capabilities"):
            for s in T.CAPABILITY_SETS:
                # runtime-spec 1.1+: a name that maps to no capability is a warning for the
                # runtime to log (pyrunc does, at create), not an error.
                for i, name in enumerate(self.arr(caps.get(s), f"{P}capabilities.{s}")):
                    self.string(name, f"{P}capabilities.{s}[{i}]", True)
        seen = set()
        for i, r in enumerate(self.arr(p.get("rlimits"), f"{P}rlimits")):
            path = f"{P}rlimits[{i}]"
            self.obj(r, path, True)
            t = r.get("type")
            self.enum(t, f"{path}.type", T.RLIMITS, "rlimit")
            if t in seen:
                self.err(f"{path}.type", f'duplicate rlimit "{t}"')
            seen.add(t)
            self.u64(r.get("soft"), f"{path}.soft", True)
            self.u64(r.get("hard"), f"{path}.hard", True)
            if r["soft"] > r["hard"]:
                self.err(f"{path}.soft", f"soft limit {r['soft']} exceeds hard limit {r['hard']}")
        self.boolean(p.get("noNewPrivileges"), f"{P}noNewPrivileges")
        self.string(p.get("apparmorProfile"), f"{P}apparmorProfile")
        self.string(p.get("selinuxLabel"), f"{P}selinuxLabel")
        self.integer(p.get("oomScoreAdj"), f"{P}oomScoreAdj", -1000, 1000)
        sch = p.get("scheduler")
        if self.obj(sch, f"{P}scheduler"):
            self.enum(sch.get("policy"), f"{P}scheduler.policy", T.SCHED_POLICIES, "scheduler policy")
            self.integer(sch.get("nice"), f"{P}scheduler.nice", -20, 19)
            self.integer(sch.get("priority"), f"{P}scheduler.priority", 0, 99)
            for i, f in enumerate(self.arr(sch.get("flags"), f"{P}scheduler.flags")):
                self.enum(f, f"{P}scheduler.flags[{i}]", T.SCHED_FLAGS, "scheduler flag")
            for k in ("runtime", "deadline", "period"):
                self.u64(sch.get(k), f"{P}scheduler.{k}")
        io = p.get("ioPriority")
        if self.obj(io, f"{P}ioPriority"):
            self.enum(io.get("class"), f"{P}ioPriority.class", T.IOPRIO_CLASSES, "ioprio class")
            self.integer(io.get("priority"), f"{P}ioPriority.priority", 0, 7)
        aff = p.get("execCPUAffinity")
        if self.obj(aff, f"{P}execCPUAffinity"):
            for k in ("initial", "final"):
                self.string(aff.get(k), f"{P}execCPUAffinity.{k}")

    def hooks(self, h):
        self.obj(h, "hooks", True)
        for name, entries in h.items():
            if name not in T.HOOKS:
                continue  # unknown properties are ignored
            for i, e in enumerate(self.arr(entries, f"hooks.{name}")):
                path = f"hooks.{name}[{i}]"
                self.obj(e, path, True)
                self.abspath(e.get("path"), f"{path}.path", True)
                self.strings(e.get("args"), f"{path}.args")
                self.strings(e.get("env"), f"{path}.env")
                t = e.get("timeout")
                if t is not None:
                    self.integer(t, f"{path}.timeout", 1, _I64[1])

    def linux(self, lx):
        ns = {}
        for i, n in enumerate(self.arr(lx.get("namespaces"), "linux.namespaces")):
            path = f"linux.namespaces[{i}]"
            self.obj(n, path, True)
            t = n.get("type")
            self.enum(t, f"{path}.type", T.NAMESPACES, "namespace type")
            if t in ns:
                self.err(f"{path}.type", f'duplicate namespace "{t}"')
            nspath = n.get("path") or None  # "" means "make a new one", as in runc
            self.abspath(nspath, f"{path}.path")
            ns[t] = nspath
        for key in ("uidMappings", "gidMappings"):
            for i, m in enumerate(self.arr(lx.get(key), f"linux.{key}")):
                self.mapping(m, f"linux.{key}[{i}]")
        to = lx.get("timeOffsets")
        if self.obj(to, "linux.timeOffsets"):
            for k, off in to.items():
                path = f"linux.timeOffsets.{k}"
                if k not in _TIME_CLOCKS:
                    self.err(path, f'unknown clock "{k}" (want boottime or monotonic)')
                self.obj(off, path, True)
                self.i64(off.get("secs"), f"{path}.secs")
                self.integer(off.get("nanosecs"), f"{path}.nanosecs", 0, 999_999_999)
        for i, d in enumerate(self.arr(lx.get("devices"), "linux.devices")):
            path = f"linux.devices[{i}]"
            self.obj(d, path, True)
            t = d.get("type")
            self.enum(t, f"{path}.type", T.DEVICE_TYPES, "device type")
            self.abspath(d.get("path"), f"{path}.path", True)
            self.i64(d.get("major"), f"{path}.major", t != "p")
            self.i64(d.get("minor"), f"{path}.minor", t != "p")
            self.u32(d.get("fileMode"), f"{path}.fileMode")
            self.u32(d.get("uid"), f"{path}.uid")
            self.u32(d.get("gid"), f"{path}.gid")
        nd = lx.get("netDevices")
        if self.obj(nd, "linux.netDevices"):
            targets = {}
            for k, d in nd.items():
                path = f"linux.netDevices.{k}"
                self.ifname(k, path)
                self.obj(d, path, True)
                new = d.get("name")
                if self.string(new, f"{path}.name") and new:
                    self.ifname(new.replace("%d", "0"), f"{path}.name")
                new = new or k
                if "%d" not in new:  # a template lets the kernel pick a free name
                    if new in targets:
                        self.err(f"{path}.name", f'"{new}" is also the name for '
                                 f"linux.netDevices.{targets[new]}")
                    targets[new] = k
        self.string(lx.get("cgroupsPath"), "linux.cgroupsPath")
        rp = lx.get("rootfsPropagation")
        if rp is not None and rp != "":
            self.enum(rp, "linux.rootfsPropagation", T.PROPAGATION, "propagation")
        for key in ("maskedPaths", "readonlyPaths"):
            for i, s in enumerate(self.arr(lx.get(key), f"linux.{key}")):
                self.abspath(s, f"linux.{key}[{i}]", True)
        self.string(lx.get("mountLabel"), "linux.mountLabel")
        per = lx.get("personality")
        if self.obj(per, "linux.personality"):
            self.enum(per.get("domain"), "linux.personality.domain", T.PERSONALITY_DOMAINS,
                      "personality domain")
            for i, f in enumerate(self.arr(per.get("flags"), "linux.personality.flags")):
                self.enum(f, f"linux.personality.flags[{i}]", T.PERSONALITY_FLAGS, "personality flag")
        self.str_map(lx.get("sysctl"), "linux.sysctl")
        if lx.get("seccomp") is not None:
            self.seccomp(lx["seccomp"])
        if lx.get("resources") is not None:
            self.resources(lx["resources"])
        self.obj(lx.get("intelRdt"), "linux.intelRdt")
        return ns

    def seccomp(self, s):
        self.obj(s, "linux.seccomp", True)
        self.enum(s.get("defaultAction"), "linux.seccomp.defaultAction", T.SECCOMP_ACTIONS,
                  "seccomp action")
        self.u32(s.get("defaultErrnoRet"), "linux.seccomp.defaultErrnoRet")
        for i, a in enumerate(self.arr(s.get("architectures"), "linux.seccomp.architectures")):
            self.enum(a, f"linux.seccomp.architectures[{i}]", T.SECCOMP_ARCHES, "seccomp architecture")
        for i, f in enumerate(self.arr(s.get("flags"), "linux.seccomp.flags")):
            self.enum(f, f"linux.seccomp.flags[{i}]", T.SECCOMP_FLAGS, "seccomp flag")
        self.abspath(s.get("listenerPath"), "linux.seccomp.listenerPath")
        self.string(s.get("listenerMetadata"), "linux.seccomp.listenerMetadata")
        notify = s.get("defaultAction") == "SCMP_ACT_NOTIFY"
        for i, sc in enumerate(self.arr(s.get("syscalls"), "linux.seccomp.syscalls")):
            path = f"linux.seccomp.syscalls[{i}]"
            self.obj(sc, path, True)
            names = sc.get("names")
            self.strings(names, f"{path}.names")
            if not names:
                self.err(f"{path}.names", "must list at least one syscall")
            act = sc.get("action")
            self.enum(act, f"{path}.action", T.SECCOMP_ACTIONS, "seccomp action")
            notify = notify or act == "SCMP_ACT_NOTIFY"
            self.u32(sc.get("errnoRet"), f"{path}.errnoRet")
            if sc.get("errnoRet") is not None and act not in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
                self.err(f"{path}.errnoRet", f"only SCMP_ACT_ERRNO and SCMP_ACT_TRACE take errnoRet, not {act}")
            for j, a in enumerate(self.arr(sc.get("args"), f"{path}.args")):
                ap = f"{path}.args[{j}]"
                self.obj(a, ap, True)
                self.integer(a.get("index"), f"{ap}.index", 0, 5, True)
                self.u64(a.get("value"), f"{ap}.value", True)
                self.u64(a.get("valueTwo"), f"{ap}.valueTwo")
                self.enum(a.get("op"), f"{ap}.op", T.SECCOMP_OPERATORS, "seccomp operator")
        if notify and not s.get("listenerPath"):
            self.err("linux.seccomp.listenerPath", "SCMP_ACT_NOTIFY needs a listenerPath")

    def resources(self, r):
        P = "linux.resources"
        self.obj(r, P, True)
        for i, d in enumerate(self.arr(r.get("devices"), f"{P}.devices")):
            path = f"{P}.devices[{i}]"
            self.obj(d, path, True)
            if type(d.get("allow")) is not bool:
                self.err(f"{path}.allow", "required boolean is missing" if d.get("allow") is None
                         else f"must be a boolean, not {_tname(d['allow'])}")
            t = d.get("type")
            if t is not None and t != "a":
                self.enum(t, f"{path}.type", T.DEVICE_TYPES, "device type")
            if d.get("major") is not None:
                self.i64(d["major"], f"{path}.major")
            if d.get("minor") is not None:
                self.i64(d["minor"], f"{path}.minor")
            acc = d.get("access")
            if self.string(acc, f"{path}.access") and not _ACCESS.issuperset(acc):
                self.err(f"{path}.access", f'"{acc}" must be made of r, w and m')
        m = r.get("memory")
        if self.obj(m, f"{P}.memory"):
            for k in ("limit", "reservation", "swap", "kernel", "kernelTCP"):
                self.i64(m.get(k), f"{P}.memory.{k}")
            self.integer(m.get("swappiness"), f"{P}.memory.swappiness", 0, _U64, what="uint64")
            for k in ("disableOOMKiller", "useHierarchy", "checkBeforeUpdate"):
                self.boolean(m.get(k), f"{P}.memory.{k}")
        c = r.get("cpu")
        if self.obj(c, f"{P}.cpu"):
            for k in ("shares", "period", "realtimePeriod", "burst"):
                self.u64(c.get(k), f"{P}.cpu.{k}")
            for k in ("quota", "realtimeRuntime", "idle"):
                self.i64(c.get(k), f"{P}.cpu.{k}")
            self.string(c.get("cpus"), f"{P}.cpu.cpus")
            self.string(c.get("mems"), f"{P}.cpu.mems")
        p = r.get("pids")
        if self.obj(p, f"{P}.pids"):
            self.i64(p.get("limit"), f"{P}.pids.limit")
        b = r.get("blockIO")
        if self.obj(b, f"{P}.blockIO"):
            self.integer(b.get("weight"), f"{P}.blockIO.weight", 0, 65535, what="uint16")
            self.integer(b.get("leafWeight"), f"{P}.blockIO.leafWeight", 0, 65535, what="uint16")
            for i, d in enumerate(self.arr(b.get("weightDevice"), f"{P}.blockIO.weightDevice")):
                path = f"{P}.blockIO.weightDevice[{i}]"
                self.obj(d, path, True)
                self.i64(d.get("major"), f"{path}.major", True)
                self.i64(d.get("minor"), f"{path}.minor", True)
                self.integer(d.get("weight"), f"{path}.weight", 0, 65535, what="uint16")
                self.integer(d.get("leafWeight"), f"{path}.leafWeight", 0, 65535, what="uint16")
            for key in ("throttleReadBpsDevice", "throttleWriteBpsDevice",
                        "throttleReadIOPSDevice", "throttleWriteIOPSDevice"):
                for i, d in enumerate(self.arr(b.get(key), f"{P}.blockIO.{key}")):
                    path = f"{P}.blockIO.{key}[{i}]"
                    self.obj(d, path, True)
                    self.i64(d.get("major"), f"{path}.major", True)
                    self.i64(d.get("minor"), f"{path}.minor", True)
                    self.u64(d.get("rate"), f"{path}.rate", True)
        for i, h in enumerate(self.arr(r.get("hugepageLimits"), f"{P}.hugepageLimits")):
            path = f"{P}.hugepageLimits[{i}]"
            self.obj(h, path, True)
            self.string(h.get("pageSize"), f"{path}.pageSize", True)
            self.u64(h.get("limit"), f"{path}.limit", True)
        n = r.get("network")
        if self.obj(n, f"{P}.network"):
            self.u32(n.get("classID"), f"{P}.network.classID")
            for i, pr in enumerate(self.arr(n.get("priorities"), f"{P}.network.priorities")):
                path = f"{P}.network.priorities[{i}]"
                self.obj(pr, path, True)
                self.string(pr.get("name"), f"{path}.name", True)
                self.u32(pr.get("priority"), f"{path}.priority", True)
        rd = r.get("rdma")
        if self.obj(rd, f"{P}.rdma"):
            for k, v in rd.items():
                self.obj(v, f"{P}.rdma.{k}", True)
                self.u32(v.get("hcaHandles"), f"{P}.rdma.{k}.hcaHandles")
                self.u32(v.get("hcaObjects"), f"{P}.rdma.{k}.hcaObjects")
        self.str_map(r.get("unified"), f"{P}.unified")

    def cross(self, c, lx, ns):
        """Rules that tie fields together (runc's configs/validate)."""
        if "user" not in ns:
            for key in ("uidMappings", "gidMappings"):
                if lx.get(key):
                    self.err(f"linux.{key}", "mappings need a user namespace (linux.namespaces has no \"user\")")
        elif ns["user"] is None and not (lx.get("uidMappings") and lx.get("gidMappings")):
            key = "uidMappings" if not lx.get("uidMappings") else "gidMappings"
            self.err(f"linux.{key}", "a new user namespace needs uidMappings and gidMappings")
        if lx.get("timeOffsets"):
            if "time" not in ns:
                self.err("linux.timeOffsets", "time offsets need a time namespace (linux.namespaces has no \"time\")")
            if ns["time"] is not None:
                self.err("linux.timeOffsets", "time offsets cannot be set when joining a time namespace by path")
        for i, m in enumerate(c.get("mounts") or ()):
            opts = m.get("options") or ()
            if ("idmap" in opts or "ridmap" in opts) and m.get("uidMappings") is None \
                    and not (lx.get("uidMappings") and lx.get("gidMappings")):
                self.err(f"mounts[{i}].options", "idmap without uidMappings/gidMappings "
                         "needs linux.uidMappings and linux.gidMappings to use")
        # New or joined by path (CRI runtimes hand over a prepared one, as runc allows);
        # that a joined one is not the runtime's own is checked when devices move.
        if lx.get("netDevices") and "network" not in ns:
            self.err("linux.netDevices", "moving network devices needs a network namespace "
                     '(linux.namespaces has no "network")')
        if c.get("hostname") and "uts" not in ns:
            self.err("hostname", "setting the hostname needs a UTS namespace")
        if c.get("domainname") and "uts" not in ns:
            self.err("domainname", "setting the domainname needs a UTS namespace")
        for key in (lx.get("sysctl") or ()):
            need = _sysctl_namespace(key)
            if need and need not in ns:
                self.err(f"linux.sysctl.{key}",
                         f"sysctl is not allowed in the host's {need} namespace (linux.namespaces has no \"{need}\")")
            if need is None:
                self.err(f"linux.sysctl.{key}", "sysctl is not namespaced and cannot be set in a container")
        if "mount" not in ns:
            # runc's validate.security; without one the container shares its caller's mounts
            for key in ("maskedPaths", "readonlyPaths"):
                if lx.get(key):
                    self.err(f"linux.{key}", "unable to restrict sys entries without a private "
                             'mount namespace (linux.namespaces has no "mount")')
        if "rootfsPropagation" in lx and lx.get("rootfsPropagation") and "mount" not in ns:
            self.err("linux.rootfsPropagation", "needs a mount namespace")
        if lx.get("cgroupsPath") and type(lx["cgroupsPath"]) is str and "\0" in lx["cgroupsPath"]:
            self.err("linux.cgroupsPath", "must not contain NUL")


def _is_version(v: str) -> bool:
    """A runtime-spec 1.x semver: 1.MINOR.PATCH with an optional -pre or +build suffix.
    (No `re`: this module sits on pyrunc's start-up path and re costs milliseconds to import.)"""
    core, suffix = v, ""
    for i, ch in enumerate(v):
        if ch in "-+":
            core, suffix = v[:i], v[i + 1:]
            break
    parts = core.split(".")
    if len(parts) != 3 or parts[0] != "1" or not all(p.isdigit() and p.isascii() for p in parts):
        return False
    return all(c.isalnum() and c.isascii() or c in ".+-" for c in suffix)


def _sysctl_namespace(key: str):
    """The namespace a sysctl key belongs to, or None if the kernel does not namespace it."""
    k = key.replace("/", ".")
    if k in _IPC_SYSCTLS or k.startswith("fs.mqueue."):
        return "ipc"
    if k.startswith("net."):
        return "network"
    if k in ("kernel.hostname", "kernel.domainname"):
        return "uts"
    return None


def _tname(v) -> str:
    if v is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(v), type(v).__name__)


def validate_config(cfg: dict, *, source: str = "config.json") -> None:
    """Raise SpecError for the first problem in a runtime config; return None when valid."""
    _V(source).config(cfg)


def load_config(path, *, validate: bool = True) -> dict:
    """Read and (by default) validate a bundle's config.json; errors name the file."""
    import json
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise SpecError("", "does not exist", source=source) from None
    except OSError as e:
        raise SpecError("", f"cannot read: {e.strerror}", source=source) from None
    try:
        cfg = json.loads(data)
    except ValueError as e:
        raise SpecError("", f"invalid JSON: {e}", source=source) from None
    if validate:
        validate_config(cfg, source=source)
    return cfg


def validate_process(p: dict, *, source: str = "process.json") -> None:
    """Check a process document (`pyrunc exec --process FILE`); paths have no prefix."""
    _V(source).process(p, "")


def validate_state(doc: dict, *, source: str = "state") -> None:
    """Check a state document (runtime.md#state) as `pyrunc state` prints it."""
    v = _V(source)
    v.obj(doc, "", True)
    v.string(doc.get("ociVersion"), "ociVersion", True)
    v.string(doc.get("id"), "id", True)
    if not doc["id"]:
        v.err("id", "must not be empty")
    v.enum(doc.get("status"), "status", ("creating", "created", "running", "stopped"), "status")
    pid = doc.get("pid")
    if doc["status"] in ("created", "running"):
        v.integer(pid, "pid", 1, 1 << 22, True)
    elif pid is not None:
        v.integer(pid, "pid", 0, 1 << 22)
    v.abspath(doc.get("bundle"), "bundle", True)
    v.str_map(doc.get("annotations"), "annotations")
