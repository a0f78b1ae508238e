"""Speech tokens to audio for many requests at once: one flow call and one HiFT call per step.

Each request keeps its own streaming state (``streaming.py``): token buffers per text segment, a
``ChunkPlan`` and a ``VocoderCache`` for the segment being vocoded, and a HiFT generator. A step
takes the next chunk of up to ``max_batch_size`` requests (at most one chunk per request: a chunk
needs the caches its predecessor leaves), runs the flow on the ragged batch with per-row
streaming/finalize flags, then HiFT on the rows' mels with their lengths, cached excitation and
generators, and joins each row into its request's stream. Row by row this is what ``Token2Wav``
does for one request, so the audio is the same.

Which requests make the batch: earliest deadline first. A request without audio yet is due
since it started (its listener is waiting); a stream is due when the audio it has produced, played
from its first chunk on, runs out. So first chunks go before streams that still have audio in
hand, and a stream about to run dry goes before both. The batch is padded to its longest chunk,
and a stream's later chunks re-run the flow over all its tokens so far (200 tokens by the end
of 8 s): a chunk longer than the most urgent one joins only if it is due within
``JOIN_SLACK_S``, so a first chunk is not vocoded at the cost of a stream's fourth.

A batch is not preempted: a first chunk arriving while one runs waits for it. So with
``max_batch_tokens`` a batch runs at most that many tokens through the flow (its rows times its
longest chunk), leaving the chunks beyond it to the next batch, unless their listener runs dry
within ``RUNS_DRY_S``: a listener waiting for a first chunk always goes in, and so does a stream
whose audio is about to end.

With ``yield_to_first_chunks``, while the LM is still generating a stream's first chunk, the
stage vocodes only chunks that run dry within ``RUNS_DRY_S`` and otherwise leaves the GPU to the
LM: under load the LM's steps take about three times as long beside a decode batch, and those
steps are the larger part of a slow first chunk's time. It pays while the decode stage has time
to spare (balanced), not at its capacity (throughput), where the chunks held back pile up.

Streamed chunks of the batch's most frequent voice with a flow prefix (``flow_prefixes.py``) run
the flow only after that prefix, in one call; the batch's other rows run in a second flow call.

Segments are vocoded one after another, each with a fresh plan and cache, as ``CosyVoice2``
does; a non-streaming segment is one final chunk (stretched by ``speed``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from a10tts.engine.cosyvoice2 import SAMPLE_RATE
from a10tts.engine.flow import FlowModel
from a10tts.engine.flow.prefix import FlowPrefix
from a10tts.engine.frontend import PromptFeatures
from a10tts.engine.hift import HiFTGenerator
from a10tts.engine.streaming import Chunk, ChunkPlan, VocoderCache, join_chunk, vocoder_input

from .first_audio import stamp
from .flow_prefixes import VoicePrefixes, voice_key

log = logging.getLogger(__name__)

# A long chunk due later than this waits for a batch of its own length: time enough to vocode the
# batch in flight and its own (~0.2 s each at 16 streams on an H100) before its listener runs dry.
JOIN_SLACK_S = 0.6
# A chunk due this soon goes into the batch even past ``max_batch_tokens``: waiting for a later
# batch would stall its listener.
RUNS_DRY_S = 0.3


def hift_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A request's HiFT noise generator, on the device HiFT draws on."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def _lengths(tensors: list[Tensor], device: torch.device) -> Tensor:
    return torch.tensor([len(t) for t in tensors], device=device)


@dataclass(eq=False)
class DecodeRequest:
    request_id: str
    reply_to: int
    prompt: PromptFeatures  # on the decode device
    stream: bool
    speed: float
    num_segments: int
    generator: torch.Generator
    first_hop: int
    lookahead: int
    started_at: float  # the batcher's clock
    voice: bytes = b""  # flow_prefixes.voice_key, where the batcher keeps flow prefixes
    marks: dict[str, float] = field(default_factory=dict)  # until the first chunk is vocoded (first_audio.py)
    first_audio_at: float | None = None  # the batcher's clock
    audio_seconds: float = 0.0  # produced so far
    tokens: list[list[int]] = field(init=False)  # received, per segment
    finished: list[bool] = field(init=False)  # per segment: all its tokens received
    segment: int = 0  # the segment being vocoded
    plan: ChunkPlan = field(init=False)
    cache: VocoderCache = field(init=False)
    pending: Chunk | None = None  # planned, waiting for a place in a batch
    seq: int = 0  # chunks sent so far

    def __post_init__(self) -> None:
        self.tokens = [[] for _ in range(self.num_segments)]
        self.finished = [False] * self.num_segments
        self._new_segment_state()

    def _new_segment_state(self) -> None:
        self.plan = ChunkPlan(len(self.prompt.prompt_speech_tokens), self.first_hop, self.lookahead)
        self.cache = VocoderCache()

    @property
    def deadline(self) -> float:
        """When this request's next audio is due (the batcher's clock); earlier is more urgent."""
        if self.first_audio_at is None:
            return self.started_at
        return self.first_audio_at + self.audio_seconds

    @property
    def last_segment(self) -> bool:
        return self.segment == self.num_segments - 1

    def add(self, segment: int, tokens: list[int], finished: bool, chunk_sent: float | None = None) -> None:
        """Tokens from the LM; ``chunk_sent`` comes with those completing the first chunk."""
        if not 0 <= segment < self.num_segments or self.finished[segment]:
            raise ValueError(f"tokens for segment {segment} of request {self.request_id} are out of order")
        self.tokens[segment] += tokens
        self.finished[segment] = finished
        if chunk_sent is not None:
            self.marks["chunk_sent"] = chunk_sent
        if self.seq == 0 and self.pending is None:  # the first chunk may be ready with these
            stamp(self.marks, "chunk_ready")

    def plan_next(self) -> bool:
        """Plan the next chunk unless one is pending; True if one is. Segments that ended
        without tokens are skipped, except the last (``ends_empty``)."""
        while self.pending is None and not self.ends_empty:
            tokens, finished = self.tokens[self.segment], self.finished[self.segment]
            if finished and not tokens:
                self.segment += 1
                self._new_segment_state()
                continue
            if self.stream:
                self.pending = self.plan.next_chunk(len(tokens), finished) if tokens else None
            elif finished:
                self.pending = Chunk(end=len(tokens), offset=0, finalize=True)
            break
        return self.pending is not None

    @property
    def ends_empty(self) -> bool:
        """The last segment ended without a token: nothing more to vocode, only to say so."""
        return self.last_segment and self.finished[self.segment] and not self.tokens[self.segment]

    def chunk_done(self, chunk: Chunk) -> bool:
        """Move past a vocoded chunk; True if it was the request's last."""
        self.pending = None
        self.seq += 1
        if not chunk.finalize:
            return False
        if self.last_segment:
            return True
        self.segment += 1
        self._new_segment_state()
        return False


@dataclass(frozen=True)
class Audio:
    request: DecodeRequest
    seq: int
    samples: Tensor  # float32 24 kHz, on the CPU
    final: bool


class DecodeBatcher:
    def __init__(self, flow: FlowModel, hift: HiFTGenerator, *, first_hop_tokens: int, max_batch_size: int,
                 max_batch_tokens: int = 0, yield_to_first_chunks: bool = False, prefix_budget_bytes: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.flow = flow
        self.hift = hift
        self.prefixes = VoicePrefixes(flow, prefix_budget_bytes)
        self.first_hop_tokens = first_hop_tokens
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens  # 0: no bound
        self.yield_to_first_chunks = yield_to_first_chunks
        self.clock = clock
        self.device = flow.input_embedding.weight.device
        self.requests: dict[str, DecodeRequest] = {}

    def start(
        self, request_id: str, reply_to: int, prompt: PromptFeatures, *, stream: bool, speed: float,
        num_segments: int, seed: int | None, marks: dict[str, float] | None = None,
    ) -> DecodeRequest:
        request = DecodeRequest(
            request_id, reply_to, prompt.to(self.device), stream, speed, num_segments,
            hift_generator(seed, self.device), self.first_hop_tokens, self.flow.pre_lookahead_len,
            started_at=self.clock(), voice=voice_key(prompt) if self.prefixes.enabled and stream else b"",
            marks=dict(marks or {}),
        )
        self.requests[request_id] = request
        return request

    def cancel(self, request_id: str) -> DecodeRequest | None:
        return self.requests.pop(request_id, None)

    @property
    def backlog(self) -> int:
        """Requests with a chunk planned but not vocoded yet."""
        return sum(r.pending is not None for r in self.requests.values())

    def ready(self) -> list[DecodeRequest]:
        """Requests with a chunk to vocode or an empty ending to report, most urgent first."""
        ready = [r for r in self.requests.values() if r.plan_next() or r.ends_empty]
        return sorted(ready, key=lambda r: r.deadline)

    def next_step_in(self) -> float | None:
        """Seconds until ``step`` has something to do: 0 now, None until more arrives."""
        ready = self.ready()
        if not ready:
            return None
        if any(r.pending is None for r in ready):  # an empty ending to report
            return 0.0
        return self._deferral(ready[0], self.clock())

    def _deferral(self, most_urgent: DecodeRequest, now: float) -> float:
        """Seconds the next batch waits, leaving the GPU to the LM: with ``yield_to_first_chunks``,
        while a stream's first chunk is still being generated, until the most urgent chunk runs
        dry within ``RUNS_DRY_S``; otherwise 0."""
        wait = most_urgent.deadline - RUNS_DRY_S - now
        if wait <= 0 or not self.yield_to_first_chunks:
            return 0.0
        awaited = any(r.stream and r.seq == 0 and r.pending is None and not r.ends_empty
                      for r in self.requests.values())
        return wait if awaited else 0.0

    def step(self) -> tuple[list[Audio], list[tuple[DecodeRequest, Exception]]]:
        """Vocode one batch; returns the audio, and the requests whose batch failed (now dropped)."""
        ready = self.ready()
        audio = [Audio(r, r.seq, torch.zeros(0), final=True) for r in ready if r.pending is None]
        batch = self._batch([r for r in ready if r.pending is not None])
        for request in [a.request for a in audio]:
            del self.requests[request.request_id]
        if not batch:
            return audio, []
        chunks = [r.pending for r in batch]
        firsts = [r for r in batch if r.seq == 0]
        for request in firsts:
            stamp(request.marks, "vocode_start")
        started = time.perf_counter()
        try:
            samples = self.vocode(batch, chunks)
        except Exception as exc:
            for request in batch:
                del self.requests[request.request_id]
            return audio, [(request, exc) for request in batch]
        for request in firsts:
            stamp(request.marks, "vocoded")
        longest = max(c.end for c in chunks)  # the rows' share of padding: what ragged batches would save
        log.debug("vocoded %d chunks (longest %d tokens, %.0f %% padding, %d waiting) in %.1f ms", len(batch), longest,
                  100 * (1 - sum(c.end for c in chunks) / max(len(batch) * longest, 1)), len(ready) - len(batch),
                  1000 * (time.perf_counter() - started))
        now = self.clock()
        for request, chunk, wave in zip(batch, chunks, samples):
            if request.first_audio_at is None and len(wave):
                request.first_audio_at = now
            request.audio_seconds += len(wave) / SAMPLE_RATE
            seq = request.seq
            final = request.chunk_done(chunk)
            audio.append(Audio(request, seq, wave, final))
            if final:
                del self.requests[request.request_id]
        return audio, []

    def _batch(self, ready: list[DecodeRequest]) -> list[DecodeRequest]:
        """Of the ready requests (most urgent first), those vocoded now: see the module's doc."""
        if not ready:
            return []
        now = self.clock()
        longest, join_by, dry_by = ready[0].pending.end, now + JOIN_SLACK_S, now + RUNS_DRY_S
        if self._deferral(ready[0], now):
            return []
        batch: list[DecodeRequest] = []
        padded = 0  # the batch's longest chunk so far
        for request in ready:
            end = request.pending.end
            if end > longest and request.deadline > join_by:
                continue
            tokens = (len(batch) + 1) * max(padded, end)
            if batch and self.max_batch_tokens and tokens > self.max_batch_tokens and request.deadline > dry_by:
                continue
            batch.append(request)
            padded = max(padded, end)
            if len(batch) == self.max_batch_size:
                break
        return batch

    @torch.inference_mode()
    def vocode(self, requests: list[DecodeRequest], chunks: list[Chunk]) -> list[Tensor]:
        """The flow (one call, two with a flow prefix) and one HiFT call for one chunk of each
        request; updates their caches."""
        device = self.device
        voice, prefix = self._shared_prefix(requests, chunks)
        continuing = [prefix is not None and c.streaming and r.voice == voice for r, c in zip(requests, chunks)]
        flow_mels: list[Tensor] = [torch.empty(0)] * len(requests)
        for group in (False, True):
            rows = [i for i, row_continues in enumerate(continuing) if row_continues == group]
            if rows:
                mel, mel_len = self._flow([requests[i] for i in rows], [chunks[i] for i in rows],
                                          prefix if group else None)
                for j, (i, frames) in enumerate(zip(rows, mel_len.tolist())):  # one host sync, not one per row
                    flow_mels[i] = mel[j, :, :frames]
        mels = []
        for request, chunk, mel in zip(requests, chunks, flow_mels):
            new = vocoder_input(mel.float(), chunk, request.cache, self.flow.token_mel_ratio)
            if request.speed != 1.0:  # non-streaming only: stretch the mel, as upstream
                new = F.interpolate(new[None], size=int(new.shape[1] / request.speed), mode="linear")[0]
            mels.append(new)
        frames = [m.shape[1] for m in mels]
        hift_mel = pad_sequence([m.T for m in mels], batch_first=True).transpose(1, 2)
        no_cache = torch.zeros(1, 0, device=device)
        speech, source = self.hift.inference(
            hift_mel,
            torch.tensor(frames, device=device),
            cache_source=[no_cache if r.cache.source is None else r.cache.source for r in requests],
            generator=[r.generator for r in requests],
        )
        out = []
        for row, (request, chunk, new) in enumerate(zip(requests, chunks, mels)):
            n = frames[row] * self.hift.samples_per_frame
            out.append(join_chunk(speech[row, :n], source[row, :, :n], new, chunk, request.cache))
        # One copy to the host for the batch: each copy waits for the GPU, which the driver
        # time-slices between this process and the LM's.
        return list(torch.cat(out).cpu().split([len(wave) for wave in out]))

    def _shared_prefix(self, requests: list[DecodeRequest], chunks: list[Chunk]) -> tuple[bytes, FlowPrefix | None]:
        """Of the voices with a flow prefix, the one with the most streamed chunks in the batch, and
        its prefix (None: no prefixes here). One voice per call keeps the prefix's keys and values
        one copy, not one per row, in the flow's static buffers."""
        if not self.prefixes.enabled:
            return b"", None
        streamed = Counter(r.voice for r, c in zip(requests, chunks) if c.streaming)
        prompts = {r.voice: r.prompt for r in requests}
        held = {voice: prefix for voice in streamed if (prefix := self.prefixes.get(voice, prompts[voice]))}
        if not held:
            return b"", None
        voice = max(held, key=streamed.__getitem__)
        return voice, held[voice]

    def _flow(self, requests: list[DecodeRequest], chunks: list[Chunk],
              prefix: FlowPrefix | None) -> tuple[Tensor, Tensor]:
        """One flow call over these rows: mel ``[B, C, F]`` and each row's new frames ``[B]``."""
        device, prompts = self.device, [r.prompt for r in requests]
        tokens = [torch.tensor(r.tokens[r.segment][: c.end], dtype=torch.int32, device=device)
                  for r, c in zip(requests, chunks)]
        prompt_tokens = [p.prompt_speech_tokens for p in prompts]
        prompt_mels = [p.prompt_mel for p in prompts]
        return self.flow.inference(
            token=pad_sequence(tokens, batch_first=True),
            token_len=_lengths(tokens, device),
            prompt_token=pad_sequence(prompt_tokens, batch_first=True),
            prompt_token_len=_lengths(prompt_tokens, device),
            prompt_feat=pad_sequence(prompt_mels, batch_first=True),
            prompt_feat_len=_lengths(prompt_mels, device),
            embedding=torch.stack([p.speaker_embedding for p in prompts]),
            streaming=torch.tensor([c.streaming for c in chunks], device=device),
            finalize=torch.tensor([c.finalize for c in chunks], device=device),
            prefix=prefix,
        )
