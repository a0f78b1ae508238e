"""Batched decode gives each request the audio Token2Wav gives it alone."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import pytest
import torch

from a10tts.engine.frontend import PromptFeatures
from a10tts.engine.model_dir import ModelDir
from a10tts.engine.token2wav import Token2Wav
from a10tts.pipeline.decode_batch import RUNS_DRY_S, Audio, DecodeBatcher
from a10tts.pipeline.decode_worker import pcm16

FIRST_HOP = 10


@dataclass
class Case:
    rid: str
    prompt: PromptFeatures
    segments: list[list[int]]
    stream: bool
    speed: float
    seed: int


def make_case(rid: str, prompt_tokens: int, segment_lengths: list[int], *, stream: bool, speed: float = 1.0) -> Case:
    g = torch.Generator().manual_seed(sum(map(ord, rid)))
    prompt = PromptFeatures(
        prompt_text_ids=torch.zeros(0, dtype=torch.int32),
        prompt_speech_tokens=torch.randint(0, 6561, (prompt_tokens,), generator=g, dtype=torch.int32),
        prompt_mel=torch.randn(2 * prompt_tokens, 80, generator=g) - 4,
        speaker_embedding=torch.randn(192, generator=g),
    )
    segments = [torch.randint(0, 6561, (n,), generator=g).tolist() for n in segment_lengths]
    return Case(rid, prompt, segments, stream, speed, seed=len(rid) * 7)


@pytest.fixture(scope="module")
def models(demo_model: ModelDir):
    return demo_model.load("flow"), demo_model.load("hift")


def alone(models, case: Case) -> list[torch.Tensor]:
    """What the single-request path yields: Token2Wav per segment, one generator throughout."""
    token2wav = Token2Wav(*models, first_hop_tokens=FIRST_HOP)
    generator = torch.Generator().manual_seed(case.seed)
    return [
        chunk
        for tokens in case.segments
        for chunk in token2wav(tokens, case.prompt, stream=case.stream, speed=case.speed, generator=generator)
    ]


@pytest.mark.parametrize("prefix_mib", [0, 64], ids=["recomputed", "flow prefixes"])
def test_batched_chunks_equal_each_request_alone(models, prefix_mib: int) -> None:
    """Also with flow prefixes: the first voice's prompt holds two attention chunks that its
    streamed chunks skip, the others' none, so batches mix both kinds of rows."""
    cases = [
        make_case("streaming-early", 57, [80], stream=True),
        make_case("streaming-late", 13, [20, 45], stream=True),
        make_case("whole-slow", 20, [30, 25], stream=False, speed=0.8),
    ]
    batcher = DecodeBatcher(*models, first_hop_tokens=FIRST_HOP, max_batch_size=2, prefix_budget_bytes=prefix_mib << 20)
    requests = {
        c.rid: batcher.start(c.rid, 0, c.prompt, stream=c.stream, speed=c.speed, num_segments=len(c.segments),
                             seed=c.seed)
        for c in cases
    }
    early, late, whole = cases
    requests[early.rid].add(0, early.segments[0], finished=True)
    requests[whole.rid].add(0, whole.segments[0], finished=True)
    requests[late.rid].add(0, late.segments[0][:17], finished=False)  # not a whole first hop yet

    received: dict[str, list[Audio]] = {c.rid: [] for c in cases}
    batch_sizes = []
    for step in range(50):
        if step == 2:  # the late request gets its tokens while the others are mid-stream
            requests[late.rid].add(0, late.segments[0][17:], finished=True)
            requests[late.rid].add(1, late.segments[1], finished=True)
            requests[whole.rid].add(1, whole.segments[1], finished=True)
        backlog = len(batcher.ready())
        audio, failed = batcher.step()
        assert not failed
        batch_sizes.append(min(backlog, 2))
        for piece in audio:
            received[piece.request.request_id].append(piece)
        if not batcher.requests:
            break
    assert max(batch_sizes) == 2 and not batcher.requests

    for case in cases:
        pieces = received[case.rid]
        expected = alone(models, case)
        assert [p.seq for p in pieces] == list(range(len(expected)))
        assert [p.final for p in pieces] == [False] * (len(expected) - 1) + [True]
        for piece, reference in zip(pieces, expected):
            assert piece.samples.shape == reference.shape
            torch.testing.assert_close(piece.samples, reference, atol=1e-4, rtol=0)
            assert len(piece.samples) % 480 == 0
    assert len(received[early.rid]) > 3  # streamed in several chunks
    assert len(batcher.prefixes) == (2 if prefix_mib else 0)  # early's voice (100 frames) and late's (none)
    assert len(received[whole.rid]) == 2  # one chunk per segment without streaming


def test_a_last_segment_without_tokens_still_ends_the_stream(models) -> None:
    case = make_case("short", 15, [30, 0], stream=True)
    batcher = DecodeBatcher(*models, first_hop_tokens=FIRST_HOP, max_batch_size=4)
    request = batcher.start(case.rid, 0, case.prompt, stream=True, speed=1.0, num_segments=2, seed=1)
    request.add(0, case.segments[0], finished=True)
    request.add(1, [], finished=True)
    pieces = []
    while batcher.requests:
        audio, _ = batcher.step()
        pieces += audio
    assert pieces[-1].final and len(pieces[-1].samples) == 0
    assert sum(len(p.samples) for p in pieces) > 0


def test_a_failing_batch_fails_its_requests_only(models) -> None:
    batcher = DecodeBatcher(*models, first_hop_tokens=FIRST_HOP, max_batch_size=1)
    good, bad = make_case("good", 15, [12], stream=False), make_case("bad", 15, [12], stream=False)
    bad.prompt = PromptFeatures(bad.prompt.prompt_text_ids, bad.prompt.prompt_speech_tokens,
                                bad.prompt.prompt_mel[:, :40], bad.prompt.speaker_embedding)  # 40 mel bins
    for case in (bad, good):
        request = batcher.start(case.rid, 0, case.prompt, stream=False, speed=1.0, num_segments=1, seed=1)
        request.add(0, case.segments[0], finished=True)
    audio, failed = batcher.step()
    assert not audio and [r.request_id for r, _ in failed] == ["bad"]
    audio, failed = batcher.step()
    assert [a.request.request_id for a in audio] == ["good"] and audio[0].final and not failed


def test_pcm16_is_little_endian_int16() -> None:
    pcm = pcm16(torch.tensor([0.0, 0.5, -1.0, 1.5]))
    assert pcm == (0).to_bytes(2, "little", signed=True) + (16384).to_bytes(2, "little", signed=True) + (
        -32767).to_bytes(2, "little", signed=True) + (32767).to_bytes(2, "little", signed=True)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def start_stream(batcher: DecodeBatcher, rid: str, tokens: int):
    """A streaming request with ``tokens`` of its one segment received so far."""
    case = make_case(rid, 15, [tokens], stream=True)
    request = batcher.start(rid, 0, case.prompt, stream=True, speed=1.0, num_segments=1, seed=1)
    request.add(0, case.segments[0], finished=False)
    return request


def test_the_most_urgent_requests_make_the_batch(models) -> None:
    """Earliest deadline first: a waiting listener before a stream with audio in hand, and a
    stream that has run dry before a newer listener."""
    clock = FakeClock()
    batcher = DecodeBatcher(*models, first_hop_tokens=FIRST_HOP, max_batch_size=1, clock=clock)
    start = partial(start_stream, batcher)
    streaming = start("streaming", 120)  # enough tokens for several chunks
    assert [a.request.request_id for a in batcher.step()[0]] == ["streaming"]
    assert streaming.first_audio_at == 0.0 and streaming.audio_seconds > 0.2
    clock.now = 0.1
    newcomer = start("newcomer", 13)  # its first chunk's tokens (10 and 3 of look-ahead), no more yet
    assert [r.request_id for r in batcher.ready()] == ["newcomer", "streaming"]  # "streaming" still has audio
    assert [a.request.request_id for a in batcher.step()[0]] == ["newcomer"]
    clock.now = 30.0  # far past what "streaming" and "newcomer" have produced: both run dry
    start("latecomer", 40)
    order = [r.request_id for r in batcher.ready()]
    assert order[-1] == "latecomer" and order[0] == min(
        ("streaming", "newcomer"), key=lambda rid: batcher.requests[rid].deadline)
    assert newcomer.deadline == pytest.approx(0.1 + newcomer.audio_seconds)  # its first chunk came at 0.1


def test_a_longer_chunk_joins_a_first_chunk_only_when_it_is_due_soon(models) -> None:
    """The batch is padded to its longest chunk: a stream's long chunk with audio in hand waits
    for a later batch rather than slow a listener's first chunk down, unless it runs dry soon."""
    clock = FakeClock()
    batcher = DecodeBatcher(*models, first_hop_tokens=FIRST_HOP, max_batch_size=4, clock=clock)
    start = partial(start_stream, batcher)
    streaming = start("streaming", 200)
    for _ in range(3):  # hops of 10, 20 and 40 tokens: 2.8 s of audio
        assert [a.request.request_id for a in batcher.step()[0]] == ["streaming"]
    newcomer = start("newcomer", 13)  # its first chunk's tokens (10 and 3 of look-ahead), no more yet
    assert [r.request_id for r in batcher.ready()] == ["newcomer", "streaming"]
    assert streaming.pending.end > newcomer.pending.end  # an 80-token hop against a first chunk
    assert [a.request.request_id for a in batcher.step()[0]] == ["newcomer"]
    clock.now = streaming.deadline - 0.5  # within JOIN_SLACK_S of running dry: it joins
    start("latecomer", 40)
    assert {a.request.request_id for a in batcher.step()[0]} == {"latecomer", "streaming"}


def test_a_batch_stays_within_its_token_bound_unless_a_listener_runs_dry(models) -> None:
    """``max_batch_tokens`` bounds a batch's rows times its longest chunk, so that a first chunk
    arriving meanwhile waits less; a chunk whose listener runs dry within ``RUNS_DRY_S`` goes in
    past the bound."""
    clock = FakeClock()
    batcher = DecodeBatcher(*models, first_hop_tokens=FIRST_HOP, max_batch_size=4, clock=clock)
    streams = [start_stream(batcher, rid, 200) for rid in ("a", "b", "c")]
    for _ in range(2):  # hops of 10 and 20 tokens, all three in each batch: 1.2 s of audio each
        assert len(batcher.step()[0]) == 3
    assert {s.pending is None for s in streams} == {True} and {len(batcher.ready())} == {3}
    longest = max(s.pending.end for s in streams)  # a 40-token hop: 10 + 20 + 40 + 3 look-ahead
    batcher.max_batch_tokens = 2 * longest
    clock.now = min(s.deadline for s in streams) - RUNS_DRY_S - 0.1  # none runs dry yet
    first = [a.request.request_id for a in batcher.step()[0]]
    assert len(first) == 2  # a third row would run 3 x 73 tokens through the flow
    late = next(s for s in streams if s.request_id not in first)
    clock.now = late.deadline - RUNS_DRY_S / 2  # its listener runs dry: it goes in, and so may others
    assert late.request_id in [a.request.request_id for a in batcher.step()[0]]
    batcher.max_batch_tokens = 1  # below any one chunk: the most urgent still makes a batch
    clock.now = 0.0
    assert len(batcher.ready()) > 1 and len(batcher.step()[0]) == 1


def test_yielding_to_first_chunks_defers_only_chunks_with_audio_in_hand(models) -> None:
    """``yield_to_first_chunks``: while a stream's first chunk is still in the LM, a stream with
    audio in hand waits (``next_step_in`` says until when); one about to run dry does not."""
    clock = FakeClock()
    batcher = DecodeBatcher(*models, first_hop_tokens=FIRST_HOP, max_batch_size=4, yield_to_first_chunks=True,
                            clock=clock)
    streaming = start_stream(batcher, "streaming", 200)
    for _ in range(2):  # hops of 10 and 20 tokens: 1.2 s of audio, no first chunk awaited
        assert batcher.next_step_in() == 0.0
        assert [a.request.request_id for a in batcher.step()[0]] == ["streaming"]
    newcomer = start_stream(batcher, "newcomer", 5)  # its first chunk needs 13 tokens
    assert batcher.step() == ([], []) and streaming.pending is not None
    assert batcher.next_step_in() == pytest.approx(streaming.deadline - RUNS_DRY_S)
    newcomer.add(0, list(range(8)), finished=False)  # its first chunk is ready: it goes first
    assert batcher.next_step_in() == 0.0
    assert [a.request.request_id for a in batcher.step()[0]] == ["newcomer"]
    assert [a.request.request_id for a in batcher.step()[0]] == ["streaming"]  # no first chunk awaited
    start_stream(batcher, "latecomer", 5)
    assert batcher.step() == ([], [])
    clock.now = streaming.deadline - RUNS_DRY_S  # about to run dry: it goes, the first chunk still awaited
    assert batcher.next_step_in() == 0.0
    assert "streaming" in [a.request.request_id for a in batcher.step()[0]]
