"""CosyVoice2 LM + Qwen2 + slot KV cache against the upstream golden vectors (tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from a10tts.engine.hparams import Node
from a10tts.engine.kv_cache import KVCache
from a10tts.engine.llm import CosyVoice2LM, TokenBudget
from a10tts.engine.sampling import make_generator

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden"
TINY = GOLDEN / "tiny_model"
EOS = 6561

# CosyVoice2-0.5B: the llm section of upstream's cosyvoice2.yaml and CosyVoice-BlankEN/config.json.
FULL_QWEN2_CONFIG = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1e6,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "use_sliding_window": False,
}


def llm_args(size: int, pretrain_path: str = "") -> dict:
    return {
        "llm_input_size": size,
        "llm_output_size": size,
        "speech_token_size": 6561,
        "length_normalized_loss": True,  # training-only keys must be ignored
        "lsm_weight": 0,
        "mix_ratio": [5, 15],
        "llm": Node("new", "cosyvoice.llm.llm.Qwen2Encoder", {"pretrain_path": pretrain_path}),
        "sampling": Node(
            "name",
            "cosyvoice.utils.common.ras_sampling",
            {"top_p": 0.8, "top_k": 25, "win_size": 10, "tau_r": 0.1},
        ),
    }


@pytest.fixture(scope="module")
def case() -> dict:
    tensors = load_file(GOLDEN / "llm_case.safetensors")
    tensors["meta"] = json.loads((GOLDEN / "llm_case.json").read_text())
    return tensors


def load_tiny(state_file: str = "llm.safetensors") -> CosyVoice2LM:
    model = CosyVoice2LM.from_hparams(llm_args(64, str(TINY / "CosyVoice-BlankEN")))
    path = TINY / state_file
    if path.suffix == ".safetensors":
        state = load_file(path)
    else:
        state = torch.load(path, weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> CosyVoice2LM:
    return load_tiny()


def golden_embeds(model: CosyVoice2LM, case: dict) -> torch.Tensor:
    return model.prompt_embeds(
        case["text"][0], case["prompt_text"][0], case["prompt_speech_token"][0]
    )


def teacher_forced(model, embeds, targets, cache: KVCache | None = None) -> torch.Tensor:
    """logp of each step when the target tokens are fed back, as the golden logp_kv."""
    if cache is None:
        cache = model.new_kv_cache(num_slots=1, capacity=64)
    slot = cache.allocate()
    steps = [model.prefill(cache, [slot], [embeds])]
    for token in targets[:-1]:
        steps.append(model.decode_step(cache, [slot], [token]))
    return torch.cat(steps)


# --- golden parity -----------------------------------------------------------------------------


@torch.inference_mode()
def test_prompt_embeds_equal_upstream_lm_input(model, case):
    embeds = golden_embeds(model, case)
    assert embeds.shape == (case["meta"]["lm_input_len"], 64)
    assert torch.equal(embeds[None], case["lm_input"])


@torch.inference_mode()
def test_kv_cache_decoding_matches_upstream_logp(model, case):
    targets = case["target_speech_token"].tolist()
    cache = model.new_kv_cache(num_slots=3, capacity=64)
    cache.allocate()  # the golden request gets slot 1: slot indexing must be honoured
    logp = teacher_forced(model, golden_embeds(model, case), targets, cache)
    torch.testing.assert_close(logp, case["logp_kv"], atol=1e-4, rtol=0)
    assert logp.argmax(-1).tolist() == case["meta"]["argmax_per_step_kv"]
    assert cache.length(1) == case["meta"]["lm_input_len"] + len(targets) - 1


@torch.inference_mode()
def test_full_sequence_prefill_matches_upstream_forward(model, case):
    full_input = case["full_input"][0]
    cache = model.new_kv_cache(num_slots=1, capacity=len(full_input))
    batch = cache.reserve([cache.allocate()], [len(full_input)])
    hidden = model.backbone(full_input, cache, batch)
    torch.testing.assert_close(hidden, case["full_hidden"][0], atol=1e-5, rtol=0)
    logp = model.llm_decoder(hidden[34:]).log_softmax(-1)
    torch.testing.assert_close(logp, case["logp_full"], atol=1e-4, rtol=0)


# --- batching and slots ------------------------------------------------------------------------


def short_request(model: CosyVoice2LM, case: dict) -> tuple[torch.Tensor, list[int]]:
    embeds = model.prompt_embeds(
        case["text"][0, :4], case["prompt_text"][0, :3], case["prompt_speech_token"][0, :5]
    )
    return embeds, [17, 4000, 17, 6000, 250, 9, 3300]


@torch.inference_mode()
def test_ragged_batch_matches_each_request_alone(model, case):
    long_embeds, long_targets = golden_embeds(model, case), case["target_speech_token"].tolist()
    short_embeds, short_targets = short_request(model, case)
    assert len(short_embeds) < len(long_embeds)
    short_alone = teacher_forced(model, short_embeds, short_targets)

    cache = model.new_kv_cache(num_slots=4, capacity=64)
    slots = [cache.allocate() for _ in range(4)][::-2]  # slots 3 and 1
    # The shorter request first, so its padded query rows do not line up with packed tokens.
    steps = [model.prefill(cache, slots, [short_embeds, long_embeds])]
    for short_token, long_token in zip(short_targets[:-1], long_targets):
        steps.append(model.decode_step(cache, slots, [short_token, long_token]))
    batched = torch.stack(steps, dim=1)  # [2, steps, vocab]

    n = len(short_targets)
    torch.testing.assert_close(batched[0], short_alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched[1], case["logp_kv"][:n], atol=1e-4, rtol=0)
    long_alone = teacher_forced(model, long_embeds, long_targets)
    torch.testing.assert_close(batched[1], long_alone[:n], atol=1e-5, rtol=0)


@torch.inference_mode()
def test_request_joining_mid_decode_and_slot_reuse(model, case):
    """Continuous batching: a request joins while another decodes, leaves, and its slot is
    reused by the golden request, which must not see the stale keys."""
    targets = case["target_speech_token"].tolist()
    short_embeds, short_targets = short_request(model, case)
    cache = model.new_kv_cache(num_slots=2, capacity=64)
    running = cache.allocate()
    logp_running = [model.prefill(cache, [running], [short_embeds])]
    logp_running.append(model.decode_step(cache, [running], short_targets[:1]))

    joined = cache.allocate()
    stale = torch.randn(50, 64, generator=torch.Generator().manual_seed(0))
    model.prefill(cache, [joined], [stale])
    model.decode_step(cache, [running, joined], [short_targets[1], 5])
    cache.free(joined)
    assert cache.num_free == 1

    reused = cache.allocate()
    assert reused == joined and cache.length(reused) == 0
    logp = [model.prefill(cache, [reused], [golden_embeds(model, case)])]
    for token in targets[:-1]:
        logp.append(model.decode_step(cache, [reused], [token]))
    torch.testing.assert_close(torch.cat(logp), case["logp_kv"], atol=1e-4, rtol=0)


def test_kv_cache_slot_bookkeeping():
    cache = KVCache(num_layers=1, num_slots=2, capacity=4, num_kv_heads=1, head_dim=2)
    first, second = cache.allocate(), cache.allocate()
    assert (first, second) == (0, 1) and cache.num_free == 0
    with pytest.raises(RuntimeError, match="full"):
        cache.allocate()
    with pytest.raises(ValueError, match="twice"):
        cache.reserve([first, first], [1, 1])
    with pytest.raises(ValueError, match="capacity"):
        cache.reserve([first], [5])
    batch = cache.reserve([first, second], [3, 1])
    assert batch.token_positions.tolist() == [0, 1, 2, 0]
    assert batch.last_token_index.tolist() == [2, 3]
    assert cache.length(first) == 3 and cache.length(second) == 1
    cache.free(first)
    with pytest.raises(ValueError, match="not allocated"):
        cache.free(first)
    with pytest.raises(ValueError, match="not allocated"):
        cache.reserve([first], [1])


# --- checkpoints and configuration -------------------------------------------------------------


@torch.inference_mode()
def test_strict_load_of_both_checkpoint_formats(case):
    from_pt = load_tiny("llm.pt")
    from_safetensors = load_tiny("llm.safetensors")
    for model in (from_pt, from_safetensors):
        causal_lm = model.llm.model
        assert causal_lm.lm_head.weight is causal_lm.model.embed_tokens.weight
        cache = model.new_kv_cache(1, 40)
        logp = model.prefill(cache, [cache.allocate()], [golden_embeds(model, case)])
        torch.testing.assert_close(logp, case["logp_kv"][:1], atol=1e-4, rtol=0)


def test_full_size_build_matches_upstream_manifest():
    manifest = json.loads((GOLDEN / "manifests" / "manifest_llm.json").read_text())
    with torch.device("meta"):
        model = CosyVoice2LM.from_hparams(llm_args(896), qwen_config=FULL_QWEN2_CONFIG)
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    assert shapes == manifest["keys"]
    assert sum(p.numel() for p in model.parameters()) == manifest["total_unique_parameters"]


def test_from_hparams_names_missing_keys():
    args = llm_args(64, str(TINY / "CosyVoice-BlankEN"))
    del args["speech_token_size"]
    with pytest.raises(ValueError, match="speech_token_size"):
        CosyVoice2LM.from_hparams(args)
    config = dict(FULL_QWEN2_CONFIG)
    del config["rope_theta"]
    with pytest.raises(ValueError, match="rope_theta"):
        CosyVoice2LM.from_hparams(llm_args(896), qwen_config=config)
    with pytest.raises(ValueError, match="hidden_size"):
        CosyVoice2LM.from_hparams(llm_args(512), qwen_config=FULL_QWEN2_CONFIG)


@torch.inference_mode()
def test_half_precision_casts_track_fp32(case):
    targets = case["target_speech_token"].tolist()
    # Half-precision weights and activations only agree loosely (seen: bf16 0.017, fp16 0.002).
    for dtype, atol in ((torch.bfloat16, 0.05), (torch.float16, 0.01)):
        model = load_tiny().to(dtype)
        cache = model.new_kv_cache(1, 64)
        assert cache.keys.dtype == dtype
        logp = teacher_forced(model, golden_embeds(model, case), targets, cache)
        assert logp.dtype == torch.float32
        torch.testing.assert_close(logp, case["logp_kv"], atol=atol, rtol=0)


# --- generation loop ---------------------------------------------------------------------------


def test_token_budget_from_text_length():
    assert TokenBudget.for_text(11) == TokenBudget(22, 220)
    assert TokenBudget.exactly(7) == TokenBudget(7, 7)
    assert not TokenBudget(3, 9).stop_allowed(2) and TokenBudget(3, 9).stop_allowed(3)


def generate(model, case, text_len=11, **kwargs) -> list[int]:
    text = case["text"][0, :text_len]
    prompt_text, prompt_speech = case["prompt_text"][0], case["prompt_speech_token"][0]
    return list(model.generate(text, prompt_text, prompt_speech, **kwargs))


@torch.inference_mode()
def test_generate_is_reproducible_per_seed(model, case):
    first = generate(model, case, num_tokens=30, generator=make_generator(7))
    again = generate(model, case, num_tokens=30, generator=make_generator(7))
    other = generate(model, case, num_tokens=30, generator=make_generator(8))
    assert len(first) == 30 and first == again and first != other
    assert all(0 <= token < EOS for token in first)


@torch.inference_mode()
def test_generate_stop_rules():
    model = load_tiny()
    case = load_file(GOLDEN / "llm_case.safetensors")
    with torch.no_grad():
        model.llm_decoder.bias[EOS] += 100.0  # eos wins whenever it is allowed
    tokens = generate(model, case, generator=make_generator(0))
    assert len(tokens) == TokenBudget.for_text(11).min_tokens  # eos refused below min length
    assert len(generate(model, case, num_tokens=30, generator=make_generator(0))) == 30
    with torch.no_grad():
        model.llm_decoder.bias[EOS:] = float("-inf")  # no stop token can ever win
    assert len(generate(model, case, text_len=2, generator=make_generator(0))) == 40  # max length
