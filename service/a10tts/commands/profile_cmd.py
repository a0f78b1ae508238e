"""`a10tts profile list|show|use`."""

from __future__ import annotations

import argparse
import json
import sys

from ..admin_client import AdminClient
from ..config import ConfigError, Dirs, load_config
from ..config.loader import available_profiles, flatten
from ..config.profiles import profile_settings
from ..profile_switch import ProfileStore
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
        print(f"{mark} {name:<{width}}  {ProfileStore(dirs).description(name)}")
    return 0


def _show(args: argparse.Namespace) -> int:
    for key, value in flatten(profile_settings(dirs_from(args), args.name)).items():
        print(f"{key} = {json.dumps(value)}")
    return 0


# Exit status of `profile use` per switching outcome.
_EXIT = {"ready": 0, "not_running": 0, "denied": 1, "failed": 1, "refused": 1}


def _use(args: argparse.Namespace) -> int:
    dirs = dirs_from(args)
    recorded = False
    for step in ProfileStore(dirs).switch(args.name, AdminClient(dirs.admin_socket)):
        if step.kind == "recorded":
            print(step.message)
            for change in step.changes:
                print(f"  {change.key}: {json.dumps(change.old)} -> {json.dumps(change.new)}")
            if not step.changes:
                print("  (no setting changes)")
        elif step.kind == "progress":
            print(f"  {step.message}")
        else:
            stream = sys.stdout if _EXIT[step.kind] == 0 else sys.stderr
            print(step.message, file=stream)
            invalid = step.kind == "refused" and not recorded  # refused before anything was recorded
            return ConfigError.exit_code if invalid else _EXIT[step.kind]
        recorded = recorded or step.kind == "recorded"
    return 0
