"""HiFT vocoder: parity with upstream golden vectors, checkpoint loading, ragged batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from a10tts.engine.checkpoint import CheckpointError
from a10tts.engine.hift import HiFTGenerator
from a10tts.engine.hparams import Node

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden"
HOP = 480  # output samples per mel frame at 24 kHz

# The tiny golden model's `hift` section (tiny_cosyvoice2.yaml).
TINY_ARGS = {
    "in_channels": 80,
    "base_channels": 32,
    "nb_harmonics": 8,
    "sampling_rate": 24000,
    "nsf_alpha": 0.1,
    "nsf_sigma": 0.003,
    "nsf_voiced_threshold": 10,
    "upsample_rates": [8, 5, 3],
    "upsample_kernel_sizes": [16, 11, 7],
    "istft_params": {"n_fft": 16, "hop_len": 4},
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "source_resblock_kernel_sizes": [7, 7, 11],
    "source_resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "lrelu_slope": 0.1,
    "audio_limit": 0.99,
    "f0_predictor": Node(
        "new",
        "cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor",
        {"num_class": 1, "in_channels": 80, "cond_channels": 32},
    ),
}
# CosyVoice2-0.5B: the same topology at 512 channels.
FULL_ARGS = {
    **TINY_ARGS,
    "base_channels": 512,
    "f0_predictor": Node(
        "new",
        "cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor",
        {"num_class": 1, "in_channels": 80, "cond_channels": 512},
    ),
}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def load_tiny(state: dict[str, torch.Tensor]) -> HiFTGenerator:
    model = HiFTGenerator.from_hparams(TINY_ARGS).eval()
    model.load_upstream_state_dict(state)
    return model


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    return load_file(GOLDEN / "tiny_model" / "hift.safetensors")


@pytest.fixture(scope="module")
def hift(tiny_state) -> HiFTGenerator:
    return load_tiny(tiny_state)


@pytest.fixture(scope="module")
def case() -> dict[str, torch.Tensor]:
    return load_file(GOLDEN / "hift_case.safetensors")


# ------------------------------------------------------------------------ golden parity


def test_f0_predictor(hift, case):
    assert max_diff(hift.f0_predictor(case["mel"]), case["f0"]) < 1e-5


def test_decode(hift, case):
    assert max_diff(hift.decode(case["mel"], case["source"]), case["decode_out"]) < 1e-5


def test_seeded_inference_matches_upstream_rng_stream(hift, case):
    torch.manual_seed(0)
    speech, source = hift.inference(case["mel"])
    assert max_diff(source, case["inference_source"]) < 1e-6
    assert max_diff(speech, case["inference_speech"]) < 1e-5


def test_explicit_generator_replaces_global_seed(hift, case):
    torch.manual_seed(123)  # the global stream must not matter
    speech, source = hift.inference(case["mel"], generator=torch.Generator().manual_seed(0))
    assert max_diff(source, case["inference_source"]) < 1e-6
    assert max_diff(speech, case["inference_speech"]) < 1e-5


def test_voiced_excitation(hift, case):
    torch.manual_seed(0)
    excitation, voiced = hift.m_source(case["f0_synthetic"])
    assert max_diff(voiced.transpose(1, 2), case["m_source_uv"]) == 0
    assert max_diff(excitation.transpose(1, 2), case["m_source_sine_merge"]) < 1e-6
    # The voiced frames really carry a periodic excitation, not just noise.
    assert case["m_source_uv"].sum() == 40 * HOP
    speech = hift.decode(case["mel"], case["m_source_sine_merge"].transpose(1, 2))
    assert max_diff(speech, case["decode_of_synthetic_source"]) < 1e-5


@pytest.mark.parametrize("name", ["token2wav_stream_53", "token2wav_stream_160"])
def test_streaming_calls_of_upstream_tts(hift, name):
    """Upstream seeds once before tts(); each HiFT call draws its noise in turn."""
    data = load_file(GOLDEN / f"{name}.safetensors")
    calls = json.loads((GOLDEN / f"{name}.json").read_text())["num_hift_calls"]
    assert calls >= 2
    torch.manual_seed(0)
    for i in range(calls):
        cache = data[f"hift{i}_cache_source"]
        speech, source = hift.inference(data[f"hift{i}_speech_feat"], cache_source=cache)
        assert torch.equal(source[:, :, : cache.shape[-1]], cache)
        assert max_diff(speech, data[f"hift{i}_speech"]) < 1e-5, f"call {i}"


# ------------------------------------------------------------------------ checkpoints


def _legacy_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old torch.nn.utils.weight_norm key style, wrapped in a `generator.` prefix."""
    renamed = {}
    for key, value in state.items():
        key = key.replace(".parametrizations.weight.original0", ".weight_g")
        key = key.replace(".parametrizations.weight.original1", ".weight_v")
        renamed[f"generator.{key}"] = value.clone()
    return renamed


@pytest.mark.parametrize("variant", ["pt", "legacy_weight_g_v"])
def test_checkpoint_formats_load_identically(hift, tiny_state, variant):
    if variant == "pt":
        state = torch.load(GOLDEN / "tiny_model" / "hift.pt", map_location="cpu", weights_only=True)
    else:
        state = _legacy_copy(tiny_state)
        assert any(k.endswith(".weight_g") for k in state)
    other = load_tiny(state)
    reference = hift.state_dict()
    assert other.state_dict().keys() == reference.keys()
    assert all(torch.equal(value, reference[key]) for key, value in other.state_dict().items())


def test_weight_norm_fold_matches_torch_parametrization(hift, tiny_state):
    """Transposed convs normalise over dim 0 = input channels; check against torch's own weight norm."""
    conv = torch.nn.ConvTranspose1d(32, 16, 16, 8, padding=4)
    conv = torch.nn.utils.parametrizations.weight_norm(conv)
    conv.load_state_dict({k.removeprefix("ups.0."): v for k, v in tiny_state.items() if k.startswith("ups.0.")})
    assert max_diff(hift.ups[0].weight, conv.weight.detach()) < 1e-7


def test_strict_load_lists_missing_unexpected_and_misshaped_keys(tiny_state):
    broken = dict(tiny_state)
    del broken["conv_post.bias"]
    broken["conv_post.extra"] = torch.zeros(1)
    broken["m_source.l_linear.weight"] = torch.zeros(1, 4)
    with pytest.raises(CheckpointError) as error:
        load_tiny(broken)
    message = str(error.value)
    assert "conv_post.bias" in message and "conv_post.extra" in message and "m_source.l_linear.weight" in message


def test_full_size_keys_match_manifest():
    manifest = json.loads((GOLDEN / "manifests" / "manifest_hift.json").read_text())
    with torch.device("meta"):
        model = HiFTGenerator.from_hparams(FULL_ARGS)
    shapes = model.upstream_key_shapes()
    assert shapes == {key: tuple(shape) for key, shape in manifest["keys"].items()}
    assert sum(torch.Size(s).numel() for s in shapes.values()) == manifest["total_numel_state_dict"]


def test_from_hparams_names_missing_keys():
    args = {k: v for k, v in TINY_ARGS.items() if k != "upsample_rates"}
    with pytest.raises(ValueError, match="upsample_rates"):
        HiFTGenerator.from_hparams(args)
    args = {**TINY_ARGS, "f0_predictor": Node("new", "x.ConvRNNF0Predictor", {"num_class": 1, "in_channels": 80})}
    with pytest.raises(ValueError, match="f0_predictor: missing required key 'cond_channels'"):
        HiFTGenerator.from_hparams(args)
    causal = Node("new", "cosyvoice.hifigan.f0_predictor.CausalConvRNNF0Predictor", {})
    with pytest.raises(ValueError, match="CausalConvRNNF0Predictor"):
        HiFTGenerator.from_hparams({**TINY_ARGS, "f0_predictor": causal})


# ------------------------------------------------------------------------ batching


@pytest.fixture(scope="module")
def ragged(case):
    """Two rows: the golden mel (60 frames) and a different 37-frame mel, zero-padded."""
    gen = torch.Generator().manual_seed(7)
    mels = [case["mel"], torch.randn(1, 80, 37, generator=gen) * 2 - 5]
    sources = [case["source"], torch.randn(1, 1, 37 * HOP, generator=gen) * 0.1]
    lengths = torch.tensor([60, 37])
    mel = torch.zeros(2, 80, 60)
    source = torch.zeros(2, 1, 60 * HOP)
    for row, (m, s) in enumerate(zip(mels, sources)):
        mel[row, :, : m.shape[-1]] = m[0]
        source[row, :, : s.shape[-1]] = s[0]
    return mels, sources, mel, source, lengths


def test_ragged_batch_decode_equals_single_calls(hift, ragged):
    mels, sources, mel, source, lengths = ragged
    batch = hift.decode(mel, source, lengths)
    for row, (m, s) in enumerate(zip(mels, sources)):
        n = m.shape[-1] * HOP
        assert max_diff(batch[row, :n], hift.decode(m, s)[0]) < 1e-5
        assert not batch[row, n:].any()
    f0 = hift.f0_predictor(mel, lengths)
    assert max_diff(f0[1, :37], hift.f0_predictor(mels[1])[0]) < 1e-5


def test_ragged_batch_inference_with_per_row_generators(hift, ragged):
    mels, _, mel, _, lengths = ragged
    seeds = [11, 12]
    caches = [torch.zeros(1, 0), torch.full((1, 3840), 0.25)]
    speech, source = hift.inference(
        mel, lengths, cache_source=caches, generator=[torch.Generator().manual_seed(s) for s in seeds]
    )
    for row, (m, seed, cache) in enumerate(zip(mels, seeds, caches)):
        n = m.shape[-1] * HOP
        alone, alone_source = hift.inference(
            m, cache_source=cache[None], generator=torch.Generator().manual_seed(seed)
        )
        assert max_diff(source[row, :, :n], alone_source[0]) < 1e-6
        assert max_diff(speech[row, :n], alone[0]) < 1e-5
        assert not speech[row, n:].any() and not source[row, :, n:].any()
    assert torch.equal(source[1, 0, :3840], caches[1][0])


def test_runs_in_bfloat16(hift, tiny_state, case):
    """HiFT is served in fp32, but a cast module must still run (STFT parts stay fp32)."""
    mel, source = case["mel"][:, :, :8], case["source"][:, :, : 8 * HOP]
    model = load_tiny(tiny_state).to(torch.bfloat16)
    speech = model.decode(mel.to(torch.bfloat16), source)
    assert speech.shape == (1, 8 * HOP) and torch.isfinite(speech).all()
    assert max_diff(speech.float(), hift.decode(mel, source)) < 0.1
