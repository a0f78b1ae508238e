"""`a10tts profile list|show|use`."""

from __future__ import annotations

import argparse
import json

from ..config import ConfigError, Dirs, load_config
from ..config.loader import available_profiles, flatten
from ..config.profiles import activate, profile_settings
from .common import add_dir_options, dirs_from


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("profile", help="list, inspect and switch tuning profiles")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    list_ = actions.add_parser("list", help="list profiles; * marks the active one")
    add_dir_options(list_)
    list_.set_defaults(func=_list)

    show = actions.add_parser("show", help="print the keys a profile sets")
    show.add_argument("name")
    add_dir_options(show)
    show.set_defaults(func=_show)

    use = actions.add_parser("use", help="validate, make active, and reload a running service")
    use.add_argument("name")
    add_dir_options(use, runtime=True)
    use.set_defaults(func=_use)


def _description(dirs: Dirs, name: str) -> str:
    # The first comment line of a profile file is its one-line description.
    for line in (dirs.profiles / f"{name}.toml").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def _active(dirs: Dirs) -> str | None:
    try:
        return load_config(dirs).profile
    except ConfigError:
        path = dirs.active_profile_file
        return path.read_text(encoding="utf-8").strip() if path.exists() else None


def _list(args: argparse.Namespace) -> int:
    dirs = dirs_from(args)
    names = available_profiles(dirs)
    if not names:
        print(f"no profiles in {dirs.profiles}")
        return 1
    active = _active(dirs)
    width = max(map(len, names))
    for name in names:
        mark = "*" if name == active else " "
        print(f"{mark} {name:<{width}}  {_description(dirs, name)}")
    return 0


def _show(args: argparse.Namespace) -> int:
    for key, value in flatten(profile_settings(dirs_from(args), args.name)).items():
        print(f"{key} = {json.dumps(value)}")
    return 0


def _use(args: argparse.Namespace) -> int:
    dirs = dirs_from(args)
    loaded, changes = activate(dirs, args.name)
    print(f"profile '{args.name}' is now active ({dirs.active_profile_file})")
    for change in changes:
        print(f"  {change.key}: {json.dumps(change.old)} -> {json.dumps(change.new)}")
    if not changes:
        print("  (no setting changes)")
    return _reload_service(dirs)


def _reload_service(dirs: Dirs) -> int:
    from .ctl_cmd import reload_service

    if not dirs.admin_socket.exists():
        print(f"no a10tts service is running here (no admin socket at {dirs.admin_socket}); "
              "the profile applies when the service starts")
        return 0
    print("reloading the running service:")
    return reload_service(dirs.admin_socket, {"cmd": "reload", "wait": True})
