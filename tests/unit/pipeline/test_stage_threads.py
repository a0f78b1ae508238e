"""How many threads a stage process gives torch's CPU work (``stage.device_of``); on CUDA:
``tests/gpu/test_stage_cuda.py``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from a10tts.config import Config
from a10tts.pipeline.spec import StageSpec
from a10tts.pipeline.stage import device_of


def _spec(device: str) -> StageSpec:
    config = Config.model_validate({"model": {"device": device}})
    return StageSpec("decode", 0, config, Path("m"), Path("s"), Path("r"), Path("i"),
                     counts={"encode": 1, "llm": 1, "decode": 2, "api": 2})


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def test_cpu_stages_share_the_cores() -> None:
    assert device_of(_spec("cpu")).type == "cpu"
    assert torch.get_num_threads() == max(1, (os.cpu_count() or 1) // 4)  # encode, llm, 2 decode; not the HTTP workers
