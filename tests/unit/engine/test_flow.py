"""CosyVoice2 flow (tokens -> mel) against the upstream golden vectors (tiny model, fp32 CPU)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor

from a10tts.engine.flow import FlowModel
from a10tts.engine.flow.attention import ChunkMask, DenseMask
from a10tts.engine.flow.cfm import NOISE_FRAMES, fixed_noise
from a10tts.engine.flow.estimator import CausalConv1d
from a10tts.engine.hparams import Node, load_hparams

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden"
TINY = GOLDEN / "tiny_model"
TOKEN2WAV_CASES = ["token2wav_stream_53", "token2wav_stream_160", "token2wav_nonstream_53"]
PROMPT_TOKENS, PROMPT_FRAMES = 27, 54
GOLDEN_TOL = 1e-4  # golden README: flow mel atol 1e-4 (10 Euler steps amplify tiny differences)
BATCH_TOL = 1e-5


def full_size_flow_args() -> dict:
    """The flow section of upstream's cosyvoice2.yaml (CosyVoice2-0.5B), as load_hparams yields it."""
    estimator = {
        "in_channels": 320,
        "out_channels": 80,
        "channels": [256],
        "dropout": 0.0,
        "attention_head_dim": 64,
        "n_blocks": 4,
        "num_mid_blocks": 12,
        "num_heads": 8,
        "act_fn": "gelu",
        "static_chunk_size": 50,
        "num_decoding_left_chunks": -1,
    }
    cfm_content = {
        "sigma_min": 1e-6,
        "solver": "euler",
        "t_scheduler": "cosine",
        "training_cfg_rate": 0.2,
        "inference_cfg_rate": 0.7,
        "reg_loss_type": "l1",
    }
    encoder = {
        "output_size": 512,
        "attention_heads": 8,
        "linear_units": 2048,
        "num_blocks": 6,
        "dropout_rate": 0.1,
        "positional_dropout_rate": 0.1,
        "attention_dropout_rate": 0.1,
        "normalize_before": True,
        "input_layer": "linear",
        "pos_enc_layer_type": "rel_pos_espnet",
        "selfattention_layer_type": "rel_selfattn",
        "input_size": 512,
        "use_cnn_module": False,
        "macaron_style": False,
        "static_chunk_size": 25,
    }
    return {
        "input_size": 512,
        "output_size": 80,
        "spk_embed_dim": 192,
        "output_type": "mel",
        "vocab_size": 6561,
        "input_frame_rate": 25,
        "only_mask_loss": True,
        "token_mel_ratio": 2,
        "pre_lookahead_len": 3,
        "encoder": Node(
            "new", "cosyvoice.transformer.upsample_encoder.UpsampleConformerEncoder", encoder
        ),
        "decoder": Node(
            "new",
            "cosyvoice.flow.flow_matching.CausalConditionalCFM",
            {
                "in_channels": 240,
                "n_spks": 1,
                "spk_emb_dim": 80,
                "cfm_params": Node("new", "omegaconf.DictConfig", {"content": cfm_content}),
                "estimator": Node("new", "cosyvoice.flow.decoder.CausalConditionalDecoder", estimator),
            },
        ),
    }


def tiny_flow_args() -> dict:
    return load_hparams(TINY / "cosyvoice2.yaml")["flow"].args


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    """The tiny model gains nothing from intra-op threads, while two spinning OpenMP threads per
    process on a busy 2-core host made this file ~10x slower. (The golden vectors were made with
    2 threads; 1 thread changes the mel by ~2e-6, far inside the tolerance.)"""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def flow() -> FlowModel:
    model = FlowModel.from_hparams(tiny_flow_args())
    model.load_state_dict(load_file(TINY / "flow.safetensors"), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def case() -> dict[str, Tensor]:
    return load_file(GOLDEN / "flow_case.safetensors")


def lengths(*values: int) -> Tensor:
    return torch.tensor(values)


@pytest.fixture(scope="module")
def run_single(flow: FlowModel, case: dict[str, Tensor]) -> Callable[[int, bool, bool], Tensor]:
    """Mel of one golden request (a prefix of the shared 160-token sequence); every golden file
    uses the same prompt and embedding, so identical calls are computed once."""
    tokens = load_file(GOLDEN / "token2wav_stream_160.safetensors")["token"]
    assert torch.equal(tokens[:, :53], case["token"])

    @cache
    def run(n_tokens: int, streaming: bool, finalize: bool) -> Tensor:
        mel, mel_len = flow.inference(
            tokens[:, :n_tokens], lengths(n_tokens), case["prompt_token"], lengths(PROMPT_TOKENS),
            case["prompt_feat"], lengths(PROMPT_FRAMES), case["embedding"],
            streaming=streaming, finalize=finalize,
        )
        assert mel.dtype == torch.float32 and mel_len.tolist() == [mel.size(2)]
        return mel

    return run


def max_error(actual: Tensor, expected: Tensor) -> float:
    assert actual.shape == expected.shape
    return (actual - expected).abs().max().item()


# --- weights and construction ---------------------------------------------------------------


def test_tiny_weights_load_strictly_from_safetensors_and_pt(flow: FlowModel) -> None:
    from_pt = FlowModel.from_hparams(tiny_flow_args())
    state = torch.load(TINY / "flow.pt", map_location="cpu", weights_only=True)
    from_pt.load_state_dict(state, strict=True)
    ours = flow.state_dict()
    assert len(ours) == 249
    for key, value in from_pt.state_dict().items():
        assert torch.equal(value, ours[key]), key


def test_causal_convolutions_keep_their_window_layout_through_loading_and_casts(flow: FlowModel) -> None:
    """A loaded and cast convolution's GEMM weight is a view of its parameter, not a copy per
    call; the parameter keeps upstream's shape and values."""
    convs = [m for m in flow.modules() if isinstance(m, CausalConv1d)]
    assert len(convs) > 4
    for model in (flow, copy.deepcopy(flow).half()):
        for conv in (m for m in model.modules() if isinstance(m, CausalConv1d)):
            assert conv.weight.shape == (conv.out_channels, conv.in_channels, 3)
            assert conv.weight.permute(0, 2, 1).is_contiguous()
    state = torch.load(TINY / "flow.pt", map_location="cpu", weights_only=True)
    key = next(k for k, v in flow.named_modules() if v is convs[0]) + ".weight"
    assert torch.equal(convs[0].weight, state[key])


def test_full_size_build_matches_manifest() -> None:
    manifest = json.loads((GOLDEN / "manifests" / "manifest_flow.json").read_text())
    with torch.device("meta"):
        model = FlowModel.from_hparams(full_size_flow_args())
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    assert shapes == manifest["keys"]
    assert sum(p.numel() for p in model.parameters()) == manifest["total_numel_state_dict"]
    # The fixed noise is real data (not on meta) and not part of the checkpoint.
    assert list(model.decoder.noise(NOISE_FRAMES, torch.device("cpu")).shape) == manifest[
        "non_state_attributes"
    ]["decoder.rand_noise"]


@pytest.mark.parametrize(
    ("path", "key"),
    [((), "input_size"), (("encoder",), "num_blocks"), (("decoder", "estimator"), "num_heads")],
)
def test_from_hparams_names_a_missing_key(path: tuple[str, ...], key: str) -> None:
    args = full_size_flow_args()
    section = args
    for name in path:
        section = section[name].args
    del section[key]
    with pytest.raises(ValueError, match=key), torch.device("meta"):
        FlowModel.from_hparams(args)


def test_from_hparams_refuses_an_unsupported_architecture() -> None:
    args = full_size_flow_args()
    args["encoder"].args["macaron_style"] = True
    with pytest.raises(ValueError, match="macaron_style"), torch.device("meta"):
        FlowModel.from_hparams(args)


# --- intermediates --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_tokens", "streaming", "finalize", "key"),
    [(53, False, True, "encoder_out"), (51, True, False, "encoder_out_stream_prefix51")],
)
def test_encoder_output_matches_golden(
    flow: FlowModel, case: dict[str, Tensor], n_tokens: int, streaming: bool, finalize: bool, key: str
) -> None:
    with torch.inference_mode():
        hidden, hidden_len = flow.encode(
            case["token"][:, :n_tokens], lengths(n_tokens), case["prompt_token"], lengths(PROMPT_TOKENS),
            streaming=streaming, finalize=finalize,
        )
    assert hidden_len.tolist() == [case[key].size(1)]
    assert max_error(hidden, case[key]) < GOLDEN_TOL


def test_mu_matches_golden(flow: FlowModel, case: dict[str, Tensor]) -> None:
    with torch.inference_mode():
        mu = flow.encoder_proj(case["encoder_out"])
    assert max_error(mu, case["mu"]) < GOLDEN_TOL


def test_estimator_first_step_matches_golden(flow: FlowModel, case: dict[str, Tensor]) -> None:
    inputs = [case[f"est_step1_{name}"] for name in ("x", "mask", "mu", "t", "spks", "cond")]
    with torch.inference_mode():
        velocity = flow.decoder.estimator(*inputs, streaming=False)
    assert max_error(velocity, case["est_step1_out"]) < GOLDEN_TOL


def test_cfg_inputs_match_golden(flow: FlowModel, case: dict[str, Tensor]) -> None:
    """The unconditional half of the CFG batch zeroes mu, spks and cond; spks is the affine of the
    L2-normalised embedding."""
    with torch.inference_mode():
        spks = flow.spk_embed_affine_layer(torch.nn.functional.normalize(case["embedding"], dim=1))
    assert max_error(spks, case["est_step1_spks"][:1]) < GOLDEN_TOL
    for name in ("mu", "spks", "cond"):
        assert not case[f"est_step1_{name}"][1].any()


def test_fixed_noise_is_upstream_noise_and_leaves_global_rng_alone(
    flow: FlowModel, case: dict[str, Tensor]
) -> None:
    torch.manual_seed(1234)  # upstream's noise must not depend on the global RNG...
    rng_before = torch.get_rng_state()
    noise = fixed_noise(80)
    assert torch.equal(torch.get_rng_state(), rng_before)  # ...nor disturb it
    assert torch.equal(noise[:, :, :160], case["noise_z"])
    assert torch.equal(flow.decoder.noise(160, torch.device("cpu")), case["noise_z"])
    assert not any("noise" in key for key in flow.state_dict())


# --- full inference -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_tokens", "streaming", "finalize", "key"),
    [(53, False, True, "mel"), (51, True, False, "mel_stream_prefix51")],
)
def test_mel_matches_golden(
    run_single: Callable[[int, bool, bool], Tensor],
    case: dict[str, Tensor],
    n_tokens: int,
    streaming: bool,
    finalize: bool,
    key: str,
) -> None:
    assert max_error(run_single(n_tokens, streaming, finalize), case[key]) < GOLDEN_TOL


@pytest.mark.parametrize("name", TOKEN2WAV_CASES)
def test_token2wav_flow_calls_match_golden(
    run_single: Callable[[int, bool, bool], Tensor], name: str
) -> None:
    meta = json.loads((GOLDEN / f"{name}.json").read_text())
    golden = load_file(GOLDEN / f"{name}.safetensors")
    for i, call in enumerate(meta["flow_calls"]):
        mel = run_single(call["token_len"], call["streaming"], call["finalize"])
        assert max_error(mel, golden[f"flow{i}_mel"]) < GOLDEN_TOL, (name, i, call)


def test_streaming_changes_the_result(run_single: Callable[[int, bool, bool], Tensor]) -> None:
    """Guards the parity tests above: chunk masks and look-ahead trimming must both matter."""
    assert max_error(run_single(51, False, False), run_single(51, True, False)) > 1e-2
    assert run_single(51, True, True).size(2) == run_single(51, True, False).size(2) + 6


def test_streamed_frames_of_earlier_chunks_do_not_depend_on_later_tokens(
    flow: FlowModel, case: dict[str, Tensor]
) -> None:
    """The equivalence a streaming flow that does not recompute its prefix would rest on
    (design.md): in streaming mode the mel of every 25-token chunk that ends at least 3 tokens
    (the pre-look-ahead) before the first differing token is the same whatever follows, while
    the chunk that the look-ahead reaches is not. With full attention nothing is."""
    tokens = load_file(GOLDEN / "token2wav_stream_160.safetensors")["token"]
    shared = 50  # request tokens both runs share: prompt (27) + 50 = 77 tokens of shared prefix
    other = tokens.clone()
    other[:, shared:] = tokens[:, shared:].flip(1)  # a different continuation, same length
    assert not torch.equal(other[:, shared:80], tokens[:, shared:80])

    def mel(request: Tensor, streaming: bool) -> Tensor:
        out, _ = flow.inference(request[:, :80], lengths(80), case["prompt_token"], lengths(PROMPT_TOKENS),
                                case["prompt_feat"], lengths(PROMPT_FRAMES), case["embedding"],
                                streaming=streaming, finalize=False)
        return out

    stable_tokens = (PROMPT_TOKENS + shared - 3) // 25 * 25  # whole chunks out of the look-ahead's reach
    stable = 2 * stable_tokens - PROMPT_FRAMES  # their mel frames after the prompt's are dropped
    reached = slice(stable, stable + 2 * 25)  # the next chunk: its last tokens look ahead into the change
    streamed, streamed_other = mel(tokens, True), mel(other, True)
    assert stable == 46
    assert max_error(streamed[:, :, :stable], streamed_other[:, :, :stable]) < 1e-6
    assert max_error(streamed[:, :, reached], streamed_other[:, :, reached]) > 1e-3
    assert max_error(mel(tokens, False)[:, :, :stable], mel(other, False)[:, :, :stable]) > 1e-3


@pytest.fixture(scope="module")
def voices(case: dict[str, Tensor]) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Two voices with prompts long enough for a prefix (60 and 85 tokens) and their mels."""
    tokens = load_file(GOLDEN / "token2wav_stream_160.safetensors")["token"][0]
    generator = torch.Generator().manual_seed(7)
    return [(tokens[:n], torch.randn(2 * n, 80, generator=generator) - 4, case["embedding"][0] * scale)
            for n, scale in ((60, 1.0), (85, -1.0))]


def streamed(flow: FlowModel, voices: list, request: Tensor, rows: list[tuple[int, int]], prefix=None):
    """Mel of streamed (non-final) chunks: row (voice, n) is voice's prompt + ``request[:n]``."""
    batch = [(voices[v], request[:n]) for v, n in rows]
    pad = torch.nn.utils.rnn.pad_sequence
    return flow.inference(
        pad([r for _, r in batch], batch_first=True), lengths(*(len(r) for _, r in batch)),
        pad([p for (p, _, _), _ in batch], batch_first=True), lengths(*(len(p) for (p, _, _), _ in batch)),
        pad([m for (_, m, _), _ in batch], batch_first=True), lengths(*(len(m) for (_, m, _), _ in batch)),
        torch.stack([e for (_, _, e), _ in batch]), streaming=True, finalize=False, prefix=prefix,
    )


def test_streamed_chunks_continue_a_voice_prefix_to_the_same_mel(flow: FlowModel, voices: list) -> None:
    """What the estimator computed for a prompt's reachable-by-nothing chunks, kept per voice,
    gives the same mel as recomputing them, for a batch of that voice's chunks of different lengths."""
    request = load_file(GOLDEN / "token2wav_stream_160.safetensors")["token"][0, 60:]
    prefixes = [flow.prompt_prefix(*voice) for voice in voices]
    assert [p.frames for p in prefixes] == [100, 150] and prefixes[0].nbytes > 0
    assert flow.continues_prefixes and flow.prefix_tokens(27) == 0  # the golden prompt holds none
    for voice, prefix in enumerate(prefixes):
        rows = [(voice, 28), (voice, 53), (voice, 3)]
        full, full_len = streamed(flow, voices, request, rows)
        continued, continued_len = streamed(flow, voices, request, rows, prefix)
        assert torch.equal(continued_len, full_len)
        assert max_error(continued, full) < BATCH_TOL
    with pytest.raises(ValueError, match="another voice"):  # 150 prefix frames, a 120-frame prompt
        streamed(flow, voices, request, [(0, 28)], prefixes[1])


# --- batching and precision -----------------------------------------------------------------


def ragged_batch(case: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
    """Two requests with different token, prompt-token and prompt-mel lengths, padded together."""
    token, prompt_token, prompt_feat = case["token"][0], case["prompt_token"][0], case["prompt_feat"][0]
    other_embedding = torch.randn(1, 192, generator=torch.Generator().manual_seed(7))
    rows = [
        dict(
            token=token[:51], prompt_token=prompt_token, prompt_feat=prompt_feat,
            embedding=case["embedding"],
        ),
        dict(
            token=token[10:40], prompt_token=prompt_token[7:], prompt_feat=prompt_feat[14:],
            embedding=other_embedding,
        ),
    ]
    pad = torch.nn.utils.rnn.pad_sequence
    batch = {
        "token": pad([r["token"] for r in rows], batch_first=True),
        "token_len": torch.tensor([len(r["token"]) for r in rows]),
        "prompt_token": pad([r["prompt_token"] for r in rows], batch_first=True),
        "prompt_token_len": torch.tensor([len(r["prompt_token"]) for r in rows]),
        "prompt_feat": pad([r["prompt_feat"] for r in rows], batch_first=True),
        "prompt_feat_len": torch.tensor([len(r["prompt_feat"]) for r in rows]),
        "embedding": torch.cat([r["embedding"] for r in rows]),
    }
    singles = [
        {
            "token": r["token"][None], "token_len": lengths(len(r["token"])),
            "prompt_token": r["prompt_token"][None], "prompt_token_len": lengths(len(r["prompt_token"])),
            "prompt_feat": r["prompt_feat"][None], "prompt_feat_len": lengths(len(r["prompt_feat"])),
            "embedding": r["embedding"],
        }
        for r in rows
    ]
    return batch, singles


@pytest.mark.parametrize(
    ("streaming", "finalize"),
    [
        # a streaming chunk next to a final full-context call
        (torch.tensor([True, False]), torch.tensor([False, True])),
        (False, True),
    ],
    ids=["mixed-flags", "non-streaming"],
)
def test_ragged_batch_equals_each_request_alone(
    flow: FlowModel, case: dict[str, Tensor], streaming: bool | Tensor, finalize: bool | Tensor
) -> None:
    batch, singles = ragged_batch(case)
    steps = 3  # batching is step-independent; fewer Euler steps keep the test fast
    mel, mel_len = flow.inference(**batch, streaming=streaming, finalize=finalize, n_timesteps=steps)
    for row, single in enumerate(singles):
        row_streaming = bool(streaming[row]) if isinstance(streaming, Tensor) else streaming
        row_finalize = bool(finalize[row]) if isinstance(finalize, Tensor) else finalize
        alone, alone_len = flow.inference(
            **single, streaming=row_streaming, finalize=row_finalize, n_timesteps=steps
        )
        assert mel_len[row] == alone_len[0]
        assert max_error(mel[row : row + 1, :, : mel_len[row]], alone) < BATCH_TOL
        assert not mel[row, :, mel_len[row] :].any()  # padding after each row's frames is zero


def test_float16_stays_close_to_float32(
    case: dict[str, Tensor], run_single: Callable[[int, bool, bool], Tensor]
) -> None:
    half = FlowModel.from_hparams(tiny_flow_args())
    half.load_state_dict(load_file(TINY / "flow.safetensors"), strict=True)
    half = half.eval().to(torch.float16)
    mel, _ = half.inference(
        case["token"], lengths(53), case["prompt_token"], lengths(PROMPT_TOKENS),
        case["prompt_feat"], lengths(PROMPT_FRAMES), case["embedding"],
    )
    assert mel.dtype == torch.float32  # the ODE state stays fp32
    reference = run_single(53, False, True)
    # fp16 rounds every op to ~5e-4 relative; observed 8e-4 over the 10 Euler steps.
    assert ((mel - reference).norm() / reference.norm()).item() < 5e-3


def test_estimator_masks_describe_the_same_visibility() -> None:
    """What the GPU kernel is given (``ChunkMask``) says what SDPA's dense bias says, on the CPU too."""
    valid = torch.arange(120) < torch.tensor([120, 1, 64, 101])[:, None]
    valid[0, 30:35] = False  # not a length mask
    streaming = torch.tensor([True, False, True, False])
    dense = DenseMask(valid, 50, streaming, 40, torch.float32).bias  # [B, T, 40 + T]
    kernel = ChunkMask(valid, 50, streaming)
    assert kernel.key_end.tolist() == [120, 1, 64, 101] and kernel.valid.dtype == torch.int8
    assert kernel.streaming.tolist() == [1, 0, 1, 0]
    assert ChunkMask(valid, 50, True).streaming.tolist() == [1, 1, 1, 1]
    query, key = torch.arange(120)[:, None], torch.arange(120)[None, :]
    for row in range(4):
        sees = kernel.valid[row].bool()[None, :] & (~kernel.streaming[row].bool() | (key < (query // 50 + 1) * 50))
        assert torch.equal(dense[row, :, 40:] == 0, sees)
        assert (dense[row, :, :40] == 0).all()  # the prefix: seen by every query


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "full"])
def test_what_padded_frames_hold_never_reaches_a_valid_frame(flow: FlowModel, streaming: bool) -> None:
    """The estimator masks only its output: padding after a row's valid frames, whatever it holds,
    leaves those frames' velocity as it is without the padding, and comes out zero."""
    estimator = flow.decoder.estimator
    g = torch.Generator().manual_seed(3)
    channels, valid, padded = estimator.in_channels // 4, 70, 120
    x, mu, cond = (torch.randn(1, channels, padded, generator=g) for _ in range(3))
    spks, t = torch.randn(1, channels, generator=g), torch.tensor([0.4])
    mask = (torch.arange(padded) < valid).float().view(1, 1, padded)
    garbage = 1e3 * torch.randn(1, channels, padded - valid, generator=g)
    x[:, :, valid:], mu[:, :, valid:], cond[:, :, valid:] = garbage, -garbage, garbage
    with torch.inference_mode():
        alone = estimator(x[..., :valid], mask[..., :valid], mu[..., :valid], t, spks, cond[..., :valid], streaming)
        out = estimator(x, mask, mu, t, spks, cond, streaming)
    torch.testing.assert_close(out[..., :valid], alone, atol=1e-5, rtol=0)
    assert not out[..., valid:].any()
