"""Options shared by subcommands that read the configuration."""

from __future__ import annotations

import argparse

from ..config import Dirs, LoadedConfig, load_config


def add_dir_options(parser: argparse.ArgumentParser, runtime: bool = False) -> None:
    group = parser.add_argument_group("locations")
    group.add_argument("--config-dir", metavar="DIR",
                       help="configuration directory (default: $A10TTS_CONFIG_DIR, "
                            "$CONFIGURATION_DIRECTORY or /etc/a10tts)")
    group.add_argument("--state-dir", metavar="DIR",
                       help="state directory (default: $A10TTS_STATE_DIR, $STATE_DIRECTORY or /var/lib/a10tts)")
    if runtime:
        group.add_argument("--runtime-dir", metavar="DIR",
                           help="runtime directory (default: $A10TTS_RUNTIME_DIR, "
                                "$RUNTIME_DIRECTORY or /run/a10tts)")


def add_override_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key, e.g. --set server.port=8081 (repeatable)")


def dirs_from(args: argparse.Namespace) -> Dirs:
    return Dirs.resolve(args.config_dir, args.state_dir, getattr(args, "runtime_dir", None))


def load_from(args: argparse.Namespace) -> LoadedConfig:
    return load_config(dirs_from(args), overrides=getattr(args, "overrides", ()))
