"""`a10tts config validate|show`."""

from __future__ import annotations

import argparse
import json

from .common import add_dir_options, add_override_option, load_from


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("config", help="check and inspect the configuration")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    validate = actions.add_parser("validate", help="check every layer; exit 2 listing all problems")
    add_dir_options(validate)
    add_override_option(validate)
    validate.set_defaults(func=_validate)

    show = actions.add_parser("show", help="print the effective configuration")
    add_dir_options(show)
    add_override_option(show)
    show.add_argument("--provenance", action="store_true", help="say which file or variable set each value")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=_show)


def _validate(args: argparse.Namespace) -> int:
    loaded = load_from(args)
    print(f"configuration OK (config dir {loaded.dirs.config}, profile '{loaded.profile}')")
    return 0


def _toml_value(value: object) -> str:
    return json.dumps(value)


def _show(args: argparse.Namespace) -> int:
    loaded = load_from(args)
    flat = loaded.flat()
    if args.json:
        if args.provenance:
            payload = {k: {"value": v, "source": loaded.provenance[k]} for k, v in flat.items()}
        else:
            payload = loaded.config.model_dump(mode="json")
        print(json.dumps(payload, indent=2))
        return 0
    width = max(len(f"{k} = {_toml_value(v)}") for k, v in flat.items())
    for key, value in flat.items():
        line = f"{key} = {_toml_value(value)}"
        print(f"{line:<{width}}  # {loaded.provenance[key]}" if args.provenance else line)
    return 0
