"""RAS sampling: nucleus/top-k candidate sets, repetition fallback, stop masking, seeding."""

from __future__ import annotations

import math

import pytest
import torch

from a10tts.engine.sampling import (
    RasSampling,
    draw_uniforms,
    forbid_tokens_from,
    make_generator,
    ras_sample,
    recent_tokens,
    sample_batch,
)

NO_HISTORY = torch.full((1, 10), -1)


def logp_of(probs: list[float], vocab: int | None = None) -> torch.Tensor:
    """One row of log-probs with ``probs`` at the first ids and nothing elsewhere."""
    row = torch.full((vocab or len(probs),), float("-inf"))
    row[: len(probs)] = torch.tensor(probs).log()
    return row[None]


def sample_with(logp, u0, u1=0.5, recent=NO_HISTORY, params=RasSampling()) -> int:
    uniforms = torch.tensor([[u0, u1]], dtype=torch.float64)
    return int(ras_sample(logp, recent, uniforms, params)[0])


def reference_nucleus(probs: torch.Tensor, top_p: float, top_k: int) -> list[int]:
    """Upstream's candidate rule, plainly: keep while the mass so far < top_p and < top_k kept."""
    kept, mass = [], 0.0
    for token in sorted(range(len(probs)), key=lambda i: -float(probs[i])):
        if mass >= top_p or len(kept) >= top_k:
            break
        kept.append(token)
        mass += float(probs[token])
    return kept


def test_candidates_and_draws_match_upstream_nucleus_rule():
    params = RasSampling(top_p=0.8, top_k=25)
    generator = torch.Generator().manual_seed(0)
    for temperature in (0.3, 1.0, 3.0):  # peaked to flat: top-p or top-k decides
        logp = (torch.randn(1, 300, generator=generator) / temperature).log_softmax(-1)
        probs = logp[0].softmax(-1)
        candidates = reference_nucleus(probs, params.top_p, params.top_k)
        weights = probs[candidates].double()
        bounds = (weights.cumsum(0) / weights.sum()).tolist()
        for u in torch.rand(200, generator=generator, dtype=torch.float64).tolist():
            expected = candidates[next(i for i, b in enumerate(bounds) if b > u)]
            assert sample_with(logp, u, params=params) == expected


def test_top_k_caps_a_flat_distribution():
    logp = logp_of([0.01] * 100, vocab=200)
    drawn = {sample_with(logp, u) for u in torch.linspace(0, 0.999, 500).tolist()}
    assert drawn == set(range(25))  # ties broken by id, as upstream's stable sort


def test_top_p_includes_the_token_that_crosses_it():
    # Sorted by probability: 0.5 (id 2), 0.25 (id 0), 0.15 (id 3), 0.1 (id 1): the mass
    # before id 3 is 0.75 < 0.8, so it is kept; before id 1 it is 0.9, so id 1 never comes.
    logp = logp_of([0.25, 0.1, 0.5, 0.15])
    assert sample_with(logp, 0.0) == 2
    assert sample_with(logp, 0.5 / 0.9 - 1e-6) == 2
    assert sample_with(logp, 0.5 / 0.9 + 1e-6) == 0
    assert sample_with(logp, 0.75 / 0.9 + 1e-6) == 3
    assert sample_with(logp, 1 - 1e-12) == 3


def test_repeated_token_is_resampled_from_the_rest_of_the_distribution():
    logp = logp_of([0.01, 0.01, 0.97, 0.01])
    assert sample_with(logp, 0.3) == 2
    recent = recent_tokens([[2, 5, 5]], win_size=10)
    drawn = [sample_with(logp, 0.3, u1, recent) for u1 in (0.0, 0.4, 0.9)]
    assert drawn == [0, 1, 3]  # token 2 excluded, the others equally likely


def test_repetition_threshold_counts_only_the_window():
    logp = logp_of([0.01, 0.01, 0.97, 0.01])
    params = RasSampling(win_size=4, tau_r=0.5)  # resample at 2 occurrences in the last 4
    once = recent_tokens([[2, 1, 1, 1]], params.win_size)
    twice = recent_tokens([[2, 2, 1, 1]], params.win_size)
    outside = recent_tokens([[2, 2, 1, 1, 1, 1]], params.win_size)
    assert sample_with(logp, 0.3, recent=once, params=params) == 2
    assert sample_with(logp, 0.3, recent=twice, params=params) != 2
    assert sample_with(logp, 0.3, recent=outside, params=params) == 2


def test_recent_tokens_window_is_left_padded():
    window = recent_tokens([[], [7], list(range(15))], win_size=4)
    assert window.tolist() == [[-1, -1, -1, -1], [-1, -1, -1, 7], [11, 12, 13, 14]]


def test_forbidden_stop_tokens_never_come_out():
    stop = 6
    logp = logp_of([0.02] * 6 + [0.85, 0.03], vocab=8).expand(2, -1)
    masked = forbid_tokens_from(logp, stop, [True, False])
    assert torch.isinf(masked[0, stop:]).all() and torch.equal(masked[1], logp[1])
    assert not torch.isinf(logp[0, stop:]).any()  # the input is left untouched

    recent = torch.full((2, 10), -1)
    for u0, u1 in torch.rand(200, 2, generator=torch.Generator().manual_seed(1)).tolist():
        uniforms = torch.tensor([[u0, u1]] * 2, dtype=torch.float64)
        suppressed, free = ras_sample(masked, recent, uniforms, RasSampling()).tolist()
        assert suppressed < stop
    assert free == stop  # stop token allowed and dominant in the other row
    # The repetition fallback draws from the masked distribution too.
    recent_first = recent_tokens([[0, 1, 2, 3, 4, 5]], win_size=10)
    for u1 in torch.linspace(0, 0.999, 100).tolist():
        assert sample_with(masked[:1], 0.0, u1, recent_first) < stop


def test_seeded_requests_are_reproducible_in_any_batch():
    params = RasSampling()
    logp = (torch.randn(3, 500, generator=torch.Generator().manual_seed(3)) / 3).log_softmax(-1)

    def run(rows: list[int], seeds: list[int], steps: int = 20) -> list[list[int]]:
        generators = [make_generator(seed) for seed in seeds]
        histories: list[list[int]] = [[] for _ in rows]
        for _ in range(steps):
            tokens = sample_batch(logp[rows], params, histories, generators).tolist()
            for history, token in zip(histories, tokens):
                history.append(token)
        return histories

    batched = run([0, 1, 2], [11, 12, 13])
    assert run([1], [12]) == batched[1:2]
    assert run([2, 0], [13, 11]) == [batched[2], batched[0]]
    assert run([1], [99]) != batched[1:2]


def test_draw_uniforms_takes_two_per_request():
    generators = [make_generator(5), make_generator(5), make_generator(6)]
    draws = draw_uniforms(generators)
    assert draws.shape == (3, 2) and draws.dtype == torch.float64
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert ((draws >= 0) & (draws < 1)).all()
    unseeded = draw_uniforms([make_generator(), make_generator()])
    assert not torch.equal(unseeded[0], unseeded[1])


def test_half_precision_logp_is_accepted():
    logp = torch.randn(2, 300, generator=torch.Generator().manual_seed(4)).log_softmax(-1)
    uniforms = torch.rand(2, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    recent = torch.full((2, 10), -1)
    tokens = ras_sample(logp.to(torch.bfloat16), recent, uniforms, RasSampling())
    assert tokens.dtype == torch.long and ((tokens >= 0) & (tokens < 300)).all()


def test_params_from_hparams():
    args = {"top_p": 0.7, "top_k": 10, "win_size": 8, "tau_r": 0.25}
    assert RasSampling.from_hparams(args) == RasSampling(0.7, 10, 8, 0.25)
    assert RasSampling.from_hparams({}) == RasSampling(0.8, 25, 10, 0.1)
    assert math.isclose(RasSampling().repetition_threshold, 1.0)


@pytest.mark.parametrize("top_k", [1, 3])
def test_small_top_k_takes_the_most_likely(top_k):
    logp = logp_of([0.1, 0.6, 0.3])
    assert {sample_with(logp, u, params=RasSampling(top_k=top_k)) for u in (0.0, 0.5, 0.99)} == (
        {1} if top_k == 1 else {1, 2}
    )
