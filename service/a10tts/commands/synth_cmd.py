"""`a10tts synth`: offline synthesis from the command line, without the server."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("synth", help="synthesise text to a WAV file with the engine (no server)")
    parser.add_argument("--model-dir", required=True, help="model directory (official layout, or a demo model)")
    parser.add_argument("--text", required=True, help="text to speak")
    parser.add_argument("--prompt-wav", required=True, help="voice prompt audio (WAV/FLAC/OGG, >= 16 kHz, <= 30 s)")
    parser.add_argument("--prompt-text", default="", help="transcript of the prompt audio (needed for zero_shot)")
    parser.add_argument("--mode", choices=("zero_shot", "cross_lingual", "instruct2"), default="zero_shot")
    parser.add_argument("--instruct-text", default="", help="instruction for --mode instruct2")
    parser.add_argument("--stream", action="store_true", help="synthesise in streaming chunks")
    parser.add_argument("--speed", type=float, default=1.0, help="speaking rate 0.5-2.0 (not with --stream)")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed, for reproducible output")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                        help="LM precision (the flow uses float16 for half precisions on CUDA)")
    parser.add_argument("-o", "--output", required=True, help="output WAV file (24 kHz, 16-bit)")
    parser.set_defaults(func=_synth)


def _synth(args: argparse.Namespace) -> int:
    import soundfile
    import torch

    from ..engine.cosyvoice2 import SAMPLE_RATE, CosyVoice2, EngineOptions
    from ..engine.features import AudioError
    from ..engine.model_dir import ModelDirError

    flow_dtype = "float16" if args.dtype != "float32" and args.device != "cpu" else "float32"
    started = time.perf_counter()
    try:
        engine = CosyVoice2(args.model_dir, EngineOptions(device=args.device, llm_dtype=args.dtype,
                                                          flow_dtype=flow_dtype))
        if engine.is_demo:
            print("note: this is a random-weight demo model; its audio is noise", file=sys.stderr)
        loaded = time.perf_counter()
        print(f"loaded {args.model_dir} on {engine.device} in {loaded - started:.1f} s", file=sys.stderr)
        prompt = engine.prompt(args.prompt_text, Path(args.prompt_wav))
        chunks, first = [], None
        begin = time.perf_counter()
        for chunk in engine.synthesize(args.mode, args.text, prompt, instruct_text=args.instruct_text,
                                       stream=args.stream, speed=args.speed, seed=args.seed):
            first = first or time.perf_counter() - begin
            chunks.append(chunk)
            audio_s = sum(len(c) for c in chunks) / SAMPLE_RATE
            print(f"  chunk {len(chunks)}: {len(chunk) / SAMPLE_RATE:.2f} s audio (total {audio_s:.2f} s)",
                  file=sys.stderr)
    except (ModelDirError, AudioError, ValueError, FileNotFoundError) as exc:
        print(f"a10tts synth: {exc}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - begin
    audio = torch.cat(chunks) if chunks else torch.zeros(0)
    soundfile.write(args.output, audio.numpy(), SAMPLE_RATE, subtype="PCM_16")
    seconds = len(audio) / SAMPLE_RATE
    rtf = wall / seconds if seconds else float("inf")
    print(f"wrote {args.output}: {seconds:.2f} s of audio in {wall:.2f} s (RTF {rtf:.3f}, "
          f"first chunk after {first or 0:.3f} s, {len(chunks)} chunk(s))")
    return 0
