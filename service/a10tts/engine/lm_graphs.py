"""CUDA graphs of the LM: the decode step per batch bucket, and one request's prefill per
prompt-length bucket.

A forward pass of the 0.5B LM is a few hundred small kernels; launched one by one from Python
a decode step takes tens of milliseconds and a ~200-token prefill ~18 ms, while the GPU needs
a fraction of that. Replaying a captured graph launches them all at once. Inputs live in static
buffers that each call fills; padding rows and the capture itself use the cache's scratch slot,
so they never touch a live request. What no graph covers runs eagerly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .cuda_graphs import CAPTURE_LOCK, smallest_bucket
from .kv_cache import CacheBatch, DecodeBatch, KVCache
from .sampling import draw_uniforms, forbid_tokens_from, ras_sample, recent_tokens

_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
PREFILL_BUCKET_TOKENS = 64  # prompts are padded up to a multiple of this


def _capture_all(sizes: Sequence[int], step: Callable[[int], Tensor], device: torch.device) -> tuple[dict, dict]:
    """Warm ``step`` up at every size off-graph, then capture it per size, largest first so that
    later graphs reuse the first one's memory pool. Returns ``(graphs, outputs)`` by size."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # Triton compiles, cuBLAS picks its kernels, off the graph
        for size in sizes:
            step(size)
    torch.cuda.current_stream().wait_stream(side)
    # A capture stream of the LM's own: cuBLAS keeps one workspace per (thread, stream), which
    # every graph captured there bakes in, and graphs of the flow captured on the same thread
    # (torch's default capture stream, priority 0) may replay beside the LM's. Two graphs
    # racing on one workspace hung an H100. Each priority has a stream pool of its own.
    capture = torch.cuda.Stream(device, priority=-1)
    graphs: dict[int, torch.cuda.CUDAGraph] = {}
    outputs: dict[int, Tensor] = {}
    pool = None
    for size in sorted(sizes, reverse=True):
        graph = torch.cuda.CUDAGraph()
        with CAPTURE_LOCK, torch.cuda.graph(graph, pool=pool, stream=capture):
            outputs[size] = step(size)
        pool = graph.pool()
        graphs[size] = graph
    torch.cuda.synchronize()
    return graphs, outputs


class DecodeGraphs:
    """Decode steps of up to ``max_batch_size`` rows, padded up to a batch bucket, and the
    sampling of their next tokens in the same graph (``step_and_sample``)."""

    def __init__(self, lm: torch.nn.Module, cache: KVCache, max_batch_size: int, compile: bool = False):
        self.lm, self.cache = lm, cache
        # torch.compile fuses the step's many small element-wise kernels (norms, rotary,
        # activations) before capture. Dynamic shapes: one compilation serves every bucket
        # (two: torch specialises batch 1), instead of one per bucket at start-up.
        self._decode = torch.compile(lm.decode_logp, dynamic=True) if compile else lm.decode_logp
        self.buckets = [b for b in _BUCKETS if b < max_batch_size] + [max_batch_size]
        largest, window = self.buckets[-1], lm.sampling.win_size
        # Host->device copies per step: tokens, slots, positions and the rows whose stop tokens
        # are refused; the recent-token windows; the uniforms (float64).
        self._host = torch.zeros(4, largest, dtype=torch.long, pin_memory=True)
        self._host_recent = torch.zeros(largest, window, dtype=torch.long, pin_memory=True)
        self._host_uniforms = torch.zeros(largest, 2, dtype=torch.float64, pin_memory=True)
        self._padding = torch.tensor([[0], [cache.scratch_slot], [0], [0]])  # a padding row's inputs
        self._inputs = self._padding.repeat(1, largest).to(cache.device)
        self._copied = torch.cuda.Event()  # the host buffers may be written again once it is done
        self._recent = torch.full((largest, window), -1, dtype=torch.long, device=cache.device)
        self._uniforms = torch.zeros(largest, 2, dtype=torch.float64, device=cache.device)
        with torch.inference_mode():
            self._graphs, self._outputs = _capture_all(self.buckets, self._step, cache.device)

    def _step(self, size: int) -> tuple[Tensor, Tensor]:
        tokens, slots, positions, too_short = self._inputs[:, :size]
        logp = self._decode(tokens, DecodeBatch(slots, positions), self.cache)
        allowed = forbid_tokens_from(logp, self.lm.speech_token_size, too_short.bool())
        return logp, ras_sample(allowed, self._recent[:size], self._uniforms[:size], self.lm.sampling)

    def _replay(self, bucket: int, slots: Sequence[int], tokens: Sequence[int] | Tensor,
                too_short: Sequence[bool] = (), sampling: tuple[Tensor, Tensor] | None = None,
                ) -> tuple[Tensor, Tensor]:
        """One replay; ``sampling``: the rows' recent-token windows and uniforms, for ``step_and_sample``."""
        size = len(slots)
        starts = self.cache.advance(slots, [1] * size)
        self._copied.synchronize()  # the previous step's copies have left the pinned buffers
        if sampling is not None:
            self._host_recent[:size], self._host_uniforms[:size] = sampling
            self._recent[:size].copy_(self._host_recent[:size], non_blocking=True)
            self._uniforms[:size].copy_(self._host_uniforms[:size], non_blocking=True)
        host = self._host[:, :bucket]
        host[0, :size] = torch.as_tensor(tokens, dtype=torch.long)
        host[1, :size] = torch.as_tensor(slots, dtype=torch.long)
        host[2, :size] = torch.as_tensor(starts, dtype=torch.long)
        host[3, :size] = torch.as_tensor(too_short or [False] * size, dtype=torch.long)
        host[:, size:] = self._padding
        self._inputs[:, :bucket].copy_(host, non_blocking=True)
        self._copied.record()
        self._graphs[bucket].replay()
        logp, sampled = self._outputs[bucket]
        return logp[:size], sampled[:size]

    def step(self, slots: Sequence[int], tokens: Sequence[int] | Tensor) -> Tensor:
        """The decode step of `KVCache`-slots `slots`: fp32 log-probs ``[B, vocab]``."""
        bucket = smallest_bucket(self.buckets, len(slots))
        if bucket is None:
            return self.lm.decode_logp(torch.as_tensor(tokens, device=self.cache.device),
                                       self.cache.reserve_decode(slots), self.cache)
        return self._replay(bucket, slots, tokens)[0].clone()

    def step_and_sample(self, slots: Sequence[int], tokens: Sequence[int], histories: Sequence[Sequence[int]],
                        generators: Sequence[torch.Generator], too_short: Sequence[bool]) -> list[int]:
        """A decode step and the RAS sampling of its tokens (``CosyVoice2LM.sample``), one replay."""
        size = len(slots)
        bucket = smallest_bucket(self.buckets, size)
        if bucket is None:
            return self.lm.sample(self.step(slots, tokens), histories, generators, too_short)
        sampling = recent_tokens(histories, self.lm.sampling.win_size), draw_uniforms(generators)
        return self._replay(bucket, slots, tokens, too_short, sampling)[1].tolist()


# A prefill graph replays in ~2.5-3 ms on an H100 (190 to 320 tokens); an eager prefill of a
# batch of prompts is launch-bound, about as long whatever their number: up to this many prompts,
# one graph replay each is faster than one eager batch.
MAX_PROMPTS_BY_GRAPH = 4


class PrefillGraphs:
    """Prefills into empty slots, one prompt per replay, each padded up to a multiple of
    ``PREFILL_BUCKET_TOKENS`` tokens, up to ``max_tokens``.

    The padding tokens sit after the prompt, so causal attention keeps them out of the prompt's
    results; they write keys and values into the slot past the prompt, where the slot's length
    hides them until decode steps overwrite them. Batches of more than ``MAX_PROMPTS_BY_GRAPH``
    prompts, prompts longer than the largest bucket and slots that already hold tokens prefill
    eagerly.
    """

    def __init__(self, lm: torch.nn.Module, cache: KVCache, max_tokens: int):
        self.lm, self.cache = lm, cache
        step = PREFILL_BUCKET_TOKENS
        self.buckets = list(range(step, min(max_tokens, cache.capacity) // step * step + 1, step))
        largest, device = self.buckets[-1], cache.device
        self._embeds = torch.zeros(largest, lm.qwen_config.hidden_size,
                                   dtype=lm.llm_decoder.weight.dtype, device=device)
        # One host->device copy per call: the slot, and the index of the prompt's last token.
        self._host = torch.zeros(2, dtype=torch.long, pin_memory=True)
        self._inputs = torch.tensor([cache.scratch_slot, 0], dtype=torch.long, device=device)
        self._copied = torch.cuda.Event()
        self._positions = torch.arange(largest, device=device)
        self._causal = torch.ones(largest, largest, dtype=torch.bool, device=device).tril()
        with torch.inference_mode():
            self._graphs, self._outputs = _capture_all(self.buckets, self._prefill, device)

    def _prefill(self, size: int) -> Tensor:
        slot, last = self._inputs[:1], self._inputs[1:]
        positions = self._positions[:size]
        batch = CacheBatch(slots=slot, token_slots=slot.expand(size), token_positions=positions,
                           token_rows=positions, last_token_index=last,
                           visible=self._causal[None, None, :size, :size], max_query_len=size)
        return self.lm.prefill_logp(self._embeds[:size], batch, self.cache)

    def buckets_for(self, slots: Sequence[int], prompt_embeds: Sequence[Tensor]) -> list[int] | None:
        """The bucket of each prompt of this prefill, or None if it runs eagerly."""
        if len(slots) > MAX_PROMPTS_BY_GRAPH or len(set(slots)) < len(slots):
            return None  # eagerly: one batch, or KVCache.reserve's error for a repeated slot
        if any(self.cache.length(slot) for slot in slots):
            return None
        buckets = [smallest_bucket(self.buckets, len(embeds)) for embeds in prompt_embeds]
        return None if None in buckets else buckets

    def prefill(self, bucket: int, slot: int, embeds: Tensor) -> Tensor:
        """Run ``embeds`` ``[L, hidden]`` into the empty ``slot``: fp32 log-probs ``[1, vocab]``."""
        length = len(embeds)
        self.cache.advance([slot], [length])
        self._copied.synchronize()
        self._host[0], self._host[1] = slot, length - 1
        self._inputs.copy_(self._host, non_blocking=True)
        self._copied.record()
        self._embeds[:length].copy_(embeds)  # the rows after it keep old, finite values
        self._graphs[bucket].replay()
        return self._outputs[bucket].clone()
