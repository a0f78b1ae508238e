"""Command-line options of `a10tts-tui` and what they resolve to."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from a10tts.config import Config, ConfigError, Dirs, load_config


@dataclass(frozen=True)
class Options:
    dirs: Dirs
    url: str  # the HTTP API the dashboard reads
    host: str  # the listening address the port panel checks (server.host)
    port: int
    unit: str
    interval_s: float


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="a10tts-tui", description="Dashboard of an a10tts service: GPUs, port, "
                                "live time to first audio, systemd unit and journal, tuning profiles.")
    p.add_argument("--url", help="HTTP API of the service (default: http://127.0.0.1:<server.port of the "
                                 "configuration>)")
    p.add_argument("--config-dir", metavar="DIR",
                   help="configuration directory (default: $A10TTS_CONFIG_DIR, $CONFIGURATION_DIRECTORY "
                        "or /etc/a10tts)")
    p.add_argument("--state-dir", metavar="DIR",
                   help="state directory (default: $A10TTS_STATE_DIR, $STATE_DIRECTORY or /var/lib/a10tts)")
    p.add_argument("--runtime-dir", metavar="DIR",
                   help="runtime directory with admin.sock (default: $A10TTS_RUNTIME_DIR, $RUNTIME_DIRECTORY "
                        "or /run/a10tts)")
    p.add_argument("--unit", default="a10tts", help="systemd unit to watch (default: a10tts)")
    p.add_argument("--interval", type=_interval, default=1.0, metavar="SECONDS",
                   help="refresh interval (default: 1)")
    return p


def parse(argv: Sequence[str] | None = None) -> Options:
    args = parser().parse_args(argv)
    dirs = Dirs.resolve(args.config_dir, args.state_dir, args.runtime_dir)
    try:
        server = load_config(dirs).config.server
    except ConfigError:
        server = Config().server  # the profiles panel shows the problems; watch the default port
    url = args.url or f"http://127.0.0.1:{server.port}"
    host, port = server.host, server.port
    if args.url:
        # An explicit URL names the port to watch as well.
        parts = urlsplit(url)
        host, port = parts.hostname or host, parts.port or (443 if parts.scheme == "https" else 80)
    return Options(dirs, url, host, port, args.unit, args.interval)


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, found {text!r}") from None
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"expected 0.1 to 3600 seconds, found {text}")
    return value
