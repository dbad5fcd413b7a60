"""The tolerance model's rules 3 and 4 for the backward pass (:mod:`refimpl.backward`): the gradient bound
and the FlashAttention budget for gradients. The constants and the forward rules they build on are
:mod:`refimpl.tolerance`'s; this module only adds what gradients need.
"""
from __future__ import annotations

import math

import numpy as np

from .tolerance import K_FORWARD, QUANTUM_ULPS, Tolerance, eps

__all__ = ["K_GRAD_BUDGET", "sdpa_grad_terms", "gradient_for_sdpa", "gradient_within_budget"]


# === gradients (rules 3 and 4 for the backward pass, refimpl.backward) ==========================
#
# Rule 3 for gradients. With u = eps(dtype), z = 2*s*D*max|q|*max|k| + 2*max|finite additive| (the
# softmax's relative error per u: the rounding of the scores, which a softcap does not reduce since
# tanh' <= 1 passes it on near 0, and the exponent's argument), G = max_i ||dO_i|| * max_j ||v_j||
# (Euclidean row norms; Cauchy-Schwarz bounds |dP| and |rowsum(dO*O)| by it), and
# n = z + Sk + 2*Dv + D + 6 the orders of the steps before dS:
#   dS    (= dbias)  |error| <= u * n * 2G                  (P has relative error <= u*z, rows sum to 1)
#   dQ = s dR K      |error| <= u * (n + Sk) * s*max|k| * 2G            (a row of |dS| sums to <= 2G)
#   dK = s dR^T Q    |error| <= u * (n + Sq) * Sq * s*max|q| * 2G       (a column of P sums to <= Sq)
#   dV = P^T dO      |error| <= u * (z + Sk + Sq) * Sq * max|dO|
# A softcap's slope 1 - tanh^2(R/cap) is off by <= 0.77 * (error of R) / cap, which adds
# s*D*max|q|*max|k| / cap to n (and the rounding of tanh, D + 4). A gradient summed over c
# broadcast copies (GQA groups, broadcast batch axes) has c times the magnitude and c more terms.
# Each bound is multiplied by K_FORWARD like rule 3 (two evaluations, each within it).
#
# Rule 4 for gradients: K_GRAD_BUDGET = 4 (the forward's K_BUDGET is 2). A gradient reorders more
# than the forward does: dK and dV sum over the queries as well, and FlashAttention-2 recomputes
# P = exp(Z - L) from the rounded log-sum-exp L, whose absolute rounding u*|L| becomes a relative error
# of every weight. Measured on 24 float32 cases (S 32-256, D 16/64, magnitudes 0.5-3, causal or not),
# the online backward's max error was 0.2-3.0x the naive float32 backward's (median 1.0-1.2 per
# gradient), hence 4. The rounding floor is the forward's quantum with the gradient's n_terms as
# conditioning.

K_GRAD_BUDGET = 4.0  # FlashAttention rule for gradients: error <= K_GRAD_BUDGET x reference error + quantum


def _max_row_norm(a: np.ndarray) -> float:
    """``max_i ||a_i||`` over the rows (last axis), scaled by max|a| so that it neither under- nor overflows."""
    m = float(np.abs(a).max())
    return 0.0 if m == 0 else m * float(np.sqrt(np.square(a / m).sum(axis=-1)).max())


def sdpa_grad_terms(q, k, v, d_out, scale: float | None = None, *, softcap: float | None = None,
                    additive=None, bias_shape: tuple[int, ...] | None = None) -> dict[str, tuple[float, ...]]:
    """``{"dq" | "dk" | "dv" | "dbias": (n_terms, magnitude, gain)}`` of the gradient bound above;
    ``gain`` carries an absolute error of dS (or of P, for dv) to the gradient (for the underflow floor).

    ``softcap``: the cap, if any; ``additive``: the float mask and/or bias (only its largest finite
    magnitude is used); ``bias_shape``: the shape dbias is summed to (adds the "dbias" entry). Under
    GQA, k and v have fewer heads than ``d_out``: the group size counts as broadcast copies. Scores
    beyond the dtype's range make the bound vacuous (n_terms capped at 1e30): near-ties there are
    decided by rounding, so two correct evaluations may differ completely.
    """
    q, k, v, g = (np.asarray(a, dtype=np.float64) for a in (q, k, v, d_out))
    d, n_k, d_v, n_q = q.shape[-1], k.shape[-2], v.shape[-1], q.shape[-2]
    s = 1.0 / math.sqrt(d) if scale is None else float(scale)
    mq, mk, mg = (float(np.abs(a).max()) for a in (q, k, g))
    with np.errstate(over="ignore"):
        logits = min(s * d * mq * mk, 1e30)
        if additive is not None:
            a = np.asarray(additive, dtype=np.float64)
            fin = np.abs(a[np.isfinite(a)])
            logits += float(fin.max()) if fin.size else 0.0
        z = min(2.0 * logits, 1e30)
        big_g = _max_row_norm(g) * _max_row_norm(v)
        capped = 0.0 if softcap is None else min(s * d * mq * mk / float(softcap), 1e30)
        n = z + n_k + 2 * d_v + d + 6 + capped
    n_batch = math.prod(g.shape[:-2])

    def copies(shape) -> float:
        return n_batch / math.prod(shape[:-2])

    c_q, c_k, c_v = copies(q.shape), copies(k.shape), copies(v.shape)
    gain = {"dq": c_q * s * mk, "dk": c_k * n_q * s * mq, "dv": c_v * n_q}
    terms: dict[str, tuple[float, ...]] = {
        "dq": (n + n_k + c_q, gain["dq"] * 2 * big_g, gain["dq"]),
        "dk": (n + n_q + c_k, gain["dk"] * 2 * big_g, gain["dk"]),
        "dv": (z + n_k + n_q + c_v, gain["dv"] * mg, gain["dv"])}
    if bias_shape is not None:
        c_b = n_batch * n_q * n_k / max(math.prod(bias_shape), 1)
        terms["dbias"] = (n + c_b, c_b * 2 * big_g, c_b)
    return terms


def gradient_for_sdpa(q, k, v, d_out, scale: float | None = None, dtype=None, *, softcap: float | None = None,
                      additive=None, bias_shape: tuple[int, ...] | None = None) -> dict[str, Tolerance]:
    """Rule 3 for the gradients of ``sum(d_out * sdpa(q, k, v))``: one :class:`Tolerance` per gradient
    ("dq", "dk", "dv", and "dbias" when ``bias_shape`` is given). ``dtype``: the lower precision of the
    two evaluations compared (default: that of q, k, v). Underflow floor: each of the n_terms steps may
    lose up to the smallest subnormal absolutely, carried to the gradient by its ``gain``."""
    dtype = dtype or np.result_type(*(np.asarray(a) for a in (q, k, v)))
    tiny = float(np.finfo(np.dtype(dtype)).smallest_subnormal)
    terms = sdpa_grad_terms(q, k, v, d_out, scale, softcap=softcap, additive=additive, bias_shape=bias_shape)
    return {name: Tolerance(K_FORWARD * n * (eps(dtype) * mag + tiny * max(1.0, gain)), 0.0,
                            f"gradient bound ({name}) {K_FORWARD:g}*eps({np.dtype(dtype).name})*{n:.3g}*{mag:.3g}")
            for name, (n, mag, gain) in terms.items()}


def gradient_within_budget(test, reference, oracle, dtype, conditioning: float = 0.0) -> tuple[bool, float, float]:
    """Rule 4 for one gradient: ``max|test - oracle| <= K_GRAD_BUDGET * max|reference - oracle| + quantum``,
    quantum ``QUANTUM_ULPS * eps * (1 + conditioning) * max|oracle|`` (``conditioning``: the gradient's
    n_terms from :func:`sdpa_grad_terms`). Returns ``(ok, test_error, allowed)``."""
    o = np.asarray(oracle, dtype=np.float64)
    err_t = float(np.abs(np.asarray(test, np.float64) - o).max())
    err_r = float(np.abs(np.asarray(reference, np.float64) - o).max())
    allowed = K_GRAD_BUDGET * err_r + QUANTUM_ULPS * eps(dtype) * (1.0 + conditioning) * float(np.abs(o).max())
    return err_t <= allowed, err_t, allowed
