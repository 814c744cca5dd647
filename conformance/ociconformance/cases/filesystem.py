"""The container's filesystem (config.md "Root", "Mounts"; config-linux.md "Devices",
"Masked Paths", "Readonly Paths", "Mount Label", "Rootfs Mount Propagation")."""

import os

from .. import host
from ..context import parse_kv
from ..registry import case


def _mountinfo(out: str) -> dict:
    """mountinfo lines by mount point: {mp: (per-mount options, optional fields, fstype,
    super options)}; the last mount on a point wins, as the kernel shows it."""
    mounts = {}
    for line in out.splitlines():
        left, sep, right = line.partition(" - ")
        f, r = left.split(), right.split()
        if not sep or len(f) < 6 or len(r) < 3:
            continue
        mounts[f[4]] = (set(f[5].split(",")), f[6:], r[0], set(r[2].split(",")))
    return mounts


@case("mounts")
def mounts(ctx):
    """Mounts are made in order with their type, options and data: a tmpfs with size and
    mode, a read-only bind of a host directory, a bind stacked on the tmpfs."""
    b = ctx.bundle()
    src = ctx.path("bind-src")
    os.makedirs(src)
    with open(os.path.join(src, "hello"), "w") as f:
        f.write("from the host\n")
    b.config["mounts"] += [
        {"destination": "/mnt/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "size=1m", "mode=1750"]},
        {"destination": "/mnt/tmp/bound", "type": "bind", "source": src,
         "options": ["rbind", "ro"]},
    ]
    out = ctx.run(b, "cat /proc/self/mountinfo; echo hello=$(cat /mnt/tmp/bound/hello);"
                     " echo mode=$(stat -c %a /mnt/tmp);"
                     " touch /mnt/tmp/bound/x 2>/dev/null; echo rowrite=$?;"
                     " touch /mnt/tmp/y; echo tmpwrite=$?")
    mi, kv = _mountinfo(out), parse_kv(out)
    t = mi.get("/mnt/tmp")
    ctx.check(t and t[2] == "tmpfs", f"/mnt/tmp is not a tmpfs: {t}")
    ctx.check({"nosuid", "nodev"} <= t[0], f"/mnt/tmp options {sorted(t[0])}")
    ctx.check("size=1024k" in t[3], f"/mnt/tmp data {sorted(t[3])}, expected size=1024k")
    ctx.check(kv.get("mode") == "1750", f"/mnt/tmp mode {kv.get('mode')!r}, expected 1750")
    bm = mi.get("/mnt/tmp/bound")
    ctx.check(bm and "ro" in bm[0], f"/mnt/tmp/bound is not a read-only mount: {bm}")
    ctx.check(kv.get("hello") == "from the host", f"bind content {kv.get('hello')!r}")
    ctx.check(kv.get("rowrite") not in (None, "0"), "a write to the ro bind succeeded")
    ctx.check(kv.get("tmpwrite") == "0", "a write to the tmpfs failed")
    ctx.check(not os.path.exists(os.path.join(src, "x")), "the write reached the host")


@case("root_readonly_true")
def root_readonly_true(ctx):
    """root.readonly: the root filesystem is mounted read-only; writes fail with EROFS,
    while mounts on top (/dev/shm) stay writable."""
    b = ctx.bundle()
    b.config["root"]["readonly"] = True
    out = ctx.run(b, "cat /proc/self/mountinfo; touch /occ-x 2>/dev/null; echo rootw=$?;"
                     " touch /dev/shm/x; echo shmw=$?")
    mi, kv = _mountinfo(out), parse_kv(out)
    ctx.check("/" in mi and "ro" in mi["/"][0], f"/ options {sorted(mi.get('/', [set()])[0])}")
    ctx.check(kv.get("rootw") not in (None, "0"), "a write to / succeeded")
    ctx.check(kv.get("shmw") == "0", "a write to /dev/shm failed")
    ctx.check(not os.path.exists(os.path.join(b.rootfs, "occ-x")), "the write reached rootfs")


@case("linux_devices")
def linux_devices(ctx):
    """linux.devices are created with type, major/minor, mode, uid and gid; the default
    devices (null, zero, full, random, urandom, tty) and /dev/fd, stdin/out/err, ptmx
    links exist."""
    b = ctx.bundle()
    b.config["linux"]["devices"] = [
        {"path": "/dev/occ-char", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640,
         "uid": 12, "gid": 34},
        {"path": "/dev/sub/occ-block", "type": "b", "major": 7, "minor": 0, "fileMode": 0o600,
         "uid": 0, "gid": 0},
        {"path": "/dev/occ-fifo", "type": "p", "fileMode": 0o620},
    ]
    b.config["linux"]["resources"]["devices"].append(
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"})
    names = ("occ-char", "sub/occ-block", "occ-fifo", "null", "zero", "full", "random",
             "urandom", "tty")
    script = "; ".join(f"echo {n}=$(stat -c '%F,%t,%T,%a,%u,%g' /dev/{n})" for n in names)
    script += "; for l in fd stdin stdout stderr ptmx; do echo $l=$(readlink /dev/$l); done"
    script += "; echo x > /dev/occ-char; echo wrote=$?"
    kv = parse_kv(ctx.run(b, script))
    want = {"occ-char": "character special file,1,3,640,12,34",
            "sub/occ-block": "block special file,7,0,600,0,0"}
    for n, w in want.items():
        ctx.check(kv.get(n) == w, f"/dev/{n}: {kv.get(n)!r}, expected {w!r}")
    fifo = kv.get("occ-fifo", "")
    ctx.check(fifo.startswith("fifo,") and fifo.split(",")[3] == "620",
              f"/dev/occ-fifo: {fifo!r}, expected a fifo with mode 620")
    defaults = {"null": "1,3", "zero": "1,5", "full": "1,7", "random": "1,8",
                "urandom": "1,9", "tty": "5,0"}
    for n, mm in defaults.items():
        got = kv.get(n, "")
        ctx.check(got.startswith("character special file,") and
                  ",".join(got.split(",")[1:3]) == mm,
                  f"default device /dev/{n}: {got!r}, expected char {mm}")
    links = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2"}
    for n, target in links.items():
        ctx.check(kv.get(n) == target, f"/dev/{n} -> {kv.get(n)!r}, expected {target}")
    ctx.check(kv.get("wrote") == "0", "writing to the allowed /dev/occ-char failed")


@case("linux_masked_paths")
def linux_masked_paths(ctx):
    """maskedPaths hide a directory (empty) and a file (empty, unreadable content) from the
    container; a masked path that does not exist is no error."""
    b = ctx.bundle()
    os.makedirs(os.path.join(b.rootfs, "masked-dir"))
    for p in ("masked-dir/secret", "masked-file"):
        with open(os.path.join(b.rootfs, p), "w") as f:
            f.write("secret\n")
    b.config["linux"]["maskedPaths"] = ["/masked-dir", "/masked-file", "/occ-not-there"]
    out = ctx.run(b, "echo dir=$(ls -A /masked-dir | wc -l); echo file=$(cat /masked-file"
                     " 2>/dev/null | wc -c); echo proc=$(wc -c < /proc/kcore 2>/dev/null)")
    kv = parse_kv(out)
    ctx.check(kv.get("dir") == "0", f"/masked-dir shows {kv.get('dir')} entries")
    ctx.check(kv.get("file") == "0", f"/masked-file shows {kv.get('file')} bytes")


@case("linux_readonly_paths")
def linux_readonly_paths(ctx):
    """readonlyPaths are read-only (a write fails) while the rest of the root stays
    writable; a read-only path that does not exist is no error."""
    b = ctx.bundle()
    os.makedirs(os.path.join(b.rootfs, "ro-dir"))
    with open(os.path.join(b.rootfs, "ro-file"), "w") as f:
        f.write("x\n")
    b.config["linux"]["readonlyPaths"] = ["/ro-dir", "/ro-file", "/occ-not-there"]
    out = ctx.run(b, "touch /ro-dir/x 2>/dev/null; echo dirw=$?;"
                     " echo y 2>/dev/null >> /ro-file; echo filew=$?;"
                     " touch /rw-x; echo rootw=$?; cat /ro-file")
    kv = parse_kv(out)
    ctx.check(kv.get("dirw") not in (None, "0"), "a write into /ro-dir succeeded")
    ctx.check(kv.get("filew") not in (None, "0"), "a write to /ro-file succeeded")
    ctx.check(kv.get("rootw") == "0", "a write elsewhere on the root failed")


@case("linux_mount_label")
def linux_mount_label(ctx):
    """mountLabel sets the SELinux context of the container's mounts (context= option)."""
    ctx.require(host.selinux())
    b = ctx.bundle()
    label = "system_u:object_r:container_file_t:s0:c1,c2"
    b.config["linux"]["mountLabel"] = label
    b.config["mounts"].append({"destination": "/mnt/lbl", "type": "tmpfs", "source": "tmpfs",
                               "options": ["size=1m"]})
    out = ctx.run(b, "ls -Zd /mnt/lbl")
    ctx.check(label in out, f"/mnt/lbl label {out.strip()!r}, expected {label}")


@case("linux_rootfs_propagation")
def linux_rootfs_propagation(ctx):
    """rootfsPropagation sets the propagation of the container's root mount, seen from
    inside (with CAP_SYS_ADMIN): after `mount --rbind / /t`, a new mount under / shows up
    under /t only when / is shared; an unbindable / cannot be bind-mounted at all."""
    script = ("mkdir -p /occ-t /occ-m /occ-s && touch /occ-s/example;"
              " mount --rbind / /occ-t 2>/dev/null; echo rbind=$?;"
              " mount --bind /occ-s /occ-m; echo bind=$?;"
              " test -e /occ-t/occ-m/example && echo propagated=1 || echo propagated=0")
    for prop in ("shared", "slave", "private", "unbindable"):
        b = ctx.bundle()
        b.config["linux"]["rootfsPropagation"] = prop
        for s in ("bounding", "effective", "permitted"):
            b.config["process"]["capabilities"][s].append("CAP_SYS_ADMIN")
        kv = parse_kv(ctx.run(b, script))
        if prop == "unbindable":
            ctx.check(kv.get("rbind") not in (None, "0"), "unbindable: / could be bind-mounted")
            continue
        ctx.check(kv.get("rbind") == "0" and kv.get("bind") == "0",
                  f"{prop}: the probe mounts failed: {kv}")
        want = "1" if prop == "shared" else "0"
        ctx.check(kv.get("propagated") == want,
                  f"{prop}: a mount under / {'did not propagate' if want == '1' else 'propagated'}"
                  " to a bind of / (expected " + ("shared" if want == "1" else "no") +
                  " propagation)")
