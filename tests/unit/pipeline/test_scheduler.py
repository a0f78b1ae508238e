"""Continuous batching on the demo LM: admission by budgets and interval, cancel, lengths, seeds."""

from __future__ import annotations

import pytest
import torch

from a10tts.engine.llm import CosyVoice2LM, TokenBudget
from a10tts.engine.model_dir import ModelDir
from a10tts.engine.sampling import make_generator
from a10tts.engine.streaming import ChunkPlan
from a10tts.pipeline.scheduler import LMRequest, Scheduler, SchedulerLimits, TokenOutput
from a10tts.pipeline.stage import RequestError

PROMPT_SPEECH = 12


@pytest.fixture(scope="module")
def model(demo_model: ModelDir) -> CosyVoice2LM:
    return demo_model.load("llm")


def make_scheduler(
    model: CosyVoice2LM, *, slots: int = 8, capacity: int = 256, max_running: int = 8, max_waiting: int = 16,
    prefill_budget: int = 4096, interval: int = 1,
) -> Scheduler:
    limits = SchedulerLimits(max_running, max_waiting, prefill_budget, interval)
    return Scheduler(model, model.new_kv_cache(num_slots=slots, capacity=capacity), limits)


def make_request(
    rid: str, *, seed: int | None = 0, text_tokens: int = 6, segments: int = 1, num_tokens: int | None = None,
) -> LMRequest:
    ids = torch.Generator().manual_seed(sum(map(ord, rid)))
    return LMRequest(
        request_id=rid,
        segments=[torch.randint(0, 1000, (text_tokens,), generator=ids, dtype=torch.int32) for _ in range(segments)],
        prompt_text=torch.randint(0, 1000, (4,), generator=ids, dtype=torch.int32),
        prompt_speech=torch.randint(0, 6561, (PROMPT_SPEECH,), generator=ids, dtype=torch.int32),
        generator=make_generator(seed),
        num_tokens=num_tokens,
    )


def prompt_length(request: LMRequest) -> int:
    return request.prompt_length(0)


def run(scheduler: Scheduler, max_steps: int = 2000) -> dict[str, list[TokenOutput]]:
    """Step until idle; every request's outputs in order. No request may fail."""
    outputs: dict[str, list[TokenOutput]] = {}
    for _ in range(max_steps):
        if not scheduler.has_work:
            return outputs
        result = scheduler.step()
        assert not result.failed
        for out in result.outputs:
            outputs.setdefault(out.request_id, []).append(out)
    raise AssertionError("the scheduler did not finish")


def segment_tokens(outputs: list[TokenOutput]) -> list[list[int]]:
    segments: list[list[int]] = [[]]
    for out in outputs:
        segments[-1] += out.tokens
        if out.finished and not out.done:
            segments.append([])
    return segments


def test_fixed_num_tokens_and_segments_one_after_another(model: CosyVoice2LM) -> None:
    scheduler = make_scheduler(model)
    scheduler.add(make_request("a", segments=3, num_tokens=7))
    outputs = run(scheduler)["a"]
    assert [len(s) for s in segment_tokens(outputs)] == [7, 7, 7]
    assert [o.segment for o in outputs] == [0] * 7 + [1] * 7 + [2] * 7
    assert [(o.finished, o.done) for o in outputs if o.finished] == [(True, False), (True, False), (True, True)]
    assert all(0 <= t < model.speech_token_size for s in segment_tokens(outputs) for t in s)
    assert scheduler.cache.num_free == scheduler.cache.num_slots


def test_seeded_request_gives_the_same_tokens_alone_batched_and_in_generate(model: CosyVoice2LM) -> None:
    alone = make_scheduler(model)
    alone.add(make_request("x", seed=42))
    tokens_alone = segment_tokens(run(alone)["x"])[0]

    reference = make_request("x", seed=42)
    generated = list(model.generate(reference.segments[0], reference.prompt_text, reference.prompt_speech,
                                    generator=make_generator(42)))
    assert tokens_alone == generated
    assert len(tokens_alone) >= 2 * 6  # the minimum of 2 speech tokens per text token held

    batched = make_scheduler(model, interval=3)
    batched.add(make_request("other", seed=1, num_tokens=40))
    batched.step()
    batched.step()
    batched.add(make_request("x", seed=42))  # joins mid-decode, next to a different neighbour each step
    batched.add(make_request("third", seed=2, text_tokens=9))
    assert segment_tokens(run(batched)["x"])[0] == tokens_alone


def test_unseeded_requests_differ(model: CosyVoice2LM) -> None:
    scheduler = make_scheduler(model)
    scheduler.add(make_request("a", seed=None, num_tokens=20))
    scheduler.add(make_request("b", seed=None, num_tokens=20))
    outputs = run(scheduler)
    assert segment_tokens(outputs["a"]) != segment_tokens(outputs["b"])


def test_admission_every_interval_steps_and_at_once_when_idle(model: CosyVoice2LM) -> None:
    scheduler = make_scheduler(model, interval=4)
    scheduler.add(make_request("a", num_tokens=30))
    assert [r.request_id for r in scheduler.step().started] == ["a"]  # nothing ran: admitted at once
    scheduler.add(make_request("b", num_tokens=30))
    started_at = [i for i in range(1, 8) if scheduler.step().started]
    assert started_at == [4]  # four steps after the last admission
    assert scheduler.load()["running"] == 2


def test_admission_bounded_by_max_running_and_kv_slots(model: CosyVoice2LM) -> None:
    for slots, max_running in [(2, 8), (8, 2)]:
        scheduler = make_scheduler(model, slots=slots, max_running=max_running)
        for rid in "abcd":
            scheduler.add(make_request(rid, num_tokens=5))
        started = [[r.request_id for r in scheduler.step().started] for _ in range(6)]
        # 5 tokens: a prefill and 4 decode steps; c and d start once a and b left.
        assert started == [["a", "b"], [], [], [], [], ["c", "d"]]


def test_admission_bounded_by_prefill_budget(model: CosyVoice2LM) -> None:
    requests = [make_request(rid, num_tokens=5) for rid in "abc"]
    length = prompt_length(requests[0])
    scheduler = make_scheduler(model, prefill_budget=2 * length)
    for request in requests:
        scheduler.add(request)
    assert [r.request_id for r in scheduler.step().started] == ["a", "b"]

    long = make_request("long", text_tokens=80, num_tokens=5)
    assert prompt_length(long) > 2 * length
    alone = make_scheduler(model, prefill_budget=2 * length)
    alone.add(long)
    alone.add(make_request("next", num_tokens=5))
    assert [r.request_id for r in alone.step().started] == ["long"]  # admitted, but alone


def test_cancel_frees_the_slot_at_once(model: CosyVoice2LM) -> None:
    scheduler = make_scheduler(model, slots=1)
    scheduler.add(make_request("a", num_tokens=50))
    scheduler.add(make_request("b", num_tokens=50))
    scheduler.step()
    scheduler.step()
    assert scheduler.cache.num_free == 0 and scheduler.load()["kv_used_tokens"] > 0
    assert scheduler.cancel("a").request_id == "a"
    assert scheduler.cache.num_free == 1 and scheduler.load()["kv_used_tokens"] == 0
    assert scheduler.cancel("a") is None
    assert [r.request_id for r in scheduler.step().started] == ["b"]
    assert scheduler.cancel("b") is not None and not scheduler.has_work

    scheduler.add(make_request("waiting-1", num_tokens=5))
    scheduler.add(make_request("waiting-2", num_tokens=5))
    scheduler.step()
    assert scheduler.cancel("waiting-2") is not None  # from the queue
    assert list(run(scheduler)) == ["waiting-1"]


def test_full_queue_is_refused_with_503(model: CosyVoice2LM) -> None:
    scheduler = make_scheduler(model, slots=1, max_running=1, max_waiting=2)
    scheduler.add(make_request("running", num_tokens=50))
    scheduler.step()
    scheduler.add(make_request("w1"))
    scheduler.add(make_request("w2"))
    with pytest.raises(RequestError) as refused:
        scheduler.add(make_request("w3"))
    assert refused.value.status == 503 and "busy" in refused.value.message
    assert scheduler.load()["waiting"] == 2

    idle = make_scheduler(model, max_waiting=0)
    idle.add(make_request("a"))  # a free slot is not a queue: accepted


def test_too_long_request_is_refused_with_400(model: CosyVoice2LM) -> None:
    scheduler = make_scheduler(model, capacity=64)
    fits = make_request("fits", num_tokens=64 - prompt_length(make_request("fits")))
    scheduler.add(fits)
    with pytest.raises(RequestError) as refused:
        scheduler.add(make_request("long", segments=2, text_tokens=20))  # needs 40 speech tokens at least
    assert refused.value.status == 400 and "llm.max_request_tokens is 64" in refused.value.message
    assert len(scheduler.waiting) == 1
    # Without a fixed length, the maximum is cut to what the slot holds.
    capped = make_request("capped", text_tokens=10)
    scheduler.add(capped)
    assert capped.budgets[0].max_tokens == 64 - prompt_length(capped) < TokenBudget.for_text(10).max_tokens
    outputs = run(scheduler)  # both fill their slot to the brim without overflowing it
    assert len(segment_tokens(outputs["fits"])[0]) == 64 - prompt_length(fits)
    assert len(segment_tokens(outputs["capped"])[0]) <= 64 - prompt_length(capped)


def test_a_request_that_raises_fails_alone(model: CosyVoice2LM) -> None:
    scheduler = make_scheduler(model)
    broken = make_request("broken", num_tokens=5)
    broken.segments[0][0] = 10**6  # not a text id: its prompt cannot be embedded
    scheduler.add(make_request("good", num_tokens=5))
    scheduler.add(broken)
    result = scheduler.step()
    assert [(r.request_id, "cannot build the LM prompt" in m) for r, m in result.failed] == [("broken", True)]
    assert [out.request_id for out in result.outputs] == ["good"]
    outputs = run(scheduler)
    assert [len(s) for s in segment_tokens(result.outputs + outputs["good"])] == [5]
    assert "broken" not in outputs and scheduler.cache.num_free == scheduler.cache.num_slots


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def paced_scheduler(model: CosyVoice2LM, clock: FakeClock, *, max_running: int = 8, interval: int = 1,
                    buffer_seconds: float = 0.5, first_chunk_hold: float = 0.0) -> Scheduler:
    limits = SchedulerLimits(max_running, 16, 4096, interval, stream_buffer_seconds=buffer_seconds,
                             stream_first_chunk_hold=first_chunk_hold)
    return Scheduler(model, model.new_kv_cache(num_slots=8, capacity=256), limits, clock=clock)


def start_streaming(scheduler: Scheduler, request_id: str = "s") -> None:
    """Add a streaming request and step while there is work now: through its first chunk."""
    scheduler.add(streaming_request(request_id))
    while scheduler.next_step_in() == 0:
        scheduler.step()


def streaming_request(request_id: str, num_tokens: int = 200, segments: int = 1) -> LMRequest:
    request = make_request(request_id, num_tokens=num_tokens, segments=segments)
    # chunks end at 28, 78 and 178 tokens (hops of 25, 50, 100 and 3 of look-ahead), and so
    # hold 1, 3 and 7 s of audio
    request.stream, request.chunks = True, ChunkPlan(prompt_tokens=25, first_hop=25, lookahead=3)
    return request


def test_streaming_requests_run_chunk_by_chunk_just_in_time(model: CosyVoice2LM) -> None:
    clock = FakeClock()
    scheduler = paced_scheduler(model, clock)
    scheduler.add(streaming_request("s"))
    scheduler.add(make_request("b", num_tokens=45))  # not streaming: never paced
    tokens: dict[str, list[int]] = {"s": [], "b": []}

    def steps(n: int) -> None:
        for _ in range(n):
            for out in scheduler.step().outputs:
                tokens[out.request_id] += out.tokens

    steps(60)
    # The first chunk (28 tokens) holds 1.0 s of audio: "s" is not due before 0.5 s, but joins
    # the steps taken for "b", which would take it to its second chunk's 78 tokens.
    assert (len(tokens["s"]), len(tokens["b"])) == (45, 45)
    assert scheduler.next_step_in() == pytest.approx(0.5)
    clock.now += 0.6  # 0.4 s of audio left: due, and it runs until the second chunk is whole
    steps(60)
    assert len(tokens["s"]) == 78 and scheduler.next_step_in() == pytest.approx(3.0 - 0.6 - 0.5)
    clock.now += 2.5  # 0.4 s left again: the third chunk, a hop of 100 tokens, in one burst
    steps(150)
    assert len(tokens["s"]) == 178 and scheduler.next_step_in() == pytest.approx(7.0 - 3.1 - 0.5)
    clock.now += 10
    steps(30)
    assert len(tokens["s"]) == 200 and not scheduler.has_work
    unpaced = make_scheduler(model)
    unpaced.add(make_request("s", num_tokens=200))
    assert segment_tokens(run(unpaced)["s"])[0] == tokens["s"]  # pacing changes when, not what


def test_paced_requests_fall_into_step_with_each_other(model: CosyVoice2LM) -> None:
    clock = FakeClock()
    scheduler = paced_scheduler(model, clock)
    for request_id, started in (("early", 100.0), ("late", 100.3)):
        clock.now = started
        start_streaming(scheduler, request_id)
    # "early" rode along with "late"'s first chunk, but its audio runs low first, at 100.5 s
    assert scheduler.next_step_in() == pytest.approx(0.2)
    clock.now += 0.21
    rows = [{out.request_id for out in scheduler.step().outputs} for _ in range(30)]
    assert rows[0] == {"early", "late"}  # "late", 0.79 s of audio left, joins
    assert scheduler.running["early"].emitted == 78 and not rows[rows.index(set()) - 1] - {"early", "late"}
    assert scheduler.next_step_in() == pytest.approx(1.0 - 0.21 - 0.5)  # "late" next


def test_a_streaming_request_paces_each_segment_by_its_own_chunks(model: CosyVoice2LM) -> None:
    clock = FakeClock()
    scheduler = paced_scheduler(model, clock)
    request = streaming_request("s", num_tokens=40, segments=2)
    scheduler.add(request)
    while request.segment == 0:
        clock.now += 1  # always due
        scheduler.step()
    assert request.chunks.offset == 0 and request.vocodable_tokens == 40  # all of the first segment
    assert sum(len(out.tokens) for out in run(scheduler)["s"]) == 40  # due all along: 40 s have passed


def test_a_paced_request_does_not_hold_back_admission(model: CosyVoice2LM) -> None:
    clock = FakeClock()
    scheduler = paced_scheduler(model, clock, interval=1000)
    start_streaming(scheduler)
    assert scheduler.next_step_in() > 0  # "s" is ahead of its listener
    scheduler.add(make_request("new", num_tokens=3))
    assert scheduler.next_step_in() == 0
    assert [r.request_id for r in scheduler.step().started] == ["new"]  # not 1000 steps later


def test_a_request_waiting_for_a_seat_turns_pacing_off(model: CosyVoice2LM) -> None:
    clock = FakeClock()
    scheduler = paced_scheduler(model, clock, max_running=1)
    start_streaming(scheduler)
    assert scheduler.running["s"].emitted == 28  # paced after its first chunk
    scheduler.add(make_request("w", num_tokens=5))  # the one seat is taken
    assert scheduler.next_step_in() == 0
    outputs = run(scheduler)  # no clock moves: "s" runs flat out to free the seat
    assert sum(len(out.tokens) for out in outputs["s"]) == 200 - 28 and len(segment_tokens(outputs["w"])[0]) == 5


def test_a_streaming_request_pauses_after_its_first_chunk(model: CosyVoice2LM) -> None:
    clock = FakeClock()
    scheduler = paced_scheduler(model, clock, buffer_seconds=0.0, first_chunk_hold=0.25)
    start_streaming(scheduler)
    assert scheduler.running["s"].emitted == 28  # its first chunk, then the pause
    assert scheduler.next_step_in() == pytest.approx(0.25)
    assert not scheduler.step().outputs
    clock.now += 0.25
    assert sum(len(out.tokens) for out in run(scheduler)["s"]) == 200 - 28  # then unpaced to the end


def test_a_paused_request_joins_the_steps_taken_for_others(model: CosyVoice2LM) -> None:
    clock = FakeClock()
    scheduler = paced_scheduler(model, clock, buffer_seconds=0.0, first_chunk_hold=0.25)
    scheduler.add(streaming_request("s", num_tokens=40))
    scheduler.add(make_request("b", num_tokens=40))  # not streaming: its steps are taken anyway
    outputs = run(scheduler)
    assert sum(len(out.tokens) for out in outputs["s"]) == 40  # all within the pause: no clock moved
