"""Shared test setup: markers that need hardware or root are skipped where unavailable."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED_CONFIG = REPO / "etc" / "a10tts"


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs an NVIDIA GPU (run on the GPU machine)")
    skip_root = pytest.mark.skip(reason="system tests need root")
    cuda = None
    for item in items:
        if "gpu" in item.keywords:
            cuda = _has_cuda() if cuda is None else cuda
            if not cuda:
                item.add_marker(skip_gpu)
        if "system" in item.keywords and os.geteuid() != 0:
            item.add_marker(skip_root)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A writable copy of the shipped configuration directory."""
    target = tmp_path / "etc"
    shutil.copytree(SHIPPED_CONFIG, target)
    return target


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path
