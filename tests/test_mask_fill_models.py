"""Two bug models of masked keys given a finite value (refimpl.bugs' table, docs/diagnosis.md), checked against the
arithmetic written out here: a bool keep-mask read inverted and filled with -finfo.max (``mask-polarity``), and a
mask applied as an additive -1e10 * (1 - mask), the BERT idiom (``finite-mask-fill``)."""
import numpy as np

from refimpl.bugs import MODELS
from refimpl.bugs_mask_use import mask_inverted_filled

RNG = np.random.default_rng(7)
Q, K, V = RNG.standard_normal((1, 1, 4, 8)), RNG.standard_normal((1, 1, 6, 8)), RNG.standard_normal((1, 1, 6, 5))
MASK = np.array([[True] * 6, [False] * 6, [True, False, True, False, False, True],
                 [False, False, False, False, False, True]])


def _softmax_over(keys: np.ndarray, row: int) -> np.ndarray:
    """Row `row` of softmax(q k^T / sqrt(D)) over the keys `keys` only, times V."""
    s = (Q[0, 0, row] @ K[0, 0].T) / np.sqrt(8)
    w = np.where(keys, np.exp(s - s[keys].max()), 0.0)
    return (w / w.sum()) @ V[0, 0]


def _variant(model: str, label_start: str):
    hits = [v for v in MODELS[model].variants if v.label.startswith(label_start)]
    assert len(hits) == 1, [v.label for v in MODELS[model].variants]
    return hits[0].fn


def test_an_inverted_mask_with_a_finite_fill_is_uniform_where_kept_whole_and_zero_where_kept_nothing_of():
    out = mask_inverted_filled(Q, K, V, mask=MASK)[0, 0]
    np.testing.assert_allclose(out[0], V[0, 0].mean(axis=0), rtol=0, atol=1e-12)     # every key filled alike
    np.testing.assert_array_equal(out[1], np.zeros(5))                                # the user keeps no key
    np.testing.assert_allclose(out[2], _softmax_over(~MASK[2], 2), rtol=0, atol=1e-12)
    np.testing.assert_allclose(out[3], _softmax_over(~MASK[3], 3), rtol=0, atol=1e-12)


def test_the_inverted_finite_fill_is_a_mask_polarity_variant_and_leaves_a_float_mask_alone():
    fn = _variant("mask-polarity", "True = masked, filled with a finite")
    np.testing.assert_allclose(fn(Q, K, V, mask=MASK), mask_inverted_filled(Q, K, V, mask=MASK), rtol=0, atol=0)
    bias = np.where(MASK, 0.0, -np.inf)
    rows = [_softmax_over(MASK[i], i) for i in (0, 2, 3)]
    out = fn(Q, K, V, mask=bias)[0, 0]
    np.testing.assert_allclose(out[[0, 2, 3]], np.stack(rows), rtol=0, atol=1e-12)


def test_an_additive_minus_1e10_mask_attends_every_key_on_a_row_with_no_key():
    fn = _variant("finite-mask-fill", "an additive -1e10")
    out = fn(Q, K, V, mask=MASK)[0, 0]
    np.testing.assert_allclose(out[1], _softmax_over(np.ones(6, bool), 1), rtol=1e-5, atol=0)   # scores kept
    assert not np.allclose(out[1], V[0, 0].mean(axis=0), atol=1e-3)                      # not the uniform fill
    for i in (0, 2, 3):                                                                  # masked keys ~ e^-1e10
        np.testing.assert_allclose(out[i], _softmax_over(MASK[i], i), rtol=0, atol=1e-12)
