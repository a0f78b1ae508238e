"""A CUDA stage process does its host work on one thread (``stage.device_of``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from a10tts.config import Config
from a10tts.pipeline.spec import StageSpec
from a10tts.pipeline.stage import device_of

pytestmark = pytest.mark.gpu


def test_cuda_stages_do_their_host_work_on_one_thread() -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        spec = StageSpec("decode", 0, Config.model_validate({"model": {"device": "cuda"}}),
                         Path("m"), Path("s"), Path("r"), Path("i"))
        assert device_of(spec).type == "cuda"
        assert torch.get_num_threads() == 1  # no pool spinning on the cores the stages' loops wait for
    finally:
        torch.set_num_threads(previous)
