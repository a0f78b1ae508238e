"""The encode, LM and decode stages as real processes on the demo model, driven over their real
sockets by the test in the place of an HTTP worker and of the supervisor."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import numpy as np
import pytest

from a10tts.config import Config
from a10tts.engine.demo import init_demo
from a10tts.voices import VoiceRegistry

from pipeline_harness import Outcome, Pipeline, wav_bytes

FIRST_HOP = 10
SAMPLES_PER_TOKEN = 960  # 25 Hz speech tokens, 24 kHz audio
SAMPLES_PER_FRAME = 480
MAX_REQUEST_TOKENS = 1200
PROMPT = wav_bytes(2.0)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    root = tmp_path_factory.mktemp("pipeline")
    config = Config.model_validate({
        "model": {"device": "cpu"},
        "encode": {"concurrency": 4},
        "llm": {"kv_cache_tokens": 4 * MAX_REQUEST_TOKENS, "max_request_tokens": MAX_REQUEST_TOKENS,
                "max_running_requests": 4, "schedule_interval_steps": 2},
        "decode": {"first_hop_tokens": FIRST_HOP, "max_batch_size": 4},
        "limits": {"max_text_chars": 200, "max_prompt_seconds": 5.0},
    })
    pipeline = Pipeline(root, init_demo(root / "model"), config)
    try:
        pipeline.start_all()
        yield pipeline
    finally:
        pipeline.close()


def check_audio(outcome: Outcome, *, streamed: bool) -> None:
    assert outcome.failure is None, outcome.failure
    assert [c.seq for c in outcome.chunks] == list(range(len(outcome.chunks)))
    assert [c.final for c in outcome.chunks] == [False] * (len(outcome.chunks) - 1) + [True]
    sizes = [len(c.pcm) // 2 for c in outcome.chunks]
    assert all(size > 0 and size % SAMPLES_PER_FRAME == 0 for size in sizes), sizes
    if streamed:  # the first chunk covers at most two first hops (hop + prompt alignment)
        assert sizes[0] <= 2 * FIRST_HOP * SAMPLES_PER_TOKEN
    assert outcome.pcm.std() > 100  # not silence


def test_concurrent_requests_of_every_mode_complete(pipeline: Pipeline) -> None:
    voice = VoiceRegistry(pipeline.specs["encode"].state_dir).create("narrator", "the prompt transcript", PROMPT)
    prompt = {"prompt_wav": PROMPT, "prompt_text": "the prompt transcript"}
    ids = [
        pipeline.submit("zero-shot-stream", text="Streaming in chunks, please. Two sentences now!", **prompt),
        pipeline.submit("zero-shot-whole", text="All at once.", stream=False, speed=1.25, **prompt),
        pipeline.submit("cross-lingual", mode="cross_lingual", text="Bonjour tout le monde.",
                        prompt_wav=wav_bytes(1.5, sample_rate=22050, seed=1), stream=False),
        pipeline.submit("instruct2", mode="instruct2", instruct_text="Speak cheerfully.",
                        text="A happy sentence.", prompt_wav=PROMPT),
        pipeline.submit("fixed-length", text="Benchmark me.", num_tokens=120, seed=3, **prompt),
        pipeline.submit("by-voice", text="A registered voice.", voice_id=voice.id),
    ]
    outcomes = pipeline.finish(*ids, timeout=60)
    for rid, outcome in outcomes.items():
        check_audio(outcome, streamed=rid not in ("zero-shot-whole", "cross-lingual"))
    assert len(outcomes["zero-shot-whole"].chunks) == len(outcomes["cross-lingual"].chunks) == 1
    assert len(outcomes["fixed-length"].chunks) > 3  # hops of 10, 20, 40, ... tokens
    assert len(outcomes["fixed-length"].pcm) == 120 * SAMPLES_PER_TOKEN


@pytest.mark.parametrize("stream", [True, False])
def test_a_seed_gives_the_same_audio_again(pipeline: Pipeline, stream: bool) -> None:
    first = pipeline.submit(f"seeded-1-{stream}", text="Same again.", seed=11, stream=stream, prompt_wav=PROMPT,
                            prompt_text="the prompt transcript")
    second = pipeline.submit(f"seeded-2-{stream}", text="Same again.", seed=11, stream=stream, prompt_wav=PROMPT,
                             prompt_text="the prompt transcript")
    outcomes = pipeline.finish(first, second)
    a, b = outcomes[first].pcm.astype(int), outcomes[second].pcm.astype(int)
    assert a.shape == b.shape and np.abs(a - b).max() <= 2  # batch padding may move the last bit
    assert a.std() > 100


def test_bad_input_gets_a_clear_400_and_the_stages_go_on(pipeline: Pipeline) -> None:
    good = {"prompt_wav": PROMPT, "prompt_text": "the prompt transcript", "text": "Fine."}
    cases = {
        "empty-text": ({**good, "text": ""}, 400, "text is empty"),
        "long-text": ({**good, "text": "a" * 201}, 400, "text has 201 characters; the limit is 200"),
        "not-audio": ({**good, "prompt_wav": b"definitely not audio"}, 400, "could not read the audio"),
        "8khz": ({**good, "prompt_wav": wav_bytes(2.0, sample_rate=8000)}, 400, "sample rate 8000 Hz is too low"),
        "long-prompt": ({**good, "prompt_wav": wav_bytes(6.0)}, 400, "the limit is 5 s"),
        "bad-mode": ({**good, "mode": "whisper"}, 400, "unknown mode 'whisper'"),
        "no-transcript": ({**good, "prompt_text": ""}, 400, "needs the transcript of the prompt audio"),
        "unknown-voice": ({**good, "prompt_wav": None, "voice_id": "voice-0000000000000000"}, 404,
                          "is not registered"),
        "too-long-for-lm": ({**good, "num_tokens": MAX_REQUEST_TOKENS}, 400, "llm.max_request_tokens is 1200"),
    }
    for rid, (fields, _, _) in cases.items():
        pipeline.submit(rid, **fields)
    served = pipeline.submit("good-after-bad", **good)
    outcomes = pipeline.finish(*cases, served)
    for rid, (_, status, message) in cases.items():
        failure = outcomes[rid].failure
        assert failure is not None and not outcomes[rid].chunks, rid
        assert failure.status == status and message in failure.message, (rid, failure)
    check_audio(outcomes[served], streamed=True)


def test_cancel_mid_stream_stops_the_audio_and_frees_the_slot(pipeline: Pipeline) -> None:
    rid = pipeline.submit("cancelled", text="A long one.", num_tokens=1000, prompt_wav=PROMPT,
                          prompt_text="the prompt transcript")
    pipeline.wait_until(lambda: pipeline.outcomes[rid].chunks, 30, "the first chunk")
    pipeline.wait_until(lambda: pipeline.heartbeats["llm"].load["kv_used_tokens"] > 0, 5, "a busy LM")
    pipeline.cancel(rid)
    pipeline.wait_until(lambda: pipeline.heartbeats["llm"].load == {
        "running": 0, "waiting": 0, "kv_used_tokens": 0, "kv_capacity_tokens": 4 * MAX_REQUEST_TOKENS,
    }, 5, "the LM to free the slot")
    pipeline.wait_until(lambda: pipeline.heartbeats["decode"].load["running"] == 0, 5, "decode to drop it")
    received = len(pipeline.outcomes[rid].chunks)
    pipeline.fresh_heartbeat("decode")  # a second more: nothing else arrives
    outcome = pipeline.outcomes[rid]
    assert len(outcome.chunks) == received and not outcome.complete
    assert len(outcome.pcm) < 1000 * SAMPLES_PER_TOKEN


def test_a_killed_decode_worker_hangs_nothing_and_a_new_one_takes_over(pipeline: Pipeline) -> None:
    # 300 tokens, 12 s of audio: the LM paces a stream to its listener (llm.stream_buffer_seconds),
    # so it holds its last tokens until ~9 s after the first chunk. It may end sooner, when a send
    # to the dead worker fails, but on a loaded host zmq notices the death late; a 600-token stream
    # then ran past this test's 20 s.
    rid = pipeline.submit("orphaned", text="Cut short.", num_tokens=300, prompt_wav=PROMPT,
                          prompt_text="the prompt transcript")
    pipeline.wait_until(lambda: pipeline.outcomes[rid].chunks, 30, "the first chunk")
    os.kill(pipeline.processes["decode"].pid, signal.SIGKILL)
    pipeline.processes["decode"].join(5)
    # The LM keeps beating and finishes its work; the request's fate is the supervisor's call
    # (it sees the decode worker die and fails the requests of the HTTP worker).
    pipeline.wait_until(lambda: pipeline.heartbeats["llm"].load["running"] == 0, 20, "the LM to finish")
    assert not pipeline.outcomes[rid].complete
    pipeline.ready.clear()
    pipeline.start("decode")
    pipeline.wait_until(lambda: any(r.stage == "decode" for r in pipeline.ready), 60, "a new decode worker")
    after = pipeline.submit("after-restart", text="Back again.", prompt_wav=PROMPT, prompt_text="the prompt transcript")
    check_audio(pipeline.finish(after)[after], streamed=True)


def test_sigterm_stops_every_stage_cleanly_and_fails_what_they_held(pipeline: Pipeline) -> None:
    rid = pipeline.submit("in-flight", text="Interrupted.", num_tokens=800, prompt_wav=PROMPT,
                          prompt_text="the prompt transcript")
    pipeline.wait_until(lambda: pipeline.outcomes[rid].chunks, 30, "the first chunk")
    assert pipeline.stop() == {"encode": 0, "llm": 0, "decode": 0}
    pipeline.wait_until(lambda: pipeline.outcomes[rid].failure is not None, 5, "the request to fail")
    assert pipeline.outcomes[rid].failure.status == 503
    assert "stopped" in pipeline.outcomes[rid].failure.message
