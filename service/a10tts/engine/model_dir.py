"""The official CosyVoice2-0.5B model directory: its layout, its modules, and `verify`.

The directory is loaded unchanged: `cosyvoice2.yaml` (hyper-parameters), `llm.pt`, `flow.pt`,
`hift.pt` (upstream state-dict keys), `campplus.onnx`, `speech_tokenizer_v2.onnx` and
`CosyVoice-BlankEN/` (the Qwen2 tokenizer and config; its LM weights are unused, `llm.pt`
has them). The demo model (`a10tts model init-demo`) has the same layout.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CheckpointError, Shape, compare_keys, load_state_dict
from .flow import FlowModel
from .hift import HiFTGenerator
from .hparams import HparamsError, Node, load_hparams
from .llm import CosyVoice2LM

CONFIG_FILE = "cosyvoice2.yaml"
QWEN_DIR = "CosyVoice-BlankEN"
WEIGHT_FILES = {"llm": "llm.pt", "flow": "flow.pt", "hift": "hift.pt"}
ONNX_FILES = {"speaker": "campplus.onnx", "speech_tokenizer": "speech_tokenizer_v2.onnx"}
DEMO_MARKER = "A10TTS_DEMO_MODEL"  # present in demo directories: their audio is noise

# The yaml's class names that we implement, per component.
_SUPPORTED = {"llm": "Qwen2LM", "flow": "CausalMaskedDiffWithXvec", "hift": "HiFTGenerator"}


class ModelDirError(ValueError):
    """The model directory is unusable; the message lists every problem and how to fix it."""


@dataclass
class ModelDir:
    path: Path
    hparams: dict[str, Any]
    qwen_config: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> "ModelDir":
        """Read the yaml and the Qwen2 config; raise ModelDirError naming what is wrong."""
        path = Path(path)
        if not path.is_dir():
            raise ModelDirError(
                f"{path}: model directory not found. Put the official CosyVoice2-0.5B directory there "
                "(or point model.dir at it), or create a demo model with `a10tts model init-demo DIR`."
            )
        try:
            hparams = load_hparams(path / CONFIG_FILE, overrides={"qwen_pretrain_path": str(path / QWEN_DIR)})
        except HparamsError as exc:
            raise ModelDirError(str(exc)) from None
        problems = []
        for component, class_name in _SUPPORTED.items():
            node = hparams.get(component)
            if not isinstance(node, Node):
                problems.append(f"{path / CONFIG_FILE}: no '{component}: !new:...' entry")
            elif node.class_name != class_name:
                problems.append(f"{path / CONFIG_FILE}: {component} is {node.target}; a10tts serves "
                                f"CosyVoice2 ({class_name}) only")
        qwen_file = path / QWEN_DIR / "config.json"
        qwen_config: dict[str, Any] = {}
        try:
            qwen_config = json.loads(qwen_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"{qwen_file}: cannot read the Qwen2 config: {exc}")
        if problems:
            raise ModelDirError("\n".join(problems))
        return cls(path, hparams, qwen_config)

    @property
    def is_demo(self) -> bool:
        return (self.path / DEMO_MARKER).exists()

    def build(self, component: str) -> nn.Module:
        """Construct one component (on torch's current default device) from the yaml."""
        args = self.hparams[component].args
        try:
            if component == "llm":
                return CosyVoice2LM.from_hparams(args, qwen_config=self.qwen_config)
            return {"flow": FlowModel, "hift": HiFTGenerator}[component].from_hparams(args)
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelDirError(f"{self.path / CONFIG_FILE}: {component}: {exc}") from None

    def load(self, component: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
        """Build a component and load its weights; ModelDirError when they do not fit."""
        # Built on the CPU, not on "meta": non-persistent buffers (rotary frequencies, the
        # flow's fixed noise, STFT windows) are computed at construction and must be real.
        module = self.build(component)
        path = self.path / WEIGHT_FILES[component]
        try:
            state = load_state_dict(path)
        except CheckpointError as exc:
            raise ModelDirError(str(exc)) from None
        state = canonical_state(module, state)
        report = compare_keys(expected_shapes(module), state)
        if not report.ok:
            raise ModelDirError(f"{path}: does not match {CONFIG_FILE}: {report.describe()}")
        load_upstream(module, state)
        return module.to(device=device, dtype=dtype).eval()


def expected_shapes(module: nn.Module) -> dict[str, Shape]:
    """The upstream state-dict keys and shapes a component's checkpoint must have."""
    upstream = getattr(module, "upstream_key_shapes", None)
    if callable(upstream):
        return upstream()
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def canonical_state(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's keys in the spelling `expected_shapes` uses (HiFT has two key styles)."""
    canonicalize = getattr(module, "canonicalize_state_dict", None)
    return canonicalize(state) if canonicalize is not None else state


def load_upstream(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    loader: Callable[[dict[str, torch.Tensor]], Any] | None = getattr(module, "load_upstream_state_dict", None)
    if loader is not None:
        loader(state)
    else:
        module.load_state_dict(state, strict=True, assign=False)
