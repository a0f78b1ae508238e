"""CosyVoice2 as a library: load a model directory, synthesise one request, stream or not.

This is the single-request path (used by `a10tts synth`, warm-up and tests). The server's
pipeline calls the same modules in batches across requests; both share `streaming.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .frontend import Frontend, FrontendLimits, ModelInputs, PromptFeatures
from .model_dir import ModelDir
from .token2wav import Token2Wav

SAMPLE_RATE = 24000
MODES = ("zero_shot", "cross_lingual", "instruct2")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class EngineOptions:
    device: str = "cpu"
    llm_dtype: str = "float32"
    flow_dtype: str = "float32"
    first_hop_tokens: int = 25
    onnx_threads: int = 1
    limits: FrontendLimits = FrontendLimits()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class CosyVoice2:
    def __init__(self, model_dir: str | Path | ModelDir, options: EngineOptions = EngineOptions()):
        self.model_dir = model_dir if isinstance(model_dir, ModelDir) else ModelDir.open(model_dir)
        self.options = options
        self.device = resolve_device(options.device)
        self.llm = self.model_dir.load("llm", self.device, DTYPES[options.llm_dtype])
        self.flow = self.model_dir.load("flow", self.device, DTYPES[options.flow_dtype])
        self.hift = self.model_dir.load("hift", self.device, torch.float32)
        self.token2wav = Token2Wav(self.flow, self.hift, options.first_hop_tokens)
        self.frontend = Frontend.from_model_dir(
            self.model_dir.path,
            token_mel_ratio=self.flow.token_mel_ratio,
            limits=options.limits,
            device=self.device,
            intra_op_threads=options.onnx_threads,
        )

    @property
    def is_demo(self) -> bool:
        return self.model_dir.is_demo

    def prompt(self, prompt_text: str, prompt_wav: str | Path | bytes) -> PromptFeatures:
        """A voice's features, computed once and reusable across requests."""
        return self.frontend.prompt_features(prompt_text, prompt_wav)

    def inputs(self, mode: str, text: str, prompt: PromptFeatures, instruct_text: str = "") -> list[ModelInputs]:
        if mode == "zero_shot":
            return self.frontend.frontend_zero_shot(text, prompt)
        if mode == "cross_lingual":
            return self.frontend.frontend_cross_lingual(text, prompt)
        if mode == "instruct2":
            return self.frontend.frontend_instruct2(text, instruct_text, prompt)
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")

    @torch.inference_mode()
    def synthesize(
        self,
        mode: str,
        text: str,
        prompt: PromptFeatures,
        *,
        instruct_text: str = "",
        stream: bool = False,
        speed: float = 1.0,
        seed: int | None = None,
        num_tokens: int | None = None,
    ) -> Iterator[Tensor]:
        """Yield 24 kHz float32 audio chunks (one per segment unless streaming).

        `seed` makes sampling reproducible; `num_tokens` forces that many speech tokens per
        segment (benchmarks: random weights never stop on their own).
        """
        if stream and speed != 1.0:
            raise ValueError("speed can only be changed without streaming")
        if not 0.5 <= speed <= 2.0:
            raise ValueError(f"speed must be between 0.5 and 2.0, got {speed}")
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed if seed is not None else torch.seed())
        for segment in self.inputs(mode, text, prompt, instruct_text):
            tokens = self.llm.generate(
                segment.text_ids.to(self.device),
                segment.llm_prompt_text_ids.to(self.device),
                segment.llm_prompt_speech_tokens.to(self.device),
                generator=generator,
                num_tokens=num_tokens,
            )
            yield from self.token2wav(tokens, segment.prompt, stream=stream, speed=speed, generator=generator)
