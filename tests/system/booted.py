"""A real systemd booted as PID 1 of private namespaces, with the host kept out of its reach.

`unshare --pid --mount --uts --ipc --net --cgroup` gives systemd its own PID 1, mounts,
loopback and cgroup root (it mounts the cgroup hierarchies itself, so the service's memory
stays accounted to the test's cgroup), but the filesystem underneath is the host's: an
unguarded boot runs systemd-tmpfiles (`--remove` empties /tmp), sysctl, modules-load, binfmt,
remount-fs... on the host. So before `exec systemd` the boot script
- mounts tmpfs on /run, /tmp, /var/tmp (binding back the checkout, its venv and the test's
  files when they live there) and lays overlays (tmpfs upper) on /etc, /var and
  /usr/bin: users, unit state, journals and the `/usr/bin/a10tts` wrapper stay in memory;
- masks every unit of sysinit.target and timers.target except journald's.
Killing PID 1 ends everything in it; nothing of it outlives the test (cgroups aside).
NamespacedSystemd (start, find PID 1, drive with nsenter, kill) is shared with deb_chroot.py,
which boots a Debian root instead of the host's filesystem.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

KEEP_UNITS = ("systemd-journald",)  # journald and its sockets: `journalctl` needs them
ALSO_MASKED = ("systemd-remount-fs.service", "proc-sys-fs-binfmt_misc.automount")

BOOT_SCRIPT = r"""
set -eu
mount -t tmpfs -o mode=0755 tmpfs /run
# Paths the tests need that live under /tmp or /var/tmp (a checkout or CI clone there, its
# .venv, the test's own temporary files) are carried through the fresh tmpfs by bind mounts.
keep_under_tmp() { for keep in $KEEP; do case "$keep" in /tmp/*|/var/tmp/*) echo "$keep";; esac; done; }
i=0; for keep in $(keep_under_tmp); do mkdir -p /run/.keep/$i; mount --bind "$keep" /run/.keep/$i; i=$((i+1)); done
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
i=0; for keep in $(keep_under_tmp); do mkdir -p "$keep"; mount --bind /run/.keep/$i "$keep"; i=$((i+1)); done
if mountpoint -q /sys/fs/cgroup; then umount -R /sys/fs/cgroup; fi
mkdir -p /run/.boot
mount -t tmpfs -o mode=0700 tmpfs /run/.boot
for dir in /etc /var /usr/bin; do
    layer=/run/.boot/$(echo "$dir" | tr / _)
    mkdir -p "$layer/upper" "$layer/work"
    mount -t overlay overlay -o "lowerdir=$dir,upperdir=$layer/upper,workdir=$layer/work" "$dir"
done
mkdir -p /run/systemd/system /run/systemd/journald.conf.d
printf '[Journal]\nStorage=volatile\n' > /run/systemd/journald.conf.d/volatile.conf
for unit in $MASK; do ln -sf /dev/null "/run/systemd/system/$unit"; done
eval "$SETUP"
exec /lib/systemd/systemd --system --unit=basic.target
"""


def units_to_mask(root: Path = Path("/")) -> list[str]:
    """Every unit of sysinit.target and timers.target of the system in `root`, but journald's."""
    names = set(ALSO_MASKED)
    for base in ("lib/systemd/system", "etc/systemd/system"):
        for target in ("sysinit.target.wants", "timers.target.wants"):
            path = root / base / target
            if path.is_dir():
                names.update(p.name for p in path.iterdir() if not p.name.endswith(".target"))
    return sorted(n for n in names if not n.startswith(KEEP_UNITS))


class NamespacedSystemd:
    """systemd as PID 1 of the private namespaces that `unshare` makes for `argv` (a script that ends
    by exec'ing systemd), driven with nsenter; the booting and its fences are the subclass's."""

    # What `run` enters besides the network: mounts, PIDs, UTS, IPC (a chroot adds its root and cwd).
    ENTER: tuple[str, ...] = ("-m", "-p", "-u", "-i")
    RUN_ENV: dict[str, str] | None = None  # the environment of `run`'s commands (None: this process's)

    def __init__(self, unshare_options: list[str], argv: list[str], log: Path, env: dict[str, str]):
        with log.open("w") as out:
            self._unshare = subprocess.Popen(
                ["unshare", "--pid", "--fork", *unshare_options, "--mount", "--uts", "--ipc", "--net", "--cgroup",
                 "--propagation", "private", *argv],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.log = log
        try:
            self.pid = self._find_pid1()
        except RuntimeError:
            self._unshare.kill()
            raise

    def _find_pid1(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        children = Path(f"/proc/{self._unshare.pid}/task/{self._unshare.pid}/children")
        while time.monotonic() < deadline:
            if self._unshare.poll() is not None:
                raise RuntimeError(f"the namespace exited: {self.log.read_text()}")
            pids = children.read_text().split() if children.exists() else []
            if pids and Path(f"/proc/{pids[0]}/exe").resolve().name == "systemd":
                return int(pids[0])
            time.sleep(0.05)
        raise RuntimeError(f"systemd did not start: {self.log.read_text()}")

    def wait_running(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"systemd is {state!r} after {timeout} s: {self.run('systemctl', '--failed').stdout}")

    def run(self, *cmd: str, check: bool = True, timeout: float = 300, host_network: bool = False,
            input: str | None = None) -> subprocess.CompletedProcess:
        """A command inside the namespaces (mounts, PIDs and network of the booted system);
        `host_network=True` leaves out the network namespace (the host's network: apt)."""
        spaces = [*self.ENTER, *([] if host_network else ["-n"])]
        result = subprocess.run(["nsenter", "-t", str(self.pid), *spaces, *cmd], capture_output=True, text=True,
                                timeout=timeout, env=self.RUN_ENV, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"{shlex.join(cmd)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def in_network(self, *cmd: str) -> list[str]:
        """argv that runs `cmd` in the booted system's network only (the host's files, its loopback)."""
        return ["nsenter", "-t", str(self.pid), "-n", *cmd]

    def systemctl(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.run("systemctl", "--no-pager", *args, check=check, timeout=timeout)

    def show(self, unit: str, prop: str) -> str:
        return self.systemctl("show", "-p", prop, "--value", unit).stdout.strip()

    def journal(self, unit: str) -> str:
        return self.run("journalctl", "--no-pager", "-o", "cat", "-u", unit, check=False).stdout

    def shutdown(self) -> None:
        if self._unshare.poll() is None:
            os.kill(self.pid, signal.SIGKILL)  # PID 1 of the namespace: the kernel kills the rest
            try:
                self._unshare.wait(30)
            except subprocess.TimeoutExpired:
                self._unshare.kill()


class BootedSystemd(NamespacedSystemd):
    """The host's own systemd, booted over the host's filesystem behind BOOT_SCRIPT's fences."""

    def __init__(self, setup: str, log: Path, env: dict[str, str] | None = None):
        """`setup`: shell commands run inside the namespaces before systemd starts (with `env`)."""
        keep = {str(REPO), sys.prefix, str(log.parent.resolve())}
        env = dict(os.environ, **(env or {}), MASK=" ".join(units_to_mask()), SETUP=setup, KEEP=" ".join(sorted(keep)))
        super().__init__(["--mount-proc"], ["bash", "-c", BOOT_SCRIPT], log, env)
