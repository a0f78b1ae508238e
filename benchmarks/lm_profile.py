"""Where one LM decode step spends the GPU's time, as served (bf16, compiled, from its CUDA graph).

The full-size CosyVoice2 LM on random weights, every slot holding ``--context`` tokens: the
replayed step's time, its kernels' sum (the gap is launch and idle time inside the graph), the
costliest kernels and the time by kind, per batch size. The bandwidth floor is the weights' bytes
over the card's memory bandwidth (about 0.24 ms on an H100).
Run on the GPU machine: `python benchmarks/lm_profile.py --batch 1 32`.
"""

from __future__ import annotations

import argparse

import torch

from lm_decode import build  # beside this script
from timing import kernel_report, median_ms


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--context", type=int, default=300, help="tokens already in each slot")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    args = parser.parse_args()
    lm = build(torch.bfloat16)
    weights = sum(p.numel() * p.element_size() for p in lm.parameters()) / 2**20
    print(f"# {torch.cuda.get_device_name()}, bf16, compiled + CUDA graph, context {args.context} tokens, "
          f"{weights:.0f} MiB of weights")
    for batch in args.batch:
        cache = lm.new_kv_cache(num_slots=batch, capacity=args.context + 256)  # each replay appends a token
        slots = [cache.allocate() for _ in range(batch)]
        cache.advance(slots, [args.context] * batch)
        tokens = torch.randint(0, 6561, (batch,)).tolist()
        lm.enable_cuda_graphs(cache, max_batch_size=batch, compile=True)

        def step() -> torch.Tensor:
            return lm.decode_step(cache, slots, tokens)

        replay = median_ms(step, repeats=50)
        print(f"\n## batch {batch}: replayed step {replay:.3f} ms")
        total = kernel_report(step, calls=10, top=15)
        print(f"kernel sum {total:.3f} ms per step")
        lm.disable_cuda_graphs()


if __name__ == "__main__":
    main()
