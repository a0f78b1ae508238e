"""CUDA graphs of the decode stage: the flow's encoder and Euler step and HiFT's decode network
per batch x frames bucket (the LM's are in ``lm_graphs``).

At streaming chunk sizes both are launch-bound: a flow Euler step is ~1,100 small kernels, and
launched one by one from Python they take far longer than the GPU needs for them. Replaying a
captured graph launches them all at once. Inputs live in static buffers; inputs larger than the
largest bucket run eagerly. ``CAPTURE_LOCK`` is shared with the LM's graphs.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .flow.cfm import CausalConditionalCFM
    from .flow.flow import FlowModel
    from .flow.prefix import FlowPrefix
    from .hift import HiFTGenerator

log = logging.getLogger(__name__)

# Held by every capture, and by the LM around each loop turn: with decode.in_llm_process the
# flow's graphs are captured on first use while the LM's thread serves, and a capture (global
# mode) must not see another thread's CUDA calls.
CAPTURE_LOCK = threading.Lock()


_FRAME_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)


def smallest_bucket(buckets: Sequence[int], size: int) -> int | None:
    """The first of the ascending ``buckets`` that holds ``size``; None if none does."""
    return next((bucket for bucket in buckets if bucket >= size), None)


@functools.cache
def _shared_pool() -> torch.cuda.MemPool:
    """The memory pool of every flow and HiFT graph of the process.

    Their graphs keep nothing alive in it (inputs and outputs are static buffers outside it) and
    a decode worker replays one graph at a time on one stream, so any capture may reuse all of
    it: the pool is as large as the largest graph's scratch memory, not the sum over graphs.
    A ``MemPool`` rather than a bare ``graph_pool_handle``: it holds the pool while no graph
    does, where the allocator retires a handle's pool with its last graph and fails an internal
    assert when a later capture names it (graphs dropped and captured again).
    """
    return torch.cuda.MemPool()


class _BucketGraphs:
    """CUDA graphs per (batch, frames) bucket: what FlowGraphs and HiftGraphs share.

    Inputs are padded up to their bucket, zero frames at the end and masked rows below; both
    models leave a row's own frames unchanged under such padding, so a few buckets serve every
    input. A static input or output is a prefix view of one flat buffer per name shared by every
    bucket (one replay at a time), so all buckets cost the memory of the largest.
    """

    name = "bucket"  # for the logs
    unit = "frames"  # what the second size of a bucket counts

    def __init__(self, max_batch_size: int, frame_step: int, max_frames: int | None = None,
                 max_batch_frames: int | None = None) -> None:
        self.batch_buckets = [b for b in _FRAME_BATCH_BUCKETS if b < max_batch_size] + [max_batch_size]
        self.frame_step = frame_step
        # Buckets past these bounds run eagerly; None: captured on first use, however large.
        self.max_frames = None if max_frames is None else self._bucket_frames(max_frames)
        self.max_batch_frames = max_batch_frames  # of batch x frames
        self._graphs: dict[tuple[int, ...], _Captured] = {}
        self._buffers: dict[str, Tensor] = {}

    def _bucket_frames(self, frames: int) -> int:
        return -(-frames // self.frame_step) * self.frame_step

    def bucket(self, batch: int, frames: int) -> tuple[int, int] | None:
        """The (batch, frames) bucket of an input, or None where it runs eagerly."""
        bucket_b = smallest_bucket(self.batch_buckets, batch)
        bucket_t = self._bucket_frames(frames)
        if bucket_b is None or frames < 1 or not self._in_bounds(bucket_b, bucket_t):
            return None
        return bucket_b, bucket_t

    def _in_bounds(self, batch: int, frames: int) -> bool:
        return ((self.max_frames is None or frames <= self.max_frames)
                and (self.max_batch_frames is None or batch * frames <= self.max_batch_frames))

    def prepare(self, max_frames: int) -> None:
        """Capture every bucket up to ``max_frames`` frames, largest first so that the later
        captures reuse its memory and its static buffers."""
        started = time.perf_counter()
        top = self._bucket_frames(max_frames if self.max_frames is None else min(max_frames, self.max_frames))
        buckets = [(b, t) for t in range(top, 0, -self.frame_step) for b in self.batch_buckets]
        for batch, frames in sorted(buckets, key=lambda bucket: (bucket[0] * bucket[1], bucket), reverse=True):
            if (batch, frames) not in self._graphs and self._in_bounds(batch, frames):
                self._capture((batch, frames))
        log.info("captured %d %s graphs (batch up to %d, %s up to %d) in %.1f s", len(self._graphs), self.name,
                 self.batch_buckets[-1], self.unit, top, time.perf_counter() - started)

    def __len__(self) -> int:
        """Buckets captured so far."""
        return len(self._graphs)

    def _graph(self, bucket: tuple[int, ...], *build_args) -> _Captured:
        return self._graphs.get(bucket) or self._capture(bucket, *build_args)

    def _static(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        """A zeroed, contiguous ``shape`` view at the start of the flat buffer ``name``. A bucket
        larger than the buffer gets a new one; the graphs captured before keep the old one."""
        numel = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < numel:
            buffer = self._buffers[name] = torch.zeros(numel, dtype=dtype, device=device)
        return buffer[:numel].view(shape).zero_()

    def _build(self, batch: int, frames: int, *args) -> tuple[tuple, Callable[[], None]]:
        """The static buffers of a bucket and the work its graph captures."""
        raise NotImplementedError

    @torch.inference_mode()
    def _capture(self, bucket: tuple[int, ...], *build_args) -> _Captured:
        started = time.perf_counter()
        state, work = self._build(*bucket, *build_args)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off-graph: cuDNN, cuBLAS, cuFFT, Triton pick their kernels
            work()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with CAPTURE_LOCK, torch.cuda.graph(graph, pool=_shared_pool().id):
            work()
        self._graphs[bucket] = captured = _Captured(graph, state)
        log.debug("captured the %s for batch x frames (x prefix frames) %s in %.2f s", self.name, bucket,
                  time.perf_counter() - started)
        return captured


class FlowGraphs(_BucketGraphs):
    """CUDA graphs of one Euler step of the flow (an estimator call on the CFG batch and the
    update), per (batch, frames) bucket; a solve replays its bucket's graph once per step.
    Streamed rows that continue a voice's ``FlowPrefix`` have graphs of their own per (batch,
    frames, prefix frames), whose static buffers take the prefix's step before each replay.

    The estimator is causal in time and masks attention by length, so zero-padding a request
    at the end (frames) or adding masked rows (batch) leaves its own frames unchanged. One step,
    not the whole loop, is captured so that a capture is cheap enough to take every bucket up to
    ``max_frames`` at start-up (``prepare``); a longer input captures its bucket on first use,
    which the log reports.
    """

    name = "flow step"

    def __init__(self, cfm: CausalConditionalCFM, max_batch_size: int, frame_step: int = 50,
                 n_timesteps: int = 10, compile: bool = False):
        super().__init__(max_batch_size, frame_step)
        self.cfm, self.n_timesteps = cfm, n_timesteps
        if compile:  # fuse the estimator's kernels before capture; one compilation for all buckets
            cfm.estimator.forward = torch.compile(cfm.estimator.forward, dynamic=True)

    @functools.cached_property
    def _time_steps(self) -> tuple[Tensor, Tensor]:
        """The ODE times and their differences, on the device (exactly as the eager loop takes them)."""
        weight = next(self.cfm.estimator.parameters())
        times = self.cfm.time_grid(self.n_timesteps, weight.device)
        return times[:-1], times[1:] - times[:-1]

    @torch.inference_mode()
    def __call__(self, mu: Tensor, mask: Tensor, spks: Tensor, cond: Tensor,
                 streaming: bool | Tensor = False, n_timesteps: int = 10) -> Tensor:
        batch, _, frames = mu.shape
        bucket = self.bucket(batch, frames)
        if bucket is None or n_timesteps != self.n_timesteps:
            return self.cfm(mu, mask, spks, cond, streaming, n_timesteps)
        step = self._graph(bucket)
        self._load(step, mu, mask, spks, cond, streaming)
        x = step.state[0]
        x.copy_(self.cfm.noise(bucket[1], mu.device).expand_as(x))
        return self._replay(step, batch, frames)

    @torch.inference_mode()
    def continue_prefix(self, prefix: FlowPrefix, mu: Tensor, mask: Tensor, spks: Tensor, cond: Tensor,
                        n_timesteps: int = 10) -> Tensor:
        """As ``CausalConditionalCFM.continue_prefix``: every row continues ``prefix``."""
        batch, _, frames = mu.shape
        bucket = self.bucket(batch, frames)
        if bucket is None or n_timesteps != self.n_timesteps:
            return self.cfm.continue_prefix(prefix, mu, mask, spks, cond, n_timesteps)
        step = self._graph((*bucket, prefix.frames), prefix)
        x, (s_kv, s_conv) = step.state[0], step.state[4]
        self._load(step, mu, mask, spks, cond, streaming=True)
        x.copy_(self.cfm.noise_after(prefix, bucket[1], mu.device).expand_as(x))
        return self._replay(step, batch, frames, lambda i: (s_kv.copy_(prefix.kv[i]), s_conv.copy_(prefix.conv[i])))

    @staticmethod
    def _load(step: _Captured, mu: Tensor, mask: Tensor, spks: Tensor, cond: Tensor, streaming: bool | Tensor) -> None:
        """The inputs into a bucket's static buffers, zero-padded; padding rows get one valid frame."""
        batch, _, frames = mu.shape
        s_mu, s_mask, s_spks, s_cond, s_streaming = step.state[1]
        for static in (s_mu, s_mask, s_cond, s_spks):
            static.zero_()
        s_mask[:, :, 0] = 1  # padding rows: one valid frame keeps their softmax finite
        s_mu[:batch, :, :frames] = mu
        s_mask[:batch, :, :frames] = mask
        s_cond[:batch, :, :frames] = cond
        s_spks[:batch] = spks
        s_streaming.fill_(False)
        s_streaming[:batch] = streaming

    def _replay(self, step: _Captured, batch: int, frames: int,
                before_step: Callable[[int], object] | None = None) -> Tensor:
        """The Euler loop over a loaded bucket: the new x's first ``batch`` rows and ``frames`` frames."""
        x, _, t, dt = step.state[:4]
        times, steps = self._time_steps
        for i in range(self.n_timesteps):
            if before_step is not None:
                before_step(i)
            t.copy_(times[i])
            dt.copy_(steps[i])
            step.graph.replay()
        return x[:batch, :, :frames].clone()

    def _build(self, batch: int, frames: int, _prefix_frames: int = 0,
               template: FlowPrefix | None = None) -> tuple[tuple, Callable[[], None]]:
        """A plain bucket's, or with ``template`` (a prefix of the bucket's ``_prefix_frames``
        frames) a continuing bucket's static buffers and step."""
        weight = next(self.cfm.estimator.parameters())
        channels, device, dtype = self.cfm.estimator.out_channels, weight.device, weight.dtype
        x = self._static("x", (batch, channels, frames), torch.float32, device)
        inputs = (
            self._static("mu", (batch, channels, frames), dtype, device),
            self._static("mask", (batch, 1, frames), dtype, device).fill_(1),
            self._static("spks", (batch, channels), dtype, device),  # projected to mel channels
            self._static("cond", (batch, channels, frames), dtype, device),
            self._static("streaming", (batch,), torch.bool, device),
        )
        t, dt = torch.zeros((), device=device), torch.zeros((), device=device)
        if template is None:
            def step() -> None:
                x.copy_(self.cfm.euler_step(x, t, dt, self.cfm.guidance_inputs(*inputs)))

            return (x, inputs, t, dt), step
        from .flow.prefix import PrefixReader  # not at the top: the flow package imports this module

        # One voice's prefix step, loaded before each replay (one flat buffer per name, as above)
        kv = self._static("prefix_kv", tuple(template.kv[0].shape), template.kv[0].dtype, device)
        conv = self._static("prefix_conv", tuple(template.conv[0].shape), template.conv[0].dtype, device)
        shapes = template.conv_shapes

        def continued_step() -> None:
            reader = PrefixReader(kv, conv, shapes)  # fresh per call: it hands the layers their parts in order
            x.copy_(self.cfm.euler_step(x, t, dt, self.cfm.guidance_inputs(*inputs[:4], True), reader))

        return (x, inputs, t, dt, (kv, conv)), continued_step


class EncoderGraphs(_BucketGraphs):
    """CUDA graphs of the flow's token embedding and conformer encoder, per (batch, tokens) bucket.

    Eager, its ~400 small kernels took 12 ms of a first chunk's ~60 ms in the decode stage on an
    H100 (``benchmarks/first_chunk.py``). Its look-ahead convolution reads zeros past each row's
    tokens, its upsampler looks left, and attention masks keys by length, so padding tokens at the
    end and padding rows (one token) leave a row's frames unchanged. Buckets past
    ``max_batch_tokens`` (batch x tokens) run eagerly: the GPU is busy enough there, and the
    relative-position scores of a large bucket would keep the graph pool large.
    """

    name = "flow encoder"
    unit = "tokens"

    def __init__(self, flow: FlowModel, max_batch_size: int, max_batch_tokens: int = 4096, token_step: int = 25):
        super().__init__(max_batch_size, token_step, max_batch_frames=max_batch_tokens)
        self.flow = flow

    @torch.inference_mode()
    def __call__(self, tokens: Tensor, input_len: Tensor, output_len: Tensor, streaming: Tensor) -> tuple[Tensor, Tensor]:
        """As ``FlowModel.encode_tokens``; ``streaming`` one flag per row."""
        batch, length = tokens.shape
        bucket = self.bucket(batch, length)
        if bucket is None:
            return self.flow.encode_tokens(tokens, input_len, output_len, streaming)
        captured = self._graph(bucket)
        s_tokens, s_input_len, s_output_len, s_streaming, hidden = captured.state
        s_tokens.zero_()
        s_tokens[:batch, :length] = tokens
        for static, value in ((s_input_len, input_len), (s_output_len, output_len)):
            static.fill_(1)  # padding rows: one token
            static[:batch] = value
        s_streaming.fill_(False)
        s_streaming[:batch] = streaming
        captured.graph.replay()
        ratio = self.flow.encoder.upsample_factor
        return hidden[:batch, : int(output_len.max()) * ratio].clone(), output_len * ratio

    def _build(self, batch: int, tokens: int) -> tuple[tuple, Callable[[], None]]:
        weight = self.flow.encoder_proj.weight
        device = weight.device
        s_tokens = self._static("tokens", (batch, tokens), torch.long, device)
        s_input_len = self._static("input_len", (batch,), torch.long, device).fill_(tokens)
        s_output_len = self._static("output_len", (batch,), torch.long, device).fill_(tokens)
        s_streaming = self._static("streaming", (batch,), torch.bool, device)
        frames = tokens * self.flow.encoder.upsample_factor
        hidden = self._static("hidden", (batch, frames, self.flow.encoder.output_size), weight.dtype, device)

        def encode() -> None:
            hidden.copy_(self.flow.encode_tokens(s_tokens, s_input_len, s_output_len, s_streaming, keep_all=True)[0])

        return (s_tokens, s_input_len, s_output_len, s_streaming, hidden), encode


class HiftGraphs(_BucketGraphs):
    """CUDA graphs of ``HiFTGenerator.decode`` (the upsampling network and inverse STFT), per
    (batch, frames) bucket; a call replays its bucket's graph once.

    The decode is some 1,200 kernels, most of them small: at streaming chunk sizes launching
    them costs more than running them. It masks every row to its own length before each
    convolution, and the (inverse) STFT reflects and overlap-adds per row, so padding frames and
    padding rows (one valid frame of zeros: finite) leave a row's samples unchanged. The f0
    predictor and the excitation (per-row RNG, host syncs) stay eager.

    Buckets past ``max_frames`` or ``max_batch_frames`` (batch x frames) run eagerly. On an H100
    the decode is GPU-bound from about 1,000 batch x frames on (8 x 208 frames: 28 ms eager,
    as much replayed; 1 x 108 frames: 16 ms eager, 4 ms replayed): there a graph saves little,
    bucket padding costs as much, and the graph pool would keep the largest bucket's scratch
    memory (about twice its eager peak: 1 GiB for 8 x 250 frames) for good.
    """

    name = "HiFT decode"

    def __init__(self, hift: HiFTGenerator, max_batch_size: int, max_frames: int,
                 max_batch_frames: int | None = 1024, frame_step: int = 25):
        super().__init__(max_batch_size, frame_step, max_frames, max_batch_frames)
        self.hift = hift

    @torch.inference_mode()
    def __call__(self, mel: Tensor, source: Tensor, mel_lengths: Tensor | None = None) -> Tensor:
        """As ``HiFTGenerator.decode``: mel [B, n_mels, T], excitation [B, 1, T*hop] -> [B, T*hop]."""
        batch, _, frames = mel.shape
        bucket = self.bucket(batch, frames)
        if bucket is None:
            return self.hift.decode(mel, source, mel_lengths)
        captured = self._graph(bucket)
        s_mel, s_source, s_lengths, out = captured.state
        s_mel.zero_()
        s_source.zero_()
        s_lengths.fill_(1)  # padding rows: one valid frame of silence
        s_mel[:batch, :, :frames] = mel
        s_source[:batch, :, : source.shape[-1]] = source
        s_lengths[:batch] = frames if mel_lengths is None else mel_lengths
        captured.graph.replay()
        return out[:batch, : frames * self.hift.samples_per_frame].clone()

    def _build(self, batch: int, frames: int) -> tuple[tuple, Callable[[], None]]:
        weight = self.hift.conv_pre.weight
        samples = frames * self.hift.samples_per_frame
        mel = self._static("mel", (batch, weight.shape[1], frames), weight.dtype, weight.device)
        source = self._static("source", (batch, 1, samples), torch.float32, weight.device)
        lengths = self._static("lengths", (batch,), torch.long, weight.device).fill_(frames)
        out = self._static("out", (batch, samples), torch.float32, weight.device)

        def decode() -> None:
            out.copy_(self.hift.decode(mel, source, lengths))

        return (mel, source, lengths, out), decode


@dataclass(frozen=True)
class _Captured:
    graph: torch.cuda.CUDAGraph
    state: tuple  # the static buffers the graph reads and writes
