"""Streaming token-to-wave: which tokens each chunk uses, and how chunks join seamlessly.

Follows upstream CosyVoice2 streaming exactly at the default first hop of 25 tokens: the first
hop is padded so that prompt + hop ends on a multiple of the hop (and so on a boundary of the
flow's 25-token attention chunks), every chunk sees 3 look-ahead tokens, the hop doubles up to
100, and the vocoder carries 8 mel frames and 3840 source samples over, cross-fading 3840
samples with a Hamming window. Unlike upstream, the hop lives
in each request's `ChunkPlan` (upstream grows it on the shared model and never resets it, so
its second request starts with 100-token hops). The state here is per request and holds no
model, so a decode worker can batch chunks of many requests through the flow and HiFT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

MAX_HOP_TOKENS = 100
HOP_GROWTH = 2
MEL_CACHE_FRAMES = 8
SAMPLES_PER_FRAME = 480
ATTENTION_CHUNK_TOKENS = 25  # the flow encoder's static_chunk_size in CosyVoice2


@dataclass(frozen=True)
class Chunk:
    end: int  # feed tokens[:end] to the flow
    offset: int  # tokens before `offset` were already spoken
    finalize: bool  # the last chunk: no look-ahead, full attention, no held-back tail

    @property
    def streaming(self) -> bool:
        return not self.finalize


def aligned_first_hop(prompt_tokens: int, first_hop: int) -> int:
    """The first hop padded so that prompt + hop ends on a multiple of the hop, as upstream.

    The pad exists to end the chunk on a boundary of the flow's attention chunks, which only a
    hop of whole attention chunks can do: a shorter first hop (a low-latency setting) is not
    padded, or a 15-token hop after a 125-token prompt would wait for 25 tokens anyway.
    """
    if first_hop % ATTENTION_CHUNK_TOKENS:
        return first_hop
    return math.ceil((prompt_tokens + first_hop) / first_hop) * first_hop - prompt_tokens


def longest_streamed_chunk_frames(first_hop_tokens: int, lookahead: int, mel_per_token: int) -> int:
    """Mel frames of the longest HiFT input of a streamed chunk (``ChunkPlan``): the
    cached frames and the new frames of a hop (at most ``MAX_HOP_TOKENS`` tokens, a first hop at
    most ``2 * first_hop_tokens - 1`` with its alignment pad), plus the up to ``lookahead`` more
    tokens a final chunk may have. 214 frames at the defaults."""
    tokens = max(MAX_HOP_TOKENS, 2 * first_hop_tokens - 1) + lookahead
    return tokens * mel_per_token + MEL_CACHE_FRAMES


@dataclass
class ChunkPlan:
    """Decides the next chunk of one request from how many tokens the LM has produced."""

    prompt_tokens: int
    first_hop: int = 25
    lookahead: int = 3
    offset: int = 0
    done: bool = False
    hop: int = field(init=False)

    def __post_init__(self) -> None:
        self.hop = self.first_hop

    @property
    def next_end(self) -> int:
        """Tokens the next streamed chunk needs (look-ahead included); a segment's final chunk
        takes whatever it has once the segment ends."""
        return self.offset + self._next_hop() + self.lookahead

    def _next_hop(self) -> int:
        return aligned_first_hop(self.prompt_tokens, self.first_hop) if self.offset == 0 else self.hop

    def next_chunk(self, available: int, finished: bool) -> Chunk | None:
        """The next chunk to synthesise, or None while more tokens are needed."""
        if self.done:
            return None
        end = self.next_end
        if available >= end:
            chunk = Chunk(end=end, offset=self.offset, finalize=False)
            self.offset = end - self.lookahead  # past the hop: the look-ahead is the next chunk's
            self.hop = min(MAX_HOP_TOKENS, self.hop * HOP_GROWTH)
            return chunk
        if finished:
            self.done = True
            return Chunk(end=available, offset=self.offset, finalize=True)
        return None


@dataclass
class VocoderCache:
    """What one request's next chunk needs from its previous one."""

    mel: Tensor | None = None  # [80, 8] last mel frames, re-vocoded for continuity
    source: Tensor | None = None  # [1, 3840] excitation tail, reused to keep the phase
    speech: Tensor | None = None  # [3840] held-back audio, cross-faded into the next chunk

    @property
    def source_samples(self) -> int:
        return MEL_CACHE_FRAMES * SAMPLES_PER_FRAME


def _fade_window(device: torch.device) -> Tensor:
    # float64 like upstream's np.hamming; the blend is computed in float64 then cast back.
    return torch.from_numpy(np.hamming(2 * MEL_CACHE_FRAMES * SAMPLES_PER_FRAME)).to(device)


def vocoder_input(mel: Tensor, chunk: Chunk, cache: VocoderCache, mel_per_token: int = 2) -> Tensor:
    """The HiFT input of a chunk: new frames from its offset, after the cached frames. [80, F]."""
    new = mel[:, chunk.offset * mel_per_token :]
    return new if cache.mel is None else torch.cat([cache.mel.to(new), new], dim=1)


def join_chunk(speech: Tensor, source: Tensor, mel: Tensor, chunk: Chunk, cache: VocoderCache) -> Tensor:
    """Cross-fade a vocoded chunk into the stream, update the cache, return the audio to emit.

    `speech` [L] and `source` [1, L] are HiFT's output for `mel` [80, F] = `vocoder_input(...)`.
    """
    overlap = cache.source_samples
    if cache.speech is not None:
        window = _fade_window(speech.device)
        head = speech[:overlap].double() * window[:overlap] + cache.speech.double() * window[overlap:]
        speech = torch.cat([head.to(speech.dtype), speech[overlap:]])
    if chunk.finalize:
        cache.mel = cache.source = cache.speech = None
        return speech
    cache.mel = mel[:, -MEL_CACHE_FRAMES:]
    cache.source = source[:, -overlap:]
    cache.speech = speech[-overlap:]
    return speech[:-overlap]
