"""The bundled virtual environment of the .deb: made, cached, tidied for Debian, moved to /opt.

A venv is made where it will not live (the build's staging tree, or the cache), so the few
places that record its location are rewritten for VENV, and the build checks that no build path
is left anywhere. Third-party files get what dh_strip and dh_fixperms would do to them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

VENV = Path("/opt/a10tts/venv")
COMMANDS = ("a10tts", "a10tts-tui")
# pip reads its index settings here: a change may change what the venv resolves to.
PIP_CONFIG_FILES = ("/etc/pip.conf", "/etc/xdg/pip/pip.conf", "~/.config/pip/pip.conf", "~/.pip/pip.conf")
# PyTorch's C++ test programs and its protobuf compiler: never used by `import torch`, 130 MB,
# with RUNPATHs into PyTorch's build tree.
PRUNE = ("torch/test", "torch/bin/*Test", "torch/bin/test_*", "torch/bin/protoc*")


def run(*cmd: str | Path, capture: bool = False, **kwargs) -> str:
    result = subprocess.run([str(c) for c in cmd], check=False, text=True,
                            stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE, **kwargs)
    if result.returncode != 0:
        sys.exit(f"build.py: `{' '.join(map(str, cmd))}` failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout if capture else ""


def log(message: str) -> None:
    print(f"build.py: {message}", file=sys.stderr, flush=True)


def pip(python: Path, *args: str | Path) -> None:
    run(python, "-m", "pip", *args, "--disable-pip-version-check", "--no-input", "--quiet",
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3.*/site-packages"))


# --- the dependencies, cached by their inputs ----------------------------------------------------

def dependency_venv(venv: Path, interpreter: Path, requirements: list[str], torch_file: Path,
                    cache: Path | None, variant: str) -> None:
    """`venv` with every dependency but a10tts itself; from `cache` when its inputs match."""
    if cache is None:
        _create(venv, interpreter, requirements, torch_file)
        return
    pip_env = {k: v for k, v in sorted(os.environ.items()) if k.startswith("PIP_") and k != "PIP_CACHE_DIR"}
    configs = [Path(p).expanduser() for p in PIP_CONFIG_FILES]
    inputs = {"python": run(interpreter, "-VV", capture=True), "torch": torch_file.read_text(),
              "requirements": requirements, "pip_env": pip_env, "prune": PRUNE,
              "pip_config": [p.read_text() for p in configs if p.is_file()]}
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    cached = cache / f"venv-{variant}-{key}"
    with _locked(cache):
        if cached.is_dir():
            log(f"reusing the dependency venv {cached}")
        else:
            partial = cache / f"{cached.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            _create(partial, interpreter, requirements, torch_file)
            partial.rename(cached)
            for stale in cache.glob(f"venv-{variant}-*"):
                if stale != cached:
                    shutil.rmtree(stale)
    shutil.copytree(cached, venv, symlinks=True)


def _create(venv: Path, interpreter: Path, requirements: list[str], torch_file: Path) -> None:
    log(f"creating {venv} with PyTorch from {torch_file.name} and {len(requirements)} requirements")
    run(interpreter, "-m", "venv", venv)
    pip(venv / "bin" / "python", "install", "--no-compile", "-r", torch_file, *requirements)
    _tidy_third_party(site_packages(venv))


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two builds sharing a cache populate it once
        yield


def _tidy_third_party(packages: Path) -> None:
    """Drop test programs; x bits only on programs and scripts, as dh_fixperms does.

    No dh_strip: auditwheel rewrites wheels' libraries with patchelf, and `strip` corrupts those
    (numpy's OpenBLAS then fails to load: "ELF load command address/offset not page-aligned").
    """
    for pattern in PRUNE:
        for path in packages.glob(pattern):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for path in packages.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        with open(path, "rb") as f:
            head = f.read(4)
        program = (head == b"\x7fELF" and ".so" not in path.suffixes) or head[:2] == b"#!"
        path.chmod(0o755 if program and path.stat().st_mode & 0o111 else 0o644)


# --- a10tts itself, and the move to VENV ---------------------------------------------------------

def check_torch(python: Path, variant: str) -> str:
    version, cuda = run(python, "-c", "import torch; print(torch.__version__, torch.version.cuda)",
                        capture=True).split()
    if (variant == "cuda") != (cuda != "None"):
        sys.exit(f"build.py: --torch {variant} installed torch {version} (CUDA {cuda}). For a CUDA build, point pip "
                 f"at an index with CUDA wheels (PIP_INDEX_URL=https://pypi.org/simple, or "
                 f"https://download.pytorch.org/whl/cuXYZ); see docs/packaging.md")
    return version


def bundled_packages(python: Path) -> str:
    """`name version license` of every distribution in the venv: the copyright file points here."""
    script = (
        "import importlib.metadata as m\n"
        "for d in sorted(m.distributions(), key=lambda d: d.metadata['Name'].lower()):\n"
        "    md = d.metadata\n"
        "    lic = md.get('License-Expression') or next((c.split(' :: ')[-1] for c in md.get_all('Classifier') or []\n"
        "          if c.startswith('License ::')), None) or (md.get('License') or 'see its metadata').splitlines()[0]\n"
        "    print(f\"{md['Name']:<28} {d.version:<20} {lic[:80]}\")\n")
    return run(python, "-c", script, capture=True, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))


def finalize(venv: Path) -> None:
    """Make the staged venv work at VENV: only our commands, their shebangs, no bytecode, no pip."""
    pip(venv / "bin" / "python", "uninstall", "--yes", "pip")
    for entry in (venv / "bin").iterdir():
        if not (entry.name.startswith("python") or entry.name in COMMANDS):
            entry.unlink()
    shutil.rmtree(venv / "share" / "man", ignore_errors=True)  # pages of the scripts just removed
    for name in COMMANDS:
        script = venv / "bin" / name
        script.write_text(f"#!{VENV}/bin/python3\n" + script.read_text().split("\n", 1)[1])
    cfg = venv / "pyvenv.cfg"
    # "command =" only records how the venv was made, with the staging path.
    cfg.write_text("".join(line for line in cfg.read_text().splitlines(True) if not line.startswith("command =")))
    for junk in [*venv.rglob("__pycache__"), *venv.rglob("direct_url.json")]:
        shutil.rmtree(junk) if junk.is_dir() else junk.unlink()  # postinst compiles the bytecode


def assert_no_build_paths(root: Path, *paths: Path) -> None:
    needles = [str(p).encode() for p in paths]
    for file in root.rglob("*"):
        if file.is_file() and not file.is_symlink():
            data = file.read_bytes()
            for needle in needles:
                if needle in data:
                    sys.exit(f"build.py: {file} still names the build directory {needle.decode()}")
