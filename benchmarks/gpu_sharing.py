"""How the LM and the decode stage share one GPU: two processes (the driver time-slices their
contexts, as served) against one process with a CUDA stream each.

Full-size random weights. The LM side loops decode steps as the scheduler runs them (bf16,
compiled CUDA graphs, sampling, a host read of the tokens) over ``--lm-batch`` rows; the decode
side vocodes batches of ``--decode-batch`` first chunks in one 5 s voice (``first_chunk.py``'s
served batcher: CUDA graphs and a flow prefix). Prints, per arrangement, the LM's mean ms per
step and the decode batch's median ms, each alone and side by side. Run on the GPU machine:
`python benchmarks/gpu_sharing.py`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable

import torch

from a10tts.engine.sampling import make_generator
from first_chunk import first_chunks, served_batcher, voice_prompt  # beside this script
from lm_decode import build

CONTEXT = 300  # tokens in each LM slot when the loop starts (a prompt and some speech)
CAPACITY = 2048


def lm_stepper(max_batch: int) -> Callable[[int], None]:
    """``step(rows)``: one LM decode step over the first ``rows`` slots, sampled and read back."""
    lm = build(torch.bfloat16)
    cache = lm.new_kv_cache(num_slots=max_batch, capacity=CAPACITY)
    slots = [cache.allocate() for _ in range(max_batch)]
    cache.advance(slots, [CONTEXT] * max_batch)
    lm.enable_cuda_graphs(cache, max_batch_size=max_batch, compile=True)
    histories: list[list[int]] = [[] for _ in slots]
    generators = [make_generator(row) for row in slots]
    tokens = [0] * max_batch

    def step(rows: int) -> None:
        if cache.length(slots[0]) >= CAPACITY - 1:  # start the slots over rather than run out
            for slot in slots:
                cache.free(slot)
            slots[:] = [cache.allocate() for _ in range(max_batch)]
            cache.advance(slots, [CONTEXT] * max_batch)
        tokens[:rows] = lm.decode_and_sample(cache, slots[:rows], tokens[:rows], histories[:rows],
                                             generators[:rows], [False] * rows)
        for history, token in zip(histories, tokens[:rows]):
            history.append(token)

    return step


def lm_loop(step: Callable[[int], None], rows: int, stop: Callable[[], bool]) -> list[float]:
    """Step until ``stop()``; each step's seconds."""
    times = []
    while not stop():
        started = time.perf_counter()
        step(rows)
        times.append(time.perf_counter() - started)
    return times


class LMThread:
    """The LM's loop on a thread of this process, on a stream of its own, until ``stop()``."""

    def __init__(self, step: Callable[[int], None], rows: int, priority: int) -> None:
        self._done = threading.Event()
        self._times: list[float] = []
        self._thread = threading.Thread(target=self._run, args=(step, rows, priority))
        self._thread.start()

    def _run(self, step: Callable[[int], None], rows: int, priority: int) -> None:
        with torch.inference_mode(), torch.cuda.stream(torch.cuda.Stream(priority=priority)):
            self._times = lm_loop(step, rows, self._done.is_set)

    def stop(self) -> list[float]:
        """Each step's seconds."""
        self._done.set()
        self._thread.join()
        return self._times


def lm_process(max_batch: int, rows: int, conn) -> None:
    """The LM in a process of its own: ready, then step from "go" to "stop" and send the times."""
    with torch.inference_mode():
        step = lm_stepper(max_batch)
        for _ in range(20):
            step(rows)
        conn.send("ready")
        conn.recv()
        conn.send(lm_loop(step, rows, conn.poll))


def decode_batches(batcher, prompt, batch: int, repeats: int) -> list[float]:
    return [first_chunks(batcher, prompt, [f"r{i}-{row}" for row in range(batch)]) for i in range(repeats)]


def report(label: str, lm_times: list[float], decode_ms: list[float]) -> None:
    lm = f"{1000 * statistics.mean(lm_times):.2f} ({len(lm_times)} steps)" if lm_times else "-"
    decode = f"{statistics.median(decode_ms):.1f}" if decode_ms else "-"
    print(f"| {label} | {lm} | {decode} |", flush=True)


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lm-batch", type=int, default=1)
    parser.add_argument("--decode-batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10, help="decode batches timed per arrangement")
    args = parser.parse_args()
    batcher = served_batcher(max(16, args.decode_batch))
    prompt = voice_prompt()
    decode_batches(batcher, prompt, args.decode_batch, 2)  # the voice's prefix, the graphs it needs
    step = lm_stepper(args.lm_batch)
    print(f"# {torch.cuda.get_device_name()}: LM batch {args.lm_batch}, decode batch {args.decode_batch}")
    print("| arrangement | LM ms per step | decode ms per batch |")
    print("|---|---|---|")

    report("decode alone", [], decode_batches(batcher, prompt, args.decode_batch, args.repeats))
    deadline = time.perf_counter() + 2.0
    report("LM alone", lm_loop(step, args.lm_batch, lambda: time.perf_counter() > deadline), [])

    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=lm_process, args=(args.lm_batch, args.lm_batch, theirs))
    child.start()
    assert ours.recv() == "ready"
    ours.send("go")
    decode_ms = decode_batches(batcher, prompt, args.decode_batch, args.repeats)
    ours.send("stop")
    report("two processes (as served)", ours.recv(), decode_ms)
    child.join()

    for label, priority in (("one process, LM stream at high priority", -1), ("one process, equal priorities", 0)):
        beside = LMThread(step, args.lm_batch, priority)
        with torch.cuda.stream(torch.cuda.Stream(priority=0)):
            time.sleep(0.2)
            decode_ms = decode_batches(batcher, prompt, args.decode_batch, args.repeats)
        report(label, beside.stop(), decode_ms)

if __name__ == "__main__":
    main()
