"""ONNX export of the flow estimator, run in onnxruntime against the PyTorch estimator (tiny model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from a10tts.cli import main as cli_main
from a10tts.engine.flow.export import INPUTS, ONNX_FILE, OUTPUT, STREAMING_INPUT, export_estimator
from a10tts.engine.model_dir import ModelDir

TINY = Path(__file__).resolve().parents[2] / "data" / "golden" / "tiny_model"
TOL = 1e-4  # fp32 on the CPU: differences come from onnxruntime's kernel order only
SIZES = [(2, 77), (6, 130)]  # (batch, frames): neither is the traced (2, 128); both > one 50-frame chunk


@pytest.fixture(scope="module")
def estimator():
    return ModelDir.open(TINY).load("flow").decoder.estimator


@pytest.fixture(scope="module")
def exported(estimator, tmp_path_factory) -> dict[bool, onnxruntime.InferenceSession]:
    """Sessions of both exports, keyed by streaming_input."""
    folder = tmp_path_factory.mktemp("onnx")
    sessions = {}
    for streaming_input in (False, True):
        path = export_estimator(estimator, folder / f"{streaming_input}.onnx", streaming_input=streaming_input)
        sessions[streaming_input] = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sessions


def _inputs(estimator, batch: int, frames: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(batch * 1000 + frames)
    channels = estimator.out_channels
    lengths = torch.randint(frames // 2, frames + 1, (batch,), generator=generator)
    lengths[0] = frames
    mask = (torch.arange(frames) < lengths.unsqueeze(1)).float().unsqueeze(1)
    x, mu, cond = (torch.randn(batch, channels, frames, generator=generator) for _ in range(3))
    t, spks = torch.rand(batch, generator=generator), torch.randn(batch, channels, generator=generator)
    return x, mask, mu * mask, t, spks, cond * mask


def _check(session, feeds: dict[str, torch.Tensor], expected: torch.Tensor) -> None:
    [got] = session.run([OUTPUT], {name: value.numpy() for name, value in feeds.items()})
    assert got.shape == tuple(expected.shape)
    np.testing.assert_allclose(got, expected.numpy(), atol=TOL, rtol=TOL)


def test_upstream_interface(exported) -> None:
    session = exported[False]
    assert [i.name for i in session.get_inputs()] == list(INPUTS)
    assert [o.name for o in session.get_outputs()] == [OUTPUT]
    assert session.get_inputs()[0].shape == ["batch", 80, "seq_len"]
    assert [i.name for i in exported[True].get_inputs()] == [*INPUTS, STREAMING_INPUT]


@pytest.mark.parametrize(("batch", "frames"), SIZES)
def test_full_attention_matches_torch(estimator, exported, batch: int, frames: int) -> None:
    inputs = _inputs(estimator, batch, frames)
    with torch.no_grad():
        expected = estimator(*inputs, False)
    _check(exported[False], dict(zip(INPUTS, inputs)), expected)
    _check(exported[True], {**dict(zip(INPUTS, inputs)), STREAMING_INPUT: torch.zeros(batch, dtype=torch.bool)},
           expected)


@pytest.mark.parametrize(("batch", "frames"), SIZES)
def test_streaming_rows_match_torch(estimator, exported, batch: int, frames: int) -> None:
    """Mixed per-row flags, over more frames than one chunk, so the chunk mask matters."""
    inputs = _inputs(estimator, batch, frames)
    streaming = torch.arange(batch) % 2 == 0
    with torch.no_grad():
        expected = estimator(*inputs, streaming)
        assert not torch.allclose(expected[0], estimator(*inputs, False)[0], atol=1e-3)
    _check(exported[True], {**dict(zip(INPUTS, inputs)), STREAMING_INPUT: streaming}, expected)


def test_cli_writes_into_a_directory(tmp_path: Path, capsys) -> None:
    assert cli_main(["model", "export-onnx", str(TINY), "-o", str(tmp_path)]) == 0
    model = onnx.load(str(tmp_path / ONNX_FILE))
    assert [i.name for i in model.graph.input] == list(INPUTS)
    assert "wrote the flow estimator" in capsys.readouterr().out


@pytest.mark.parametrize("problem", ["no_model", "no_output_dir"])
def test_cli_bad_input_is_a_clear_error(tmp_path: Path, capsys, problem: str) -> None:
    model, output = (tmp_path / "missing", None) if problem == "no_model" else (TINY, tmp_path / "no" / "x.onnx")
    argv = ["model", "export-onnx", str(model)] + (["-o", str(output)] if output else [])
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("a10tts model export-onnx: ")
    assert ("model directory not found" in err) if problem == "no_model" else ("no such directory" in err)
    assert not list(tmp_path.rglob("*.onnx*"))
