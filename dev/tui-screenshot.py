"""Save an SVG screenshot of the dashboard watching a running service (for docs/).

Usage: python dev/tui-screenshot.py URL CONFIG_DIR STATE_DIR RUNTIME_DIR OUT.svg [SECONDS]
"""

from __future__ import annotations

import asyncio
import os
import sys

from a10tts.config import Dirs
from a10tts_tui.app import A10ttsApp
from a10tts_tui.options import Options


async def main() -> None:
    url, config_dir, state_dir, runtime_dir, out = sys.argv[1:6]
    seconds = float(sys.argv[6]) if len(sys.argv) > 6 else 8.0
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    app = A10ttsApp(Options(Dirs.resolve(config_dir, state_dir, runtime_dir), url, "127.0.0.1", port, "a10tts", 1.0))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(seconds)  # a few refreshes: the TTFA plot fills in
        app.save_screenshot(filename=os.path.basename(out), path=os.path.dirname(os.path.abspath(out)))


asyncio.run(main())
