"""What `a10tts serve` resolves before it starts anything."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from a10tts.config import Dirs
from a10tts.daemon.options import MISSING_MODEL_EXIT, ModelMissing, ServeOptions, missing_model_message


def dirs(config_dir: Path, state_dir: Path, tmp_path: Path) -> Dirs:
    return Dirs.resolve(config_dir, state_dir, tmp_path / "run", env={})


def test_missing_model_says_where_and_how(config_dir: Path, state_dir: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INVOCATION_ID", raising=False)  # not under systemd
    options = ServeOptions(dirs(config_dir, state_dir, tmp_path), (f'model.dir="{tmp_path}/m"',))
    with pytest.raises(ModelMissing) as caught:
        options.load()
    message = str(caught.value)
    assert caught.value.exit_code == MISSING_MODEL_EXIT == 78
    assert f"no model directory at {tmp_path}/m (model.dir, from command line" in message
    assert f"--local-dir {tmp_path}/m" in message and "a10tts serve --demo" in message
    assert f"\n    a10tts model init-demo {tmp_path}/m\n" in message


def test_under_systemd_the_demo_model_is_made_as_the_service_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
    monkeypatch.setattr(os, "geteuid", lambda: 65534)
    name = pwd.getpwuid(65534).pw_name  # nobody
    message = missing_model_message(Path("/var/lib/a10tts/models/CosyVoice2-0.5B"), "default")
    assert f"runuser -u {name} -- a10tts model init-demo /var/lib/a10tts/models/CosyVoice2-0.5B" in message


def test_demo_points_at_the_state_directory(config_dir: Path, state_dir: Path, tmp_path: Path) -> None:
    options = ServeOptions(dirs(config_dir, state_dir, tmp_path), demo=True)
    options.demo_model_dir.mkdir(parents=True)
    loaded = options.load()
    assert loaded.config.model.dir == state_dir / "models" / "demo"


def test_a_profile_can_be_tried_before_it_is_recorded(config_dir: Path, state_dir: Path, tmp_path: Path) -> None:
    options = ServeOptions(dirs(config_dir, state_dir, tmp_path), (f'model.dir="{tmp_path}"',))
    assert options.load("low-latency").config.server.http_workers == 1
    assert not (state_dir / "active-profile").exists()
