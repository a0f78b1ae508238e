"""LM decode step time on a GPU: torch attention vs the Triton kernel vs CUDA graphs.

Full-size CosyVoice2 LM (random weights, the real shapes), every row at a given context
length. Prints one table row per batch size: milliseconds per decode step (median of
CUDA-event timings). Run on the GPU machine: `python benchmarks/lm_decode.py`.
"""

from __future__ import annotations

import argparse

import torch

from a10tts.engine import kv_cache
from a10tts.engine.demo import demo_qwen_config, demo_yaml
from a10tts.engine.hparams import parse_hparams
from a10tts.engine.kernels.decode_attention import decode_attention_reference
from a10tts.engine.llm import CosyVoice2LM
from timing import median_ms  # benchmarks/timing.py, beside this script


def build(dtype: torch.dtype) -> CosyVoice2LM:
    args = parse_hparams(demo_yaml("full"))["llm"].args
    with torch.device("cuda"):
        lm = CosyVoice2LM.from_hparams(args, qwen_config=demo_qwen_config("full"))
    return lm.to(dtype).eval()


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16"))
    parser.add_argument("--context", type=int, default=300, help="tokens already in each slot")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32, 64])
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    lm = build(dtype)
    largest = max(args.batch)
    capacity = args.context + 200
    print(f"# {torch.cuda.get_device_name()}, {args.dtype}, context {args.context} tokens")
    print("| batch | torch attention (ms) | Triton kernel (ms) | CUDA graph (ms) | compiled + graph (ms) |")
    print("|---|---|---|---|---|")
    for batch in args.batch:
        rows = []
        for mode in ("torch", "triton", "graph", "compiled"):
            cache = lm.new_kv_cache(num_slots=largest, capacity=capacity)
            slots = [cache.allocate() for _ in range(batch)]
            cache.advance(slots, [args.context] * batch)  # pretend the prompts are in
            tokens = torch.randint(0, 6561, (batch,)).tolist()
            original = kv_cache.decode_attention
            if mode == "torch":
                kv_cache.decode_attention = decode_attention_reference
            if mode in ("graph", "compiled"):
                lm.enable_cuda_graphs(cache, max_batch_size=batch, compile=mode == "compiled")
            try:
                rows.append(median_ms(lambda: lm.decode_step(cache, slots, tokens), repeats=30))
            finally:
                kv_cache.decode_attention = original
                lm._graphs = None
        print("| " + " | ".join([str(batch)] + [f"{ms:.2f}" for ms in rows]) + " |")


if __name__ == "__main__":
    main()
