"""Entry point of `a10tts-tui`."""

from __future__ import annotations

import sys


def main() -> int:
    print("a10tts-tui: the dashboard is not part of this version yet; "
          "use `a10tts config show` and `a10tts profile list`.", file=sys.stderr)
    return 1
