"""The LM's and the flow's CUDA graphs replayed side by side by two threads of one process
(decode.in_llm_process), each on its own stream, compute what each computes alone.

cuBLAS keeps one workspace per (thread, stream), and a graph bakes in the one it was captured
with. Captured on one thread and torch's one default capture stream, the LM's and the flow's
graphs shared it, raced on it when replayed at once, and hung an H100 service. Here both are
built on this thread, the worst case: the LM's own capture stream must keep them apart.
Full-size random weights: the shapes whose GEMMs use the workspace.
"""

from __future__ import annotations

import threading

import pytest
import torch

from a10tts.engine.demo import demo_qwen_config, demo_yaml
from a10tts.engine.flow import FlowModel
from a10tts.engine.hparams import parse_hparams
from a10tts.engine.llm import CosyVoice2LM

pytestmark = pytest.mark.gpu

ROWS, CONTEXT, STEPS, FLOW_CALLS = 16, 300, 1500, 30


@torch.inference_mode()
def test_lm_and_flow_graphs_side_by_side_compute_what_each_does_alone() -> None:
    hparams = parse_hparams(demo_yaml("full"))
    with torch.device("cuda"):
        flow = FlowModel.from_hparams(hparams["flow"].args).half().eval()
        lm = CosyVoice2LM.from_hparams(hparams["llm"].args, qwen_config=demo_qwen_config("full")).bfloat16().eval()
    flow.enable_cuda_graphs(max_batch_size=ROWS, max_frames=600)
    cache = lm.new_kv_cache(num_slots=ROWS, capacity=CONTEXT + STEPS + 1)
    lm.enable_cuda_graphs(cache, max_batch_size=ROWS)

    g = torch.Generator().manual_seed(0)
    tokens, prompt = torch.randint(0, 6561, (ROWS, 80), generator=g), torch.randint(0, 6561, (ROWS, 50), generator=g)
    flow_inputs = dict(
        token=tokens.cuda(), token_len=torch.full((ROWS,), 80, device="cuda"),
        prompt_token=prompt.cuda(), prompt_token_len=torch.full((ROWS,), 50, device="cuda"),
        prompt_feat=(torch.randn(ROWS, 100, 80, generator=g) - 4).cuda(), prompt_feat_len=torch.full((ROWS,), 100, device="cuda"),
        embedding=torch.randn(ROWS, 192, generator=g).cuda(), streaming=True, finalize=False,
    )

    def vocode() -> torch.Tensor:
        return flow.inference(**flow_inputs)[0].cpu()

    slots: list[int] = []

    def decode() -> torch.Tensor:
        """STEPS decode steps from the same cache state each time (the prompt positions stay
        zero, later ones are rewritten before they are read): a checksum per step and row."""
        for slot in slots:
            cache.free(slot)
        slots[:] = [cache.allocate() for _ in range(ROWS)]
        cache.advance(slots, [CONTEXT] * ROWS)
        sums = [lm.decode_step(cache, slots, [step % 6561] * ROWS).sum(-1) for step in range(STEPS)]
        return torch.stack(sums).cpu()

    mel_alone, logp_alone = vocode(), decode()
    mels: list[torch.Tensor] = []

    def decode_stage() -> None:
        with torch.inference_mode(), torch.cuda.stream(torch.cuda.Stream()):
            mels.extend(vocode() for _ in range(FLOW_CALLS))

    thread = threading.Thread(target=decode_stage)
    with torch.cuda.stream(torch.cuda.Stream(priority=-1)):
        thread.start()
        logp_beside = decode()
    thread.join(300)
    assert not thread.is_alive(), "the flow's thread did not finish"
    assert len(mels) == FLOW_CALLS
    assert torch.isfinite(mel_alone).all() and torch.isfinite(logp_alone).all()
    assert all(torch.equal(mel, mel_alone) for mel in mels)
    assert torch.equal(logp_beside, logp_alone)
