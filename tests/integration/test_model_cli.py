"""`a10tts model init-demo`, `model verify` and `synth`, run as real processes on the demo model."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

SR = 24000


def a10tts(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "a10tts.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "demo"
    result = a10tts("model", "init-demo", str(path))
    assert result.returncode == 0, result.stderr
    assert "its audio is noise" in result.stdout
    return path


@pytest.fixture(scope="module")
def prompt_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "prompt.wav"
    t = np.arange(2 * SR) / SR
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32), SR)
    return path


def test_demo_model_verifies(demo: Path) -> None:
    result = a10tts("model", "verify", str(demo))
    assert result.returncode == 0, result.stdout
    assert "model directory OK" in result.stdout
    assert "random-weight demo model" in result.stdout
    assert "[FAIL]" not in result.stdout


def test_init_demo_refuses_to_overwrite(demo: Path) -> None:
    result = a10tts("model", "init-demo", str(demo))
    assert result.returncode == 1 and "not empty" in result.stderr


@pytest.mark.parametrize("stream", [False, True])
def test_synth_writes_a_24khz_wav(demo: Path, prompt_wav: Path, tmp_path: Path, stream: bool) -> None:
    out = tmp_path / "out.wav"
    args = ["synth", "--model-dir", str(demo), "--text", "Hello there, this is the demo model speaking.",
            "--prompt-wav", str(prompt_wav), "--prompt-text", "A short prompt.", "--seed", "7",
            "--device", "cpu", "-o", str(out)]
    result = a10tts(*args, *(["--stream"] if stream else []))
    assert result.returncode == 0, result.stderr
    assert "its audio is noise" in result.stderr
    assert "RTF" in result.stdout and "first chunk after" in result.stdout
    info = soundfile.info(out)
    assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
    audio, _ = soundfile.read(out)
    assert info.frames > SR // 2 and np.abs(audio).max() > 0.0
    assert info.frames % 480 == 0  # whole mel frames


def test_synth_is_reproducible_with_a_seed(demo: Path, prompt_wav: Path, tmp_path: Path) -> None:
    outputs = []
    for name in ("a.wav", "b.wav"):
        args = ["synth", "--model-dir", str(demo), "--text", "Same seed, same audio.", "--mode", "cross_lingual",
                "--prompt-wav", str(prompt_wav), "--seed", "11", "--device", "cpu", "-o", str(tmp_path / name)]
        assert a10tts(*args).returncode == 0
        outputs.append(soundfile.read(tmp_path / name)[0])
    assert np.array_equal(*outputs)


@pytest.mark.parametrize(
    ("prompt", "text", "message"),
    [
        ("missing.wav", "Hello.", "missing.wav"),
        ("garbage.wav", "Hello.", "not"),
        ("8k.wav", "Hello.", "16"),
        ("long.wav", "Hello.", "30"),
        ("ok.wav", "   ", "text is empty"),
    ],
)
def test_synth_rejects_bad_input_clearly(demo: Path, tmp_path: Path, prompt: str, text: str, message: str) -> None:
    (tmp_path / "garbage.wav").write_bytes(b"RIFF....not really a wav file" * 20)
    soundfile.write(tmp_path / "8k.wav", np.zeros(8000 * 2, np.float32), 8000)
    soundfile.write(tmp_path / "long.wav", np.zeros(16000 * 31, np.float32) + 0.01, 16000)
    soundfile.write(tmp_path / "ok.wav", np.full(SR * 2, 0.1, np.float32), SR)
    result = a10tts("synth", "--model-dir", str(demo), "--text", text, "--prompt-wav", str(tmp_path / prompt),
                    "--prompt-text", "A prompt.", "--device", "cpu", "-o", str(tmp_path / "o.wav"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert message in result.stderr.splitlines()[-1]


def broken_copy(demo: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(demo, target)
    return target


def test_verify_explains_a_truncated_checkpoint(demo: Path, tmp_path: Path) -> None:
    model = broken_copy(demo, tmp_path)
    data = (model / "flow.pt").read_bytes()
    (model / "flow.pt").write_bytes(data[: len(data) // 2])
    result = a10tts("model", "verify", str(model))
    assert result.returncode == 1
    line = next(l for l in result.stdout.splitlines() if "flow.pt" in l)
    assert line.startswith("[FAIL]") and "truncated" in line
    assert "1 problem(s) found" in result.stdout


def test_verify_explains_a_checkpoint_of_the_wrong_model(demo: Path, tmp_path: Path) -> None:
    model = broken_copy(demo, tmp_path)
    shutil.copy(model / "hift.pt", model / "llm.pt")
    (model / "campplus.onnx").unlink()
    result = a10tts("model", "verify", str(model))
    assert result.returncode == 1
    llm = next(l for l in result.stdout.splitlines() if l.startswith("[FAIL] llm.pt"))
    assert "31 missing keys" in llm and "llm.model.lm_head.weight" in llm and "unexpected keys" in llm
    assert "[FAIL] campplus.onnx: missing or empty" in result.stdout


def test_verify_explains_a_broken_yaml(demo: Path, tmp_path: Path) -> None:
    model = broken_copy(demo, tmp_path)
    (model / "cosyvoice2.yaml").write_text("llm: !new:cosyvoice.llm.llm.TransformerLM\n  x: 1\nflow: [\n")
    result = a10tts("model", "verify", str(model))
    assert result.returncode == 1 and "not valid YAML" in result.stdout
    (model / "cosyvoice2.yaml").write_text("llm: !new:cosyvoice.llm.llm.TransformerLM\n  x: 1\n")
    result = a10tts("model", "verify", str(model))
    assert "a10tts serves CosyVoice2 (Qwen2LM) only" in result.stdout
    result = a10tts("model", "verify", str(tmp_path / "nowhere"))
    assert result.returncode == 1 and "a10tts model init-demo" in result.stdout
