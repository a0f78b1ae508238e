"""A demo model directory (random weights, official layout) shared by the pipeline unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from a10tts.engine.demo import init_demo
from a10tts.engine.model_dir import ModelDir


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> ModelDir:
    return ModelDir.open(init_demo(tmp_path_factory.mktemp("pipeline") / "demo"))


@pytest.fixture(scope="session")
def demo_dir(demo_model: ModelDir) -> Path:
    return demo_model.path
