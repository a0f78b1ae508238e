"""The first call at a new input length against a repeated one, for the eager GPU paths.

Every request has its own prompt and text length, so the LM prefill and the flow encoder (both
eager) see a new shape on most requests. A backend that plans per shape (cuDNN attention builds
an execution plan for each new one) then pays that on the request's critical path. Prints, per
SDPA backend set, the median milliseconds of first calls at fresh lengths and of repeated calls.
Run on the GPU machine: `python benchmarks/new_shapes.py`.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

import torch

from a10tts.engine.demo import demo_qwen_config, demo_yaml
from a10tts.engine.flow import FlowModel
from a10tts.engine.hparams import parse_hparams
from a10tts.engine.llm import CosyVoice2LM


def timed_ms(fn: Callable[[], object]) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start)


def first_and_repeat(call: Callable[[int], object], lengths: list[int]) -> tuple[float, float]:
    firsts = [timed_ms(lambda: call(n)) for n in lengths]
    repeats = [timed_ms(lambda: call(n)) for n in lengths]
    return statistics.median(firsts), statistics.median(repeats)


@torch.inference_mode()
def main() -> None:
    hparams = parse_hparams(demo_yaml("full"))
    with torch.device("cuda"):
        lm = CosyVoice2LM.from_hparams(hparams["llm"].args, qwen_config=demo_qwen_config("full")).bfloat16().eval()
        flow = FlowModel.from_hparams(hparams["flow"].args).half().eval()
    cache = lm.new_kv_cache(num_slots=2, capacity=4096)
    hidden = lm.qwen_config.hidden_size

    def prefill(n: int) -> None:
        slot = cache.allocate()
        try:
            lm.prefill(cache, [slot], [torch.randn(n, hidden, device="cuda", dtype=torch.bfloat16)])
        finally:
            cache.free(slot)

    def encode(n: int) -> None:
        tokens = torch.randint(0, 6561, (1, n), device="cuda")
        prompt = torch.randint(0, 6561, (1, 125), device="cuda")
        flow.encode(tokens, torch.tensor([n], device="cuda"), prompt, torch.tensor([125], device="cuda"),
                    streaming=True, finalize=False)

    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}; median ms over 12 lengths")
    print("| SDPA backends | LM prefill, first call | repeated | flow encoder, first call | repeated |")
    print("|---|---|---|---|---|")
    rng = random.Random(0)
    used: set[int] = set()
    for label, cudnn in (("default", True), ("without cuDNN", False), ("default again", True)):
        torch.backends.cuda.enable_cudnn_sdp(cudnn)
        fresh = []
        while len(fresh) < 12:  # lengths no earlier row has seen
            n = rng.randrange(60, 400)
            if n not in used:
                used.add(n)
                fresh.append(n)
        prefill(50), encode(20)  # anything lazy that is not per shape
        lm_first, lm_again = first_and_repeat(prefill, fresh)
        flow_first, flow_again = first_and_repeat(encode, [n // 3 for n in fresh])
        print(f"| {label} | {lm_first:.1f} | {lm_again:.1f} | {flow_first:.1f} | {flow_again:.1f} |")


if __name__ == "__main__":
    main()
