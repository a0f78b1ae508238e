"""Speech tokens to 24 kHz audio for one request: flow, then HiFT, chunked when streaming."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .flow import FlowModel
from .frontend import PromptFeatures
from .hift import HiFTGenerator
from .streaming import Chunk, ChunkPlan, VocoderCache, join_chunk, vocoder_input


class Token2Wav:
    def __init__(self, flow: FlowModel, hift: HiFTGenerator, first_hop_tokens: int = 25):
        self.flow = flow
        self.hift = hift
        self.first_hop_tokens = first_hop_tokens

    @torch.inference_mode()
    def __call__(
        self,
        tokens: Iterable[int],
        prompt: PromptFeatures,
        *,
        stream: bool,
        speed: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Iterator[Tensor]:
        """Audio chunks for tokens that may arrive one by one (e.g. straight from the LM)."""
        received: list[int] = []
        if not stream:
            received.extend(tokens)
            if received:
                yield self.vocode(received, Chunk(len(received), 0, True), prompt, VocoderCache(), speed, generator)
            return
        plan = ChunkPlan(len(prompt.prompt_speech_tokens), self.first_hop_tokens, self.flow.pre_lookahead_len)
        cache = VocoderCache()
        for token in tokens:
            received.append(token)
            if chunk := plan.next_chunk(len(received), finished=False):
                yield self.vocode(received, chunk, prompt, cache, 1.0, generator)
        while received and (chunk := plan.next_chunk(len(received), finished=True)):
            yield self.vocode(received, chunk, prompt, cache, 1.0, generator)

    def vocode(self, tokens: list[int], chunk: Chunk, prompt: PromptFeatures, cache: VocoderCache,
               speed: float, generator: torch.Generator | None) -> Tensor:
        """One chunk: flow mel for tokens[:chunk.end], HiFT from the chunk's offset, joined."""
        device = self.flow.input_embedding.weight.device
        mel, mel_len = self.flow.inference(
            token=torch.tensor([tokens[: chunk.end]], dtype=torch.int32, device=device),
            token_len=torch.tensor([chunk.end], device=device),
            prompt_token=prompt.prompt_speech_tokens[None].to(device),
            prompt_token_len=torch.tensor([len(prompt.prompt_speech_tokens)], device=device),
            prompt_feat=prompt.prompt_mel[None].to(device),
            prompt_feat_len=torch.tensor([len(prompt.prompt_mel)], device=device),
            embedding=prompt.speaker_embedding[None].to(device),
            streaming=chunk.streaming,
            finalize=chunk.finalize,
        )
        mel = vocoder_input(mel[0, :, : int(mel_len[0])].float(), chunk, cache, self.flow.token_mel_ratio)
        if speed != 1.0:  # non-streaming only: stretch the mel, as upstream
            mel = F.interpolate(mel[None], size=int(mel.shape[1] / speed), mode="linear")[0]
        cached = None if cache.source is None else [cache.source]
        speech, source = self.hift.inference(mel[None], cache_source=cached, generator=generator)
        return join_chunk(speech[0], source[0], mel, chunk, cache).cpu()
