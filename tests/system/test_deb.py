"""The .deb from build to purge: lintian, then an operator's steps in a fresh Debian 12 under systemd.

The package is the CPU-torch build (`packaging/deb/build.py --torch cpu`); the root comes from
debootstrap and boots systemd 252 as PID 1 of private namespaces (deb_chroot.py). The operator
steps are those of the README's operator section (and docs/packaging.md), in the same order, each
marked `# README:` where it runs: install with apt (the service is enabled and fails once: no
model), read the journal, put the demo model in place, start, get audio over HTTP, `a10tts ctl
status`, edit a conffile and reload, upgrade to a rebuilt higher version, remove, purge. The other
tests check what the package and its scripts must do along the way. One root is shared by the
module; tests run in order. Slow inputs are cached under /var/cache/a10tts-ci (deb_chroot.CACHE).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from deb_chroot import CACHE, ChrootSystemd, ensure_host_tools, root_tarball

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "packaging" / "deb" / "build.py"
UNIT = "a10tts.service"
URL = "http://127.0.0.1:8080/inference_zero_shot"
PROMPT_WAV = "opt/a10tts/venv/lib/python3.*/site-packages/a10tts/bench/data/prompt_en.wav"  # shipped
PROMPT_TEXT = "The quick brown fox jumps over the lazy dog near the quiet river bank."
MODEL = "/var/lib/a10tts/models/CosyVoice2-0.5B"
CONFIG = "/etc/a10tts/a10tts.toml"
# State that apt, dpkg, logs and other services keep by design (runuser's login session started
# systemd-logind); any other path that is new after the purge must belong to an installed package.
STATE_OF_OTHERS = re.compile(r"var/lib/apt/|var/cache/apt/|var/lib/dpkg/|var/log/|var/cache/debconf/"
                             r"|var/cache/ldconfig/|var/lib/systemd/deb-systemd-helper-|etc/\.pwd\.lock"
                             r"|var/lib/systemd/linger|var/tmp/systemd-private-\w+-systemd-logind\.service-")


def build(out: Path, revision: int) -> Path:
    env = dict(os.environ)
    env.setdefault("DEBFULLNAME", "a10tts test build")
    env.setdefault("DEBEMAIL", "test-build@a10tts.example")
    result = subprocess.run(["/usr/bin/python3", str(BUILD), "--torch", "cpu", "--revision", str(revision),
                             "--compress", "fast", "--cache-dir", str(CACHE / "build"), "--out", str(out)],
                            capture_output=True, text=True, timeout=1800, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    for tool in ("unshare", "nsenter"):  # util-linux: on every Debian
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    ensure_host_tools()  # the rest, from Debian's packages
    out = tmp_path_factory.mktemp("dist")
    yield out
    for deb in out.glob("*.deb"):  # 250 MB each; lintian.txt stays for a look after a failure
        deb.unlink()


@pytest.fixture(scope="module")
def deb_v1(dist: Path) -> Path:
    return build(dist, revision=1)


@pytest.fixture(scope="module")
def lintian(deb_v1: Path, dist: Path) -> Iterator[tuple[subprocess.Popen, Path]]:
    """Started with the first test and read by the last: its two minutes overlap the install tests."""
    report = dist / "lintian.txt"
    with report.open("w") as out:
        process = subprocess.Popen(["lintian", "--tag-display-limit", "0", str(deb_v1)], stdout=out,
                                   stderr=subprocess.STDOUT)
    yield process, report
    if process.poll() is None:
        process.kill()


@pytest.fixture(scope="module")
def before_install() -> set[str]:
    """The root's paths before the package came: the purge test compares against them."""
    return set()


@pytest.fixture(scope="module")
def system(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChrootSystemd]:
    work = tmp_path_factory.mktemp("debian12")
    booted = None
    try:
        booted = ChrootSystemd.unpack(root_tarball(), work / "root", work / "boot.log")
        booted.wait_running()
        yield booted
    finally:
        if booted is not None:
            booted.shutdown()
        shutil.rmtree(work / "root", ignore_errors=True)  # over 1 GB; the booted system's mounts never showed here


def apt_install(system: ChrootSystemd, deb: Path) -> str:
    shutil.copyfile(deb, system.root / "root" / deb.name)
    result = system.run("apt-get", "install", "-y", f"/root/{deb.name}", host_network=True, timeout=900)
    (system.root / "root" / deb.name).unlink()
    return result.stdout + result.stderr


def synthesize(system: ChrootSystemd, out: Path, text: str = "Hello from a10tts.") -> int:
    """The README's curl command, run in the booted system's network: the HTTP status."""
    prompt = next(system.root.glob(PROMPT_WAV))
    result = subprocess.run(system.in_network(
        "curl", "-sS", "-o", str(out), "-w", "%{http_code}", "-F", f"tts_text={text}", "-F", f"prompt_text={PROMPT_TEXT}",
        "-F", f"prompt_wav=@{prompt}", "-F", "stream=true", URL), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def assert_refuses_text_over(system: ChrootSystemd, limit: int, tmp_path: Path) -> None:
    reply = tmp_path / "error.json"
    assert synthesize(system, reply, "Hello there. " * 130) in (400, 413, 422)  # 1690 characters
    assert f"the limit is {limit}" in reply.read_text(), reply.read_text()


def files_in(root: Path) -> set[str]:
    """Every path of the root's own tree (the booted system's mounts are not visible from here)."""
    found = set()
    for directory, dirs, files in os.walk(root):
        relative = os.path.relpath(directory, root)
        if relative in ("proc", "sys", "dev", "run", "tmp"):
            dirs.clear()
            continue
        found.update(os.path.normpath(os.path.join(relative, name)) for name in dirs + files)
    return found


def test_package_contents_and_conffiles(deb_v1: Path, lintian: tuple[subprocess.Popen, Path]) -> None:
    fields = {f: subprocess.run(["dpkg-deb", "-f", str(deb_v1), f], capture_output=True, text=True).stdout.strip()
              for f in ("Package", "Version", "Depends")}
    assert fields["Package"] == "a10tts" and fields["Version"] == "0.1.0-1~cpu"
    assert re.match(r"python3\.11, adduser, libc6 ", fields["Depends"]), fields["Depends"]
    listing = subprocess.run(["dpkg-deb", "-c", str(deb_v1)], capture_output=True, text=True, check=True).stdout
    paths = {line.split()[5].removeprefix(".") for line in listing.splitlines()}
    for path in ("/usr/bin/a10tts", "/usr/bin/a10tts-tui", "/lib/systemd/system/a10tts.service",
                 "/lib/systemd/system/a10tts@.service", "/etc/a10tts/profiles/balanced.toml",
                 "/usr/share/doc/a10tts/copyright", "/usr/share/doc/a10tts/operations.md",
                 "/usr/share/man/man1/a10tts.1.gz", "/opt/a10tts/venv/bin/python3"):
        assert path in paths, path
    assert [p for p in paths if p.startswith("/etc/a10tts/conf.d/")] == ["/etc/a10tts/conf.d/"]
    assert not [p for p in paths if p.startswith("/var/") or "__pycache__" in p]
    control = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb_v1)], capture_output=True, check=True).stdout
    conffiles = subprocess.run(["tar", "-xO", "./conffiles"], input=control, capture_output=True).stdout.decode()
    assert conffiles.split() == ["/etc/a10tts/a10tts.toml", "/etc/a10tts/profiles/balanced.toml",
                                 "/etc/a10tts/profiles/low-latency.toml", "/etc/a10tts/profiles/throughput.toml"]


def test_install_enables_the_service_which_fails_once_saying_where_the_model_goes(
        system: ChrootSystemd, deb_v1: Path, before_install: set[str]) -> None:
    before_install.update(files_in(system.root))
    system.run("apt-get", "update", host_network=True)  # README: apt-get update && apt-get install ./a10tts_...
    output = apt_install(system, deb_v1)
    assert "journalctl -u a10tts" in output  # postinst's note about the failed first start
    assert system.run("dpkg-query", "-W", "-f", "${Status} ${Version}", "a10tts").stdout == \
        "install ok installed 0.1.0-1~cpu"
    assert system.systemctl("is-enabled", UNIT, check=False).stdout.strip() == "enabled"
    assert system.show(UNIT, "ActiveState") == "failed"
    assert system.show(UNIT, "ExecMainStatus") == "78"
    journal = system.journal(UNIT)  # README: journalctl -u a10tts
    assert f"no model directory at {MODEL}" in journal, journal
    assert f"runuser -u a10tts -- a10tts model init-demo {MODEL}" in journal, journal  # the next test's step
    # No restart loop: RestartPreventExitStatus=78, and RestartSec=5 has long passed by then.
    system.run("sleep", "6")
    assert system.show(UNIT, "NRestarts") == "0" and system.show(UNIT, "ActiveState") == "failed"


def test_account_groups_and_state_directory(system: ChrootSystemd) -> None:
    groups = system.run("id", "-nG", "a10tts").stdout.split()
    assert {"a10tts", "video", "render"} <= set(groups), groups
    assert system.run("getent", "group", "a10tts-admin").returncode == 0
    assert system.run("getent", "passwd", "a10tts").stdout.strip().endswith(":/var/lib/a10tts:/usr/sbin/nologin")
    owners = system.run("stat", "-c", "%U %a %n", "/var/lib/a10tts", "/var/lib/a10tts/models").stdout.split("\n")
    assert owners[:2] == ["a10tts 755 /var/lib/a10tts", "a10tts 755 /var/lib/a10tts/models"]


def test_man_pages_document_what_help_lists(system: ChrootSystemd) -> None:
    commands = re.findall(r"(?m)^    (\w+)  ", system.run("a10tts", "--help").stdout)
    page = system.sh("zcat /usr/share/man/man1/a10tts.1.gz").stdout
    assert commands and all(f'.SS "a10tts {c}"' in page for c in commands), (commands, page[:2000])
    assert system.run("a10tts", "--version").stdout.strip() == "a10tts 0.1.0"
    options = re.findall(r"(?m)^  (--[\w-]+)", system.run("a10tts-tui", "--help").stdout)
    page = system.sh("zcat /usr/share/man/man1/a10tts-tui.1.gz").stdout
    assert "--interval" in options and all(o.replace("-", "\\-") in page for o in options), (options, page)


def test_configure_again_changes_nothing_and_starts_nothing(system: ChrootSystemd) -> None:
    before = system.sh("getent passwd a10tts; getent group a10tts a10tts-admin video render").stdout
    system.run("/var/lib/dpkg/info/a10tts.postinst", "configure", "0.1.0-1~cpu")  # as on an upgrade
    assert system.sh("getent passwd a10tts; getent group a10tts a10tts-admin video render").stdout == before
    assert system.show(UNIT, "ActiveState") == "failed" and system.show(UNIT, "NRestarts") == "0"


def test_service_starts_once_the_demo_model_is_in_place_and_serves_audio(system: ChrootSystemd,
                                                                         tmp_path: Path) -> None:
    system.run("runuser", "-u", "a10tts", "--", "a10tts", "model", "init-demo", MODEL)  # README
    started = system.systemctl("start", UNIT, timeout=400, check=False)  # README: systemctl start a10tts
    assert started.returncode == 0, started.stderr + system.journal(UNIT)[-4000:]
    assert system.show(UNIT, "ActiveState") == "active"
    assert system.show(UNIT, "StatusText").startswith("ready, profile balanced")
    audio = tmp_path / "hello.pcm"
    assert synthesize(system, audio) == 200  # README: curl -o hello.pcm ...
    assert audio.stat().st_size > 2400 and audio.stat().st_size % 2 == 0  # 24 kHz int16 PCM
    assert system.run("stat", "-c", "%a %G", "/run/a10tts/admin.sock").stdout.split() == ["660", "a10tts-admin"]
    assert "ready" in system.run("a10tts", "ctl", "status").stdout  # README: a10tts ctl status
    status = json.loads(system.run("a10tts", "ctl", "status", "--json").stdout)
    assert status["state"] == "ready" and status["model"]["dir"] == MODEL


def test_an_edited_conffile_applies_on_reload(system: ChrootSystemd, tmp_path: Path) -> None:
    system.run("sed", "-i", "s/^max_text_chars = 2000$/max_text_chars = 1500/", CONFIG)  # README
    assert "max_text_chars = 1500" in system.run("cat", CONFIG).stdout
    system.systemctl("reload", UNIT, timeout=300)  # README: systemctl reload a10tts
    assert_refuses_text_over(system, 1500, tmp_path)


def test_upgrade_keeps_the_edited_conffile_and_restarts_the_running_service(
        system: ChrootSystemd, dist: Path, tmp_path: Path) -> None:
    edited = system.run("cat", CONFIG).stdout
    old_pid = system.show(UNIT, "MainPID")
    deb_v2 = build(dist, revision=2)
    apt_install(system, deb_v2)  # README: apt-get install ./a10tts_<newer version>_amd64.deb
    assert system.run("dpkg-query", "-W", "-f", "${Version}", "a10tts").stdout == "0.1.0-2~cpu"
    assert system.run("cat", CONFIG).stdout == edited
    assert not system.sh("ls /etc/a10tts | grep -E 'dpkg-(new|dist|old)$' || true").stdout
    assert system.show(UNIT, "ActiveState") == "active" and system.show(UNIT, "MainPID") != old_pid
    assert_refuses_text_over(system, 1500, tmp_path)
    assert synthesize(system, tmp_path / "hello.pcm") == 200


def test_remove_stops_the_service_and_keeps_configuration_and_data(system: ChrootSystemd) -> None:
    system.run("apt-get", "remove", "-y", "a10tts", timeout=300)  # README: apt-get remove a10tts
    assert system.show(UNIT, "ActiveState") == "inactive"
    assert system.run("find", "/proc", "-maxdepth", "1", "-user", "a10tts", check=False).stdout == ""
    assert system.run("dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "a10tts").stdout.strip() == "rc"
    assert not (system.root / "opt" / "a10tts").exists()  # bytecode included
    assert system.run("test", "-f", f"{MODEL}/A10TTS_DEMO_MODEL", check=False).returncode == 0
    assert "max_text_chars = 1500" in system.run("cat", CONFIG).stdout


def test_purge_removes_user_data_and_leaves_nothing_unowned(system: ChrootSystemd, before_install: set[str]) -> None:
    system.run("apt-get", "purge", "-y", "a10tts", timeout=300)  # README: apt-get purge a10tts
    status = system.run("dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "a10tts", check=False)
    assert status.returncode != 0 or status.stdout.strip() in ("un", "pn"), status.stdout
    for gone in ("var/lib/a10tts", "var/cache/a10tts", "etc/a10tts", "opt/a10tts"):
        assert not (system.root / gone).exists(), gone
    # docs/packaging.md: the account and the admin group stay (files elsewhere may still name them).
    assert system.run("getent", "passwd", "a10tts").returncode == 0
    assert system.run("getent", "group", "a10tts-admin").returncode == 0
    new = sorted(p for p in files_in(system.root) - before_install if not STATE_OF_OTHERS.match(p))
    assert not [p for p in new if "a10tts" in p], new
    unowned = [p for p in new if system.run("dpkg", "-S", "/" + p, check=False).returncode != 0]
    assert not unowned, unowned


def test_lintian_finds_no_errors(lintian: tuple[subprocess.Popen, Path]) -> None:
    process, report = lintian
    process.wait(timeout=900)
    output = report.read_text()
    errors = [line for line in output.splitlines() if line.startswith("E:")]
    assert process.returncode == 0 and not errors, output[-4000:]
