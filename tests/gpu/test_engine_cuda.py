"""The engine's golden parity on CUDA in fp32, and how far bf16/fp16 drift from it.

Run on the GPU machine: `dev/test tests/gpu -m gpu` (skipped where there is no CUDA).
cuDNN's TF32 convolutions are switched off here: parity is a float32 question.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from a10tts.engine.model_dir import ModelDir

pytestmark = pytest.mark.gpu

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def strict_fp32():
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = False, False
    yield


def golden(name: str) -> dict[str, torch.Tensor]:
    return load_file(GOLDEN / f"{name}.safetensors")


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.float().cpu(), expected.float().cpu()
    return ((actual - expected).norm() / expected.norm()).item()


def teacher_forced_logp(dtype: torch.dtype) -> tuple[torch.Tensor, dict]:
    case = golden("llm_case")
    model = ModelDir.open(GOLDEN / "tiny_model").load("llm", CUDA, dtype)
    embeds = model.prompt_embeds(*(case[k][0].to(CUDA) for k in ("text", "prompt_text", "prompt_speech_token")))
    cache = model.new_kv_cache(num_slots=2, capacity=64)
    slot = cache.allocate()
    with torch.inference_mode():
        steps = [model.prefill(cache, [slot], [embeds])]
        for token in case["target_speech_token"][:-1].tolist():
            steps.append(model.decode_step(cache, [slot], [token]))
    return torch.cat(steps).cpu(), case


def test_llm_fp32_matches_golden_on_cuda() -> None:
    logp, case = teacher_forced_logp(torch.float32)
    err = (logp - case["logp_kv"]).abs().max().item()
    print(f"llm fp32 cuda max|logp - golden| = {err:.2e}")
    assert err <= 1e-4


@pytest.mark.parametrize(("dtype", "bound"), [(torch.bfloat16, 0.1), (torch.float16, 0.02)])
def test_llm_half_precision_stays_close(dtype: torch.dtype, bound: float) -> None:
    logp, case = teacher_forced_logp(dtype)
    err = (logp - case["logp_kv"]).abs().max().item()
    argmax = json.loads((GOLDEN / "llm_case.json").read_text())["argmax_per_step_kv"]
    agree = sum(a == b for a, b in zip(logp.argmax(-1).tolist(), argmax)) / len(argmax)
    print(f"llm {dtype} cuda max|logp - golden| = {err:.2e}, argmax agreement {agree:.0%}")
    assert err <= bound and agree >= 0.9


def flow_mel(dtype: torch.dtype, n_tokens: int, streaming: bool, finalize: bool) -> torch.Tensor:
    case = golden("token2wav_stream_160")
    flow = ModelDir.open(GOLDEN / "tiny_model").load("flow", CUDA, dtype)
    mel, mel_len = flow.inference(
        token=case["token"][:, :n_tokens].to(CUDA), token_len=torch.tensor([n_tokens], device=CUDA),
        prompt_token=case["prompt_token"].to(CUDA), prompt_token_len=torch.tensor([27], device=CUDA),
        prompt_feat=case["prompt_feat"].to(CUDA), prompt_feat_len=torch.tensor([54], device=CUDA),
        embedding=case["embedding"].to(CUDA), streaming=streaming, finalize=finalize,
    )
    return mel[:, :, : int(mel_len[0])].cpu()


@pytest.mark.parametrize(("call", "n_tokens", "streaming", "finalize"),
                         [(0, 51, True, False), (1, 101, True, False), (2, 160, False, True)])
def test_flow_fp32_streaming_calls_match_golden_on_cuda(call: int, n_tokens: int, streaming: bool, finalize: bool) -> None:
    mel = flow_mel(torch.float32, n_tokens, streaming, finalize)
    err = (mel - golden("token2wav_stream_160")[f"flow{call}_mel"]).abs().max().item()
    print(f"flow fp32 cuda call {call} max abs err = {err:.2e}")
    assert err <= 1e-4


def test_flow_fp16_stays_close() -> None:
    expected = golden("token2wav_stream_160")["flow2_mel"]
    rel = relative_error(flow_mel(torch.float16, 160, False, True), expected)
    print(f"flow fp16 cuda relative error = {rel:.2e}")
    assert rel <= 1e-2


def test_hift_decode_and_f0_match_golden_on_cuda() -> None:
    case = golden("hift_case")
    hift = ModelDir.open(GOLDEN / "tiny_model").load("hift", CUDA)
    with torch.inference_mode():
        f0 = hift.f0_predictor(case["mel"].to(CUDA)).cpu()
        speech = hift.decode(case["mel"].to(CUDA), case["source"].to(CUDA)).cpu()
        voiced = hift.decode(case["mel"].to(CUDA), case["m_source_sine_merge"].transpose(1, 2).to(CUDA)).cpu()
    errs = [(f0 - case["f0"]).abs().max().item(), (speech - case["decode_out"]).abs().max().item(),
            (voiced - case["decode_of_synthetic_source"]).abs().max().item()]
    print("hift cuda max abs err f0 / decode / voiced decode = " + " / ".join(f"{e:.2e}" for e in errs))
    assert errs[0] <= 1e-4 and errs[1] <= 1e-5 and errs[2] <= 1e-5
