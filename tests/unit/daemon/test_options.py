"""What `a10tts serve` resolves before it starts anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from a10tts.config import Dirs
from a10tts.daemon.options import MISSING_MODEL_EXIT, ModelMissing, ServeOptions


def dirs(config_dir: Path, state_dir: Path, tmp_path: Path) -> Dirs:
    return Dirs.resolve(config_dir, state_dir, tmp_path / "run", env={})


def test_missing_model_says_where_and_how(config_dir: Path, state_dir: Path, tmp_path: Path) -> None:
    options = ServeOptions(dirs(config_dir, state_dir, tmp_path), (f'model.dir="{tmp_path}/m"',))
    with pytest.raises(ModelMissing) as caught:
        options.load()
    message = str(caught.value)
    assert caught.value.exit_code == MISSING_MODEL_EXIT == 78
    assert f"no model directory at {tmp_path}/m (model.dir, from command line" in message
    assert f"--local-dir {tmp_path}/m" in message and "a10tts serve --demo" in message


def test_demo_points_at_the_state_directory(config_dir: Path, state_dir: Path, tmp_path: Path) -> None:
    options = ServeOptions(dirs(config_dir, state_dir, tmp_path), demo=True)
    options.demo_model_dir.mkdir(parents=True)
    loaded = options.load()
    assert loaded.config.model.dir == state_dir / "models" / "demo"


def test_a_profile_can_be_tried_before_it_is_recorded(config_dir: Path, state_dir: Path, tmp_path: Path) -> None:
    options = ServeOptions(dirs(config_dir, state_dir, tmp_path), (f'model.dir="{tmp_path}"',))
    assert options.load("low-latency").config.server.http_workers == 1
    assert not (state_dir / "active-profile").exists()
