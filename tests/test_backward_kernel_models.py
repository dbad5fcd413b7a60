"""The backward models of kernel bookkeeping (refimpl.bugs_backward.kernel_backward: variants of bwd-delta-term,
bwd-tile-accumulation and bwd-low-precision) name the mistake a kernel was built with, and its parameter: NumPy
backward passes written here from the textbook (a forward that saves its LSE, delta = rowsum(dO * O), dK/dV per
key block, dQ in its own pass), each with one mistake at a block size or 16-bit format, run through the grad rows;
the run's diagnosis must name exactly one variant, the one with that very value, and the kernel without a mistake must
conform with no diagnosis. A second kernel (:func:`_segments`: one (batch, head) slice at a time, dQ into a scratch
buffer, K/V in key chunks, a shared kv head broadcast) carries the bookkeeping mistakes of heldout10's backward set:
recomputed scores in 16 bits, delta over two layouts, a dQ stride of 0, stale ring K/V, MQA dK or dV not reduced."""
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


def _lines(fn, dtype="float64", families=FAMILIES):
    """The grad rows' statuses and the run's diagnosis (the models fitted over every row's cases together, as
    ``refimpl check`` prints it: one row's cases may not pin a block size)."""
    target = Target("zoo:forward", lambda q, k, v, mask=None, scale=None: q)
    specs = select(families, "quick", (dtype,))
    cases = [grad_case(f, [s for s in specs if s.family == f], STORE, Backward("kernel", fn)) for f in families]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = {(c.id, target.name): c.run(target) for c in cases}
    run = CheckRun(cases, [target.name], results, {}, 0.0)
    analyse_grad(run)
    return [o.status for o in results.values()], run.diagnoses.get(target.name, [])


def _named(fn, model, label, dtype="float64", families=FAMILIES):
    """Some row fails, and the run's diagnosis is ``model`` with the one variant ``label`` (no other fits)."""
    statuses, lines = _lines(fn, dtype, families)
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


def _segments(q, k, v, d_out, mask=None, scale=None, *, mistake=None, fmt="float16", layout="o-bshd", axes="batch-head",
              chunks=2, block=0):
    """The backward one (batch, head) slice at a time: k, v (B, 1 or H, Sk, X) broadcast against q's heads, dQ
    accumulated into a (B, H) scratch buffer, dK, dV per key chunk. ``mistake``: "scores16" (s q k^T rounded to
    ``fmt`` against the exact LSE; O and delta from that P), "delta-layout" (delta over flat rows, ``layout``
    "o-bshd": O in (B, S, H, Dv) against dO's (B, H, S, Dv), "do-bshd": the reverse), "dq-stride" (dQ slot of slice
    (b, h): 0 on ``axes`` "batch-head" (both) or "head"), "stale" (``chunks`` array_split key chunks, or
    key blocks of ``block`` when it is set, each recomputed with chunk 0's first keys), "dk-first" / "dv-first" (a
    shared kv head's dK or dV from query head 0 only)."""
    q, k, v, g = (np.asarray(a, np.float64) for a in (q, k, v, d_out))
    B, H, Sq, D = q.shape
    Sk, Dv = k.shape[-2], v.shape[-1]
    sc = 1.0 / math.sqrt(D) if scale is None else float(scale)
    keep = np.ones((B, H, Sq, Sk), bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), (B, H, Sq, Sk))
    kb, vb = np.broadcast_to(k, (B, H, Sk, D)), np.broadcast_to(v, (B, H, Sk, Dv))
    bounds = [(j, min(j + block, Sk)) for j in range(0, Sk, block)] if block else \
        [(c[0], c[-1] + 1) for c in np.array_split(np.arange(Sk), chunks) if c.size]
    stats = {}
    for b in range(B):                                      # the forward: O and the row LSE per slice
        for h in range(H):
            s = np.where(keep[b, h], q[b, h] @ kb[b, h].T * sc, -np.inf)
            m = s.max(axis=-1, keepdims=True)
            alive = np.isfinite(m)
            lse = np.where(alive, m, 0.0) + np.log(np.where(alive, np.exp(s - np.where(alive, m, 0.0)).sum(
                axis=-1, keepdims=True), 1.0))
            lse = np.where(alive, lse, np.inf)              # exp(s - inf) = 0 on rows with no key
            stats[b, h] = (s, lse, np.exp(s - lse) @ vb[b, h])
    o = np.stack([np.stack([stats[b, h][2] for h in range(H)]) for b in range(B)])     # (B, H, Sq, Dv)
    delta = (g * o).sum(axis=-1, keepdims=True)
    if mistake == "delta-layout":
        if layout == "o-bshd":
            rows = (np.swapaxes(o, 1, 2).reshape(-1, Dv) * g.reshape(-1, Dv)).sum(axis=-1)
            delta = np.swapaxes(rows.reshape(B, Sq, H), 1, 2)[..., None]
        else:
            delta = (o.reshape(-1, Dv) * np.swapaxes(g, 1, 2).reshape(-1, Dv)).sum(axis=-1).reshape(B, H, Sq, 1)
    dq_acc = np.zeros((B, H, Sq, D))
    dk_h, dv_h = np.zeros((B, H, Sk, D)), np.zeros((B, H, Sk, Dv))
    for b in range(B):
        for h in range(H):
            s, lse, _ = stats[b, h]
            if mistake == "scores16":
                s = np.where(keep[b, h], _round(q[b, h] @ kb[b, h].T * sc, fmt), -np.inf)
            p_all = np.exp(s - lse)
            dl = (g[b, h] * (p_all @ vb[b, h])).sum(axis=-1, keepdims=True) if mistake == "scores16" else delta[b, h]
            dq = np.zeros((Sq, D))
            for j0, j1 in bounds:
                kc, vc = kb[b, h, j0:j1], vb[b, h, j0:j1]
                if mistake == "stale":                      # the K/V saved at the first chunk
                    kc, vc = kb[b, h, :j1 - j0], vb[b, h, :j1 - j0]
                    p = np.exp(np.where(keep[b, h, :, j0:j1], q[b, h] @ kc.T * sc, -np.inf) - lse)
                else:
                    p = p_all[:, j0:j1]
                ds = p * (g[b, h] @ vc.T - dl)
                dq += ds @ kc * sc
                dk_h[b, h, j0:j1] = ds.T @ q[b, h] * sc
                dv_h[b, h, j0:j1] = p.T @ g[b, h]
            slot = {"batch-head": (0, 0), "head": (b, 0)}[axes] if mistake == "dq-stride" else (b, h)
            dq_acc[slot] += dq
    shared = k.shape[1] == 1 < H
    dk = dk_h[:, :1] if shared and mistake == "dk-first" else _sum_to(dk_h, k.shape)
    dv = dv_h[:, :1] if shared and mistake == "dv-first" else _sum_to(dv_h, v.shape)
    return dq_acc.astype(q.dtype), dk, dv


def _seg(**kw):
    return lambda *a, **call: _segments(*a, **call, **kw)


def test_the_segment_kernel_without_a_mistake_conforms_with_no_diagnosis():
    statuses, lines = _lines(_seg(), "float64", ["batched-heads", "gqa", "masked-rows"])
    assert set(statuses) - {Status.NA} == {Status.PASS} and not lines, lines


@pytest.mark.parametrize("fmt", ["float16", "bfloat16"])
def test_recomputed_scores_rounded_to_16_bits_are_named_with_the_format(fmt):
    _named(_seg(mistake="scores16", fmt=fmt), "bwd-low-precision",
           f"scale * q k^T rounded to {fmt} in the recompute against the exact LSE (O, delta from that P)", "float32")


@pytest.mark.parametrize("layout, o_rows, do_rows", [("o-bshd", "(B, S, H)", "(B, H, S)"),
                                                     ("do-bshd", "(B, H, S)", "(B, S, H)")])
def test_delta_over_rows_of_two_layouts_is_named_with_the_layout(layout, o_rows, do_rows):
    _named(_seg(mistake="delta-layout", layout=layout), "bwd-delta-term",
           f"rowsum(dO * O) over flat rows, O's in {o_rows} order against dO's in {do_rows}",
           families=["batched-heads", "sizes", "causal"])


@pytest.mark.parametrize("axes, stride, where", [
    ("batch-head", "(batch, head)", "every slice's dQ summed into slice (0, 0)"),
    ("head", "head", "each batch's dQ summed into head 0")])
def test_a_dq_accumulator_stride_of_zero_is_named_with_the_axes(axes, stride, where):
    _named(_seg(mistake="dq-stride", axes=axes), "bwd-tile-accumulation",
           f"dQ accumulated with a {stride} stride of 0: {where}, the others zero (dK, dV right)",
           families=["batched-heads", "padding", "sizes"])


@pytest.mark.parametrize("chunks", [2, 4])
def test_ring_chunks_recomputed_with_stale_kv_are_named_with_the_chunk_count(chunks):
    _named(_seg(mistake="stale", chunks=chunks), "bwd-tile-accumulation",
           f"ring of {chunks} key chunks, each recomputed with chunk 0's K and V (stale saved tensors)")


@pytest.mark.parametrize("block", [16, 32])
def test_key_blocks_recomputed_with_stale_kv_are_named_with_the_block(block):
    _named(_seg(mistake="stale", block=block), "bwd-tile-accumulation",
           f"every key block of {block} recomputed with block 0's K and V")


@pytest.mark.parametrize("mistake, label", [("dk-first", "dK from the first head of each group, dV summed"),
                                            ("dv-first", "dV from the first head of each group, dK summed")])
def test_a_shared_kv_head_gradient_from_one_query_head_is_named_with_the_gradient(mistake, label):
    _named(_seg(mistake=mistake), "bwd-gqa-sum", label, families=["gqa", "sizes"])


def test_the_bookkeeping_models_keep_shapes():
    rng = np.random.default_rng(7)
    q, k, v = rng.normal(size=(2, 4, 9, 8)), rng.normal(size=(2, 2, 21, 8)), rng.normal(size=(2, 2, 21, 6))
    g = rng.normal(size=(2, 4, 9, 6))
    for mistake, kw in (("scores-16bit", {}), ("delta-rows-layout", {"layout": "do-bshd"}),
                        ("dq-one-slot", {"layout": "head"}), ("stale-kv", {"chunks": 3}), ("stale-kv", {"block": 16}),
                        ("dk-first-head", {}), ("dv-first-head", {})):
        got = kernel_backward(q, k, v, g, mistake=mistake, enable_gqa=True, **kw)
        assert [a.shape for a in got] == [q.shape, k.shape, v.shape], mistake
