"""Three models written after tests/heldout24's measure, each naming a kernel written here with its one mistake:

* ``mask-rank``: a mask of lower rank than the scores brought to their rank with ``mask[:, None]`` (new axes after
  its first, not in front). Through the refimpl API the causal band arrives as an (Sq, Sk) mask, which becomes
  (Sq, 1, 1, Sk): every failing case returns an output of another shape, (Sq, Hq, Sq, Dv), and the model that
  returns that shape with those values is named (not only the shape's formula);
* ``padded-tail`` with the pads' -inf sentinel softcapped to -cap: key tiles of 64, the partial tile's pads kept
  at score -cap (value 0) where a softcap is given;
* ``bwd-delta-term`` with delta's sign flipped: dS = P * (dP + rowsum(dO * O)).
"""
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


def _lines(fn, api, families):
    specs = {s.id: s for s in select(families, "quick", ("float64",)) if not s.long}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        results = [run_one(Target("k", fn, api=api), s, STORE) for s in specs.values()]
    assert any(r.status == Status.FAIL for r in results)
    return diagnose(results, STORE, target="k", specs=specs)


def _softmax_rows(s):
    m = s.max(-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
    z = e.sum(-1, keepdims=True)
    return e / np.where(z == 0, 1.0, z)


def _promoting(q, k, v, mask=None, scale=None):
    """Plain attention whose bool mask is brought to the scores' rank with keep[:, None] (the mistake)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = (q @ np.swapaxes(k, -1, -2)) * (1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)
    if mask is not None:
        keep = np.asarray(mask, bool)
        while keep.ndim < s.ndim:
            keep = keep[:, None]
        s = np.where(keep, s, -np.inf)
    return _softmax_rows(s) @ v


def test_a_mask_promoted_with_its_new_axes_after_the_first_is_named_by_the_shape_it_returns():
    lines = _lines(_promoting, "refimpl", ["causal"])
    assert len(lines) == 1 and lines[0].startswith("diagnosis k: mask-rank — "), lines
    assert "every failing case returned another shape; the model returns it, values and all" in lines[0], lines


def _capped_pads(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                 alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """flash-attn layout (B, S, H, D); keys padded to tiles of 64 with zeros, the pads' scores set to -inf and then
    softcapped (the mistake: -cap, attended); ALiBi and the causal band (bottom-right) over the padded keys, as a
    kernel computing them from the key index does; no window (the family below has none)."""
    import torch
    qh, kh, vh = (t.transpose(1, 2).double() for t in (q, k, v))
    sq, sk = qh.shape[-2], kh.shape[-2]
    pad = (-sk) % TILE["n"]
    kh = torch.cat([kh, kh.new_zeros(*kh.shape[:-2], pad, kh.shape[-1])], -2)
    vh = torch.cat([vh, vh.new_zeros(*vh.shape[:-2], pad, vh.shape[-1])], -2)
    s = qh @ kh.transpose(-2, -1) * (qh.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale)
    j = torch.arange(sk + pad)
    s = torch.where(j < sk, s, torch.tensor(float("-inf"), dtype=s.dtype))
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    i = torch.arange(sq)[:, None] + (sk - sq)                               # bottom-right positions
    if alibi_slopes is not None:
        slopes = alibi_slopes.double()
        slopes = slopes[None, :, None, None] if slopes.dim() == 1 else slopes[:, :, None, None]
        s = s - slopes * (i - j).abs()
    if causal:
        s = s.masked_fill(j > i, float("-inf"))
    return (torch.softmax(s, -1).nan_to_num(0.0) @ vh).transpose(1, 2).to(q.dtype)


TILE = {"n": 64}            # the tile the kernel above pads to (set by the test)


@pytest.mark.parametrize("tile", [16, 32, 64, 128])
def test_pads_whose_minus_inf_is_softcapped_are_named_with_their_tile(tile, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setitem(TILE, "n", tile)
    lines = _lines(_capped_pads, "flash-attn", ["softcap"])
    assert len(lines) == 1 and lines[0].startswith("diagnosis k: padded-tail — "), lines
    assert f"blocks of {tile}, the pads inside the causal band and window, ALiBi on them too, their -inf softcapped " \
           "to -cap" in lines[0], lines


def _delta_negated(q, k, v, d_out, mask=None, scale=None):
    """The textbook backward with dS = P * (dP + delta) (the mistake)."""
    q, k, v, g = (np.asarray(a, np.float64) for a in (q, k, v, d_out))
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = s * (q @ np.swapaxes(k, -1, -2))
    if mask is not None:
        m = np.asarray(mask)
        scores = np.where(m, scores, -np.inf) if m.dtype == bool else scores + m
    p = _softmax_rows(scores)
    o = p @ v
    dp = g @ np.swapaxes(v, -1, -2)
    ds = p * (dp + np.sum(g * o, axis=-1, keepdims=True))
    dk, dv = s * np.swapaxes(ds, -1, -2) @ q, np.swapaxes(p, -1, -2) @ g
    return s * ds @ k, dk.sum(-3, keepdims=True) if k.shape[-3] == 1 else dk, \
        dv.sum(-3, keepdims=True) if v.shape[-3] == 1 else dv


def test_a_backward_with_delta_added_is_named_with_the_sign():
    statuses, lines = backward_lines(_delta_negated, ["sizes", "bool-mask", "causal"])
    assert Status.FAIL in statuses
    assert lines and all(": bwd-delta-term — " in line and "the rowsum(dO * O) term's sign flipped" in line
                         for line in lines), lines


def test_a_model_giving_the_other_shape_is_named_when_a_later_variant_of_it_does_not(monkeypatch):
    """The other-shape fit is held per model: a variant after the fitting one that does not fit leaves it named."""
    from refimpl import bugs
    from refimpl.bug_model import BugModel, Variant, _named
    from refimpl.bugs_mask_use import mask_promoted
    row = bugs.MODELS["mask-rank"]
    two = BugModel(row.name, row.explanation, row.variants + (
        Variant("new axes after the mask's second axis", _named(mask_promoted, at=2), flags=True),))
    monkeypatch.setitem(bugs.MODELS, "mask-rank", two)
    lines = _lines(_promoting, "refimpl", ["causal"])
    assert len(lines) == 1 and lines[0].startswith("diagnosis k: mask-rank — "), lines
