"""The `a10tts` command: thin dispatch to the subcommands in `a10tts.commands`.

Keep this import-light: `a10tts --help` and `a10tts config ...` must never import torch.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .commands import bench_cmd, config_cmd, ctl_cmd, model_cmd, profile_cmd, serve_cmd, synth_cmd
from .config import ConfigError

COMMANDS = (serve_cmd, ctl_cmd, config_cmd, profile_cmd, model_cmd, synth_cmd, bench_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="a10tts",
        description="CosyVoice2 text-to-speech server for NVIDIA GPU hosts.",
    )
    parser.add_argument("--version", action="version", version=f"a10tts {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except ConfigError as exc:
        print(f"a10tts: {exc}", file=sys.stderr)
        return ConfigError.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `a10tts config show | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
