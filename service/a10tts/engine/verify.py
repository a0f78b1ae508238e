"""`a10tts model verify`: check a model directory and explain exactly what is wrong."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import CheckpointError, compare_keys, load_state_dict
from .onnx_models import OnnxModelError, create_session
from .model_dir import CONFIG_FILE, ONNX_FILES, QWEN_DIR, WEIGHT_FILES, ModelDir, ModelDirError, canonical_state, expected_shapes


@dataclass(frozen=True)
class Finding:
    ok: bool
    item: str
    detail: str

    def __str__(self) -> str:
        return f"[{'ok' if self.ok else 'FAIL'}] {self.item}: {self.detail}"


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size} bytes"


def verify(path: str | Path) -> list[Finding]:
    """Every check on a model directory, passing or not (nothing is loaded onto a GPU)."""
    path = Path(path)
    try:
        model_dir = ModelDir.open(path)
    except ModelDirError as exc:
        return [Finding(False, CONFIG_FILE, str(exc))]
    findings = [Finding(True, CONFIG_FILE, "CosyVoice2 hyper-parameters read")]
    if model_dir.is_demo:
        findings.append(Finding(True, "demo", "this is a random-weight demo model: its audio is noise"))

    for component, name in WEIGHT_FILES.items():
        file = path / name
        try:
            state = load_state_dict(file)
        except CheckpointError as exc:
            findings.append(Finding(False, name, str(exc)))
            continue
        with torch.device("meta"):  # only shapes are needed here
            module = model_dir.build(component)
        report = compare_keys(expected_shapes(module), canonical_state(module, state))
        if report.ok:
            findings.append(Finding(True, name, f"{len(state)} tensors, keys and shapes match ({_size(file)})"))
        else:
            findings.append(Finding(False, name, f"does not match {CONFIG_FILE}: {report.describe()}"))

    for name in ONNX_FILES.values():
        file = path / name
        if not file.is_file() or file.stat().st_size == 0:
            findings.append(Finding(False, name, "missing or empty"))
            continue
        try:
            create_session(file)
            findings.append(Finding(True, name, f"loads in onnxruntime ({_size(file)})"))
        except OnnxModelError as exc:
            findings.append(Finding(False, name, str(exc).splitlines()[0]))

    try:
        from .tokenizer import TextTokenizer

        tokenizer = TextTokenizer.from_dir(path / QWEN_DIR)
        findings.append(Finding(True, QWEN_DIR, f"tokenizer with {tokenizer.vocab_size} tokens"))
    except Exception as exc:  # the tokenizer reports missing/corrupt files with its own types
        findings.append(Finding(False, QWEN_DIR, str(exc)))
    return findings
