"""Fixtures of the dashboard's tests: directories and options."""

from __future__ import annotations

from pathlib import Path

import pytest

from a10tts.config import Dirs
from a10tts_tui.options import Options


@pytest.fixture
def dirs(config_dir: Path, state_dir: Path, tmp_path: Path) -> Dirs:
    runtime = tmp_path / "run"
    runtime.mkdir()
    return Dirs(config=config_dir, state=state_dir, runtime=runtime, cache=tmp_path / "cache")


@pytest.fixture
def options(dirs: Dirs) -> Options:
    # Nothing listens on port 9 (discard) on these machines: a service that is not running.
    return Options(dirs, url="http://127.0.0.1:9", host="127.0.0.1", port=9, unit="a10tts", interval_s=3600)
