"""Where the decode stage spends a request's first streamed chunk, at batch 1, as served.

Builds the decode stage's batcher on the full-size random-weight flow (fp16) and HiFT (fp32)
with their CUDA graphs and a flow prefix for the voice, as `a10tts serve` does, then vocodes the
first chunk (5 s prompt: 125 tokens; 25-token hop + 3 look-ahead) of fresh requests in that
voice. Each part is timed with the GPU synchronized around it, so the parts add up to the whole
and the remainder is the batcher's own Python and host work. Run on the GPU machine:
`python benchmarks/first_chunk.py`.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections import defaultdict

import torch

from a10tts.engine.demo import demo_yaml
from a10tts.engine.flow import FlowModel
from a10tts.engine.frontend import PromptFeatures
from a10tts.engine.hift import HiFTGenerator
from a10tts.engine.hparams import parse_hparams
from a10tts.engine.streaming import longest_streamed_chunk_frames
from a10tts.pipeline.decode_batch import DecodeBatcher

SPENT: dict[str, list[float]] = defaultdict(list)


def timed(name: str, inner):
    """``inner`` wrapped so that each call's time, GPU work included, adds to ``SPENT[name]``."""

    @functools.wraps(inner)
    def wrapper(*args, **kwargs):
        torch.cuda.synchronize()
        started = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            torch.cuda.synchronize()
            SPENT[name].append(1000 * (time.perf_counter() - started))

    return wrapper


def served_batcher(max_batch_size: int = 16) -> DecodeBatcher:
    """The decode stage's batcher on the full-size random-weight flow (fp16) and HiFT (fp32),
    with their CUDA graphs, as ``a10tts serve`` builds it."""
    hparams = parse_hparams(demo_yaml("full"))
    with torch.device("cuda"):
        flow = FlowModel.from_hparams(hparams["flow"].args).half().eval()
        hift = HiFTGenerator.from_hparams(hparams["hift"].args).eval()
    flow.enable_cuda_graphs(max_batch_size=max_batch_size, max_frames=600)
    hift.enable_cuda_graphs(max_batch_size=max_batch_size, max_frames=longest_streamed_chunk_frames(25, 3, 2))
    return DecodeBatcher(flow, hift, first_hop_tokens=25, max_batch_size=max_batch_size,
                         prefix_budget_bytes=512 << 20)


def voice_prompt(prompt_tokens: int = 125) -> PromptFeatures:
    """A random voice's prompt features: ``prompt_tokens`` speech tokens (125: a 5 s prompt)."""
    n = prompt_tokens
    return PromptFeatures(torch.zeros(0, dtype=torch.int32), torch.randint(0, 6561, (n,), dtype=torch.int32),
                          torch.randn(2 * n, 80) - 4, torch.randn(192))


def first_chunks(batcher: DecodeBatcher, prompt: PromptFeatures, rids: list[str]) -> float:
    """Vocode the first chunk (25-token hop + 3 look-ahead) of a fresh request per id, in one
    batch; the step's milliseconds."""
    tokens = torch.randint(0, 6561, (28,)).tolist()
    for rid in rids:
        request = batcher.start(rid, 0, prompt, stream=True, speed=1.0, num_segments=1, seed=1)
        request.add(0, tokens, finished=False)
    torch.cuda.current_stream().synchronize()  # this stream only: an LM may share the GPU (gpu_sharing.py)
    started = time.perf_counter()
    audio, failed = batcher.step()
    assert len(audio) == len(rids) and not failed
    for rid in rids:
        batcher.cancel(rid)
    return 1000 * (time.perf_counter() - started)


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompt-tokens", type=int, default=125)
    parser.add_argument("--requests", type=int, default=10)
    args = parser.parse_args()
    batcher = served_batcher()
    flow, hift, n = batcher.flow, batcher.hift, args.prompt_tokens
    prompt = voice_prompt(n)
    first_chunks(batcher, prompt, ["warm-up"])  # records the voice's prefix, captures the prefix graphs it needs
    flow._conditioning = timed("flow: tokens to mu (encoder)", flow._conditioning)
    flow._graphs.continue_prefix = timed("flow: Euler loop (graphs, after the prefix)", flow._graphs.continue_prefix)
    hift.f0_predictor.forward = timed("HiFT: f0 predictor", hift.f0_predictor.forward)
    hift.m_source.forward = timed("HiFT: excitation", hift.m_source.forward)
    hift._graphs = timed("HiFT: decode (graphs)", hift._graphs)
    totals = [first_chunks(batcher, prompt, [f"r{i}"]) for i in range(args.requests)]
    print(f"# {torch.cuda.get_device_name()}, first chunk at batch 1: prompt {n} tokens, 28 new tokens, "
          f"median of {args.requests}")
    print("| part | ms |")
    print("|---|---|")
    parts = {name: statistics.median(ms) for name, ms in SPENT.items()}
    for name, ms in parts.items():
        print(f"| {name} | {ms:.1f} |")
    total = statistics.median(totals)
    print(f"| rest (batcher, host copies, HiFT's cache joins) | {total - sum(parts.values()):.1f} |")
    print(f"| **the whole step** | **{total:.1f}** |")


if __name__ == "__main__":
    main()
