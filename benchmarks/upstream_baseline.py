"""Baseline: the upstream CosyVoice2 code itself, timed like `a10tts bench`, on the same model.

Loads upstream's `CosyVoice2` from a checkout given with `--upstream` (never copied into this
repository; `DIR` and `DIR/third_party/Matcha-TTS` go on sys.path) and runs its
`inference_zero_shot(..., stream=True)` with N concurrent threads on one model object (as
upstream's own FastAPI server does), closed loop, after a warm-up. Per request: time to the
first yielded chunk (TTFA, the frontend included: upstream reads the prompt audio with every
request, as our server does), total latency, audio seconds, RTF and the worst playback lag;
the table is `a10tts bench`'s (a10tts.bench.report), so the two compare row by row.

What the harness changes at run time (upstream's files on disk stay untouched), all printed:

- Fixed length: random weights never emit a stop token, so every request yields exactly
  `--num-tokens` speech tokens: the LM's `inference_wrapper` gets min_len = max_len = N and
  `sampling_ids` refuses all three stop ids (as our `--num-tokens` does).
- `--hop per-request` (default): upstream keeps the streaming hop in one attribute of the
  shared model (`token_hop_len`, 25 tokens, doubled after every chunk up to 100 and never
  reset), so after the first request every first chunk waits for 100 tokens. The default gives
  each request its own hop starting at 25 (a thread-local attribute), which is what upstream's
  comment intends; `--hop shared` keeps upstream's behaviour as it is.
- `torchaudio.load`: torchaudio >= 2.9 decodes only through torchcodec (not installed on the
  GPU image; it needs FFmpeg), ignoring the `backend='soundfile'` upstream asks for. When
  torchcodec is missing, `torchaudio.load` is replaced by a soundfile reader with the same
  result (float32, channels first), resampling stays upstream's.
- A model directory written by `a10tts model init-demo` lacks what upstream's loader needs
  from the official one (see `prepare_model_dir`); a shadow directory under `--work-dir` then
  links every file and adds the missing pieces (weights identical to llm.pt's).
- `modelscope`: imported by cosyvoice.cli.cosyvoice for `snapshot_download` only, which is
  never called for a local directory; without the package a stub module stands in.

Usage (PYTHONPATH=service, so that a10tts.bench is importable):
    python benchmarks/upstream_baseline.py --upstream /tmp/upstream/CosyVoice \
        --model-dir /tmp/full --concurrency 1 4 --num-tokens 200 --fp16 --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import queue
import re
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

QWEN_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def log(message: str) -> None:
    print(f"[upstream-baseline] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Model directory


def missing_for_upstream(model_dir: Path) -> list[str]:
    """What upstream's CosyVoice2(model_dir) needs that this directory lacks."""
    missing = []
    text = (model_dir / "cosyvoice2.yaml").read_text()
    for key in ("get_tokenizer", "feat_extractor", "allowed_special"):
        if not re.search(rf"^{key}\s*:", text, re.MULTILINE):
            missing.append(f"cosyvoice2.yaml: top-level key '{key}'")
    if not re.search(r"^\s+training_cfg_rate\s*:", text, re.MULTILINE):
        missing.append("cosyvoice2.yaml: flow.decoder.cfm_params 'training_cfg_rate' "
                       "(read by CausalConditionalCFM.__init__)")
    if not any((model_dir / "CosyVoice-BlankEN" / name).exists() for name in QWEN_WEIGHT_FILES):
        missing.append("CosyVoice-BlankEN/model.safetensors (Qwen2ForCausalLM.from_pretrained needs weights)")
    return missing


def prepare_model_dir(model_dir: Path, work_dir: Path) -> Path:
    """`model_dir` itself when upstream can load it, else a shadow directory that can.

    The shadow links every file of `model_dir`, adds the missing keys to cosyvoice2.yaml (the
    frontend's, and cfm_params.training_cfg_rate, with the official values) and writes
    CosyVoice-BlankEN/model.safetensors from llm.pt's `llm.model.*` tensors (upstream loads the
    Qwen2 weights from there, then overwrites them with llm.pt).
    """
    missing = missing_for_upstream(model_dir)
    if not missing:
        return model_dir
    log(f"{model_dir} is not loadable by upstream as it is; missing: " + "; ".join(missing))
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    for entry in model_dir.iterdir():
        if entry.name not in ("cosyvoice2.yaml", "CosyVoice-BlankEN"):
            (work_dir / entry.name).symlink_to(entry.resolve())
    text = (model_dir / "cosyvoice2.yaml").read_text()
    for key in ("get_tokenizer", "feat_extractor", "allowed_special"):
        if re.search(rf"^{key}\s*:", text, re.MULTILINE):
            raise SystemExit(f"{model_dir}/cosyvoice2.yaml has '{key}' but not all frontend keys; fix it by hand")
    if any("top-level key" in m for m in missing):
        from a10tts.engine.demo import UPSTREAM_LOADER_YAML  # what `init-demo` writes now

        text = text.rstrip("\n") + "\n" + UPSTREAM_LOADER_YAML
    if any("training_cfg_rate" in m for m in missing):
        # Training only (the CFG dropout rate); the official file has 0.2 beside inference_cfg_rate.
        text, n = re.subn(r"^(\s+)(inference_cfg_rate\s*:.*)$", r"\1training_cfg_rate: 0.2\n\1\2", text,
                          count=1, flags=re.MULTILINE)
        if n != 1:
            raise SystemExit(f"{model_dir}/cosyvoice2.yaml: no inference_cfg_rate to put training_cfg_rate beside")
    (work_dir / "cosyvoice2.yaml").write_text(text)
    qwen_src, qwen_dst = model_dir / "CosyVoice-BlankEN", work_dir / "CosyVoice-BlankEN"
    qwen_dst.mkdir()
    for entry in qwen_src.iterdir():
        (qwen_dst / entry.name).symlink_to(entry.resolve())
    if not any((qwen_src / name).exists() for name in QWEN_WEIGHT_FILES):
        write_qwen_weights(model_dir / "llm.pt", qwen_src / "config.json", qwen_dst / "model.safetensors")
    log(f"shadow model directory: {work_dir}")
    return work_dir


def write_qwen_weights(llm_pt: Path, config_json: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    start = time.perf_counter()
    tied = json.loads(config_json.read_text()).get("tie_word_embeddings", False)
    state = torch.load(llm_pt, map_location="cpu", weights_only=True, mmap=True)
    prefix = "llm.model."
    tensors = {}
    for key, value in state.items():
        if key.startswith(prefix):
            name = key[len(prefix):]
            if tied and name == "lm_head.weight":
                continue  # tied to model.embed_tokens.weight, as in the official file
            tensors[name] = value.contiguous()
    save_file(tensors, str(out), metadata={"format": "pt"})
    log(f"wrote {out} ({len(tensors)} tensors from {llm_pt.name}, {out.stat().st_size / 2**20:.0f} MiB, "
        f"{time.perf_counter() - start:.1f} s)")


# ---------------------------------------------------------------------------------------------
# Run-time adjustments to upstream (nothing on disk changes)


def install_torchaudio_load_shim() -> str:
    """torchaudio >= 2.9 loads only through torchcodec; read with soundfile when it is missing."""
    import importlib.util

    import torchaudio

    if importlib.util.find_spec("torchcodec") is not None:
        return "torchaudio.load (torchcodec)"
    import numpy as np
    import soundfile
    import torch

    def load(uri, frame_offset=0, num_frames=-1, normalize=True, channels_first=True, format=None,
             buffer_size=4096, backend=None):
        data, sample_rate = soundfile.read(uri, start=frame_offset,
                                           stop=None if num_frames < 0 else frame_offset + num_frames,
                                           dtype="float32", always_2d=True)
        tensor = torch.from_numpy(np.ascontiguousarray(data.T if channels_first else data))
        return tensor, sample_rate

    torchaudio.load = load
    return "soundfile (torchaudio.load replaced: no torchcodec)"


def install_modelscope_stub() -> str | None:
    """cosyvoice.cli.cosyvoice imports modelscope.snapshot_download unconditionally; it is only
    called for a model id that is not a local directory. Without modelscope installed, a stub
    module stands in that refuses to download."""
    import importlib.util
    import types

    if importlib.util.find_spec("modelscope") is not None:
        return None

    def snapshot_download(model_id, *args, **kwargs):
        raise RuntimeError(f"modelscope stub (benchmarks/upstream_baseline.py): no download of {model_id!r}; "
                           "pass a local model directory")

    stub = types.ModuleType("modelscope")
    stub.snapshot_download = snapshot_download
    sys.modules["modelscope"] = stub
    return "modelscope (stub: snapshot_download only, never called for a local directory)"


class FixedLength:
    """Make upstream's Qwen2LM yield exactly `num_tokens` tokens per request."""

    def __init__(self, llm, num_tokens: int) -> None:
        self.num_tokens = num_tokens
        self.counts: list[int] = []
        self._lock = threading.Lock()
        original_wrapper, original_sampling = llm.inference_wrapper, llm.sampling_ids
        stop_ids = list(llm.stop_token_ids)

        def inference_wrapper(lm_input, sampling, min_len, max_len, uuid):
            count = 0
            for token in original_wrapper(lm_input, sampling, num_tokens, num_tokens, uuid):
                count += 1
                yield token
            with self._lock:
                self.counts.append(count)

        def sampling_ids(weighted_scores, decoded_tokens, sampling, ignore_eos=True):
            if ignore_eos:  # below min_len, i.e. always here: refuse every stop id, not only EOS
                weighted_scores[stop_ids] = -float("inf")
            return original_sampling(weighted_scores, decoded_tokens, sampling, ignore_eos)

        llm.inference_wrapper = inference_wrapper
        llm.sampling_ids = sampling_ids

    def take_counts(self) -> list[int]:
        with self._lock:
            counts, self.counts = self.counts, []
        return counts


def per_request_hop(model) -> Callable[[], None]:
    """Give every request its own `token_hop_len` (upstream shares one on the model object).

    Returns reset(): call it in the thread that consumes a request's generator, before it.
    """
    initial = model.token_hop_len
    local = threading.local()

    def get(self):
        return getattr(local, "hop", initial)

    def set_(self, value):
        local.hop = value

    del model.__dict__["token_hop_len"]
    model.__class__ = type(model.__class__.__name__, (model.__class__,),
                           {"token_hop_len": property(get, set_)})

    def reset() -> None:
        local.hop = initial

    return reset


# ---------------------------------------------------------------------------------------------
# Load


def run_level(cosyvoice, jobs: list[tuple[str, str]], prompts: dict, concurrency: int, reset_hop,
              sample_cls, text_frontend: bool, name: str = "") -> tuple[list, float]:
    """`len(jobs)` requests, `concurrency` threads each starting its next when one ends."""
    work: queue.Queue = queue.Queue()
    for job in jobs:
        work.put(job)
    samples, lock = [], threading.Lock()
    sample_rate = cosyvoice.sample_rate

    def client() -> None:
        while True:
            try:
                lang, text = work.get_nowait()
            except queue.Empty:
                return
            prompt_text, prompt_wav = prompts[lang]
            if reset_hop:
                reset_hop()
            start = time.perf_counter()
            first, samples_out, max_lag, error, chunks = None, 0, 0.0, None, 0
            try:
                for output in cosyvoice.inference_zero_shot(text, prompt_text, prompt_wav, stream=True,
                                                            text_frontend=text_frontend):
                    now = time.perf_counter()
                    n = output["tts_speech"].shape[-1]
                    if not n:
                        continue
                    if first is None:
                        first = now
                    chunks += 1
                    max_lag = max(max_lag, now - (first + samples_out / sample_rate))
                    samples_out += n
            except Exception as exc:  # recorded as an errored request, like an HTTP failure
                error = f"{type(exc).__name__}: {exc}"
                logging.getLogger("upstream-baseline").exception("request failed")
            total = time.perf_counter() - start
            if error is None and not samples_out:
                error = "no audio"
            sample = sample_cls(concurrency, lang, 200 if error is None else 500, error,
                                None if first is None else first - start, total, samples_out / sample_rate,
                                max_lag if first is not None else None)
            with lock:
                samples.append(sample)
            log(f"{name or f'c={concurrency}'} {len(samples)}/{len(jobs)}: ttfa "
                f"{'-' if sample.ttfa_s is None else f'{sample.ttfa_s * 1000:.0f} ms'}, total {total:.2f} s, "
                f"audio {sample.audio_s:.2f} s in {chunks} chunks" + (f", ERROR {error}" if error else ""))

    threads = [threading.Thread(target=client, name=f"client-{i}") for i in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return samples, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", type=Path, required=True,
                        help="CosyVoice checkout (with third_party/Matcha-TTS)")
    parser.add_argument("--model-dir", type=Path, required=True, help="CosyVoice2 model directory")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/upstream-baseline-model"),
                        help="where a shadow model directory goes when --model-dir needs one")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4], metavar="N")
    parser.add_argument("--requests-per-level", type=int, default=0,
                        help="requests per level (default: 4 x concurrency, at least 8, as a10tts bench)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed requests first (default 1)")
    parser.add_argument("--num-tokens", type=int, default=200, help="speech tokens per request (25 per second)")
    parser.add_argument("--fp16", action="store_true", help="CosyVoice2(..., fp16=True) (CUDA only)")
    parser.add_argument("--lang", choices=("en", "zh", "both"), default="en")
    parser.add_argument("--prompt-wav", type=Path, help="prompt audio (default: a10tts bench's prompt_<lang>.wav)")
    parser.add_argument("--prompt-text", help="its transcript (default: a10tts bench's)")
    parser.add_argument("--hop", choices=("per-request", "shared"), default="per-request",
                        help="streaming hop state: per request (default) or upstream's shared attribute")
    parser.add_argument("--no-text-frontend", dest="text_frontend", action="store_false",
                        help="inference_zero_shot(..., text_frontend=False)")
    parser.add_argument("--label", default="upstream CosyVoice2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--verbose", action="store_true", help="keep upstream's INFO logging and progress bars")
    args = parser.parse_args()

    upstream = args.upstream.resolve()
    matcha = upstream / "third_party" / "Matcha-TTS"
    if not (upstream / "cosyvoice" / "cli" / "cosyvoice.py").exists() or not (matcha / "matcha").is_dir():
        parser.error(f"{upstream} is not a CosyVoice checkout with third_party/Matcha-TTS")
    sys.path[:0] = [str(upstream), str(matcha)]
    if str(REPO / "service") not in sys.path:
        sys.path.append(str(REPO / "service"))  # a10tts.bench, when PYTHONPATH lacks service/
    if not args.verbose:
        os.environ.setdefault("TQDM_DISABLE", "1")  # upstream wraps every request in a tqdm bar
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch.cuda.amp.autocast, diffusers

    from a10tts.bench.corpus import PROMPT_TEXTS, SENTENCES
    from a10tts.bench.load import Sample
    from a10tts.bench.report import LevelStats, markdown, write_json, write_plot

    langs = ("en", "zh") if args.lang == "both" else (args.lang,)
    if args.prompt_wav and len(langs) > 1:
        parser.error("--prompt-wav takes one language: use --lang en or zh")
    prompts = {}
    for lang in langs:
        wav = args.prompt_wav or REPO / "service" / "a10tts" / "bench" / "data" / f"prompt_{lang}.wav"
        if args.prompt_wav and not args.prompt_text:
            parser.error("--prompt-wav needs --prompt-text")
        prompts[lang] = (args.prompt_text or PROMPT_TEXTS[lang], str(wav))

    import random

    import numpy as np
    import torch

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    audio_backend = install_torchaudio_load_shim()
    stubs = [stub for stub in (install_modelscope_stub(),) if stub]
    if stubs:
        log("stub modules: " + "; ".join(stubs))
    from cosyvoice.cli.cosyvoice import CosyVoice2

    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)
    model_dir = prepare_model_dir(args.model_dir.resolve(), args.work_dir)

    start = time.perf_counter()
    cosyvoice = CosyVoice2(str(model_dir), load_jit=False, load_trt=False, fp16=args.fp16)
    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)
    load_s = time.perf_counter() - start
    model = cosyvoice.model
    fixed = FixedLength(model.llm, args.num_tokens)
    reset_hop = per_request_hop(model) if args.hop == "per-request" else None
    device = str(model.device)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    lm_dtype = str(next(model.llm.llm.parameters()).dtype).replace("torch.", "")
    log(f"loaded in {load_s:.1f} s on {device} ({gpu}); fp16={model.fp16}, LM weights {lm_dtype}, "
        f"frontend '{cosyvoice.frontend.text_frontend or 'none'}', audio read by {audio_backend}, hop {args.hop}")

    all_jobs = itertools.cycle([(lang, s) for lang in langs for s in SENTENCES[lang]])
    if args.warmup:
        warm, _ = run_level(cosyvoice, [next(all_jobs) for _ in range(args.warmup)], prompts, 1, reset_hop,
                            Sample, args.text_frontend, name="warm-up")
        fixed.take_counts()
        if not any(s.ok for s in warm):
            log(f"warm-up failed: {warm[0].error}")
            return 1
    import transformers

    meta = {
        "label": args.label, "what": "upstream CosyVoice2 inference_zero_shot(stream=True), in-process threads",
        "upstream": str(upstream), "model_dir": str(args.model_dir), "loaded_from": str(model_dir),
        "device": device, "gpu": gpu, "fp16": bool(model.fp16), "lm_weights_dtype": lm_dtype,
        "num_tokens": args.num_tokens, "hop": args.hop, "text_frontend": args.text_frontend,
        "frontend": cosyvoice.frontend.text_frontend, "audio_backend": audio_backend, "stubs": stubs,
        "langs": list(langs), "warmup": args.warmup, "load_s": round(load_s, 2),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(), "host": platform.node(),
        "lm_tokens_per_segment": {}, "peak_gpu_memory_gib": {},
    }
    levels, samples = [], []
    for concurrency in args.concurrency:
        count = args.requests_per_level or max(8, 4 * concurrency)
        jobs = [next(all_jobs) for _ in range(count)]
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        level, wall = run_level(cosyvoice, jobs, prompts, concurrency, reset_hop, Sample, args.text_frontend)
        counts = fixed.take_counts()
        meta["lm_tokens_per_segment"][concurrency] = counts
        if any(c != args.num_tokens for c in counts) or len(counts) != count:
            log(f"WARNING c={concurrency}: LM runs yielded {sorted(set(counts))} tokens over {len(counts)} "
                f"segments for {count} requests (expected {args.num_tokens} each, one segment each)")
        samples += level
        levels.append(LevelStats.of(args.label, concurrency, level, wall))
        if torch.cuda.is_available():
            peak = torch.cuda.max_memory_allocated() / 2**30
            meta["peak_gpu_memory_gib"][concurrency] = round(peak, 2)
            log(f"c={concurrency}: peak GPU memory {peak:.2f} GiB allocated by torch")
        # Written after every level, so that a run cut short still leaves its finished levels.
        if args.markdown:
            args.markdown.write_text(markdown(levels) + "\n")
        if args.json:
            write_json(args.json, levels, samples, meta)

    print(markdown(levels))
    if args.plot:
        write_plot(args.plot, levels)
    return 1 if all(level.errors == level.requests for level in levels) else 0


if __name__ == "__main__":
    sys.exit(main())
