"""A fresh Debian 12 root with a real systemd booted in it, for installing the .deb.

The root comes from `debootstrap` (the mirror is the one this machine's apt uses), cached as a
tarball under CACHE keyed by its inputs, and unpacked afresh for each test module. systemd runs
as PID 1 of private namespaces (PID, mount, network, UTS, IPC, cgroup), chrooted into that root.
The root is a separate tree, so the host's /etc, /var and /tmp are out of reach; what is shared
with the host is fenced the way container managers do it:
- /sys is a new sysfs instance, mounted read-only (udev, and every unit that needs a writable
  /sys, stand down); /proc/sys and /proc/sysrq-trigger are read-only (no sysctl reaches the host
  kernel);
- /dev is a tmpfs with only null, zero, full, random, urandom and tty bound in, its own devpts
  and shm: no disk, no host console;
- `container=` tells systemd it is one; every unit of sysinit.target and timers.target except
  journald is masked, as in booted.py.
Starting, driving and ending it is booted.py's NamespacedSystemd: commands run inside with
`nsenter` into PID 1's namespaces and, here, its root; `apt-get` leaves out the network namespace
(`host_network=True`) so that it reaches the mirror, while the service only has its own loopback.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from booted import NamespacedSystemd, units_to_mask

CACHE = Path(os.environ.get("A10TTS_CI_CACHE", "/var/cache/a10tts-ci"))
RECIPE = "2"  # raise when root_tarball() changes what it makes
SUITE = "bookworm"
INCLUDE = "systemd,systemd-sysv,dbus,python3,python3-venv"
HOST_TOOLS = {  # Debian package: a command that succeeds once it is installed
    "debootstrap": ["debootstrap", "--version"],
    "lintian": ["lintian", "--version"],
    "dpkg-dev": ["dpkg-shlibdeps", "--version"],
    "python3-venv": ["/usr/bin/python3", "-c", "import ensurepip"],  # the build's venv
    "curl": ["curl", "--version"],  # the README's request to the installed service
}
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
       "HOME": "/root", "DEBIAN_FRONTEND": "noninteractive", "TERM": "dumb"}

BOOT_SCRIPT = r"""
set -eu
mount --bind "$ROOT" "$ROOT"
mount -t proc -o nosuid,nodev,noexec proc "$ROOT/proc"
for path in sys sysrq-trigger; do
    [ -e "$ROOT/proc/$path" ] || continue
    mount --bind "$ROOT/proc/$path" "$ROOT/proc/$path"; mount -o remount,bind,ro "$ROOT/proc/$path"
done
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$ROOT/sys"
mount -t tmpfs -o mode=0755,nosuid tmpfs "$ROOT/dev"
for node in null zero full random urandom tty; do touch "$ROOT/dev/$node"; mount --bind "/dev/$node" "$ROOT/dev/$node"; done
mkdir "$ROOT/dev/pts" "$ROOT/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$ROOT/dev/pts"
ln -s pts/ptmx "$ROOT/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$ROOT/dev/shm"
ln -s /proc/self/fd "$ROOT/dev/fd"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$ROOT/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$ROOT/tmp"
mkdir -p "$ROOT/run/systemd/system" "$ROOT/run/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' > "$ROOT/run/systemd/journald.conf.d/volatile.conf"
for unit in $MASK; do ln -sf /dev/null "$ROOT/run/systemd/system/$unit"; done
exec chroot "$ROOT" /lib/systemd/systemd --system --unit=basic.target
"""


def ensure_host_tools() -> None:
    """What building, linting and debootstrapping need, from this machine's apt (CI runs as root)."""
    missing = [package for package, probe in HOST_TOOLS.items() if not _succeeds(probe)]
    if missing:
        install = ("apt-get", "install", "-y", "--no-install-recommends", *missing)
        try:
            _run(*install)
        except RuntimeError:  # package lists missing or stale
            _run("apt-get", "update")
            _run(*install)


def _succeeds(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def debian_mirror() -> str:
    """The Debian archive this machine's apt uses for SUITE (never a host name of ours)."""
    texts = [p.read_text() for p in sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]
    for stanza in (s for text in texts for s in re.split(r"\n\s*\n", text)):
        fields = dict(re.findall(r"(?m)^(\w[\w-]*):\s*(.*)$", stanza))
        if "deb" in fields.get("Types", "").split() and SUITE in fields.get("Suites", "").split():
            return fields["URIs"].split()[0]
    lists = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    for line in (ln for p in lists if p.is_file() for ln in p.read_text().splitlines()):
        found = re.match(rf"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", line)
        if found:
            return found.group(1)
    raise RuntimeError(f"no `deb ... {SUITE}` source in /etc/apt: cannot debootstrap Debian 12")


def root_tarball() -> Path:
    """A debootstrapped SUITE with apt configured like this machine's, made once per set of inputs."""
    mirror = debian_mirror()
    acquire = subprocess.run(["apt-config", "dump", "Acquire"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256("\n".join([RECIPE, SUITE, INCLUDE, mirror, acquire]).encode()).hexdigest()[:16]
    tarball = CACHE / "roots" / f"{SUITE}-{key}.tar"
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with open(tarball.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # test runs sharing the cache debootstrap once
        if not tarball.exists():
            _debootstrap(tarball, mirror, acquire)
    return tarball


def _debootstrap(tarball: Path, mirror: str, acquire: str) -> None:
    build = tarball.parent / f"{tarball.stem}.build"
    shutil.rmtree(build, ignore_errors=True)
    _run("debootstrap", "--variant=minbase", f"--include={INCLUDE}", SUITE, str(build), mirror)
    # Same Acquire settings as the host (a snapshot mirror's Valid-Until, proxies), same resolver.
    (build / "etc/apt/apt.conf.d/00host-acquire").write_text(acquire)
    shutil.copyfile("/etc/resolv.conf", build / "etc/resolv.conf")
    _run("chroot", str(build), "apt-get", "clean")
    partial = tarball.with_suffix(".partial")
    _run("tar", "-C", str(build), "--numeric-owner", "-cf", str(partial), ".")
    partial.rename(tarball)
    shutil.rmtree(build)
    for stale in tarball.parent.glob(f"{SUITE}-*.tar"):
        if stale != tarball:
            stale.unlink()


def _run(*cmd: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if result.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")


class ChrootSystemd(NamespacedSystemd):
    """Debian 12's systemd booted in `root`, a separate tree, behind BOOT_SCRIPT's fences."""

    ENTER = (*NamespacedSystemd.ENTER, "-r", "-w")  # the root's files, not the host's
    RUN_ENV = ENV

    def __init__(self, root: Path, log: Path):
        self.root = root
        env = dict(ENV, ROOT=str(root), MASK=" ".join(units_to_mask(root)), container="a10tts-test")
        # --kill-child: should this process die (a killed test run), PID 1 and all in it go too.
        super().__init__(["--kill-child"], ["sh", "-c", BOOT_SCRIPT], log, env)

    @classmethod
    def unpack(cls, tarball: Path, root: Path, log: Path) -> ChrootSystemd:
        root.mkdir()
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-xf", str(tarball)], check=True)
        return cls(root, log)

    def sh(self, script: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run("sh", "-ec", script, **kwargs)
