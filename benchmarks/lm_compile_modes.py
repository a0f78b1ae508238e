"""The LM's decode step (with its sampling) from a CUDA graph under several torch.compile
settings: the replayed step's time, its kernels by kind and the costliest ones, and how far its
log-probs are from the first setting's.

Settings: ``served`` (dynamic shapes, as `llm.torch_compile` does), ``static`` (one compilation
per batch size), ``static+sample`` (the sampling compiled too) and ``autotune+sample``
(``max-autotune-no-cudagraphs``: Triton GEMM templates with fused epilogues, tuned per shape).
Full-size random weights, bf16, every slot at 300 tokens and more (each replay appends one). Run on the GPU machine:
`python benchmarks/lm_compile_modes.py --batch 1 32`.
"""

from __future__ import annotations

import argparse
import time

import torch

from a10tts.engine import lm_graphs
from a10tts.engine.llm import CosyVoice2LM
from lm_decode import build  # beside this script
from timing import kernel_report, median_ms

SETTINGS = {"served": dict(dynamic=True), "static": dict(dynamic=False), "static+sample": dict(dynamic=False),
            "autotune+sample": dict(dynamic=False, mode="max-autotune-no-cudagraphs")}
SAMPLING = (lm_graphs.ras_sample, lm_graphs.forbid_tokens_from)
CONTEXT = 300


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    lm = build(torch.bfloat16)
    lm_graphs._BUCKETS = ()  # one graph per run, of the batch itself
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, bf16, context {CONTEXT} tokens")
    for batch in args.batch:
        first = None
        for setting in args.settings:
            torch._dynamo.reset()
            lm.decode_logp = torch.compile(CosyVoice2LM.decode_logp.__get__(lm), **SETTINGS[setting])
            if setting.endswith("+sample"):
                lm_graphs.ras_sample, lm_graphs.forbid_tokens_from = (torch.compile(f, dynamic=False) for f in SAMPLING)
            cache = lm.new_kv_cache(num_slots=batch, capacity=CONTEXT + 128)  # each replay appends a token
            slots = [cache.allocate() for _ in range(batch)]
            cache.advance(slots, [CONTEXT] * batch)
            tokens = torch.randint(0, 6561, (batch,), generator=torch.Generator().manual_seed(0)).tolist()
            started = time.perf_counter()
            graphs = lm_graphs.DecodeGraphs(lm, cache, batch)  # lm.decode_logp is the compiled one
            built = time.perf_counter() - started

            def step() -> torch.Tensor:
                return graphs._replay(batch, slots, tokens)[0]

            logp = step().clone()
            first = logp if first is None else first
            replay = median_ms(step, repeats=50)
            print(f"\n## batch {batch}, {setting}: replayed step {replay:.3f} ms, compile + capture {built:.0f} s, "
                  f"max |logp - {args.settings[0]}'s| {(logp - first).abs().max().item():.3g}")
            kernel_report(step, calls=10, top=12)
            del lm.decode_logp
            lm_graphs.ras_sample, lm_graphs.forbid_tokens_from = SAMPLING


if __name__ == "__main__":
    main()
