"""`a10tts serve`: run the service in the foreground (systemd's main process)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..config import ConfigError, Dirs
from ..logs import setup_logging
from .common import add_dir_options, add_override_option, dirs_from


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="run the service in the foreground (what systemd starts)")
    parser.add_argument("--demo", action="store_true",
                        help="serve the built-in demo model (random weights: its audio is noise); "
                             "created in STATE_DIR/models/demo on first use, on the CPU without a GPU")
    parser.add_argument("--port", type=int, metavar="N", help="TCP port (same as --set server.port=N)")
    add_dir_options(parser, runtime=True)
    add_override_option(parser)
    parser.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    # Imported here: the rest of the CLI stays light.
    from ..daemon.options import ModelMissing, ServeOptions
    from ..daemon.sd_notify import Notifier
    from ..daemon.supervisor import Supervisor

    notifier = Notifier.from_environment()  # also hides NOTIFY_SOCKET from every child
    setup_logging()
    overrides = list(args.overrides) + ([f"server.port={args.port}"] if args.port is not None else [])
    # Absolute: children and the status document should not depend on the working directory.
    dirs = dirs_from(args)
    dirs = Dirs(dirs.config.absolute(), dirs.state.absolute(), dirs.runtime.absolute(), dirs.cache.absolute())
    options = ServeOptions(dirs, tuple(overrides), demo=args.demo)
    try:
        loaded = options.load()
    except ConfigError:
        notifier.status("invalid configuration: see the log")
        raise
    except ModelMissing as exc:
        print(f"a10tts: {exc}", file=sys.stderr)
        notifier.status("no model directory: see the log")
        return exc.exit_code
    setup_logging(loaded.config.logging.level, loaded.config.logging.format)
    return asyncio.run(Supervisor(options, loaded, notifier).run())
