"""ONNX export of the flow estimator, interchangeable with upstream's ``flow.decoder.estimator.fp32.onnx``.

Upstream's file has inputs ``x, mask, mu, t, spks, cond`` and output ``estimator_out`` and is
traced without the streaming flag, so its attention is always full-context. The default export
here is the same graph (also with a dynamic batch axis). ``streaming_input=True`` adds a
seventh input ``streaming`` (``[B]`` bool, chunked attention per row), which our TensorRT
engine needs to match the PyTorch estimator in streaming mode.
"""

from __future__ import annotations

import inspect
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from a10tts.engine.flow.estimator import CausalConditionalDecoder

ONNX_FILE = "flow.decoder.estimator.fp32.onnx"
INPUTS = ("x", "mask", "mu", "t", "spks", "cond")
STREAMING_INPUT = "streaming"
OUTPUT = "estimator_out"
OPSET = 18  # upstream's; LayerNormalization (17+) keeps TensorRT's layer norms in fp32
# Bumped whenever the exported graph changes, so cached TensorRT engines are rebuilt.
EXPORT_VERSION = 2  # 2: q/k/v as one MatMul (fused_linear)

_TRACE_BATCH, _TRACE_FRAMES = 2, 128  # more frames than a streaming chunk: traces the chunk mask


class _EstimatorGraph(nn.Module):
    """The estimator with the streaming flag as a tensor input (or fixed off, as upstream)."""

    def __init__(self, estimator: CausalConditionalDecoder) -> None:
        super().__init__()
        self.estimator = estimator

    def forward(self, x: Tensor, mask: Tensor, mu: Tensor, t: Tensor, spks: Tensor, cond: Tensor,
                streaming: Tensor | None = None) -> Tensor:
        flag: bool | Tensor = False if streaming is None else streaming
        return self.estimator(x, mask, mu, t, spks, cond, flag)


def _trace_inputs(estimator: CausalConditionalDecoder, streaming_input: bool) -> tuple[Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    channels, batch, frames = estimator.out_channels, _TRACE_BATCH, _TRACE_FRAMES
    inputs = (
        torch.randn(batch, channels, frames, generator=generator),
        torch.ones(batch, 1, frames),
        torch.randn(batch, channels, frames, generator=generator),
        torch.rand(batch, generator=generator),
        torch.randn(batch, channels, generator=generator),
        torch.randn(batch, channels, frames, generator=generator),
    )
    return inputs + (torch.tensor([True, False]),) if streaming_input else inputs


def _dynamic_axes(names: tuple[str, ...]) -> dict[str, dict[int, str]]:
    per_frame = {0: "batch", 2: "seq_len"}  # upstream's name for the frame axis
    axes = {name: per_frame for name in ("x", "mask", "mu", "cond", OUTPUT)}
    axes.update({name: {0: "batch"} for name in ("t", "spks", STREAMING_INPUT) if name in names})
    return axes


def export_estimator(
    estimator: CausalConditionalDecoder, path: str | os.PathLike, *, streaming_input: bool = False
) -> Path:
    """Write the estimator (traced in fp32 on the CPU) to ``path``; batch and frames are dynamic.

    The file is written next to ``path`` and renamed, so a failed export leaves nothing behind.
    """
    path = Path(path)
    graph = _EstimatorGraph(estimator).to("cpu", torch.float32).eval()
    names = INPUTS + ((STREAMING_INPUT,) if streaming_input else ())
    partial = path.with_name(path.name + ".partial")
    # The TorchScript exporter: the torch.export-based one needs onnxscript, not a dependency.
    # torch < 2.5 has no `dynamo` argument and only that exporter.
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
            torch.onnx.export(
                graph, _trace_inputs(estimator, streaming_input), str(partial),
                input_names=list(names), output_names=[OUTPUT], dynamic_axes=_dynamic_axes(names),
                opset_version=OPSET, do_constant_folding=True, **legacy,
            )
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def export_model_dir(
    model_dir: str | os.PathLike, output: str | os.PathLike | None = None, *, streaming_input: bool = False
) -> Path:
    """Export the estimator of a model directory's ``flow.pt``.

    ``output`` defaults to ``MODEL_DIR/flow.decoder.estimator.fp32.onnx``; an existing directory
    receives a file of that name. Raises ModelDirError (bad model) or FileNotFoundError.
    """
    from a10tts.engine.model_dir import ModelDir  # imports every component; only needed here

    model = ModelDir.open(model_dir)
    target = Path(output) if output is not None else model.path / ONNX_FILE
    if target.is_dir():
        target = target / ONNX_FILE
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{target.parent}: no such directory for the ONNX file")
    flow = model.load("flow", "cpu", torch.float32)
    return export_estimator(flow.decoder.estimator, target, streaming_input=streaming_input)
