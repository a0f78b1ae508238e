"""LM step times on a GPU: decode with torch attention, the Triton kernel, CUDA graphs, compiled
graphs, and as the scheduler runs it (compiled graph with the sampling inside, tokens read back);
then one request's prefill, eager and from its CUDA graph.

Full-size CosyVoice2 LM (random weights, the real shapes), every row at a given context
length. Prints milliseconds per decode step per batch size and per prefill per prompt length
(median of CUDA-event timings). Run on the GPU machine: `python benchmarks/lm_decode.py`.
"""

from __future__ import annotations

import argparse

import torch

from a10tts.engine import kv_cache
from a10tts.engine.demo import demo_qwen_config, demo_yaml
from a10tts.engine.hparams import parse_hparams
from a10tts.engine.kernels.decode_attention import decode_attention_reference
from a10tts.engine.llm import CosyVoice2LM
from a10tts.engine.sampling import make_generator
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
    parser.add_argument("--prompt", type=int, nargs="+", default=[190, 500], help="prefill lengths")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    lm = build(dtype)
    largest = max(args.batch)
    capacity = args.context + 200
    print(f"# {torch.cuda.get_device_name()}, {args.dtype}, context {args.context} tokens")
    print("| batch | torch attention (ms) | Triton kernel (ms) | CUDA graph (ms) | compiled + graph (ms) "
          "| as served: + sampling, read back (ms) |")
    print("|---|---|---|---|---|---|")
    for batch in args.batch:
        rows = []
        for mode in ("torch", "triton", "graph", "compiled", "served"):
            cache = lm.new_kv_cache(num_slots=largest, capacity=capacity)
            slots = [cache.allocate() for _ in range(batch)]
            cache.advance(slots, [args.context] * batch)  # pretend the prompts are in
            tokens = torch.randint(0, 6561, (batch,)).tolist()
            original = kv_cache.decode_attention
            if mode == "torch":
                kv_cache.decode_attention = decode_attention_reference
            if mode in ("graph", "compiled", "served"):
                lm.enable_cuda_graphs(cache, max_batch_size=batch, compile=mode != "graph")
            step = lambda: lm.decode_step(cache, slots, tokens)  # noqa: E731
            if mode == "served":
                generators, histories = [make_generator(row) for row in slots], [[] for _ in slots]
                step = lambda: lm.decode_and_sample(cache, slots, tokens, histories, generators,  # noqa: E731
                                                    [False] * batch)
            try:
                rows.append(median_ms(step, repeats=30))
            finally:
                kv_cache.decode_attention = original
                lm.disable_cuda_graphs()
        print("| " + " | ".join([str(batch)] + [f"{ms:.2f}" for ms in rows]) + " |")
    prefill_table(lm, args.prompt, dtype)


def prefill_table(lm: CosyVoice2LM, lengths: list[int], dtype: torch.dtype) -> None:
    print("\n| prompt tokens | eager prefill (ms) | CUDA graph (ms) |")
    print("|---|---|---|")
    cache = lm.new_kv_cache(num_slots=1, capacity=max(lengths) + 64)
    for length in lengths:
        embeds = torch.randn(length, lm.qwen_config.hidden_size, device="cuda").to(dtype)
        rows = []
        for graphs in (False, True):
            if graphs:
                lm.enable_cuda_graphs(cache, max_batch_size=1, max_prefill_tokens=cache.capacity)

            def prefill() -> None:
                slot = cache.allocate()
                lm.prefill(cache, [slot], [embeds])
                cache.free(slot)

            rows.append(median_ms(prefill, repeats=20))
            lm.disable_cuda_graphs()
        print(f"| {length} | {rows[0]:.2f} | {rows[1]:.2f} |")


if __name__ == "__main__":
    main()
