"""Optional TensorRT engine for the flow estimator (``decode.flow_tensorrt``).

The engine is built from our ONNX export (with the per-row ``streaming`` input, so streaming
chunks stay equal to the PyTorch estimator), once per model, GPU, TensorRT version, dtype and
shape profile, and cached under the engine cache directory. ``TensorRTEstimator`` has the
estimator's call signature, so the CFM's Euler loop runs it unchanged; shapes outside the
profile go to the PyTorch estimator, kept as a fallback.

Untested on hardware: TensorRT is not installed where this was written (see docs/design.md).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from a10tts.engine.flow.export import EXPORT_VERSION, INPUTS, OUTPUT, STREAMING_INPUT, export_model_dir

log = logging.getLogger(__name__)

MAX_FRAMES = 3000  # 60 s of mel, upstream's profile; longer inputs run in PyTorch
OPT_FRAMES = 500  # upstream's; TensorRT tunes its kernels for this shape
WORKSPACE_BYTES = 4 << 30


class TensorRTUnavailable(RuntimeError):
    """``decode.flow_tensorrt`` is on but cannot work here; the message says how to fix it."""


def require_tensorrt(device: torch.device) -> ModuleType:
    """The ``tensorrt`` module, or TensorRTUnavailable explaining what to install or set."""
    off = "or set decode.flow_tensorrt = false to run the flow estimator in PyTorch"
    if device.type != "cuda":
        raise TensorRTUnavailable(
            f"decode.flow_tensorrt = true needs a CUDA GPU, but the decode stage runs on {device} "
            f"(model.device); use a GPU host, {off}")
    try:
        import tensorrt
    except ImportError as exc:
        raise TensorRTUnavailable(
            f"decode.flow_tensorrt = true, but the tensorrt package cannot be imported ({exc}); install "
            f"it into a10tts's Python environment (pip install 'a10tts[gpu]', i.e. 'tensorrt>=10'), {off}"
        ) from None
    return tensorrt


@dataclass(frozen=True)
class Profile:
    """Estimator shapes the engine accepts: batch (already doubled for CFG) and frames."""

    max_batch: int
    max_frames: int = MAX_FRAMES
    opt_batch: int = 2  # one request with its CFG twin: the latency-critical case
    opt_frames: int = OPT_FRAMES

    @classmethod
    def for_decode(cls, max_batch_size: int) -> Profile:
        return cls(max_batch=2 * max_batch_size)

    def covers(self, batch: int, frames: int) -> bool:
        return batch <= self.max_batch and frames <= self.max_frames

    def shapes(self, channels: int) -> dict[str, tuple[tuple[int, ...], ...]]:
        """(min, opt, max) shape of every input."""
        opt = (min(self.opt_batch, self.max_batch), min(self.opt_frames, self.max_frames))
        points = [(1, 1), opt, (self.max_batch, self.max_frames)]
        per_input = {
            "x": lambda b, t: (b, channels, t), "mask": lambda b, t: (b, 1, t),
            "mu": lambda b, t: (b, channels, t), "t": lambda b, t: (b,),
            "spks": lambda b, t: (b, channels), "cond": lambda b, t: (b, channels, t),
            STREAMING_INPUT: lambda b, t: (b,),
        }
        return {name: tuple(shape(b, t) for b, t in points) for name, shape in per_input.items()}


@dataclass(frozen=True)
class EngineKey:
    """What a cached engine depends on; any change gives another file name."""

    model_dir: str
    flow_weights: str  # size and mtime of flow.pt: a replaced model rebuilds
    gpu: str
    tensorrt_version: str
    dtype: str
    profile: Profile
    export_version: int = EXPORT_VERSION

    @classmethod
    def of(cls, model_dir: str | os.PathLike, gpu: str, tensorrt_version: str, dtype: torch.dtype,
           profile: Profile) -> EngineKey:
        model_dir = Path(model_dir).resolve()
        weights = (model_dir / "flow.pt").stat()
        return cls(str(model_dir), f"{weights.st_size}:{weights.st_mtime_ns}", gpu, tensorrt_version,
                   str(dtype).removeprefix("torch."), profile)

    def path(self, cache_dir: str | os.PathLike) -> Path:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]
        return Path(cache_dir) / "tensorrt" / f"flow-estimator-{self.dtype}-{digest}.plan"


def build_engine(trt: ModuleType, onnx_path: Path, engine_path: Path, profile: Profile,
                 channels: int, fp16: bool) -> None:
    """Parse the ONNX file and write a serialized engine (minutes for the full-size model)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if fp16:  # inputs and outputs stay fp32 (t needs it); layers may run in fp16
        config.set_flag(trt.BuilderFlag.FP16)
    optimization = builder.create_optimization_profile()
    for name, (low, opt, high) in profile.shapes(channels).items():
        optimization.set_shape(name, low, opt, high)
    config.add_optimization_profile(optimization)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path} (see the log above)")
    partial = engine_path.with_name(engine_path.name + ".partial")
    partial.write_bytes(bytes(serialized))
    os.replace(partial, engine_path)


class TensorRTEstimator(nn.Module):
    """The estimator's call, run by a TensorRT engine (fp32 inputs and output, bool streaming)."""

    def __init__(self, trt: ModuleType, engine_bytes: bytes, fallback: nn.Module, profile: Profile) -> None:
        super().__init__()
        self.fallback = fallback
        self.out_channels = fallback.out_channels
        self.profile = profile
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))  # must outlive the engine
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise RuntimeError("TensorRT could not load the cached flow estimator engine")
        self._context = self._engine.create_execution_context()

    def forward(self, x: Tensor, mask: Tensor, mu: Tensor, t: Tensor, spks: Tensor, cond: Tensor,
                streaming: bool | Tensor = False) -> Tensor:
        batch, _, frames = x.shape
        if not self.profile.covers(batch, frames):
            return self.fallback(x, mask, mu, t, spks, cond, streaming)
        if not isinstance(streaming, Tensor):
            streaming = torch.full((batch,), bool(streaming), device=x.device)
        # Contiguous copies: the CFM passes views (t is an expanded scalar) and TensorRT reads raw memory.
        feeds = {name: value.to(torch.float32).contiguous()
                 for name, value in zip(INPUTS, (x, mask, mu, t, spks, cond))}
        feeds[STREAMING_INPUT] = streaming.to(device=x.device, dtype=torch.bool).contiguous()
        output = torch.empty(batch, self.out_channels, frames, device=x.device, dtype=torch.float32)
        for name, value in feeds.items():
            self._context.set_input_shape(name, tuple(value.shape))
            self._context.set_tensor_address(name, value.data_ptr())
        self._context.set_tensor_address(OUTPUT, output.data_ptr())
        if not self._context.execute_async_v3(torch.cuda.current_stream(x.device).cuda_stream):
            raise RuntimeError("the TensorRT flow estimator failed to run")
        return output.to(x.dtype)


def _cached_engine(trt: ModuleType, key: EngineKey, cache_dir: Path, channels: int, fp16: bool) -> bytes:
    """The engine for ``key``, built on first use. A lock file makes the other decode processes
    wait for the one that builds instead of building the same engine at the same time."""
    path = key.path(cache_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "w")  # noqa: SIM115 (held until the engine exists)
    except OSError as exc:
        raise TensorRTUnavailable(
            f"cannot write the TensorRT engine cache in {path.parent} ({exc}); point A10TTS_CACHE_DIR "
            f"at a writable directory") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            log.info("building the TensorRT flow estimator engine %s (takes minutes, once)", path)
            with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
                onnx_path = export_model_dir(key.model_dir, scratch, streaming_input=True)
                build_engine(trt, onnx_path, path, key.profile, channels, fp16)
        return path.read_bytes()


def enable_tensorrt(flow: Any, model_dir: str | os.PathLike, device: torch.device, max_batch_size: int,
                    cache_dir: str | os.PathLike | None = None) -> None:
    """Replace ``flow``'s estimator by a TensorRT engine (an alternative to its CUDA graphs)."""
    trt = require_tensorrt(device)
    if cache_dir is None:
        from a10tts.config import Dirs  # $A10TTS_CACHE_DIR, systemd's $CACHE_DIRECTORY, /var/cache/a10tts

        cache_dir = Dirs.resolve().cache
    estimator = flow.decoder.estimator
    dtype = next(estimator.parameters()).dtype
    profile = Profile.for_decode(max_batch_size)
    key = EngineKey.of(model_dir, torch.cuda.get_device_name(device), trt.__version__, dtype, profile)
    engine = _cached_engine(trt, key, Path(cache_dir), estimator.out_channels, fp16=dtype != torch.float32)
    flow.decoder.estimator = TensorRTEstimator(trt, engine, estimator, profile)
