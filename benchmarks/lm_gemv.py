"""The LM decode step's GEMMs at batch 1, three ways: as served (``F.linear``: cuBLAS picks a
tensor-core kernel with the one row padded to a tile), cuBLAS's matrix-vector kernel
(``torch.addmv``), and a Triton matrix-vector kernel tuned per shape (below).

At batch 1 these GEMMs are the decode step's largest part, 0.58 of its 1.03 ms of kernels on an
H100, and they read their 965 MiB of weights at about half the card's bandwidth
(``docs/benchmarks.md``, "The LM's decode step, profiled"). This measures what a kernel made
for one row could win before any is wired in. Each way runs 50 times in a row inside one CUDA
graph, as the served step's kernels run; the time per call includes the gap between kernels.
The calls cycle through copies of the weights adding up to more than the H100's 50 MB L2, so each
reads its weights from HBM, as the served step does (a first version reused one copy, and its
figures came from L2).
Prints microseconds per call, the bandwidth reached, and the largest difference from
``F.linear``. Run on the GPU machine: `python benchmarks/lm_gemv.py`.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from lm_decode import build  # beside this script

CALLS_PER_GRAPH = 50
COPIES_BYTES = 256 << 20  # weight copies cycled through: well over the H100's 50 MB L2


@triton.autotune(
    configs=[triton.Config({"BLOCK_N": n, "BLOCK_K": k}, num_warps=w)
             for n in (4, 8, 16, 32) for k in (128, 256, 512) for w in (2, 4, 8)],
    key=["N", "K"],
)
@triton.jit
def _gemv_kernel(X, W, Bias, Y, N, K, stride_w, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for start in range(0, K, BLOCK_K):
        cols = start + tl.arange(0, BLOCK_K)
        w = tl.load(W + rows[:, None] * stride_w + cols[None, :], mask=(rows[:, None] < N) & (cols[None, :] < K),
                    other=0.0)
        x = tl.load(X + cols, mask=cols < K, other=0.0)
        acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
    y = tl.sum(acc, axis=1)
    if HAS_BIAS:
        y += tl.load(Bias + rows, mask=rows < N, other=0.0).to(tl.float32)
    tl.store(Y + rows, y.to(Y.dtype.element_ty), mask=rows < N)


def triton_gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for one row ``x`` ``[1, K]``."""
    n, k = weight.shape
    y = torch.empty(1, n, dtype=x.dtype, device=x.device)
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
    _gemv_kernel[grid](x, weight, weight if bias is None else bias, y, n, k, weight.stride(0), HAS_BIAS=bias is not None)
    return y


def cublas_gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if bias is None:
        return torch.mv(weight, x[0])[None]
    return torch.addmv(bias, weight, x[0])[None]


def graph_us(fn, calls: list[tuple]) -> float:
    """Microseconds per call of ``fn``, CALLS_PER_GRAPH calls replayed from one graph, cycling
    through the argument tuples ``calls``."""
    fn(*calls[0])  # tunes and compiles off the graph
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for index in range(CALLS_PER_GRAPH):
            fn(*calls[index % len(calls)])
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1000 / CALLS_PER_GRAPH)
    return sorted(times)[len(times) // 2]


@torch.inference_mode()
def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    lm = build(torch.bfloat16)
    layer = lm.backbone.layers[0]
    linears = {"q/k/v (bias)": layer.self_attn.qkv_proj, "o": layer.self_attn.o_proj,
               "gate/up": layer.mlp.gate_up_proj, "down": layer.mlp.down_proj, "speech head": lm.llm_decoder}
    print(f"# {torch.cuda.get_device_name()}, bf16, one row; microseconds per call, in a CUDA graph of "
          f"{CALLS_PER_GRAPH} calls")
    print("| GEMM | out x in | MiB | F.linear (served) | cuBLAS addmv | Triton GEMV | best GB/s | Triton: max |diff| |")
    print("|---|---|---|---|---|---|---|---|")
    for name, linear in linears.items():
        weight, bias = linear.weight, linear.bias
        x = torch.randn(1, weight.shape[1], device="cuda", dtype=weight.dtype)
        nbytes = weight.numel() * weight.element_size()
        mib = nbytes / 2**20
        copies = min(CALLS_PER_GRAPH, -(-COPIES_BYTES // nbytes))
        calls = [(x, weight.clone(), None if bias is None else bias.clone()) for _ in range(copies)]
        served = graph_us(F.linear, calls)
        mv = graph_us(cublas_gemv, calls)
        ours = graph_us(triton_gemv, calls)
        diff = (triton_gemv(x, weight, bias).float() - F.linear(x, weight, bias).float()).abs().max().item()
        gbps = mib * 2**20 / (min(served, mv, ours) * 1e-6) / 1e9
        print(f"| {name} | {weight.shape[0]} x {weight.shape[1]} | {mib:.1f} | {served:.2f} | {mv:.2f} | {ours:.2f} "
              f"| {gbps:.0f} | {diff:.3g} |")


if __name__ == "__main__":
    main()
