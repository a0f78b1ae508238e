"""`a10tts bench`: measure TTFA and real-time streams of a running server over HTTP."""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench", help="load-test a running server (ours or LightTTS) over HTTP",
        description="Closed-loop load at each concurrency: client-side time to first audio, latency, "
                    "real-time factor per stream, stalls, aggregate audio seconds per wall second.",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL")
    parser.add_argument("--api", choices=("lighttts", "openai"), default="lighttts",
                        help="lighttts: multipart /inference_zero_shot (a10tts and LightTTS); openai: /v1/audio/speech")
    parser.add_argument("--voice", help="registered voice for --api openai")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], metavar="N")
    parser.add_argument("--requests", type=int, default=0,
                        help="requests per level (default: 4 x concurrency, at least 8)")
    parser.add_argument("--warmup", type=int, default=2, help="requests sent before measuring (default 2)")
    parser.add_argument("--warmup-concurrency", type=int, default=1, metavar="N",
                        help="warm-up requests in flight at once (default 1); as many as the largest level "
                        "lets a server that captures CUDA graphs per batch size on first use do so unmeasured")
    parser.add_argument("--ramp-up", type=float, default=0.0, metavar="SECONDS",
                        help="start each level's clients evenly over this many seconds, as listeners arrive, "
                        "each with one unmeasured request first (default 0: all at once, a burst)")
    parser.add_argument("--lang", choices=("en", "zh", "both"), default="both")
    parser.add_argument("--no-stream", dest="stream", action="store_false", help="non-streaming requests")
    parser.add_argument("--num-tokens", type=int, help="a10tts only: fix the speech tokens per request "
                        "(random-weight models never stop on their own)")
    parser.add_argument("--label", default="a10tts", help="name of this server/profile in tables and plots")
    parser.add_argument("--api-key", help="bearer token, if the server requires one")
    parser.add_argument("--json", type=Path, help="write every sample and the statistics as JSON")
    parser.add_argument("--markdown", type=Path, help="write the table as Markdown")
    parser.add_argument("--plot", type=Path, help="write a PNG of TTFA and per-stream RTF vs concurrency "
                        "(needs matplotlib)")
    parser.add_argument("--combine", type=Path, nargs="+", metavar="JSON",
                        help="send no load: table and plot the runs of earlier --json files together "
                        "(e.g. ours and another server's)")
    parser.set_defaults(func=_bench)


def _combine(args: argparse.Namespace) -> int:
    from ..bench.report import read_levels

    try:
        levels = [level for path in args.combine for level in read_levels(path)]
    except ValueError as exc:
        print(f"a10tts bench: {exc}", file=sys.stderr)
        return 2
    _report(args, levels)
    return 0


def _report(args: argparse.Namespace, levels: list) -> None:
    """The table on stdout, and the Markdown and PNG files asked for."""
    from ..bench.report import markdown, write_plot

    table = markdown(levels)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if args.plot:
        write_plot(args.plot, levels)


def _bench(args: argparse.Namespace) -> int:
    if args.combine:
        return _combine(args)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..bench.corpus import prompts
    from ..bench.load import Target, num_tokens_ignored, run_level
    from ..bench.phases import mean_ms, read_totals
    from ..bench.report import LevelStats, write_json

    if args.api == "openai" and not args.voice:
        print("a10tts bench: --api openai needs --voice (register one with POST /v1/voices)", file=sys.stderr)
        return 2
    if any(c < 1 for c in [*args.concurrency, args.warmup_concurrency]):
        print("a10tts bench: --concurrency and --warmup-concurrency values must be >= 1", file=sys.stderr)
        return 2
    if args.ramp_up < 0:
        print(f"a10tts bench: --ramp-up must be >= 0 seconds, got {args.ramp_up:g}", file=sys.stderr)
        return 2
    target = Target(args.url.rstrip("/"), args.api, args.stream, args.voice, args.num_tokens, args.api_key)
    langs = ("en", "zh") if args.lang == "both" else (args.lang,)
    voices = prompts()
    levels, samples = [], []

    def lengths_ignored(served: list) -> bool:
        """Say so, and stop, when the server does not honour --num-tokens: the figures would not be comparable."""
        problem = args.num_tokens and num_tokens_ignored(served, args.num_tokens)
        if problem:
            progress.stop()
            print(f"a10tts bench: {problem}", file=sys.stderr)
        return bool(problem)

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as progress:
        if args.warmup:
            task = progress.add_task("warm-up", total=args.warmup)
            warm, _ = asyncio.run(run_level(target, voices, args.warmup_concurrency, args.warmup, langs,
                                            lambda s: progress.advance(task)))
            if not any(s.ok for s in warm):
                progress.stop()
                print(f"a10tts bench: warm-up failed against {target.url}: {warm[0].error}", file=sys.stderr)
                return 1
            if lengths_ignored(warm):
                return 1
        for concurrency in args.concurrency:
            count = args.requests or max(8, 4 * concurrency)
            task = progress.add_task(f"concurrency {concurrency}", total=count)
            before = read_totals(target.url, target.headers)
            level, wall = asyncio.run(run_level(target, voices, concurrency, count, langs,
                                                lambda s: progress.advance(task), ramp_up_s=args.ramp_up))
            if lengths_ignored(level):
                return 1
            phases = mean_ms(before, read_totals(target.url, target.headers))
            samples += level
            levels.append(LevelStats.of(args.label, concurrency, level, wall, phases))
    _report(args, levels)
    meta = {"url": target.url, "api": args.api, "stream": args.stream, "num_tokens": args.num_tokens,
            "ramp_up_s": args.ramp_up,
            "label": args.label, "langs": list(langs), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "client_host": platform.node()}
    if args.json:
        write_json(args.json, levels, samples, meta)
    return 1 if all(level.errors == level.requests for level in levels) else 0
