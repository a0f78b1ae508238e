"""The decode stage's per-voice flow prefixes: computed once, bounded in bytes, refusals remembered."""

from __future__ import annotations

import pytest
import torch

from a10tts.engine.frontend import PromptFeatures
from a10tts.engine.model_dir import ModelDir
from a10tts.pipeline.flow_prefixes import VoicePrefixes, voice_key


def voice(seed: int, prompt_tokens: int = 60) -> PromptFeatures:
    g = torch.Generator().manual_seed(seed)
    return PromptFeatures(
        prompt_text_ids=torch.zeros(0, dtype=torch.int32),
        prompt_speech_tokens=torch.randint(0, 6561, (prompt_tokens,), generator=g, dtype=torch.int32),
        prompt_mel=torch.randn(2 * prompt_tokens, 80, generator=g) - 4,
        speaker_embedding=torch.randn(192, generator=g),
    )


@pytest.fixture(scope="module")
def flow(demo_model: ModelDir):
    return demo_model.load("flow")


class CountingFlow:
    """The real flow, counting its prompt_prefix calls (each is an Euler loop over the prompt)."""

    def __init__(self, flow) -> None:
        self.flow, self.calls = flow, 0

    def __getattr__(self, name: str):
        return getattr(self.flow, name)

    def prompt_prefix(self, *args):
        self.calls += 1
        return self.flow.prompt_prefix(*args)


def test_each_voice_is_computed_once_and_the_least_recently_used_goes_first(flow) -> None:
    counting = CountingFlow(flow)
    first, second = voice(1), voice(2)
    one_voice = flow.prompt_prefix(first.prompt_speech_tokens, first.prompt_mel, first.speaker_embedding).nbytes
    prefixes = VoicePrefixes(counting, budget_bytes=one_voice)
    kept = prefixes.get(voice_key(first), first)
    assert kept is not None and kept.frames == 100  # 60 tokens: two whole 25-token chunks
    assert prefixes.get(voice_key(first), first) is kept and counting.calls == 1
    assert prefixes.get(voice_key(second), second) is not None
    assert len(prefixes) == 1 and prefixes.nbytes == one_voice  # the first voice made room
    assert prefixes.get(voice_key(first), first) is not kept and counting.calls == 3


def test_a_prompt_without_a_prefix_or_over_the_budget_is_not_computed_again(flow) -> None:
    counting = CountingFlow(flow)
    prefixes = VoicePrefixes(counting, budget_bytes=1)
    long_voice, short_voice = voice(3), voice(4, prompt_tokens=20)  # 20 tokens: no whole chunk
    for _ in range(2):
        assert prefixes.get(voice_key(long_voice), long_voice) is None
        assert prefixes.get(voice_key(short_voice), short_voice) is None
    assert counting.calls == 2 and len(prefixes) == 2 and prefixes.nbytes == 0


def test_voices_without_a_prefix_are_remembered_up_to_a_cap(flow) -> None:
    counting = CountingFlow(flow)
    prefixes = VoicePrefixes(counting, budget_bytes=1 << 30, max_voices=3)
    short = [voice(10 + i, prompt_tokens=20) for i in range(5)]  # no whole chunk: no prefix, 0 bytes
    for prompt in short:
        assert prefixes.get(voice_key(prompt), prompt) is None
    assert len(prefixes) == 3 and counting.calls == 5
    prefixes.get(voice_key(short[-1]), short[-1])  # still held
    prefixes.get(voice_key(short[0]), short[0])  # dropped first, computed again
    assert counting.calls == 6 and len(prefixes) == 3
