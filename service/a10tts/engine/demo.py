"""`a10tts model init-demo`: a random-weight model directory in the official layout.

`tiny` runs the whole service on a laptop CPU in seconds; `full` has CosyVoice2-0.5B's real
hyper-parameters (real compute and memory) for timing on a GPU. Both are deterministic and
both produce noise: the weights are random. The LM's stop-token bias is raised so that demo
utterances end after a plausible number of tokens instead of always running to the maximum.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .demo_onnx import build_campplus, build_speech_tokenizer, campplus_weights, speech_tokenizer_weights
from .model_dir import CONFIG_FILE, DEMO_MARKER, QWEN_DIR, WEIGHT_FILES, ModelDir, expected_shapes
from .tokenizer import write_demo_tokenizer

SIZES = ("tiny", "full")
DEMO_STOP_LOGIT_BIAS = 6.0  # e^6 ≈ 400: about one stop in 16 random steps once allowed


@dataclass(frozen=True)
class Dims:
    llm_hidden: int
    llm_intermediate: int
    llm_layers: int
    llm_heads: int
    llm_kv_heads: int
    text_vocab: int
    flow_width: int
    flow_heads: int
    flow_units: int
    flow_blocks: int
    estimator_channels: int
    estimator_head_dim: int
    estimator_blocks: int
    estimator_mid_blocks: int
    estimator_heads: int
    hift_channels: int


DIMS = {
    "tiny": Dims(64, 128, 2, 4, 2, 1000, 64, 2, 128, 2, 64, 32, 1, 2, 2, 32),
    "full": Dims(896, 4864, 24, 14, 2, 151936, 512, 8, 2048, 6, 256, 64, 4, 12, 8, 512),
}


# Top-level keys of the official cosyvoice2.yaml that upstream's CosyVoice2 loader reads (text
# tokenizer, prompt mel) and a10tts does not; values as in CosyVoice2-0.5B's file.
UPSTREAM_LOADER_YAML = """
get_tokenizer: !name:cosyvoice.tokenizer.tokenizer.get_qwen_tokenizer
    token_path: !ref <qwen_pretrain_path>
    skip_special_tokens: True
allowed_special: 'all'
feat_extractor: !name:matcha.utils.audio.mel_spectrogram
    n_fft: 1920
    num_mels: 80
    sampling_rate: !ref <sample_rate>
    hop_size: 480
    win_size: 1920
    fmin: 0
    fmax: 8000
    center: False
"""


def demo_yaml(size: str) -> str:
    """The demo model's `cosyvoice2.yaml` text."""
    d = DIMS[size]
    # Same structure and class names as the official cosyvoice2.yaml, inference keys only.
    return f"""# a10tts demo model ({DEMO_MARKER}): random weights, the audio is noise.
sample_rate: 24000
llm_input_size: {d.llm_hidden}
llm_output_size: {d.llm_hidden}
spk_embed_dim: 192
qwen_pretrain_path: ''
token_frame_rate: 25
token_mel_ratio: 2
chunk_size: 25
num_decoding_left_chunks: -1

llm: !new:cosyvoice.llm.llm.Qwen2LM
    llm_input_size: !ref <llm_input_size>
    llm_output_size: !ref <llm_output_size>
    speech_token_size: 6561
    llm: !new:cosyvoice.llm.llm.Qwen2Encoder
        pretrain_path: !ref <qwen_pretrain_path>
    sampling: !name:cosyvoice.utils.common.ras_sampling
        top_p: 0.8
        top_k: 25
        win_size: 10
        tau_r: 0.1

flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithXvec
    input_size: {d.flow_width}
    output_size: 80
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: 6561
    input_frame_rate: !ref <token_frame_rate>
    token_mel_ratio: !ref <token_mel_ratio>
    pre_lookahead_len: 3
    encoder: !new:cosyvoice.transformer.upsample_encoder.UpsampleConformerEncoder
        output_size: {d.flow_width}
        attention_heads: {d.flow_heads}
        linear_units: {d.flow_units}
        num_blocks: {d.flow_blocks}
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        input_size: {d.flow_width}
        use_cnn_module: False
        macaron_style: False
        static_chunk_size: !ref <chunk_size>
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: 80
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: 'cosine'
                training_cfg_rate: 0.2
                inference_cfg_rate: 0.7
        estimator: !new:cosyvoice.flow.decoder.CausalConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: [{d.estimator_channels}]
            dropout: 0.0
            attention_head_dim: {d.estimator_head_dim}
            n_blocks: {d.estimator_blocks}
            num_mid_blocks: {d.estimator_mid_blocks}
            num_heads: {d.estimator_heads}
            act_fn: 'gelu'
            static_chunk_size: !ref <chunk_size> * <token_mel_ratio>
            num_decoding_left_chunks: !ref <num_decoding_left_chunks>

hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    in_channels: 80
    base_channels: {d.hift_channels}
    nb_harmonics: 8
    sampling_rate: !ref <sample_rate>
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: [8, 5, 3]
    upsample_kernel_sizes: [16, 11, 7]
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3, 7, 11]
    resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    source_resblock_kernel_sizes: [7, 7, 11]
    source_resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    lrelu_slope: 0.1
    audio_limit: 0.99
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
        num_class: 1
        in_channels: 80
        cond_channels: {d.hift_channels}

""" + UPSTREAM_LOADER_YAML


def demo_qwen_config(size: str) -> dict:
    """The demo model's `CosyVoice-BlankEN/config.json`."""
    d = DIMS[size]
    return {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
        "hidden_size": d.llm_hidden, "intermediate_size": d.llm_intermediate,
        "num_hidden_layers": d.llm_layers, "num_attention_heads": d.llm_heads,
        "num_key_value_heads": d.llm_kv_heads, "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True,
        "vocab_size": d.text_vocab, "torch_dtype": "float32",
    }


def _upstream_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's weights under the upstream checkpoint's keys (HiFT: weight-norm g/v pairs)."""
    plain = module.state_dict()
    state = {}
    for key in expected_shapes(module):
        stem, _, leaf = key.partition(".parametrizations.weight.")
        if leaf == "original0":  # g = ||w|| over all dims but 0, so that g * v / ||v|| = w
            weight = plain[f"{stem}.weight"]
            state[key] = weight.flatten(1).norm(dim=1).reshape(-1, *([1] * (weight.dim() - 1)))
        elif leaf == "original1":
            state[key] = plain[f"{stem}.weight"]
        else:
            state[key] = plain[key]
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def init_demo(directory: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Write a demo model directory; refuses to overwrite a directory that is not empty."""
    if size not in DIMS:
        raise ValueError(f"unknown demo size {size!r}; choose one of {', '.join(SIZES)}")
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} exists and is not empty; choose a new directory")
    (directory / QWEN_DIR).mkdir(parents=True)
    (directory / DEMO_MARKER).write_text(
        f"Random-weight a10tts demo model ({size}); its audio is noise. Made by `a10tts model init-demo`.\n"
    )
    (directory / CONFIG_FILE).write_text(demo_yaml(size))
    (directory / QWEN_DIR / "config.json").write_text(json.dumps(demo_qwen_config(size), indent=2))
    write_demo_tokenizer(directory / QWEN_DIR, vocab_size=DIMS[size].text_vocab)

    model_dir = ModelDir.open(directory)
    torch.manual_seed(seed)
    with torch.no_grad():
        for component, name in WEIGHT_FILES.items():
            module = model_dir.build(component)
            if component == "llm":
                stop = module.speech_token_size
                module.llm_decoder.bias[stop] += DEMO_STOP_LOGIT_BIAS
            torch.save(_upstream_state_dict(module), directory / name)
            del module
    build_speech_tokenizer(directory / "speech_tokenizer_v2.onnx", *speech_tokenizer_weights(seed))
    build_campplus(directory / "campplus.onnx", *campplus_weights(seed + 1))
    return directory
