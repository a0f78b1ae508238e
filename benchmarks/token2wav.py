"""Time of one streaming chunk through flow + HiFT on a GPU (full-size random weights).

The first chunk of a request decides the time to first audio after the LM: prompt tokens plus
the first hop (with its alignment pad) and 3 look-ahead tokens go through the flow (encoder and
10 Euler steps of the estimator on a CFG batch of 2), then HiFT vocodes the new frames. Prints
milliseconds per chunk (median of CUDA-event timings) for a batch of B such chunks, eager and
through CUDA graphs of the Euler loop, and compiled before capture; HiFT eager and with its
decode network replayed from CUDA graphs. A second table times HiFT alone on the later chunks'
lengths (`--hift-frames`: 108 = a 50-token hop + 8 cached frames, 208 = a 100-token hop).
Run on the GPU machine: `python benchmarks/token2wav.py --batch 1 8`.
"""

from __future__ import annotations

import argparse
import time

import torch

from a10tts.engine.cuda_graphs import HiftGraphs
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
    parser.add_argument("--hift-frames", type=int, nargs="*", default=[108, 208],
                        help="mel frames of the chunks HiFT is timed on alone (none: skip that table)")
    parser.add_argument("--hift-max-batch-frames", type=int, default=1024,
                        help="HiFT graphs for batch x frames up to this (the served default); 0: all")
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
    hift_graphs = hift_graph_setup(hift, max(args.batch), max([2 * chunk] + args.hift_frames),
                                   args.hift_max_batch_frames or None)
    print("| batch | " + " | ".join(names) + " | HiFT (ms) | HiFT, CUDA graph (ms) |")
    print("|---" * (len(names) + 3) + "|")
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
        timings += hift_ms(hift, hift_graphs, lambda: hift.inference(mel.float(), mel_len))
        print("| " + " | ".join([str(batch)] + [f"{ms:.1f}" for ms in timings]) + " |")
    if args.hift_frames:
        print("\n| batch | frames | HiFT (ms) | HiFT, CUDA graph (ms) | decode network (ms) "
              "| decode, CUDA graph (ms) |")
        print("|---" * 6 + "|")
    for batch in args.batch:
        for frames in args.hift_frames:
            mel = torch.randn(batch, 80, frames, device="cuda") - 5
            mel_len = torch.full((batch,), frames, device="cuda")
            _, source = hift.inference(mel, mel_len)
            timings = hift_ms(hift, hift_graphs, lambda: hift.inference(mel, mel_len))
            timings += [median_ms(lambda: hift.decode(mel, source, mel_len)),
                        median_ms(lambda: hift_graphs(mel, source, mel_len))]
            print("| " + " | ".join([str(batch), str(frames)] + [f"{ms:.1f}" for ms in timings]) + " |")


def hift_graph_setup(hift: HiFTGenerator, max_batch: int, max_frames: int,
                     max_batch_frames: int | None) -> HiftGraphs:
    """Capture HiFT's decode graphs up to the largest input timed; report the time and memory."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    reserved, started = torch.cuda.memory_reserved(), time.perf_counter()
    hift.enable_cuda_graphs(max_batch_size=max_batch, max_frames=max_frames, max_batch_frames=max_batch_frames)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    torch.cuda.empty_cache()  # what stays reserved: the graph pool and static buffers
    graphs, hift._graphs = hift._graphs, None
    print(f"# HiFT decode graphs: {len(graphs._graphs)} (batch <= {max_batch}, frames <= {graphs.max_frames}, "
          f"batch x frames <= {max_batch_frames}) captured in {seconds:.1f} s, "
          f"{(torch.cuda.memory_reserved() - reserved) / 2**20:.0f} MiB of GPU memory kept; "
          "larger inputs run eagerly")
    return graphs


def hift_ms(hift: HiFTGenerator, graphs: HiftGraphs, run) -> list[float]:
    """`run` (a HiFT inference) eager, then with the decode network from the graphs."""
    eager = median_ms(run)
    hift._graphs = graphs
    try:
        return [eager, median_ms(run)]
    finally:
        hift._graphs = None


if __name__ == "__main__":
    main()
