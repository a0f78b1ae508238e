"""The Triton kernels and CUDA-graph decode steps compute what the eager path does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from a10tts.engine.cuda_graphs import EncoderGraphs
from a10tts.engine.flow.attention import ChunkMask, DenseMask
from a10tts.engine.kernels.conv_windows import causal_windows_reference, causal_windows
from a10tts.engine.kernels.decode_attention import decode_attention, decode_attention_reference
from a10tts.engine.kernels.layer_norm import add_layer_norm, layer_norm, layer_norm_mish
from a10tts.engine.kernels import linear_gelu as linear_gelu_module
from a10tts.engine.kernels import LaunchConfig
from a10tts.engine.kernels.linear_gelu import FEW_ROWS, linear_gelu
from a10tts.engine.kernels.rms_norm import add_rms_norm, rms_norm, rms_norm_reference
from a10tts.engine.kernels.rotary import apply_rotary, rotary_qkv
from a10tts.engine.model_dir import ModelDir
from a10tts.engine.qwen2 import rotary_cos_sin
from a10tts.engine.sampling import make_generator

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


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float32, 1e-5), (torch.bfloat16, 1.6e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize("width", [896, 80])
def test_triton_rms_norm_matches_torch(dtype, rtol, width) -> None:
    """Within a rounding of the last bit: the kernel sums the squares in another order."""
    g = torch.Generator(device="cuda").manual_seed(width)
    weight = (torch.rand(width, device="cuda", generator=g) + 0.5).to(dtype)
    x = (torch.randn(37, width, device="cuda", generator=g) * 3 + 1).to(dtype)  # a ragged last block of rows
    delta = torch.randn(37, width, device="cuda", generator=g).to(dtype)
    with torch.inference_mode():
        total, normed = add_rms_norm(x, delta, weight, 1e-6)
        assert torch.equal(total, x + delta)  # the same rounding as torch's add
        torch.testing.assert_close(normed, rms_norm_reference(x + delta, weight, 1e-6), rtol=rtol, atol=rtol)
        torch.testing.assert_close(rms_norm(x, weight, 1e-6), rms_norm_reference(x, weight, 1e-6), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(14, 2, 64), (5, 1, 24)])
def test_triton_rotary_matches_torch(dtype, heads, kv_heads, head_dim) -> None:
    """q and k rotated in place as ``apply_rotary`` rotates them; v untouched."""
    g = torch.Generator(device="cuda").manual_seed(head_dim)
    tokens = 37
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, device="cuda", generator=g).to(dtype)
    cos, sin = rotary_cos_sin(torch.arange(tokens, device="cuda") + 250, head_dim, 1e6)
    q_ref, k_ref, v_ref = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
    q_ref = apply_rotary(q_ref.reshape(tokens, heads, head_dim), cos, sin)
    k_ref = apply_rotary(k_ref.reshape(tokens, kv_heads, head_dim), cos, sin)
    v_ref = v_ref.reshape(tokens, kv_heads, head_dim).clone()
    with torch.inference_mode():
        q, k, v = rotary_qkv(qkv, cos, sin, heads, kv_heads, head_dim)
    assert q.data_ptr() == qkv.data_ptr()  # in place
    tol = 1e-6 if dtype == torch.float32 else 1e-2  # a last bit, where fp32 contracts a product into the sum
    torch.testing.assert_close(q, q_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(k, k_ref, rtol=tol, atol=tol)
    assert torch.equal(v, v_ref)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float16, 2e-3)])
@pytest.mark.parametrize("width", [256, 80])
def test_triton_layer_norm_matches_torch(dtype, tol, width) -> None:
    g = torch.Generator(device="cuda").manual_seed(width)
    norm = torch.nn.LayerNorm(width).cuda().to(dtype)
    with torch.no_grad():
        norm.weight.normal_(generator=g)
        norm.bias.normal_(generator=g)
    x = (torch.randn(3, 37, width, device="cuda", generator=g) * 3 + 1).to(dtype)  # 111 rows: a ragged last block
    delta = torch.randn(3, 37, width, device="cuda", generator=g).to(dtype)
    with torch.inference_mode():
        total, normed = add_layer_norm(x, delta, norm)
        plain = layer_norm(x, norm)
        assert torch.equal(total, x + delta)  # the same rounding as torch's add
        assert (normed.float() - norm(x + delta).float()).abs().max().item() < tol
        assert (plain.float() - norm(x).float()).abs().max().item() < tol
        transposed = x.transpose(0, 1)  # not contiguous: normalized all the same
        assert (layer_norm(transposed, norm).float() - norm(transposed).float()).abs().max().item() < tol
        with torch.no_grad():
            norm.weight[:4] = 40.0  # Mish past softplus's threshold and deep in its negative tail
        add = torch.randn(3, width, device="cuda", generator=g).to(dtype)  # one vector per sequence
        torch.testing.assert_close(layer_norm_mish(x, norm, add), F.mish(norm(x)) + add[:, None],
                                   atol=tol, rtol=2 * tol)
        torch.testing.assert_close(layer_norm_mish(x, norm), F.mish(norm(x)), atol=tol, rtol=2 * tol)
        residual = torch.randn(3, 37, width, device="cuda", generator=g).to(dtype)
        torch.testing.assert_close(layer_norm_mish(x, norm, add, residual), F.mish(norm(x)) + add[:, None] + residual,
                                   atol=2 * tol, rtol=2 * tol)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize("rows", [1, 37, 112, 300, FEW_ROWS])  # ragged last tiles, both tile shapes, the most rows
def test_linear_gelu_matches_torch(dtype, tol, rows, monkeypatch) -> None:
    """The feed-forward's Linear and exact GELU in one kernel against torch's two, within a last
    bit; also with another output width, without a bias, and on rows that are not contiguous."""
    torch.backends.cuda.matmul.allow_tf32 = False
    g = torch.Generator(device="cuda").manual_seed(rows)
    x = torch.randn(rows, 512, device="cuda", generator=g).to(dtype)
    for n_in, n_out, bias in [(256, 1024, True), (512, 80, True), (256, 1024, False)]:
        layer = torch.nn.Linear(n_in, n_out, bias=bias).cuda()
        with torch.no_grad():
            layer.weight.normal_(generator=g).mul_(2 * n_in ** -0.5)
            if bias:
                layer.bias.normal_(generator=g)
        layer = layer.to(dtype)
        inputs = x[:, :n_in]  # a slice of wider rows but for 512: copied first
        expected = F.gelu(layer(inputs))
        with monkeypatch.context() as patched, torch.inference_mode():
            patched.setattr(linear_gelu_module, "F", None)  # torch's path would fail: the kernel runs
            for config in (None, LaunchConfig(64), LaunchConfig(16)):
                torch.testing.assert_close(linear_gelu(inputs, layer, config), expected, atol=tol, rtol=tol)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize("prefix_frames", [0, 100, 250])
def test_chunk_attention_matches_sdpa_with_the_dense_mask(dtype, tol, prefix_frames) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    g = torch.Generator(device="cuda").manual_seed(prefix_frames)
    batch, heads, frames, head_dim = 6, 8, 130, 64
    q, k, v = (torch.randn(batch, heads, frames, head_dim, device="cuda", generator=g).to(dtype) for _ in range(3))
    past = None
    if prefix_frames:  # keys and values per half of the rows, unbound from one step's packed tensor as PrefixReader does
        past = tuple(torch.randn(2, 2, heads, prefix_frames, head_dim, device="cuda", generator=g).to(dtype).unbind(0))
    lengths = torch.tensor([130, 1, 63, 64, 101, 130], device="cuda")  # block edges, a one-frame padding row
    valid = torch.arange(frames, device="cuda") < lengths[:, None]
    valid[5, 40:45] = False  # not a length mask: keys are still checked one by one
    for streaming in (torch.tensor([True, False, True, True, False, True], device="cuda"), False, True):
        past32 = None if past is None else tuple(t.float() for t in past)
        expected = DenseMask(valid, 50, streaming, prefix_frames, torch.float32).attend(
            q.float(), k.float(), v.float(), past32)
        out = ChunkMask(valid, 50, streaming).attend(q, k, v, past)
        assert out.dtype == dtype and torch.isfinite(out).all()
        err = ((out.float() - expected).norm() / expected.norm()).item()
        assert err < tol, (streaming, err)


def test_graph_decode_equals_eager_and_golden() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    case = load_file(GOLDEN / "llm_case.safetensors")
    lm = ModelDir.open(GOLDEN / "tiny_model").load("llm", "cuda", torch.float32)
    embeds = lm.prompt_embeds(*(case[k][0].cuda() for k in ("text", "prompt_text", "prompt_speech_token")))
    targets = case["target_speech_token"].tolist()

    def run(graphs: bool) -> torch.Tensor:
        cache = lm.new_kv_cache(num_slots=5, capacity=64)
        lm.disable_cuda_graphs()
        if graphs:
            lm.enable_cuda_graphs(cache, max_batch_size=4)
        other = cache.allocate()  # a second live request decoding alongside: padding must not touch it
        golden_slot = cache.allocate()
        steps = [lm.prefill(cache, [golden_slot, other], [embeds, embeds[:20]])[:1]]
        for token in targets[:-1]:
            steps.append(lm.decode_step(cache, [golden_slot, other], [token, 7])[:1])
        lm.disable_cuda_graphs()
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
            lm.disable_cuda_graphs()
            outputs.append(torch.cat(steps).float().cpu())
    assert (outputs[0] - outputs[1]).abs().max().item() < 0.05  # bf16: fusion reorders roundings
    assert (outputs[0].argmax(-1) == outputs[1].argmax(-1)).float().mean() >= 0.75


def test_graph_prefill_equals_eager_and_golden() -> None:
    """A prompt padded up to its bucket prefills what the eager path does, leaves the same keys
    and values for the prompt, and the decode steps after it agree; two prompts replay a graph
    each; a second prefill into a slot that holds tokens and a batch of five run eagerly."""
    torch.backends.cuda.matmul.allow_tf32 = False
    case = load_file(GOLDEN / "llm_case.safetensors")
    lm = ModelDir.open(GOLDEN / "tiny_model").load("llm", "cuda", torch.float32)
    embeds = lm.prompt_embeds(*(case[k][0].cuda() for k in ("text", "prompt_text", "prompt_speech_token")))
    targets = case["target_speech_token"].tolist()

    def run(graphs: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cache = lm.new_kv_cache(num_slots=8, capacity=192)
        lm.disable_cuda_graphs()
        if graphs:
            lm.enable_cuda_graphs(cache, max_batch_size=2, max_prefill_tokens=192)
            assert lm._prefill_graphs.buckets == [64, 128, 192]
        slot = cache.allocate()
        steps = [lm.prefill(cache, [slot], [embeds])]
        for token in targets[:-1]:
            steps.append(lm.decode_step(cache, [slot], [token]))
        pair = lm.prefill(cache, [cache.allocate(), cache.allocate()], [embeds, embeds[:9]])
        five = lm.prefill(cache, [cache.allocate() for _ in range(5)], [embeds[i:] for i in range(5)])
        steps.append(lm.prefill(cache, [slot], [embeds[:5]]))  # a slot holding tokens: eager
        length = cache.length(slot)
        kv = torch.stack([cache.keys[:, slot, :length], cache.values[:, slot, :length]])
        lm.disable_cuda_graphs()
        return torch.cat(steps).cpu(), torch.cat([pair, five]).cpu(), kv.cpu()

    with torch.inference_mode():
        eager, graphed = run(False), run(True)
    assert len(embeds) < 64  # padded: its keys and values were written past the prompt
    assert (graphed[0] - eager[0]).abs().max().item() < 1e-5
    assert (graphed[0][:len(targets)] - case["logp_kv"]).abs().max().item() < 1e-4
    assert (graphed[1] - eager[1]).abs().max().item() < 1e-5
    assert (graphed[2] - eager[2]).abs().max().item() < 1e-5


def test_graph_sampling_draws_the_tokens_eager_sampling_does() -> None:
    """Decode steps sampled inside the graph (three rows in a bucket of four, one refused its stop
    tokens) give the tokens of the eager step and sampling, from the same seeded generators."""
    case = load_file(GOLDEN / "llm_case.safetensors")
    lm = ModelDir.open(GOLDEN / "tiny_model").load("llm", "cuda", torch.float32)
    embeds = lm.prompt_embeds(*(case[k][0].cuda() for k in ("text", "prompt_text", "prompt_speech_token")))

    def run(graphs: bool) -> list[list[int]]:
        cache = lm.new_kv_cache(num_slots=4, capacity=96)
        lm.disable_cuda_graphs()
        if graphs:
            lm.enable_cuda_graphs(cache, max_batch_size=4)
        slots = [cache.allocate() for _ in range(3)]
        generators = [make_generator(seed) for seed in (1, 2, 3)]
        histories: list[list[int]] = [[], [], []]
        too_short = [True, False, False]
        logp = lm.prefill(cache, slots, [embeds, embeds[:20], embeds[5:]])
        tokens = lm.sample(logp, histories, generators, too_short)
        for _ in range(24):
            for history, token in zip(histories, tokens):
                history.append(token)
            tokens = lm.decode_and_sample(cache, slots, tokens, histories, generators, too_short)
        lm.disable_cuda_graphs()
        return histories

    with torch.inference_mode():
        eager, graphed = run(False), run(True)
    assert graphed == eager
    assert all(token < lm.speech_token_size for token in graphed[0])


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


def test_flow_graphs_continue_a_voice_prefix_as_eager_and_full_recomputation_do() -> None:
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = False, False
    case = load_file(GOLDEN / "token2wav_stream_160.safetensors")
    flow = ModelDir.open(GOLDEN / "tiny_model").load("flow", "cuda", torch.float32)
    tokens = case["token"][0].cuda()
    prompt_mel = torch.randn(170, 80, generator=torch.Generator().manual_seed(7)).cuda() - 4
    voice = (tokens[:85], prompt_mel, case["embedding"][0].cuda())  # 85 prompt tokens: a 150-frame prefix
    prefix = flow.prompt_prefix(*voice)
    request, ends = tokens[85:], [28, 53, 3]

    def run(prefix) -> tuple[torch.Tensor, torch.Tensor]:
        rows = len(ends)
        mel, mel_len = flow.inference(
            token=torch.nn.utils.rnn.pad_sequence([request[:n] for n in ends], batch_first=True),
            token_len=torch.tensor(ends, device="cuda"),
            prompt_token=voice[0].expand(rows, -1), prompt_token_len=torch.full((rows,), 85, device="cuda"),
            prompt_feat=voice[1].expand(rows, -1, -1), prompt_feat_len=torch.full((rows,), 170, device="cuda"),
            embedding=voice[2].expand(rows, -1), streaming=True, finalize=False, prefix=prefix,
        )
        return mel.cpu(), mel_len.cpu()

    full, full_len = run(None)
    eager, _ = run(prefix)
    flow.enable_cuda_graphs(max_batch_size=4)
    assert flow.continues_prefixes
    graphed, graphed_len = run(prefix)
    again, _ = run(prefix)  # a replay, with the prefix's steps loaded again
    captured = sorted(flow._graphs._graphs)
    flow._graphs = None
    assert prefix.frames == 150 and (4, 150, 150) in captured  # batch 3 -> 4; 106 new frames -> 150
    assert torch.equal(graphed_len, full_len)
    assert (eager - full).abs().max().item() < 1e-4
    assert (graphed - eager).abs().max().item() < 1e-4
    assert torch.equal(graphed, again)


def test_hift_graphs_equal_eager_with_padding_rows_and_frames() -> None:
    torch.backends.cudnn.allow_tf32 = False  # compare fp32 with fp32
    hift = ModelDir.open(GOLDEN / "tiny_model").load("hift", "cuda", torch.float32)
    hop = hift.samples_per_frame
    g = torch.Generator(device="cuda").manual_seed(5)
    lengths = torch.tensor([37, 60, 1], device="cuda")  # batch 3 -> bucket 4 (a padding row), 60 -> 75 frames
    mel = torch.randn(3, 80, 60, device="cuda", generator=g) * 2 - 5
    source = torch.randn(3, 1, 60 * hop, device="cuda", generator=g) * 0.1
    for row, n in enumerate(lengths.tolist()):  # zero-padded, as pad_sequence leaves it
        mel[row, :, n:], source[row, :, n * hop :] = 0, 0
    eager = hift.decode(mel, source, lengths)
    tol = 1e-5  # cuDNN's fp32 convolutions are not bitwise deterministic, eager (4e-7 here) or replayed

    hift.enable_cuda_graphs(max_batch_size=4, max_frames=100)
    graphs = hift._graphs
    assert sorted(graphs._graphs) == [(b, t) for b in (1, 2, 4) for t in (25, 50, 75, 100)]
    graphed, again = graphs(mel, source, lengths), graphs(mel, source, lengths)
    full = graphs(mel, source)  # no lengths: every row its full 60 frames
    assert graphed.shape == eager.shape and torch.isfinite(graphed).all()
    assert (graphed - eager).abs().max().item() < tol
    assert (graphed - again).abs().max().item() < tol
    assert (full - hift.decode(mel, source)).abs().max().item() < tol
    for row, n in enumerate(lengths.tolist()):  # each row as when it is vocoded alone
        alone = hift.decode(mel[row : row + 1, :, :n], source[row : row + 1, :, : n * hop])[0]
        assert (graphed[row, : n * hop] - alone).abs().max().item() < tol
        assert not graphed[row, n * hop :].any()

    # inference (f0 and excitation eager, decode from the graph) equals eager inference
    def infer() -> tuple[torch.Tensor, torch.Tensor]:
        generators = [torch.Generator(device="cuda").manual_seed(s) for s in (1, 2, 3)]
        cache = [torch.zeros(1, 0, device="cuda"), torch.full((1, 3840), 0.25, device="cuda"),
                 torch.zeros(1, 0, device="cuda")]
        return hift.inference(mel, lengths, cache_source=cache, generator=generators)

    speech, excitation = infer()
    hift._graphs = None
    eager_speech, eager_excitation = infer()
    assert torch.equal(excitation, eager_excitation)
    assert (speech - eager_speech).abs().max().item() < tol

    # beyond the largest bucket (101 frames > 100, batch 5 > 4) the decode runs eagerly
    long_mel = torch.randn(2, 80, 101, device="cuda", generator=g)
    long_source = torch.randn(2, 1, 101 * hop, device="cuda", generator=g) * 0.1
    rows = [0, 1, 2, 0, 1]
    assert graphs.bucket(2, 101) is None and graphs.bucket(5, 60) is None
    assert (graphs(long_mel, long_source) - hift.decode(long_mel, long_source)).abs().max().item() < tol
    wide = graphs(mel[rows], source[rows], lengths[rows])
    assert (wide - hift.decode(mel[rows], source[rows], lengths[rows])).abs().max().item() < tol
    assert len(graphs._graphs) == 12  # nothing captured for them


@pytest.mark.parametrize("channels", [320, 512, 80])
@pytest.mark.parametrize("past_kind", ["zeros", "prefix", "packed prefix"])
def test_causal_windows_copy_what_torch_concatenates(channels: int, past_kind: str) -> None:
    g = torch.Generator(device="cuda").manual_seed(channels)
    x = torch.randn(4, 37, channels, device="cuda", generator=g).half()  # 37 frames: a ragged last block
    past = None if past_kind == "zeros" else torch.randn(2, 2, channels, device="cuda", generator=g).half()
    if past_kind == "packed prefix":  # a strided view, as PrefixReader hands out of a step's packed contexts
        packed = torch.randn(2, 7 + 3 * channels, device="cuda", generator=g).half()
        packed[:, 7:7 + 2 * channels] = past.flatten(1)
        past = packed[:, 7:7 + 2 * channels].view(2, 2, channels)
        assert not past.is_contiguous()
    windows = causal_windows(x, 3, past)
    assert torch.equal(windows, causal_windows_reference(x, 3, past))  # copies: exactly equal
    assert torch.equal(causal_windows(x[:, :1], 3, past), causal_windows_reference(x[:, :1], 3, past))  # one frame


def test_encoder_graphs_equal_the_eager_encoder_for_ragged_rows() -> None:
    """Padding tokens after each row, padding rows, per-row streaming flags, a bucket captured on
    first use and replayed after, and an input past the graphs' bounds (eager)."""
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = False, False
    flow = ModelDir.open(GOLDEN / "tiny_model").load("flow", "cuda", torch.float32)
    g = torch.Generator(device="cuda").manual_seed(5)
    graphs = EncoderGraphs(flow, max_batch_size=4, max_batch_tokens=400)
    for rows, length in ((3, 61), (3, 61), (1, 30), (4, 120)):  # the last: 4 x 125 tokens, past the bound
        tokens = torch.randint(0, 6561, (rows, length), device="cuda", generator=g)
        input_len = torch.tensor([length, length - 17, 9, length][:rows], device="cuda")
        output_len = input_len - torch.tensor([3, 0, 3, 0][:rows], device="cuda")
        streaming = torch.tensor([True, False, True, True][:rows], device="cuda")
        hidden, frames = graphs(tokens, input_len, output_len, streaming)
        eager, eager_frames = flow.encode_tokens(tokens, input_len, output_len, streaming)
        assert torch.equal(frames, eager_frames) and hidden.shape == eager.shape
        valid = torch.arange(hidden.size(1), device="cuda") < frames[:, None]
        assert (hidden - eager)[valid].abs().max().item() < 1e-4
    assert len(graphs) == 2  # (4, 75) for the first two calls, (1, 50); the last ran eagerly
