"""The operand models (refimpl/bugs_operands.py) name kernels written here with one mistake each, and their variant
says the parameter the kernel was built with: which operand was read for which, how many channels of the head
dimension the scores kept (16, 32), which key block the key loop bounded by Sq rounds to (1, 16, 32).

The kernels are NumPy attention written out here (scores, mask, band, softmax, values) with the one mistake; the
run is the quick suite's float64 cases as the CLI runs them, the diagnosis as the CLI prints it."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from refimpl.bugs_operands import channels_truncated, keys_bounded_by_queries, operand_swapped
from refimpl.harness.analysis.diagnosis import diagnose
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.target_spec import Target

STORE = CaseStore()


def _attend(q, k, v, mask, scale, channels=None, keys=None, swap=None):
    """softmax(scale * q k^T + mask) v over (B, H, S, D) with one mistake: ``swap`` (the keys <- queries, the values
    <- keys), the scores over the first ``channels`` channels, only the first ``keys`` keys visited."""
    group = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if swap == "k<-q":
        k = q if q.shape[-2] == k.shape[-2] else np.repeat(q, k.shape[-2], axis=-2)
    elif swap == "v<-k":
        v = k
    c = q.shape[-1] if channels is None else channels
    s = sc * (q[..., :c] @ np.swapaxes(k[..., :c], -1, -2))               # (B, H, Sq, Sk)
    keep = np.ones(s.shape, bool)
    if mask is not None:
        if mask.dtype == bool:
            keep = keep & mask
        else:
            keep = keep & np.isfinite(mask)
            s = s + np.where(np.isfinite(mask), mask, 0.0)
    if keys is not None:
        keep = keep & (np.arange(s.shape[-1]) < keys(s.shape[-2], s.shape[-1]))
    s = np.where(keep, s, -np.inf)
    m = s.max(-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
    z = e.sum(-1, keepdims=True)
    return (e / np.where(z == 0, 1.0, z)) @ v


def _kernel(**mistake):
    def attn(q, k, v, mask=None, scale=None):                             # the refimpl API (the band in its mask)
        return _attend(np.asarray(q), np.asarray(k), np.asarray(v), None if mask is None else np.asarray(mask),
                       scale, **mistake)
    return attn


def _diagnosis(fn):
    specs = {s.id: s for s in select(None, "quick", ("float64",)) if not s.long}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        results = [run_one(Target("k", fn, api="refimpl"), s, STORE) for s in specs.values()]
    assert any(r.status == Status.FAIL for r in results)
    lines = diagnose(results, STORE, target="k", specs=specs)
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("swap,variant", [("k<-q", "the keys are the queries (S = Q Q^T)"),
                                          ("v<-k", "the values are the keys (O = P K)")])
def test_an_operand_read_for_another_is_named_with_the_operands(swap, variant):
    line = _diagnosis(_kernel(swap=swap))
    assert line.startswith("diagnosis k: operand-swapped — ") and f"({variant})" in line, line


@pytest.mark.parametrize("channels", [16, 32])
def test_scores_over_the_first_channels_are_named_with_the_channel_count(channels):
    line = _diagnosis(_kernel(channels=channels))
    assert line.startswith("diagnosis k: channels-truncated — ") and f"the first {channels} of D" in line, line


@pytest.mark.parametrize("block", [1, 16, 32, 64, 128])
def test_a_key_loop_bounded_by_the_query_length_is_named_with_its_key_block(block):
    line = _diagnosis(_kernel(keys=lambda Sq, Sk: -(-Sq // block) * block))
    said = "keys j >= Sq never visited" if block == 1 else f"key blocks of {block})"
    assert line.startswith("diagnosis k: keys-bounded-by-queries — ") and said in line, line


def test_each_model_is_the_right_output_where_its_mistake_cannot_bite():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((1, 2, 5, 16)), rng.standard_normal((1, 2, 5, 16)), rng.standard_normal((1, 2, 5, 8))
    right = _attend(q, k, v, None, None)
    assert np.allclose(channels_truncated(q, k, v, channels=16), right)           # D = 16: every channel kept
    assert np.allclose(keys_bounded_by_queries(q, k, v, block=1), right)          # Sk = Sq: every key visited
    assert not np.allclose(channels_truncated(q, k, v, channels=8), right)
    with pytest.raises(ValueError):                                              # D != Dv: no value can be a key
        operand_swapped(q, k, v, swap=("k", "v"))
    assert operand_swapped(q, k, v, swap=("v", "k")).shape == (1, 2, 5, 16)     # the keys as values: D wide


def _staged_rows(width):
    """The refimpl API: Q copied flat into a scratch of rows ``width`` wide (the mistake), then plain attention."""
    def attn(q, k, v, mask=None, scale=None):
        q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
        D = q.shape[-1]
        if D > width:
            raise ValueError("the scratch is too narrow")
        flat = np.zeros(q.size // D * width)
        flat[:q.size] = q.reshape(-1)
        return _attend(flat.reshape(-1, width)[:, :D].reshape(q.shape), k, v,
                       None if mask is None else np.asarray(mask), scale)
    return attn


@pytest.mark.parametrize("width", [32, 64])
def test_queries_read_with_another_row_stride_are_named_with_the_stride(width):
    line = _diagnosis(_staged_rows(width))
    assert line.startswith("diagnosis k: query-row-stride — ") and f"rows of {width} (D <= {width})" in line, line
