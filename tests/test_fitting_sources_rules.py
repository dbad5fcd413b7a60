"""Which batch's keys and values, or mask, each batch reads (refimpl/harness/analysis/fitting_sources.py), on
hand-made cases: a kernel's output written here batch by batch from another batch's K/V or mask, the fit's map and
its rule, the failing cases that refute it, the dead-row convention and its bound, the passing cases that decide
when it applies and the size threshold (tests/test_fitted_forms.py runs the same fit on kernels through the quick
suite)."""
import math
from types import SimpleNamespace

import numpy as np

from refimpl.harness.analysis.conditions import Seen, condition
from refimpl.harness.analysis.fitting_sources import _threshold, sources_line

KV = ("diagnosis k: kv-batch — a batch reads another batch's keys and values (a batch stride or offset missing): "
      "fitted, ")
MASK = "diagnosis k: mask-broadcast — a per-batch mask is read from the wrong batch: fitted, "


def _attend(q, k, v, keep=None):
    """softmax(q k^T / sqrt(D), over the keys ``keep`` keeps) v for one batch (H, S, D); a row with no key: zeros."""
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for h in range(q.shape[0]):
        for i in range(q.shape[1]):
            row = s[h, i]
            if np.isfinite(row).any():
                w = np.exp(row - row[np.isfinite(row)].max())
                out[h, i] = (w / w.sum()) @ v[h]
    return out


def _case(reads, *, what="kv", mask=None, B=None, Sq=3, Sk=4, seed=0, features=None, live=None, v_max=None):
    """(data, got): batch b of the kernel's output reads batch ``reads[b]``'s K and V (``what`` "kv") or mask
    ("mask"; ``mask`` (B, 1, Sq, Sk) bool, None: no mask), every other input its own; a row with no key gets zeros.
    ``live``: the judged rows (B, H, Sq), by default the rows with a key under the batch's own mask."""
    B = len(reads) if B is None else B
    H, D = 2, 3
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((B, H, n, D)) for n in (Sq, Sk, Sk))
    if v_max is not None:                                 # max |v| exactly v_max
        v = v / np.abs(v).max() * v_max

    def keep(b):
        return None if mask is None else mask[b, 0]

    expected = np.stack([_attend(q[b], k[b], v[b], keep(b)) for b in range(B)])
    got = np.stack([_attend(q[b], k[c], v[c], keep(b)) if what == "kv" else _attend(q[b], k[b], v[b], keep(c))
                    for b, c in enumerate(reads)])
    if live is None:
        live = np.ones((B, H, Sq), bool) if mask is None else np.broadcast_to(mask.any(-1), (B, H, Sq)).copy()
    feats = dict(features or {})
    spec = SimpleNamespace(id=f"c{seed}", B=B, Sq=Sq, Sk=Sk, features=lambda: dict(feats))
    data = SimpleNamespace(spec=spec, q=q, k=k, v=v, expected=expected, live=live, mask_given=None,
                           reference_kwargs=lambda: dict(mask=mask))
    return data, got


def _close(a, b, v):                                      # the diagnosis's closeness: shapes equal, then allclose
    return np.shape(a) == np.shape(b) and np.allclose(a, b, rtol=1e-9, atol=1e-12)


def _changes(out, data):
    live = np.broadcast_to(data.live, data.expected.shape[:-1])
    return not _close(np.asarray(out)[live], data.expected[live], data.v)


def _sources(fail, passing=()):
    return sources_line("k", list(fail), list(passing), _close, _changes, condition, Seen)


def _mask(B=2, Sq=3, Sk=4):
    """(B, 1, Sq, Sk) bool: row i of batch b keeps keys (b + i) and (b + i + 2) mod Sk, so every row has a key and
    two batches' rows share none."""
    m = np.zeros((B, 1, Sq, Sk), bool)
    for b in range(B):
        for i in range(Sq):
            m[b, 0, i, (b + i) % Sk] = m[b, 0, i, (b + i + 2) % Sk] = True
    return m


# --- the map and its rule -----------------------------------------------------------------------------------

def test_every_batch_reading_batch_0s_keys_and_values_is_named():
    assert _sources([_case((0, 0, 0))]) == [KV + "every batch reads batch 0's keys and values"]


def test_batches_reading_each_others_keys_and_values_give_the_map_of_their_batch_count():
    assert _sources([_case((1, 0)), _case((1, 0), seed=1)]) == [
        KV + "B=2: batches 0..1 read those of batches 1 0 keys and values"]


def test_the_line_prints_the_maps_of_the_first_three_batch_counts_only():
    fail = [_case(tuple(range(B))[::-1], seed=B) for B in (5, 2, 4, 3)]        # batch b reads batch B - 1 - b
    assert _sources(fail) == [KV + "B=2: batches 0..1 read those of batches 1 0; B=3: batches 0..2 read those of "
                              "batches 2 1 0; B=4: batches 0..3 read those of batches 3 2 1 0 keys and values"]


def test_failing_cases_of_one_batch_count_that_disagree_on_a_batchs_source_refute_the_map():
    swapped, to_0 = _case((1, 0)), _case((0, 0), seed=1)       # batch 0 reads batch 1's, then its own
    assert _sources([swapped]) != [] and _sources([to_0]) != []
    assert _sources([swapped, to_0]) == []


def test_a_mask_read_from_batch_0_is_named_mask_broadcast():
    assert _sources([_case((0, 0), what="mask", mask=_mask())]) == [MASK + "every batch reads batch 0's masks"]


def test_a_batch_no_source_explains_refutes_the_fit_though_another_reads_batch_0s():
    data, got = _case((0, 0))                             # batch 1 reads batch 0's K/V ...
    got[0] += 0.5                                         # ... and no batch's K/V give batch 0's output
    assert _sources([(data, got)]) == []


def test_a_batch_with_no_judged_row_reads_its_own_in_the_map():
    live = np.ones((3, 2, 3), bool)
    live[2] = False
    data, got = _case((1, 0, 0), live=live)              # batch 2's rows are not judged: any source explains them
    assert _sources([(data, got)]) == [KV + "B=3: batches 0..2 read those of batches 1 0 2 keys and values"]


def test_a_failing_case_no_source_explains_refutes_the_map_of_the_others():
    data, got = _case((0, 0), seed=1)
    assert _sources([_case((0, 0)), (data, got + 0.5)]) == []


def test_a_failing_case_whose_batches_read_their_own_keys_values_and_mask_gives_no_line():
    data, got = _case((0, 1), mask=_mask())             # right within the fit's closeness: failing elsewhere
    assert _sources([(data, got + 1e-13)]) == []


def test_a_failing_case_whose_output_has_another_shape_refutes_the_fit():
    data, got = _case((0, 0), seed=1)
    longer = np.concatenate([got, got[:, :, :1]], axis=-2)    # (B, H, Sq + 1, Dv)
    assert _sources([_case((0, 0)), (data, longer)]) == []


def test_a_failing_case_without_a_per_batch_mask_refutes_mask_broadcast_even_with_no_judged_row():
    no_mask = _case((0, 1, 2), seed=3, live=np.zeros((3, 2, 3), bool))
    fail = _case((0, 0), what="mask", mask=_mask())
    assert _sources([fail]) != [] and _sources([fail, no_mask]) == []


# --- a row with no key under the source read: zeros or NaN, within a bound ------------------------------------

def _dead_row_case(value):
    """Batch 1 reads batch 0's mask, under which row 2 has no key (it has keys under batch 1's own); the kernel
    gives ``value`` in every row with no key under the mask it read (batch 0's row 2 is not judged). max |v| = 3."""
    mask = _mask()
    mask[0, 0, 2] = False
    data, got = _case((0, 0), what="mask", mask=mask, v_max=3.0)
    assert not data.live[0, :, 2].any() and data.live[1, :, 2].all()
    got = got.copy()
    got[:, :, 2] = value * np.array([1.0, -1.0, 1.0])
    return data, got


BOUND = 1e-12 * (1.0 + 3.0)         # |value| <= 1e-12 (1 + max |v|): a zero of the kernel's


def test_a_row_with_no_key_under_the_source_may_come_back_as_zeros():
    assert _sources([_dead_row_case(0.0)]) == [MASK + "every batch reads batch 0's masks"]


def test_a_row_with_no_key_under_the_source_may_come_back_as_nan():
    assert _sources([_dead_row_case(np.nan)]) == [MASK + "every batch reads batch 0's masks"]


def test_a_row_with_no_key_is_zero_up_to_the_bound_and_not_beyond():
    assert _sources([_dead_row_case(BOUND)]) == [MASK + "every batch reads batch 0's masks"]
    assert _sources([_dead_row_case(1.25 * BOUND)]) == []


# --- when: the passing cases the map would change, else a size threshold ---------------------------------------

def test_the_passing_cases_the_map_would_change_decide_when_it_applies():
    fail = [_case((0, 0), features={"decode": True})]
    changed = _case((0, 1), seed=1, features={"decode": False})
    assert _sources(fail, [changed]) == [KV + "every batch reads batch 0's keys and values; when decode"]
    lookalike = _case((0, 1), seed=2, features={"decode": True})
    assert _sources(fail, [lookalike]) == []              # nothing separates it, not even a size


def test_the_batch_0_map_leaves_batch_0_alone_so_a_case_judged_on_batch_0_only_decides_nothing():
    live = np.ones((2, 2, 3), bool)
    live[1] = False
    unjudged = _case((0, 1), seed=1, features={"decode": True}, live=live)
    fail = [_case((0, 0), features={"decode": True})]
    assert _sources(fail, [unjudged]) == [KV + "every batch reads batch 0's keys and values"]


def test_a_passing_case_of_one_batch_is_never_changed_by_a_batch_map():
    one = _case((0,), seed=1, features={"decode": True})
    assert _sources([_case((0, 0), features={"decode": True})], [one]) == [
        KV + "every batch reads batch 0's keys and values"]


def test_a_size_that_separates_the_cases_says_when_where_no_feature_does():
    fail = [_case((0, 0), Sq=1, features={"decode": True})]
    longer = _case((0, 1), seed=1, Sq=4, features={"decode": True})
    assert _sources(fail, [longer]) == [
        KV + "every batch reads batch 0's keys and values; when Sq <= 1 (the largest failing; passing cases it "
        "would change from 4)"]


def _sizes(*pairs):
    return [SimpleNamespace(Sq=sq, Sk=sk) for sq, sk in pairs]


def test_the_threshold_is_at_most_the_largest_failing_size_below_every_decided_one():
    assert _threshold(_sizes((1, 8), (2, 8)), _sizes((4, 8), (16, 8))) == (
        "when Sq <= 2 (the largest failing; passing cases it would change from 4)")


def test_the_threshold_is_at_least_the_smallest_failing_size_above_every_decided_one():
    assert _threshold(_sizes((8, 8), (16, 8)), _sizes((2, 8), (4, 8))) == (
        "when Sq >= 8 (the smallest failing; the passing cases it would change to 4)")


def test_the_keys_are_tried_where_the_queries_do_not_separate():
    assert _threshold(_sizes((4, 2)), _sizes((2, 8), (16, 8))) == (
        "when Sk <= 2 (the largest failing; passing cases it would change from 8)")
    assert _threshold(_sizes((4, 16)), _sizes((2, 8), (16, 4))) == (
        "when Sk >= 16 (the smallest failing; the passing cases it would change to 8)")


def test_a_size_shared_by_a_failing_and_a_decided_case_separates_nothing():
    assert _threshold(_sizes((2, 8), (4, 8)), _sizes((4, 8), (8, 8))) is None
    assert _threshold(_sizes((4, 8), (8, 8)), _sizes((2, 8), (4, 8))) is None


def test_no_threshold_without_a_decided_case():
    assert _threshold(_sizes((2, 8)), []) is None
