"""Two models written after tests/heldout25's measure, each naming a kernel written here with its one mistake:
``softmax-exp-missing`` (the weights are the max-shifted scores over their sum, no exp) and ``bwd-grad-unwritten``'s
rows: dQ over a grid of Sq // block query blocks (its last Sq % block rows never written; dK, dV right), for two
blocks (refimpl/harness/verdicts/grad_unwritten.py)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from refimpl.harness.analysis.diagnosis import diagnose
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.target_spec import Target
from tests.support.quick_runs import backward_lines

STORE = CaseStore()


def _no_exp(q, k, v, mask=None, scale=None):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = (q @ np.swapaxes(k, -1, -2)) * (1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)
    keep = np.ones(s.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), s.shape)
    s = np.where(keep, s, -np.inf)
    m = s.max(-1, keepdims=True)
    w = np.where(keep, s - np.where(np.isfinite(m), m, 0.0), 0.0)        # the mistake: no exp
    z = w.sum(-1, keepdims=True)
    return (w / np.where(z == 0, 1.0, z)) @ v


def test_weights_normalised_without_the_exp_are_named_so():
    specs = {s.id: s for s in select(["sizes", "bool-mask", "causal"], "quick", ("float64",))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        results = [run_one(Target("k", _no_exp, api="refimpl"), s, STORE) for s in specs.values()]
    assert any(r.status == Status.FAIL for r in results)
    lines = diagnose(results, STORE, target="k", specs=specs)
    assert len(lines) == 1 and lines[0].startswith("diagnosis k: softmax-exp-missing — "), lines


def _dq_grid(block):
    def backward(q, k, v, d_out, mask=None, scale=None):
        q, k, v, g = (np.asarray(a, np.float64) for a in (q, k, v, d_out))
        s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        scores = s * (q @ np.swapaxes(k, -1, -2))
        if mask is not None:
            m = np.asarray(mask)
            scores = np.where(m, scores, -np.inf) if m.dtype == bool else scores + m
        top = scores.max(-1, keepdims=True)
        e = np.exp(scores - np.where(np.isfinite(top), top, 0.0))
        z = e.sum(-1, keepdims=True)
        p = e / np.where(z == 0, 1.0, z)
        ds = p * (g @ np.swapaxes(v, -1, -2) - np.sum(g * (p @ v), axis=-1, keepdims=True))
        dq = np.zeros_like(q)
        rows = q.shape[-2] // block * block                                # the mistake: the tail rows skipped
        dq[..., :rows, :] = (s * ds @ k)[..., :rows, :]
        dk, dv = s * np.swapaxes(ds, -1, -2) @ q, np.swapaxes(p, -1, -2) @ g
        return dq, dk.sum(-3, keepdims=True) if k.shape[-3] == 1 else dk, \
            dv.sum(-3, keepdims=True) if v.shape[-3] == 1 else dv
    return backward


@pytest.mark.parametrize("block", [16, 32])
def test_dq_over_a_grid_of_whole_query_blocks_is_named_with_the_block(block):
    statuses, lines = backward_lines(_dq_grid(block), ["sizes", "bool-mask", "causal"])
    assert Status.FAIL in statuses
    said = f"dq's last Sq % {block} rows returned as zeros on every failing case (a grid of Sq // {block} whole blocks"
    assert lines and all(": bwd-grad-unwritten — " in line for line in lines), lines   # a line per family: where
    assert any(said in line for line in lines), lines      # no failing case has a whole block, dq is all zeros there
    for line in lines:                                     # a family whose cases do not pin the block names each
        if "rows returned as zeros" in line:               # block they allow, the true one among them
            allowed = line.split("dq's last Sq % ")[1].split(" rows")[0].split(" or ")
            assert str(block) in allowed, line


def test_a_block_size_the_failing_cases_do_not_pin_is_not_chosen():
    """dQ over a grid of 32-row blocks on cases whose Sq % 32 < 16 (33, 40, 70 ...) is also dQ over 16-row blocks:
    both are said, none chosen."""
    from refimpl.harness.verdicts.grad_unwritten import unwritten_rows_line
    from types import SimpleNamespace

    def case(Sq):
        rng = np.random.default_rng(Sq)
        oracle = {"dq": rng.standard_normal((1, 1, Sq, 4)), "dk": rng.standard_normal((1, 1, 8, 4)),
                  "dv": rng.standard_normal((1, 1, 8, 4))}
        got = {n: a.copy() for n, a in oracle.items()}
        got["dq"][..., Sq // 32 * 32:, :] = 0.0
        return SimpleNamespace(oracle=oracle), SimpleNamespace(grads=got, allowed={"dq": 1e-9, "dk": 1e-9, "dv": 1e-9})

    def distance(a, b):
        return float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) if np.size(a) else 0.0
    lines = unwritten_rows_line("k", [case(33), case(40), case(70)], ("dq", "dk", "dv"), distance)
    assert lines and "dq's last Sq % 16 or 32 rows returned as zeros" in lines[0], lines
    lines = unwritten_rows_line("k", [case(33), case(50), case(70)], ("dq", "dk", "dv"), distance)   # 50 % 32 = 18
    assert lines and "dq's last Sq % 32 rows returned as zeros" in lines[0], lines
