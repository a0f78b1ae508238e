#!/usr/bin/python3
"""Build the a10tts .deb from this checkout: `packaging/deb/build.py [--torch cuda|cpu]`.

The package carries its own virtual environment (bundle.py): Debian's python3.11 with every
Python dependency, PyTorch included, in /opt/a10tts/venv. docs/packaging.md explains the layout,
the choices and the options. Needs Debian's python3-venv, dpkg-dev, binutils and git.
"""

from __future__ import annotations

import argparse
import email.utils
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import bundle
from bundle import COMMANDS, VENV, log, run

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PACKAGE = "a10tts"
UNITS = ("a10tts.service", "a10tts@.service")
MAINTAINER_SCRIPTS = ("postinst", "prerm", "postrm")
COMPRESSION = {"xz": ("xz", "6"), "fast": ("gzip", "1")}  # dpkg-deb -Z, -z


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Build the a10tts .deb (docs/packaging.md).")
    parser.add_argument("--torch", choices=("cuda", "cpu"), default="cuda",
                        help="PyTorch build to bundle: cuda for GPU hosts (default), cpu for tests and CPU-only "
                             "hosts (the requirement is in packaging/deb/torch-<variant>.txt)")
    parser.add_argument("--revision", type=int, default=1, metavar="N",
                        help="Debian revision: the version is <project version>-N, with ~cpu appended for the CPU "
                             "build; raise it to ship a rebuild of the same project version as an upgrade")
    parser.add_argument("--extra-requirement", action="append", default=[], metavar="REQ",
                        help="one more Python requirement to bundle, e.g. 'tensorrt>=10' (repeatable)")
    parser.add_argument("--out", type=Path, default=REPO / "dist", metavar="DIR",
                        help="where the .deb goes (default: dist/)")
    parser.add_argument("--cache-dir", type=Path, metavar="DIR",
                        help="keep the dependency venv (keyed by its inputs) and pip's cache here: the next "
                             "build only reinstalls a10tts itself")
    parser.add_argument("--compress", choices=tuple(COMPRESSION), default="xz",
                        help="xz: the smallest package (default); fast: gzip -1, about 70%% larger but built in "
                             "seconds (tests, CI)")
    parser.add_argument("--python", default="/usr/bin/python3", metavar="PATH",
                        help="the target system's Debian interpreter, which the venv links to (default: "
                             "/usr/bin/python3); build on the Debian release you install on")
    parser.add_argument("--maintainer", metavar="'NAME <EMAIL>'",
                        help="the Maintainer field (default: $DEBFULLNAME <$DEBEMAIL>, else git's user.name "
                             "and user.email)")
    return parser.parse_args(argv)


# --- inputs -------------------------------------------------------------------------------------

def debian_version(project_version: str, revision: int, torch: str) -> str:
    # "~cpu" sorts before the CUDA build of the same revision: CUDA over CPU is an upgrade.
    return f"{project_version}-{revision}" + ("~cpu" if torch == "cpu" else "")


def interpreter(python: str) -> Path:
    """The versioned Debian interpreter the venv links to; its package becomes a dependency."""
    path = Path(python).resolve()
    if not re.fullmatch(r"/usr/bin/python3\.\d+", str(path)):
        sys.exit(f"build.py: {python} is {path}, not a Debian interpreter /usr/bin/python3.X: the installed venv "
                 f"links to it, so it must be the target system's (apt-get install python3-venv)")
    return path


def maintainer(option: str | None) -> str:
    if option:
        return option
    if os.environ.get("DEBFULLNAME") and os.environ.get("DEBEMAIL"):
        return f"{os.environ['DEBFULLNAME']} <{os.environ['DEBEMAIL']}>"
    name, email = (subprocess.run(["git", "-C", str(REPO), "config", key], capture_output=True, text=True).stdout.strip()
                   for key in ("user.name", "user.email"))
    if not (name and email):
        sys.exit("build.py: who maintains this package? Pass --maintainer 'NAME <EMAIL>', or set DEBFULLNAME and "
                 "DEBEMAIL, or git's user.name and user.email")
    return f"{name} <{email}>"


def export_checkout(target: Path) -> Path:
    """Tracked and untracked-but-not-ignored files: never .venv, build/ or caches of this tree."""
    files = run("git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard", capture=True)
    for name in filter(None, files.split("\0")):
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    return target


def built_from() -> tuple[str, str]:
    """What the changelog entry names and its date: the checkout's commit, or the build time for a
    tree with no commit yet (`git init` over an exported tree)."""
    head = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h%n%cD"], capture_output=True, text=True)
    if head.returncode == 0 and head.stdout.strip():
        short, date = head.stdout.split("\n")[:2]
        return f"commit {short}", date
    return "an uncommitted tree", email.utils.formatdate(localtime=True)


def architecture() -> str:
    return run("dpkg", "--print-architecture", capture=True).strip()


# --- the package tree -----------------------------------------------------------------------------

def install(source: Path, target: Path, mode: int = 0o644) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    target.chmod(mode)


def write_gzip(data: bytes, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
        gz.write(data)


def lay_out(root: Path, src: Path, version: str, maint: str, python: Path, torch_version: str) -> None:
    for name in COMMANDS:
        (root / "usr" / "bin").mkdir(parents=True, exist_ok=True)
        (root / "usr" / "bin" / name).symlink_to(VENV / "bin" / name)
    for unit in UNITS:
        install(src / "packaging" / "systemd" / unit, root / "lib" / "systemd" / "system" / unit)
    shipped = src / "etc" / "a10tts"
    for config in sorted(shipped.rglob("*.toml")):
        install(config, root / "etc" / "a10tts" / config.relative_to(shipped))
    (root / "etc" / "a10tts" / "conf.d").mkdir()  # the operator's drop-ins; the package ships none
    doc = root / "usr" / "share" / "doc" / PACKAGE
    for page in [src / "README.md", *sorted((src / "docs").glob("*.md"))]:
        install(page, doc / page.name)
    install(HERE / "copyright", doc / "copyright")
    (doc / "bundled-python-packages.txt").write_text(
        f"Python distributions in {VENV} (torch {torch_version}):\n\n" + bundle.bundled_packages(python))
    source, date = built_from()
    write_gzip(f"{PACKAGE} ({version}) unstable; urgency=medium\n\n"
               f"  * Build of {source} with torch {torch_version}.\n\n"
               f" -- {maint}  {date}\n".encode(), doc / "changelog.Debian.gz")
    install(HERE / "lintian-overrides", root / "usr" / "share" / "lintian" / "overrides" / PACKAGE)
    for name in COMMANDS:
        page = run(python, HERE / "manpage.py", name, version, capture=True,
                   env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
        write_gzip(page.encode(), root / "usr" / "share" / "man" / "man1" / f"{name}.1.gz")


def shared_library_depends(root: Path, work: Path) -> str:
    """dpkg-shlibdeps over every ELF file: the system libraries the bundled wheels link to."""
    elves = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    elves.append(path)
    stub = work / "shlibdeps"
    (stub / "debian").mkdir(parents=True)
    (stub / "debian" / "control").write_text(f"Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n")
    out = run("dpkg-shlibdeps", "-O", "--warnings=0", *elves, capture=True, cwd=stub)
    return out.strip().removeprefix("shlibs:Depends=")


def write_control(root: Path, work: Path, version: str, maint: str, python: Path, torch_version: str,
                  variant: str) -> None:
    debian = root / "DEBIAN"
    debian.mkdir()
    # Triton (our decode-attention kernel, torch.compile) builds a small C launcher per kernel
    # with the host's compiler on CUDA hosts.
    compiler = ["gcc"] if variant == "cuda" else []
    depends = ", ".join([python.name, "adduser", *compiler, shared_library_depends(root, work)])
    installed_kib = sum(-(-p.lstat().st_size // 1024) for p in root.rglob("*") if not p.is_dir()) + 1
    (debian / "control").write_text((HERE / "control.in").read_text().format(
        package=PACKAGE, version=version, architecture=architecture(), maintainer=maint, depends=depends,
        installed_size=installed_kib, torch=torch_version, venv=VENV,
        variant="CUDA build: needs the NVIDIA driver" if variant == "cuda" else "CPU-only build"))
    conffiles = sorted("/" + str(p.relative_to(root)) for p in (root / "etc").rglob("*") if p.is_file())
    (debian / "conffiles").write_text("\n".join(conffiles) + "\n")
    for script in MAINTAINER_SCRIPTS:
        install(HERE / script, debian / script, 0o755)
    with open(debian / "md5sums", "w") as sums:
        for path in sorted(root.rglob("*")):
            relative = str(path.relative_to(root))
            if path.is_file() and not path.is_symlink() and not relative.startswith(("DEBIAN/", "etc/")):
                sums.write(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {relative}\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    version = debian_version(meta["version"], args.revision, args.torch)
    python = interpreter(args.python)
    maint = maintainer(args.maintainer)
    cache = args.cache_dir.resolve() if args.cache_dir else None
    if cache:
        os.environ["PIP_CACHE_DIR"] = str(cache / "pip")
    with tempfile.TemporaryDirectory(prefix="a10tts-deb-") as tmp:
        work = Path(tmp)
        root = work / "root"
        venv = root / VENV.relative_to("/")
        venv.parent.mkdir(parents=True)
        src = export_checkout(work / "src")
        bundle.dependency_venv(venv, python, list(meta["dependencies"]) + args.extra_requirement,
                               HERE / f"torch-{args.torch}.txt", cache, args.torch)
        venv_python = venv / "bin" / "python"
        log(f"installing a10tts {meta['version']} into the venv")
        bundle.pip(venv_python, "install", "--no-compile", "--no-deps", src)
        bundle.pip(venv_python, "check")
        torch_version = bundle.check_torch(venv_python, args.torch)
        lay_out(root, src, version, maint, venv_python, torch_version)
        bundle.finalize(venv)
        bundle.assert_no_build_paths(root, work, *([cache] if cache else []))
        for directory in [root, *(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())]:
            directory.chmod(0o755)
        write_control(root, work, version, maint, python, torch_version, args.torch)
        args.out.mkdir(parents=True, exist_ok=True)
        deb = args.out.resolve() / f"{PACKAGE}_{version}_{architecture()}.deb"
        log(f"packing {deb.name} ({args.compress})")
        kind, level = COMPRESSION[args.compress]
        run("dpkg-deb", "--root-owner-group", f"-Z{kind}", f"-z{level}", "--build", root, deb)
    print(deb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
