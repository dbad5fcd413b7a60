"""The backward models of kernel bookkeeping (refimpl.bugs_backward.kernel_backward: variants of bwd-delta-term,
bwd-tile-accumulation and bwd-low-precision) name the mistake a kernel was built with, and its parameter: NumPy
backward passes written here from the textbook (a forward that saves its LSE, delta = rowsum(dO * O), dK/dV per
key block, dQ in its own pass), each with one mistake at a block size or 16-bit format, run through the grad rows;
the run's diagnosis must name exactly one variant, the one with that very value, and the kernel without a mistake must
conform with no diagnosis."""
import math
import warnings

import numpy as np
import pytest

from refimpl.bugs_backward import kernel_backward
from refimpl.harness.cases import CheckRun, Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore
from refimpl.harness.rows.grad_cases import Backward, analyse_grad, grad_case
from refimpl.harness.target_spec import Target

STORE = CaseStore()
FAMILIES = ["sizes", "causal", "masked-rows"]
LOG2E = 1.4426950408889634


def _sum_to(x, shape):
    x = x.sum(axis=tuple(range(x.ndim - len(shape)))) if x.ndim > len(shape) else x
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    return x.sum(axis=axes, keepdims=True) if axes else x


def _round(x, fmt):
    """``x`` rounded to ``fmt`` ("float16" by NumPy's cast, "bfloat16" by clearing float32's low 16 bits, ties to
    even), as float64."""
    if fmt == "float16":
        return np.asarray(x).astype(np.float16).astype(np.float64)
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32).astype(np.float64)


def _kernel(q, k, v, d_out, mask=None, scale=None, *, mistake=None, block=32, fmt="float16"):
    """dK/dV per key block of ``block`` walking the query rows, dQ in a second pass over every key block, P rebuilt
    from the forward's LSE. ``mistake``: "no-softmax-grad" (dS = 0), "padded" (keys zero-padded to a multiple of
    ``block``, the pads kept), "start-m" (a key block's query loop in the dK/dV pass starts at the block's first
    key), "delta-accum" (delta summed channel by channel in a ``fmt`` register), "k-exp2" (P = exp2(q (K s log2
    e)^T - LSE2) with the pre-scaled K rounded to ``fmt``), "k-scaled" (P = exp(q (K s)^T - LSE), K s rounded)."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2], d_out.shape[:-2])
    qb, kb, vb, gb = (np.broadcast_to(a, lead + a.shape[-2:]).astype(np.float64) for a in (q, k, v, d_out))
    Sq, Sk, D = q.shape[-2], k.shape[-2], q.shape[-1]
    sc = 1.0 / math.sqrt(D) if scale is None else float(scale)
    keep = np.ones(lead + (Sq, Sk), bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), lead + (Sq, Sk))
    n = Sk
    if mistake == "padded":                                   # the pads: k = v = 0, kept for every query
        pad = (-Sk) % block
        kb, vb = (np.concatenate([a, np.zeros(lead + (pad, a.shape[-1]))], axis=-2) for a in (kb, vb))
        keep = np.concatenate([keep, np.ones(lead + (Sq, pad), bool)], axis=-1)
        n = Sk + pad
    s = np.where(keep, qb @ np.swapaxes(kb, -1, -2) * sc, -np.inf)    # (.., Sq, n)
    m = s.max(axis=-1, keepdims=True)
    alive = np.isfinite(m)
    m = np.where(alive, m, 0.0)
    lse = m + np.log(np.where(alive, np.exp(s - m).sum(axis=-1, keepdims=True), 1.0))
    o = np.where(alive, np.exp(s - lse) @ vb, 0.0)
    if mistake == "delta-accum":
        delta = np.zeros(o.shape[:-1])
        for c in range(o.shape[-1]):
            delta = _round(delta + gb[..., c] * o[..., c], fmt)
        delta = delta[..., None]
    else:
        delta = (gb * o).sum(axis=-1, keepdims=True)
    if mistake == "k-exp2":
        s2 = np.where(keep, qb @ np.swapaxes(_round(kb * (sc * LOG2E), fmt), -1, -2), -np.inf)
        p_all = np.where(alive, np.exp2(s2 - lse * LOG2E), 0.0)
    elif mistake == "k-scaled":
        s1 = np.where(keep, qb @ np.swapaxes(_round(kb * sc, fmt), -1, -2), -np.inf)
        p_all = np.where(alive, np.exp(s1 - lse), 0.0)
    else:
        p_all = np.where(alive, np.exp(s - lse), 0.0)
    ds_all = p_all * (gb @ np.swapaxes(vb, -1, -2) - delta)
    if mistake == "no-softmax-grad":
        ds_all = np.zeros_like(ds_all)
    dq, dk, dv = np.zeros(qb.shape), np.zeros(kb.shape), np.zeros(vb.shape)
    for j0 in range(0, n, block):
        cols = slice(j0, j0 + block)
        i0 = j0 if mistake == "start-m" else 0
        p, ds = p_all[..., i0:, cols], ds_all[..., i0:, cols]
        dv[..., cols, :] += np.swapaxes(p, -1, -2) @ gb[..., i0:, :]
        dk[..., cols, :] += np.swapaxes(ds, -1, -2) @ qb[..., i0:, :] * sc
    for j0 in range(0, n, block):
        cols = slice(j0, j0 + block)
        dq += ds_all[..., cols] @ kb[..., cols, :] * sc
    dk, dv = dk[..., :Sk, :], dv[..., :Sk, :]
    return tuple(_sum_to(g, a.shape).astype(a.dtype) for g, a in zip((dq, dk, dv), (q, k, v)))


def _lines(fn, dtype="float64"):
    """The grad rows' statuses and the run's diagnosis (the models fitted over every row's cases together, as
    ``refimpl check`` prints it: one row's cases may not pin a block size)."""
    target = Target("zoo:forward", lambda q, k, v, mask=None, scale=None: q)
    specs = select(FAMILIES, "quick", (dtype,))
    cases = [grad_case(f, [s for s in specs if s.family == f], STORE, Backward("kernel", fn)) for f in FAMILIES]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = {(c.id, target.name): c.run(target) for c in cases}
    run = CheckRun(cases, [target.name], results, {}, 0.0)
    analyse_grad(run)
    return [o.status for o in results.values()], run.diagnoses.get(target.name, [])


def _named(fn, model, label, dtype="float64"):
    """Some row fails, and the run's diagnosis is ``model`` with the one variant ``label`` (no other fits)."""
    statuses, lines = _lines(fn, dtype)
    assert Status.FAIL in statuses, statuses
    assert lines and all(x.split(": ", 1)[1].startswith(f"{model} — ") and x.endswith(f" ({label})")
                         for x in lines), lines


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_kernel_without_a_mistake_conforms_with_no_diagnosis(dtype):
    statuses, lines = _lines(lambda *a, **kw: _kernel(*a, **kw, block=16), dtype)
    assert set(statuses) == {Status.PASS} and not lines, lines


def test_a_softmax_that_passes_no_gradient_is_named():
    _named(lambda *a, **kw: _kernel(*a, **kw, mistake="no-softmax-grad"), "bwd-delta-term",
           "dS = 0: the softmax passes no gradient (dQ = dK = 0, dV right)")


@pytest.mark.parametrize("block", [16, 32])
def test_zero_padded_keys_kept_in_the_recompute_are_named_with_the_block(block):
    _named(lambda *a, **kw: _kernel(*a, **kw, mistake="padded", block=block), "bwd-tile-accumulation",
           f"keys zero-padded to a multiple of {block}, the pads kept in the recomputed LSE, O and P")


@pytest.mark.parametrize("block", [16, 64])
def test_a_dkdv_query_loop_started_at_the_key_block_is_named_with_the_block(block):
    _named(lambda *a, **kw: _kernel(*a, **kw, mistake="start-m", block=block), "bwd-tile-accumulation",
           f"dK/dV pass only: query loop of a key block of {block} starting at its first key (dQ right)")


@pytest.mark.parametrize("fmt", ["float16", "bfloat16"])
def test_delta_accumulated_in_a_16_bit_register_is_named_with_the_format(fmt):
    _named(lambda *a, **kw: _kernel(*a, **kw, mistake="delta-accum", fmt=fmt), "bwd-low-precision",
           f"rowsum(dO * O) accumulated in {fmt}: every partial sum rounded", "float32")


@pytest.mark.parametrize("fmt", ["float16", "bfloat16"])
def test_a_prescaled_k_rounded_to_16_bits_is_named_with_the_format(fmt):
    _named(lambda *a, **kw: _kernel(*a, **kw, mistake="k-exp2", fmt=fmt), "bwd-low-precision",
           f"K * scale * log2(e) rounded to {fmt} for an exp2 recompute against the exact LSE", "float32")


@pytest.mark.parametrize("fmt", ["float16", "bfloat16"])
def test_a_scaled_k_rounded_to_16_bits_is_named_with_the_format(fmt):
    _named(lambda *a, **kw: _kernel(*a, **kw, mistake="k-scaled", fmt=fmt), "bwd-low-precision",
           f"K * scale rounded to {fmt} for the recompute against the exact LSE", "float32")


def test_the_kernel_models_keep_shapes_and_reject_an_unknown_mistake():
    rng = np.random.default_rng(5)
    q, k, v = rng.normal(size=(1, 4, 37, 8)), rng.normal(size=(1, 2, 45, 8)), rng.normal(size=(1, 2, 45, 6))
    g = rng.normal(size=(1, 4, 37, 6))
    for mistake in ("softmax-no-grad", "padded-keys", "dkdv-from-key-block", "delta-accumulated", "k-operand-exp2",
                    "k-operand"):
        got = kernel_backward(q, k, v, g, mistake=mistake, enable_gqa=True)
        assert [a.shape for a in got] == [q.shape, k.shape, v.shape], mistake
    with pytest.raises(ValueError, match="mistake must be one of"):
        kernel_backward(q, k, v, g, mistake="typo", enable_gqa=True)
