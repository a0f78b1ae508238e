"""Streaming and non-streaming token2wav against upstream `CosyVoice2Model.tts` (golden vectors).

The golden runs call `torch.manual_seed(0)` right before `tts()`; HiFT's source noise then comes
from the global RNG in call order, so we do the same and pass no generator.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from a10tts.engine.frontend import PromptFeatures
from a10tts.engine.model_dir import ModelDir
from a10tts.engine.streaming import Chunk, ChunkPlan
from a10tts.engine.token2wav import Token2Wav

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden"


@pytest.fixture(scope="module")
def token2wav() -> Token2Wav:
    model_dir = ModelDir.open(GOLDEN / "tiny_model")
    return Token2Wav(model_dir.load("flow"), model_dir.load("hift"))


def load_case(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    return load_file(GOLDEN / f"{name}.safetensors"), json.loads((GOLDEN / f"{name}.json").read_text())


def prompt_of(case: dict[str, torch.Tensor]) -> PromptFeatures:
    return PromptFeatures(
        prompt_text_ids=torch.zeros(0, dtype=torch.int32),
        prompt_speech_tokens=case["prompt_token"][0],
        prompt_mel=case["prompt_feat"][0],
        speaker_embedding=case["embedding"][0],
    )


@pytest.mark.parametrize("name", ["token2wav_stream_53", "token2wav_stream_160", "token2wav_nonstream_53"])
def test_chunks_match_upstream(token2wav: Token2Wav, name: str) -> None:
    case, meta = load_case(name)
    torch.manual_seed(0)
    tokens = case["token"][0].tolist()
    chunks = list(token2wav(iter(tokens), prompt_of(case), stream=meta["stream"]))
    assert len(chunks) == meta["num_outputs"]
    for i, chunk in enumerate(chunks):
        expected = case[f"out{i}_tts_speech"][0]
        assert chunk.shape == expected.shape
        # fp32 parity: 10 Euler steps then HiFT; the golden README suggests 1e-4 for flow mels.
        torch.testing.assert_close(chunk, expected, atol=1e-4, rtol=0)


def test_streaming_is_close_to_non_streaming(token2wav: Token2Wav) -> None:
    stream_case, _ = load_case("token2wav_stream_53")
    torch.manual_seed(0)
    streamed = torch.cat(list(token2wav(stream_case["token"][0].tolist(), prompt_of(stream_case), stream=True)))
    torch.manual_seed(0)
    whole = torch.cat(list(token2wav(stream_case["token"][0].tolist(), prompt_of(stream_case), stream=False)))
    assert streamed.shape == whole.shape
    # Random weights and different chunk attention: close in level, not equal sample by sample.
    assert (streamed.abs().mean() - whole.abs().mean()).abs() < 0.25 * whole.abs().mean()


def test_chunk_plan_follows_upstream_schedule() -> None:
    plan = ChunkPlan(prompt_tokens=27)
    assert plan.next_chunk(50, finished=False) is None  # 23 pad + 25 hop + 3 look-ahead = 51
    assert plan.next_chunk(51, finished=False) == Chunk(end=51, offset=0, finalize=False)
    assert plan.next_chunk(100, finished=False) is None  # hop doubled to 50: needs 48 + 50 + 3
    assert plan.next_chunk(101, finished=False) == Chunk(end=101, offset=48, finalize=False)
    assert plan.hop == 100
    assert plan.next_chunk(160, finished=True) == Chunk(end=160, offset=98, finalize=True)
    assert plan.next_chunk(160, finished=True) is None


def test_hop_is_per_request_and_configurable() -> None:
    first, second = ChunkPlan(prompt_tokens=25), ChunkPlan(prompt_tokens=25)
    for n in range(1, 400):
        first.next_chunk(n, finished=False)
    assert first.hop == 100 and second.hop == 25  # upstream would leak 100 into the next request
    quick = ChunkPlan(prompt_tokens=27, first_hop=10)
    assert quick.next_chunk(13, finished=False) == Chunk(end=13, offset=0, finalize=False)  # 10 + 3, no pad
    assert quick.hop == 20


def test_only_hops_of_whole_attention_chunks_are_padded() -> None:
    """Padding aligns the first chunk to the flow's 25-token attention chunks, as upstream; a hop
    shorter than one such chunk cannot line up with them, so it is not made to wait for more."""
    assert ChunkPlan(prompt_tokens=125, first_hop=15).next_chunk(18, finished=False) == Chunk(18, 0, False)
    assert ChunkPlan(prompt_tokens=123, first_hop=25).next_chunk(30, finished=False) == Chunk(30, 0, False)
    assert ChunkPlan(prompt_tokens=110, first_hop=50).next_chunk(93, finished=False) == Chunk(93, 0, False)  # 110+90


@pytest.mark.parametrize("prompt_tokens", [0, 1, 24, 25, 27, 125])
@pytest.mark.parametrize("first_hop", [10, 15, 25])
def test_next_end_is_what_the_plan_waits_for(prompt_tokens: int, first_hop: int) -> None:
    """The LM paces a streaming request by its chunks' ends (``next_end``): exactly what the
    decode stage waits for, hop after hop."""
    plan = ChunkPlan(prompt_tokens=prompt_tokens, first_hop=first_hop)
    for _ in range(5):
        needed, offset = plan.next_end, plan.offset
        assert plan.next_chunk(needed - 1, finished=False) is None
        assert plan.next_chunk(needed, finished=False) == Chunk(end=needed, offset=offset, finalize=False)

