"""CUDA-graph buckets on the CPU: which inputs get a graph, which run eagerly (tests/gpu has the replays)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from a10tts.engine.cuda_graphs import FlowGraphs, HiftGraphs
from a10tts.engine.model_dir import ModelDir
from a10tts.engine.streaming import ChunkPlan, longest_streamed_chunk_frames

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden"


@pytest.fixture(scope="module")
def hift():
    return ModelDir.open(GOLDEN / "tiny_model").load("hift", "cpu", torch.float32)


@pytest.mark.parametrize(("max_batch", "buckets"), [(1, [1]), (8, [1, 2, 4, 8]), (12, [1, 2, 4, 8, 12]),
                                                     (64, [1, 2, 4, 8, 16, 32, 64])])
def test_batch_buckets_end_at_the_largest_batch(hift, max_batch, buckets) -> None:
    assert HiftGraphs(hift, max_batch, max_frames=100).batch_buckets == buckets


def test_hift_buckets_pad_up_and_stop_at_the_bounds(hift) -> None:
    graphs = HiftGraphs(hift, max_batch_size=8, max_frames=214, max_batch_frames=1024)
    assert graphs.max_frames == 225
    assert graphs.bucket(1, 1) == (1, 25)
    assert graphs.bucket(3, 108) == (4, 125)
    assert graphs.bucket(8, 125) == (8, 125)  # 1000 rows x frames
    assert graphs.bucket(2, 214) == (2, 225)
    assert graphs.bucket(8, 126) is None  # 8 x 150 rows x frames: eager
    assert graphs.bucket(1, 226) is None  # longer than the longest bucket: eager
    assert graphs.bucket(9, 10) is None  # more rows than the largest bucket: eager
    assert graphs.bucket(2, 0) is None  # nothing to pad up from
    assert HiftGraphs(hift, 8, 214, max_batch_frames=None).bucket(8, 214) == (8, 225)


def test_prepare_captures_the_buckets_in_bounds_largest_first(hift) -> None:
    graphs = HiftGraphs(hift, max_batch_size=8, max_frames=100, max_batch_frames=400)
    captured = []
    graphs._capture = lambda bucket: captured.append(bucket)  # no CUDA here
    graphs.prepare(100)
    assert sorted(captured) == sorted((b, t) for b in (1, 2, 4, 8) for t in (25, 50, 75, 100) if b * t <= 400)
    sizes = [b * t for b, t in captured]
    assert sizes == sorted(sizes, reverse=True)


def test_flow_buckets_have_no_frame_limit() -> None:
    graphs = FlowGraphs(cfm=None, max_batch_size=4)  # bucket choice needs no model
    assert graphs.bucket(3, 1201) == (4, 1250)
    assert graphs.bucket(5, 50) is None


def test_hift_inference_runs_eagerly_outside_the_buckets(hift) -> None:
    """No graph is ever captured here (that needs CUDA): a batch beyond the buckets is decoded eagerly."""
    mel = torch.randn(2, 80, 12, generator=torch.Generator().manual_seed(0)) - 5
    lengths = torch.tensor([12, 7])

    def infer():
        return hift.inference(mel, lengths, generator=[torch.Generator().manual_seed(s) for s in (1, 2)])

    eager = infer()
    hift._graphs = HiftGraphs(hift, max_batch_size=1, max_frames=50)
    try:
        graphed = infer()
    finally:
        hift._graphs = None
    assert torch.equal(graphed[0], eager[0]) and torch.equal(graphed[1], eager[1])


@pytest.mark.parametrize("first_hop", [5, 25, 50, 100])
def test_streamed_chunks_fit_the_hift_graph_frames(first_hop) -> None:
    """Every streamed chunk's HiFT input (new frames + cached ones) fits the bound the decode
    worker sizes the HiFT graphs by, whatever the prompt, length and token arrival."""
    lookahead, ratio, cache = 3, 2, 8
    bound = longest_streamed_chunk_frames(first_hop, lookahead, ratio)
    longest = 0
    for prompt in range(0, 2 * first_hop + 1, 7):
        for total in (1, first_hop + 2, 2 * first_hop + lookahead - 1, 2 * first_hop + 1, 333, 517):
            for step in (1, total):  # tokens one by one, or all at once
                plan, available, cached = ChunkPlan(prompt, first_hop, lookahead), 0, False
                while not plan.done:
                    available = min(total, available + step)
                    chunk = plan.next_chunk(available, finished=available == total)
                    if chunk is None:
                        continue
                    new = chunk.end - chunk.offset - (0 if chunk.finalize else lookahead)
                    longest = max(longest, new * ratio + cache * cached)
                    cached = not chunk.finalize
    assert longest <= bound
    assert longest_streamed_chunk_frames(25, 3, 2) == 214  # the defaults
