"""The TensorRT flow path without TensorRT: config, clear errors, profile, cache key, engine cache.

TensorRT itself is not installed here; a fake module stands in for the builder so that the
cache logic and the ONNX/profile agreement (every profile shape names a real ONNX input) run.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
import torch

from a10tts.config import ConfigError, Dirs, load_config
from a10tts.engine.flow.export import INPUTS, STREAMING_INPUT
from a10tts.engine.flow.tensorrt_engine import (
    EngineKey,
    Profile,
    TensorRTUnavailable,
    _cached_engine,
    enable_tensorrt,
    require_tensorrt,
)

TINY = Path(__file__).resolve().parents[2] / "data" / "golden" / "tiny_model"


def test_config_key_is_a_boolean(config_dir: Path, state_dir: Path) -> None:
    dirs = Dirs.resolve(config_dir, state_dir, env={})
    assert load_config(dirs, env={}, overrides=["decode.flow_tensorrt=true"]).config.decode.flow_tensorrt
    with pytest.raises(ConfigError) as info:
        load_config(dirs, env={}, overrides=['decode.flow_tensorrt="tensorrt"'])
    assert [p.key for p in info.value.problems] == ["decode.flow_tensorrt"]


def test_cpu_device_is_refused_with_the_fix() -> None:
    flow = SimpleNamespace(decoder=SimpleNamespace(estimator="untouched"))
    with pytest.raises(TensorRTUnavailable, match="needs a CUDA GPU.*decode.flow_tensorrt = false"):
        enable_tensorrt(flow, TINY, torch.device("cpu"), max_batch_size=4)
    assert flow.decoder.estimator == "untouched"


def test_missing_package_is_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    with pytest.raises(TensorRTUnavailable) as info:
        require_tensorrt(torch.device("cuda"))
    message = str(info.value)
    assert "cannot be imported" in message and "a10tts[gpu]" in message
    assert "decode.flow_tensorrt = false" in message


def test_profile_covers_cfg_doubled_batches() -> None:
    profile = Profile.for_decode(max_batch_size=8)
    assert profile.covers(16, 3000) and not profile.covers(17, 10) and not profile.covers(2, 3001)
    shapes = profile.shapes(channels=80)
    assert set(shapes) == {*INPUTS, STREAMING_INPUT}
    assert shapes["x"] == ((1, 80, 1), (2, 80, 500), (16, 80, 3000))
    assert shapes["spks"] == ((1, 80), (2, 80), (16, 80))
    assert shapes[STREAMING_INPUT] == ((1,), (2,), (16,))


def _key(model_dir: Path, **changes) -> EngineKey:
    base = dict(gpu="NVIDIA A10", tensorrt_version="10.3.0", dtype=torch.float16, profile=Profile(max_batch=16))
    return EngineKey.of(model_dir, **{**base, **changes})


def test_cache_key_changes_with_everything_the_engine_depends_on(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "flow.pt").write_bytes(b"weights")
    path = _key(model).path(tmp_path / "cache")
    assert path == _key(model).path(tmp_path / "cache")
    assert path.parent == tmp_path / "cache" / "tensorrt"
    assert path.name.startswith("flow-estimator-float16-") and path.suffix == ".plan"
    others = [
        _key(model, gpu="NVIDIA H100 80GB HBM3"),
        _key(model, tensorrt_version="10.4.0"),
        _key(model, dtype=torch.float32),
        _key(model, profile=Profile(max_batch=32)),
        dataclasses.replace(_key(model), model_dir=str(tmp_path / "other")),
    ]
    os.utime(model / "flow.pt", ns=(1, 1))  # a replaced flow.pt
    others.append(_key(model))
    names = {key.path(tmp_path / "cache").name for key in others}
    assert len(names) == len(others) and path.name not in names


class _FakeLogger:
    WARNING = 0

    def __init__(self, level: int) -> None:
        pass


class _FakeConfig:
    def __init__(self) -> None:
        self.profiles: list[dict] = []

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        pass

    def set_flag(self, flag: str) -> None:
        pass

    def add_optimization_profile(self, profile: SimpleNamespace) -> None:
        self.profiles.append(profile.shapes)


class _FakeParser:
    def __init__(self, network: SimpleNamespace, logger: _FakeLogger) -> None:
        self.network = network

    def parse_from_file(self, path: str) -> bool:
        self.network.inputs = [i.name for i in onnx.load(path).graph.input]
        return True


class _FakeTensorRT:
    """Just enough of tensorrt's builder API; the 'engine' lists the network's inputs."""

    __version__ = "0-fake"
    MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
    BuilderFlag = SimpleNamespace(FP16="fp16")
    Logger = _FakeLogger
    OnnxParser = _FakeParser

    def __init__(self) -> None:
        self.builds = 0

    def Builder(self, logger: _FakeLogger) -> SimpleNamespace:  # noqa: N802 (tensorrt's name)
        def build(network: SimpleNamespace, config: _FakeConfig) -> bytes:
            self.builds += 1
            [shapes] = config.profiles
            assert set(shapes) == set(network.inputs), "every profile shape must name an ONNX input"
            return ",".join(sorted(network.inputs)).encode()

        def profile() -> SimpleNamespace:
            shapes: dict = {}
            return SimpleNamespace(shapes=shapes, set_shape=lambda name, *s: shapes.__setitem__(name, s))

        return SimpleNamespace(create_network=lambda flags: SimpleNamespace(inputs=[]),
                               create_builder_config=_FakeConfig, create_optimization_profile=profile,
                               build_serialized_network=build)


def test_engine_is_built_once_from_the_streaming_export(tmp_path: Path) -> None:
    trt = _FakeTensorRT()
    key = EngineKey.of(TINY, "fake GPU", trt.__version__, torch.float16, Profile(max_batch=4))
    first = _cached_engine(trt, key, tmp_path, channels=80, fp16=True)
    assert first.decode().split(",") == sorted([*INPUTS, STREAMING_INPUT])
    assert _cached_engine(trt, key, tmp_path, channels=80, fp16=True) == first
    assert trt.builds == 1
    leftovers = [p.name for p in (tmp_path / "tensorrt").iterdir() if p.suffix not in (".plan", ".lock")]
    assert leftovers == []


def test_unwritable_cache_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    key = EngineKey.of(TINY, "fake GPU", "0-fake", torch.float16, Profile(max_batch=4))
    with pytest.raises(TensorRTUnavailable, match="A10TTS_CACHE_DIR"):
        _cached_engine(_FakeTensorRT(), key, blocker, channels=80, fp16=True)
