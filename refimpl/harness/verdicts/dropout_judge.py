"""The verdict on a target run with dropout (``--dropout P``): its output replayed from the pattern it dropped.

The target returns which attention weights it kept (FlashAttention's ``S_dmask``, negative where dropped). Its
output must be ``(P * keep / (1 - p)) @ V`` with P the float64 oracle's weights: the forward bound of
:func:`refimpl.tolerance.forward` in the case's precision, on a magnitude of max|V| / (1 - p). And the pattern
itself must be dropout with probability p: over the weights the case attends (P > 0, rows with a key), the
kept count is a binomial draw with probability 1 - p; the two-sided test rejects at p < 1e-6, as xformers' dropout
tests do: by the normal approximation (|z| > 4.89) where n p (1 - p) >= 25, by the exact binomial tails where
fewer drops are expected (a handful of weights at p = 0.002: one drop among six is not rare, though z = -9).
Catches: no 1/(1 - p) rescaling, rescaling by p or by 1/p, dropout before the softmax, a pattern the output
does not follow, a keep rate that is not 1 - p.

An API that is given refimpl's keep-mask instead (:attr:`.apis.base.Api.dropout_given`, ``got.dropout_given``) is
judged by the same replay of that mask; the keep-rate test is skipped there: the draw is refimpl's own.
"""
from __future__ import annotations

import math

import numpy as np

from ... import tolerance as tol

__all__ = ["judge_dropout", "replayed", "binomial_two_sided", "rate_rejected", "count_rejected", "keep_rate",
           "Z_REJECT"]

Z_REJECT = 4.8916            # two-sided p = 1e-6 under the normal approximation of the binomial
P_REJECT = 1e-6
EXACT_BELOW = 25.0           # n p (1 - p) under which the binomial's tails are summed, not approximated


def binomial_two_sided(d: int, n: int, p: float) -> float:
    """The exact two-sided p-value of ``d`` successes in ``n`` Bernoulli(``p``) draws: 2 min(P(D <= d),
    P(D >= d)), at most 1 (each tail summed outward from ``d`` until its terms no longer count)."""
    if n == 0 or p <= 0.0 or p >= 1.0:
        return 1.0 if (d == 0 and p <= 0.0) or (d == n and p >= 1.0) or n == 0 else 0.0
    lp, lq = math.log(p), math.log1p(-p)

    def pmf(j: int) -> float:
        return math.exp(math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * lp + (n - j) * lq)

    def tail(step: int) -> float:
        total, j = 0.0, d
        while 0 <= j <= n:
            term = pmf(j)
            total += term
            if term < 1e-20 * total or (term == 0.0 and total > 0.0):
                break
            j += step
        return total
    return min(1.0, 2.0 * min(tail(-1), tail(+1)))


def replayed(data, keep: np.ndarray, p: float) -> np.ndarray:
    """(B, Hq, Sq, Dv): the case's output with the weights ``keep`` kept and scaled by 1 / (1 - p)."""
    s = data.spec
    v = np.repeat(data.v, s.Hq // s.Hkv, axis=1)                        # (B, Hq, Sk, Dv)
    return (data.weights * keep / (1.0 - p)) @ v


def keep_rate(data, keep: np.ndarray, p: float) -> tuple[int, int, float]:
    """``(kept, attended, z)`` over the weights the case attends on rows with a key."""
    attended = (data.weights > 0) & data.live[..., None]
    n, k = int(attended.sum()), int((keep & attended).sum())
    q = 1.0 - p
    z = (k - n * q) / math.sqrt(n * q * p) if n else 0.0
    return k, n, z


def rate_rejected(data, keep: np.ndarray, p: float) -> tuple[bool, str]:
    """``(rejected, how)``: whether the kept count over the attended weights is too rare for a keep probability of
    1 - p (two-sided, at 1e-6: the normal approximation where n p (1 - p) >= 25, the exact tails below)."""
    k, n, _ = keep_rate(data, keep, p)
    return count_rejected(k, n, p)


def count_rejected(k: int, n: int, p: float) -> tuple[bool, str]:
    """``(rejected, how)``: whether ``k`` kept of ``n`` is too rare for a keep probability of 1 - p."""
    if n * p * (1.0 - p) >= EXACT_BELOW:
        z = (k - n * (1.0 - p)) / math.sqrt(n * p * (1.0 - p))
        return abs(z) > Z_REJECT, f"z = {z:.1f}, two-sided p < 1e-6"
    pv = binomial_two_sided(n - k, n, p)
    return pv < P_REJECT, f"exact two-sided binomial p = {pv:.2g}"


def judge_dropout(data, got, n_terms: float) -> tuple[float, list[str]]:
    """``(ratio, problems)`` of an output returned with dropout and its pattern ``got.dropout_keep``."""
    s, p, keep = data.spec, got.dropout_p, got.dropout_keep
    if data.weights is None:
        return math.inf, ["dropout: this case has no oracle weights to replay the pattern on"]
    if keep.shape != data.weights.shape:
        return math.inf, [f"dropout: the pattern has shape {keep.shape}, expected {data.weights.shape}"]
    problems = []
    live = data.live
    want = replayed(data, keep, p)
    bound = tol.forward(s.dtype, n_terms, float(np.abs(data.v).max(initial=0.0)) / (1.0 - p))
    c = tol.compare(got.output[live], want[live], bound)
    ratio = c.max_ratio
    given = bool(getattr(got, "dropout_given", False))
    source = "the keep-mask it was given" if given else "the target's own pattern"
    if not c.ok:
        problems.append(f"output with dropout p={p:g}: {c.summary()} against the output replayed from {source} "
                        f"(kept weights scaled by 1/(1 - p))")
    if given:                                           # refimpl drew the mask: its rate is not the target's
        return ratio, problems
    k, n, _ = keep_rate(data, keep, p)
    rare, how = rate_rejected(data, keep, p)
    if rare:
        problems.append(f"dropout pattern: kept {k} of {n} attended weights ({k / n:.4f}), expected 1 - p = "
                        f"{1 - p:g} ({how})")
    return ratio, problems
