"""Time of one streaming chunk through flow + HiFT on a GPU (full-size random weights).

The first chunk of a request decides the time to first audio after the LM: prompt tokens plus
the first hop (with its alignment pad) and 3 look-ahead tokens go through the flow (encoder and
10 Euler steps of the estimator on a CFG batch of 2), then HiFT vocodes the new frames. Prints
milliseconds per chunk (median of CUDA-event timings) for a batch of B such chunks, eager and
through CUDA graphs of the Euler loop, and compiled before capture. Run on the GPU machine: `python benchmarks/token2wav.py`.
"""

from __future__ import annotations

import argparse

import torch

from a10tts.engine.demo import demo_yaml
from a10tts.engine.flow import FlowModel
from a10tts.engine.hift import HiFTGenerator
from a10tts.engine.hparams import parse_hparams
from timing import median_ms  # benchmarks/timing.py, beside this script


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompt-tokens", type=int, default=75, help="3 s of prompt at 25 Hz")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile before capture (slow start)")
    args = parser.parse_args()
    hparams = parse_hparams(demo_yaml("full"))
    with torch.device("cuda"):
        flow = FlowModel.from_hparams(hparams["flow"].args).half().eval()
        hift = HiFTGenerator.from_hparams(hparams["hift"].args).eval()
    prompt = args.prompt_tokens
    chunk = 25 + (-prompt) % 25 + 3  # first hop, alignment pad, look-ahead
    print(f"# {torch.cuda.get_device_name()}, flow fp16, HiFT fp32, prompt {prompt} tokens, first chunk {chunk} tokens")
    modes = [(False, False), (True, False)] + ([(True, True)] if args.compile else [])
    names = ["flow eager (ms)", "flow, CUDA graph (ms)", "flow, compiled + graph (ms)"][: len(modes)]
    print("| batch | " + " | ".join(names) + " | HiFT (ms) |")
    print("|---" * (len(names) + 2) + "|")
    for batch in args.batch:
        def inputs():
            return dict(
                token=torch.randint(0, 6561, (batch, chunk), device="cuda"),
                token_len=torch.full((batch,), chunk, device="cuda"),
                prompt_token=torch.randint(0, 6561, (batch, prompt), device="cuda"),
                prompt_token_len=torch.full((batch,), prompt, device="cuda"),
                prompt_feat=torch.randn(batch, 2 * prompt, 80, device="cuda"),
                prompt_feat_len=torch.full((batch,), 2 * prompt, device="cuda"),
                embedding=torch.randn(batch, 192, device="cuda"),
                streaming=True, finalize=False,
            )
        feed = inputs()
        timings = []
        for graphs, compile in modes:
            flow._graphs = None
            if graphs:
                flow.enable_cuda_graphs(max_batch_size=batch, compile=compile)
            timings.append(median_ms(lambda: flow.inference(**feed)))
        flow._graphs = None
        mel, mel_len = flow.inference(**feed)
        timings.append(median_ms(lambda: hift.inference(mel.float(), mel_len)))
        print("| " + " | ".join([str(batch)] + [f"{ms:.1f}" for ms in timings]) + " |")


if __name__ == "__main__":
    main()
