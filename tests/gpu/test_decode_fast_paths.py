"""The Triton decode kernel and CUDA-graph decode steps compute what the eager path does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from a10tts.engine.kernels.decode_attention import decode_attention, decode_attention_reference
from a10tts.engine.model_dir import ModelDir

pytestmark = pytest.mark.gpu
GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(14, 2, 64), (4, 2, 16)])
def test_triton_kernel_matches_reference(dtype, tol, heads, kv_heads, head_dim) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    g = torch.Generator(device="cuda").manual_seed(heads)
    slots_total, capacity, batch = 9, 300, 6
    keys = torch.randn(slots_total, capacity, kv_heads, head_dim, device="cuda", generator=g).to(dtype)
    values = torch.randn(slots_total, capacity, kv_heads, head_dim, device="cuda", generator=g).to(dtype)
    q = torch.randn(batch, heads, head_dim, device="cuda", generator=g).to(dtype)
    slots = torch.tensor([3, 0, 8, 5, 1, 7], device="cuda")
    lengths = torch.tensor([1, 63, 64, 65, 300, 129], device="cuda")  # block edges and a full slot
    out = decode_attention(q, keys, values, slots, lengths, head_dim**-0.5)
    ref = decode_attention_reference(q, keys, values, slots, lengths, head_dim**-0.5)
    assert out.dtype == dtype and torch.isfinite(out).all()
    err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
    assert err < tol, err


def test_graph_decode_equals_eager_and_golden() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    case = load_file(GOLDEN / "llm_case.safetensors")
    lm = ModelDir.open(GOLDEN / "tiny_model").load("llm", "cuda", torch.float32)
    embeds = lm.prompt_embeds(*(case[k][0].cuda() for k in ("text", "prompt_text", "prompt_speech_token")))
    targets = case["target_speech_token"].tolist()

    def run(graphs: bool) -> torch.Tensor:
        cache = lm.new_kv_cache(num_slots=5, capacity=64)
        lm._graphs = None
        if graphs:
            lm.enable_cuda_graphs(cache, max_batch_size=4)
        other = cache.allocate()  # a second live request decoding alongside: padding must not touch it
        golden_slot = cache.allocate()
        steps = [lm.prefill(cache, [golden_slot, other], [embeds, embeds[:20]])[:1]]
        for token in targets[:-1]:
            steps.append(lm.decode_step(cache, [golden_slot, other], [token, 7])[:1])
        lm._graphs = None
        return torch.cat(steps).cpu()

    with torch.inference_mode():
        eager, graphed = run(False), run(True)
    assert (graphed - eager).abs().max().item() < 1e-5
    assert (graphed - case["logp_kv"]).abs().max().item() < 1e-4


def test_compiled_graph_decode_equals_eager() -> None:
    case = load_file(GOLDEN / "llm_case.safetensors")
    lm = ModelDir.open(GOLDEN / "tiny_model").load("llm", "cuda", torch.bfloat16)
    embeds = lm.prompt_embeds(*(case[k][0].cuda() for k in ("text", "prompt_text", "prompt_speech_token")))
    targets = case["target_speech_token"].tolist()[:8]
    outputs = []
    with torch.inference_mode():
        for compiled in (False, True):
            cache = lm.new_kv_cache(num_slots=2, capacity=64)
            if compiled:
                lm.enable_cuda_graphs(cache, max_batch_size=2, compile=True)
            slot = cache.allocate()
            steps = [lm.prefill(cache, [slot], [embeds])]
            steps += [lm.decode_step(cache, [slot], [t]) for t in targets[:-1]]
            lm._graphs = None
            outputs.append(torch.cat(steps).float().cpu())
    assert (outputs[0] - outputs[1]).abs().max().item() < 0.05  # bf16: fusion reorders roundings
    assert (outputs[0].argmax(-1) == outputs[1].argmax(-1)).float().mean() >= 0.75


def test_flow_graphs_equal_eager_for_ragged_streaming_batches() -> None:
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = False, False
    case = load_file(GOLDEN / "token2wav_stream_160.safetensors")
    flow = ModelDir.open(GOLDEN / "tiny_model").load("flow", "cuda", torch.float32)
    lengths = [51, 101, 160]
    token = case["token"].expand(3, -1).cuda()

    def run() -> torch.Tensor:
        mel, mel_len = flow.inference(
            token=token, token_len=torch.tensor(lengths, device="cuda"),
            prompt_token=case["prompt_token"].expand(3, -1).cuda(), prompt_token_len=torch.full((3,), 27, device="cuda"),
            prompt_feat=case["prompt_feat"].expand(3, -1, -1).cuda(), prompt_feat_len=torch.full((3,), 54, device="cuda"),
            embedding=case["embedding"].expand(3, -1).cuda(),
            streaming=torch.tensor([True, True, False], device="cuda"),
            finalize=torch.tensor([False, False, True], device="cuda"),
        )
        return mel.cpu(), mel_len.cpu()

    eager, eager_len = run()
    flow.enable_cuda_graphs(max_batch_size=4)
    graphed, graphed_len = run()
    graphed_again, _ = run()  # a replay of the captured graph, not the capture run
    flow.enable_cuda_graphs(max_batch_size=4, max_frames=600)  # every bucket captured up front
    prepared, _ = run()
    flow._graphs = None
    assert torch.equal(prepared, graphed)
    assert torch.equal(eager_len, graphed_len)
    assert (graphed - eager).abs().max().item() < 1e-4
    assert torch.equal(graphed, graphed_again)
    for row, call in enumerate(range(3)):
        expected = case[f"flow{call}_mel"][0]
        assert (graphed[row, :, : expected.shape[1]] - expected).abs().max().item() < 1e-4
