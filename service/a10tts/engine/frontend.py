"""CosyVoice2 frontend: text segments and prompt features, assembled per synthesis mode.

A prompt (voice) is turned into ``PromptFeatures`` once: transcript ids, 25 Hz speech tokens,
the 24 kHz prompt mel cut to exactly ``token_mel_ratio`` frames per token, and the CAM++
speaker embedding. They can be cached by voice id and reused. Each mode then decides what
the LM sees; the flow always gets the prompt tokens, mel and embedding:

=============  ======================================  ==========================
mode           LM prompt text                          LM prompt speech tokens
=============  ======================================  ==========================
zero-shot      normalised prompt transcript            prompt tokens
cross-lingual  none                                    none
instruct2      instruction + ``<|endofprompt|>``       none
=============  ======================================  ==========================
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol

import torch

from a10tts.engine import features
from a10tts.engine.onnx_models import SpeakerEncoder, SpeechTokenizer
from a10tts.engine.text_normalize import normalize, normalize_prompt
from a10tts.engine.tokenizer import END_OF_PROMPT, TextTokenizer

SPEECH_TOKENIZER_SAMPLE_RATE = 16000  # whisper mel and kaldi fbank are 16 kHz features
SPEECH_TOKENIZER_MELS = 128
SPEAKER_FBANK_BINS = 80
PROMPT_MEL_SAMPLE_RATE = 24000


class TokenExtractor(Protocol):
    def __call__(self, log_mel: torch.Tensor) -> torch.Tensor: ...  # [n_mels, T] -> int [T']


class EmbeddingExtractor(Protocol):
    def __call__(self, fbank: torch.Tensor) -> torch.Tensor: ...  # raw fbank [T, bins] -> [D]


@dataclass(frozen=True)
class FrontendLimits:
    """Request limits; violating one raises ``ValueError`` with a message meant for the client."""

    max_text_chars: int = 5000
    max_segment_tokens: int = 400  # per LM call: text segment, prompt transcript or instruction
    min_prompt_seconds: float = 0.5
    max_prompt_seconds: float = 30.0  # the speech tokenizer's own limit


@dataclass(frozen=True)
class PromptFeatures:
    """Everything a voice contributes, computed once per prompt (unbatched tensors)."""

    prompt_text_ids: torch.Tensor  # int32 [L]: normalised transcript; empty when none was given
    prompt_speech_tokens: torch.Tensor  # int32 [T]
    prompt_mel: torch.Tensor  # float32 [token_mel_ratio * T, 80]
    speaker_embedding: torch.Tensor  # float32 [192]

    def to(self, device: torch.device | str) -> PromptFeatures:
        return PromptFeatures(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass(frozen=True)
class ModelInputs:
    """What one text segment feeds the LM; the flow reads its prompt from ``prompt``."""

    text_ids: torch.Tensor  # int32 [N]
    llm_prompt_text_ids: torch.Tensor  # int32 [L], may be empty
    llm_prompt_speech_tokens: torch.Tensor  # int32 [T], may be empty
    prompt: PromptFeatures


def align_prompt(
    speech_tokens: torch.Tensor, prompt_mel: torch.Tensor, token_mel_ratio: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Trim tokens [T] and mel [F, C] so that F == token_mel_ratio * T (the flow conditions frame-exact)."""
    n_tokens = min(prompt_mel.shape[0] // token_mel_ratio, speech_tokens.shape[0])
    return speech_tokens[:n_tokens], prompt_mel[: token_mel_ratio * n_tokens]


def _ids(ids: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(ids, dtype=torch.int32, device=device)


class Frontend:
    def __init__(
        self,
        tokenizer: TextTokenizer,
        speech_tokenizer: TokenExtractor,
        speaker_encoder: EmbeddingExtractor,
        *,
        token_mel_ratio: int,
        limits: FrontendLimits = FrontendLimits(),
        device: torch.device | str = "cpu",
    ) -> None:
        self.tokenizer = tokenizer
        self.speech_tokenizer = speech_tokenizer
        self.speaker_encoder = speaker_encoder
        self.token_mel_ratio = token_mel_ratio
        self.limits = limits
        self.device = torch.device(device)

    @classmethod
    def from_model_dir(
        cls,
        model_dir: str | Path,
        *,
        token_mel_ratio: int,
        limits: FrontendLimits = FrontendLimits(),
        device: torch.device | str = "cpu",
        output_device: torch.device | str | None = None,
        intra_op_threads: int = 1,
    ) -> Frontend:
        """Load tokenizer and ONNX models of an official CosyVoice2 directory (``token_mel_ratio``
        comes from its yaml). The speech tokenizer runs on ``device``; CAM++ is small and stays on
        CPU, as upstream runs it. The ids and features returned live on ``output_device``
        (default: ``device``)."""
        model_dir = Path(model_dir)
        return cls(
            TextTokenizer.from_dir(model_dir / "CosyVoice-BlankEN"),
            SpeechTokenizer(model_dir / "speech_tokenizer_v2.onnx", device, intra_op_threads),
            SpeakerEncoder(model_dir / "campplus.onnx", "cpu", intra_op_threads),
            token_mel_ratio=token_mel_ratio,
            limits=limits,
            device=device if output_device is None else output_device,
        )

    # --- text -------------------------------------------------------------------------------

    def split_text(self, text: str) -> list[str]:
        """Normalise the text to speak and cut it into segments, one LM call each."""
        if not text or not text.strip():
            raise ValueError("text is empty")
        if len(text) > self.limits.max_text_chars:
            raise ValueError(f"text has {len(text)} characters; the limit is {self.limits.max_text_chars}")
        segments = normalize(text, self.tokenizer.encode)
        if not segments:
            raise ValueError("text has nothing to speak (only punctuation or symbols)")
        return segments

    def _encode(self, text: str, what: str) -> torch.Tensor:
        ids = self.tokenizer.encode(text)
        if len(ids) > self.limits.max_segment_tokens:
            raise ValueError(
                f"{what} is {len(ids)} tokens without a sentence break; the limit is "
                f"{self.limits.max_segment_tokens} (add punctuation or shorten it)"
            )
        return _ids(ids, self.device)

    def _segments(self, tts_text: str) -> list[torch.Tensor]:
        return [self._encode(segment, "a sentence of the text") for segment in self.split_text(tts_text)]

    # --- prompt -----------------------------------------------------------------------------

    def prompt_features(self, prompt_text: str, prompt_wav: str | Path | bytes) -> PromptFeatures:
        """Features of a voice prompt. ``prompt_wav`` is a file path or the file's bytes (any
        format soundfile reads, at least 16 kHz); ``prompt_text`` is its transcript, or ''
        for voices used only cross-lingually or with instructions."""
        text_ids = self._encode(normalize_prompt(prompt_text), "the prompt text")
        samples, sample_rate = features.load_audio(prompt_wav, max_seconds=self.limits.max_prompt_seconds)
        seconds = samples.shape[-1] / sample_rate
        if seconds < self.limits.min_prompt_seconds:
            raise ValueError(
                f"prompt audio is {seconds:.2f} s long; at least {self.limits.min_prompt_seconds:g} s is required"
            )
        wav = torch.from_numpy(samples)
        wav16k = features.resample(wav, sample_rate, SPEECH_TOKENIZER_SAMPLE_RATE)
        speech_tokens = self.speech_tokenizer(features.whisper_log_mel(wav16k, n_mels=SPEECH_TOKENIZER_MELS))
        embedding = self.speaker_encoder(features.kaldi_fbank(wav16k, num_mel_bins=SPEAKER_FBANK_BINS))
        prompt_mel = features.mel_24k(features.resample(wav, sample_rate, PROMPT_MEL_SAMPLE_RATE))
        speech_tokens, prompt_mel = align_prompt(speech_tokens, prompt_mel, self.token_mel_ratio)
        return PromptFeatures(
            prompt_text_ids=text_ids,
            prompt_speech_tokens=speech_tokens.to(self.device, torch.int32),
            prompt_mel=prompt_mel.to(self.device, torch.float32),
            speaker_embedding=embedding.to(self.device, torch.float32),
        )

    # --- modes ------------------------------------------------------------------------------

    def frontend_zero_shot(self, tts_text: str, prompt: PromptFeatures) -> list[ModelInputs]:
        """Clone the prompt voice; the LM continues the prompt transcript and its speech tokens."""
        if prompt.prompt_text_ids.numel() == 0:
            raise ValueError("zero-shot synthesis needs the transcript of the prompt audio (prompt_text)")
        return [
            ModelInputs(ids, prompt.prompt_text_ids, prompt.prompt_speech_tokens, prompt)
            for ids in self._segments(tts_text)
        ]

    def frontend_cross_lingual(self, tts_text: str, prompt: PromptFeatures) -> list[ModelInputs]:
        """Speak in the prompt voice without showing the LM the prompt (its language may differ)."""
        empty = _ids([], self.device)
        return [ModelInputs(ids, empty, empty, prompt) for ids in self._segments(tts_text)]

    def frontend_instruct2(self, tts_text: str, instruct_text: str, prompt: PromptFeatures) -> list[ModelInputs]:
        """Speak in the prompt voice following a natural-language instruction (dialect, emotion, ...)."""
        instruction = instruct_text.strip()
        if not instruction or instruction == END_OF_PROMPT:
            raise ValueError("instruct_text is empty")
        if not instruction.endswith(END_OF_PROMPT):  # accept instructions already terminated
            instruction += END_OF_PROMPT
        instruct_ids = self._encode(instruction, "the instruction")
        empty = _ids([], self.device)
        return [ModelInputs(ids, instruct_ids, empty, prompt) for ids in self._segments(tts_text)]
