"""`a10tts model verify|init-demo|export-onnx`."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("model", help="check a model directory, create a demo model, export ONNX")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    verify = actions.add_parser("verify", help="check files, sizes, keys and shapes; explain what is wrong")
    verify.add_argument("dir", help="model directory (the official CosyVoice2-0.5B layout)")
    verify.set_defaults(func=_verify)

    demo = actions.add_parser("init-demo", help="write a random-weight demo model (its audio is noise)")
    demo.add_argument("dir", help="new directory to create")
    demo.add_argument("--size", choices=("tiny", "full"), default="tiny",
                      help="tiny: runs on a laptop CPU; full: CosyVoice2-0.5B's real sizes, for GPU timing")
    demo.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    demo.set_defaults(func=_init_demo)

    export = actions.add_parser(
        "export-onnx", help="export the flow estimator to ONNX (upstream's flow.decoder.estimator.fp32.onnx)")
    export.add_argument("dir", help="model directory (the official CosyVoice2-0.5B layout)")
    export.add_argument("-o", "--output", metavar="PATH",
                        help="file or existing directory to write (default: DIR/flow.decoder.estimator.fp32.onnx)")
    export.add_argument("--streaming-input", action="store_true",
                        help="add a 'streaming' [batch] bool input selecting chunked attention per row "
                             "(upstream's file has none: full attention)")
    export.set_defaults(func=_export_onnx)


def _verify(args: argparse.Namespace) -> int:
    from ..engine.verify import verify

    findings = verify(args.dir)
    for finding in findings:
        print(finding)
    failed = sum(not f.ok for f in findings)
    print(f"{args.dir}: " + (f"{failed} problem(s) found" if failed else "model directory OK"))
    return 1 if failed else 0


def _init_demo(args: argparse.Namespace) -> int:
    from ..engine.demo import init_demo

    try:
        path = init_demo(args.dir, size=args.size, seed=args.seed)
    except (FileExistsError, ValueError) as exc:
        print(f"a10tts model init-demo: {exc}", file=sys.stderr)
        return 1
    print(f"wrote a {args.size} demo model to {path} (random weights: its audio is noise)")
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    from ..engine.flow.export import export_model_dir

    try:
        path = export_model_dir(args.dir, args.output, streaming_input=args.streaming_input)
    except (OSError, ValueError) as exc:  # ModelDirError is a ValueError
        print(f"a10tts model export-onnx: {exc}", file=sys.stderr)
        return 1
    print(f"wrote the flow estimator of {args.dir} to {path}")
    return 0
