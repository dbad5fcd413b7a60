"""The forms the diagnosis fits when no model of its table fits, and the table's variants for bugs that are forms of
a known model (docs/diagnosis.md): each kernel of tests/support/fitted_form_kernels.py carries one mistake with a
parameter, built here with several values of it; its diagnosis must name the model and print the parameter the
kernel was built with (the head map, the slice width, the rows of one launch, the condition an argument is
ignored under, the key block)."""
import re

import numpy as np

import pytest

from refimpl.harness.analysis.diagnosis import diagnose
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.target_spec import Target
from tests.support import fitted_form_kernels as kernels

STORE = CaseStore()                    # a quick-suite run per kernel: about 0.3 s each


def _lines(fn, api: str) -> list[str]:
    target = Target("k", fn, api=api)
    results = [run_one(target, s, STORE) for s in select(None, "quick", ("float64",)) if not s.long]
    assert any(r.status == Status.FAIL for r in results), "the kernel's mistake failed no case"
    return diagnose(results, STORE, target="k")


def _one(lines: list[str], model: str) -> str:
    assert len(lines) == 1 and lines[0].startswith(f"diagnosis k: {model} — "), lines
    return lines[0]


@pytest.mark.parametrize("m", [2, 4])
def test_heads_never_computed_past_the_last_whole_slice_are_fitted_with_the_slice_width(m):
    line = _one(_lines(kernels.flash_kernel(slices=m), "flash-attn"), "output-placement")
    assert f"run in slices of {m}:" in line and "never written" in line


@pytest.mark.parametrize("rows", [32, 64])
def test_rows_past_one_launch_over_a_folded_gqa_group_are_fitted_with_the_launch_size(rows):
    line = _one(_lines(kernels.flash_kernel(folded_rows=rows), "flash-attn"), "output-placement")
    assert f"one launch of {rows} rows" in line


def test_every_batch_written_onto_batch_zero_is_named_with_the_block_that_holds_another():
    line = _one(_lines(kernels.sdpa_kernel(batch_stride_zero=True), "torch-sdpa"), "output-placement")
    assert re.search(r"\(0, \d+\) holds \([1-9]\d*, \d+\)'s", line), line
    assert re.search(r"\([1-9]\d*, \d+\)( and \d+ more)?(, \(\d+, \d+\))* never written", line), line


def _reversed(h, Hq, Hkv, Sq):                    # the kv groups read in reverse order
    return Hkv - 1 - h // (Hq // Hkv)


def _reversed_on_decode(h, Hq, Hkv, Sq):
    return _reversed(h, Hq, Hkv, Sq) if Sq == 1 else h // (Hq // Hkv)


def _head_tiles(tile):
    """A decode-style kernel walks a group's query heads in tiles of `tile` and takes tile t's kv head as
    t // ceil(G / tile), as if every group were whole tiles: right when G divides into tiles, wrong otherwise."""
    def kv_head(h, Hq, Hkv, Sq):
        G = Hq // Hkv
        return min(h // min(tile, G) // -(-G // tile), Hkv - 1)
    return kv_head


@pytest.mark.parametrize("tile", [2, 4])
def test_query_heads_walked_in_tiles_fail_on_groups_that_are_not_whole_tiles(tile):
    """The quick suite's GQA cases hold groups of 5 and 6 over 2 or more kv heads, so a kernel whose head tiles
    of 4 fit every group of 2 to 4 still fails; the map is fitted on the failing shapes."""
    kv_head = _head_tiles(tile)
    line = _one(_lines(kernels.flash_kernel(kv_head=kv_head), "flash-attn"), "gqa-grouping")
    shapes = re.findall(r"Hq=(\d+), Hkv=(\d+): query heads 0\.\.\d+ read kv heads ([\d ]+) instead of", line)
    assert shapes, line
    for hq, hkv, got in shapes:
        hq, hkv = int(hq), int(hkv)
        assert (hq // hkv) % tile, line                   # only groups that are not whole tiles fail
        assert got.split() == [str(kv_head(h, hq, hkv, 1)) for h in range(hq)], line


@pytest.mark.parametrize("kv_head, when", [(_reversed, None), (_reversed_on_decode, "Sq == 1")])
def test_the_kv_head_each_query_head_reads_is_fitted_as_a_map(kv_head, when):
    line = _one(_lines(kernels.flash_kernel(kv_head=kv_head), "flash-attn"), "gqa-grouping")
    shapes = re.findall(r"Hq=(\d+), Hkv=(\d+): query heads 0\.\.\d+ read kv heads ([\d ]+) instead of", line)
    assert shapes, line
    for hq, hkv, got in shapes:
        hq, hkv = int(hq), int(hkv)
        assert got.split() == [str(kv_head(h, hq, hkv, 1)) for h in range(hq)], line
    assert (f"; when {when}" in line) if when else line.rstrip().endswith(tuple("0123456789")), line


def _tp_ranks(ranks):
    """Tensor parallelism over `ranks` ranks, each rank slicing the slopes from 0 (no rank offset): head h takes
    the slope of head h mod (Hq / ranks) where the heads divide into the ranks."""
    return lambda h, Hq: h % (Hq // ranks) if Hq % ranks == 0 else h


def _kv_head_slope(h, Hq):                      # the slopes indexed by the pair's head, 2 query heads per slope
    return h // 2 * 2


@pytest.mark.parametrize("slope_head", [_tp_ranks(2), _tp_ranks(3), _kv_head_slope])
def test_the_alibi_slope_each_head_takes_is_fitted_as_a_map(slope_head):
    line = _one(_lines(kernels.flash_kernel(slope_head=slope_head), "flash-attn"), "alibi-slopes")
    shapes = re.findall(r"Hq=(\d+), Hkv=\d+: query heads 0\.\.\d+ use the slopes of heads ([\d ]+?)(?:;|$)", line)
    assert shapes, line
    for hq, got in shapes:
        want = [slope_head(h, int(hq)) for h in range(int(hq))]
        assert want != list(range(int(hq))), line          # only head counts the mistake changes fail
        assert got.split() == [str(a) for a in want], line


@pytest.mark.parametrize("argument, model, kwargs, when", [
    ("causal", "causal-dropped", dict(causal_ignored=lambda B, Sq, Sk, D, Dv: Dv != D), "Dv != D"),
    ("causal", "causal-dropped", dict(causal_ignored=lambda B, Sq, Sk, D, Dv: Sk > 64), "Sk > 64"),
    ("alibi", "alibi-dropped", dict(alibi_ignored=lambda B, Sq, Sk: B > 1), "batch > 1"),
])
def test_an_argument_ignored_in_some_calls_is_named_with_the_condition_fitted(argument, model, kwargs, when):
    line = _one(_lines(kernels.flash_kernel(**kwargs), "flash-attn"), model)
    first, others = re.search(r"is ignored when (.+?)(?: \(or: (.+?)\))? \(fitted", line).groups()
    listed = [first] + (others or "").split("; ")           # every condition the cases leave standing is listed
    assert when in listed, line


@pytest.mark.parametrize("shift, form", [((2, 0), "(left + 2, right)"), ((1, 1), "(left + 1, right + 1)")])
def test_the_band_edges_a_kernel_applied_are_fitted(shift, form):
    line = _one(_lines(kernels.flash_kernel(edge_shift=shift), "flash-attn"), "window-bounds")
    assert f"the kernel applied {form}" in line, line


@pytest.mark.parametrize("when, inverted_when", [("batch > 1", lambda B, L, S: B > 1),
                                                 ("Sk > 64", lambda B, L, S: S > 64)])
def test_a_table_model_on_some_calls_only_is_named_with_the_condition_fitted(when, inverted_when):
    line = _one(_lines(kernels.sdpa_kernel(inverted_when=inverted_when), "torch-sdpa"), "mask-polarity")
    first, others = re.search(r"\) when (.+?)(?: \(or: (.+?)\))? \(fitted", line).groups()
    assert when in [first] + (others or "").split("; "), line


@pytest.mark.parametrize("used", [1.0, 0.5])
def test_a_scale_used_on_some_calls_only_is_fitted_with_its_value_and_condition(used):
    line = _one(_lines(kernels.sdpa_kernel(scale_with_mask=used), "torch-sdpa"), "scale")
    assert f" = {used:.4g} when a mask argument is given" in line, line


def test_a_key_loop_starting_at_the_bottom_right_offset_is_a_band_tile_range():
    line = _one(_lines(kernels.flash_kernel(keys_from_offset=True), "flash-attn"), "band-tile-range")
    assert "key loop from the offset Sk - Sq" in line


@pytest.mark.parametrize("block", [16, 32])
def test_log2e_folded_into_the_scale_once_per_key_block_is_fitted_with_the_block(block):
    line = _one(_lines(kernels.sdpa_kernel(compound_block=block), "torch-sdpa"), "scale")
    assert f"again on each key block of {block} (calls without a mask)" in line, line


def test_key_lengths_counted_from_the_padding_are_a_mask_polarity():
    line = _one(_lines(kernels.numpy_padding_lengths_inverted, "refimpl"), "mask-polarity")
    assert "key lengths counted from a padding mask's False entries" in line


def test_a_fit_of_the_fewer_failing_cases_beside_more_of_another_shape_is_unknown_and_says_so():
    # most failing cases (every masked one) return another shape: a model fitted on the rest explains no run
    line = _one(_lines(kernels.numpy_unscaled_wrong_shape_when_masked, "refimpl"), "unknown")
    m = re.search(r"unknown — (\d+) of (\d+) failing cases returned an output of another shape; the (\d+) of the "
                  r"right shape fit scale$", line)
    assert m and int(m.group(1)) > int(m.group(3)) and int(m.group(1)) + int(m.group(3)) == int(m.group(2)), line


def test_a_line_fitted_beside_fewer_failing_cases_of_another_shape_says_how_many_it_left_out():
    # the wrong shape only where Sq == 1 (a few decode cases): the scale fit explains most of the run
    def fn(q, k, v, mask=None, scale=None):
        s = q @ np.swapaxes(k, -1, -2)                                     # no scale at all
        s = s if mask is None else np.where(mask, s, -np.inf)
        m = s.max(axis=-1, keepdims=True)
        e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
        z = e.sum(axis=-1, keepdims=True)
        out = (e / np.where(z > 0, z, 1.0)) @ v
        return out[..., :1] if q.shape[-2] == 1 else out
    line = _one(_lines(fn, "refimpl"), "scale")
    assert "the kernel used 1 = 1 instead of 1/sqrt(D)" in line, line
    n = int(re.search(r"; (\d+) returned an output of another shape\)$", line).group(1))
    assert n > 0, line


def test_failing_cases_of_the_wrong_shape_are_left_out_of_the_fits_without_raising():
    # tests/heldout10's attend_pad_mask_query_axis once crashed the noise fingerprint (IndexError) with a
    # wrong-shape output; the cases with values (about two thirds here) are too few for the noise rule's 90%
    lines = _lines(kernels.numpy_float32_wrong_shape_when_masked, "refimpl")
    assert len(lines) == 1 and lines[0].startswith("diagnosis k: "), lines


def test_rows_zeroed_only_where_a_key_is_masked_are_not_called_misplaced():
    lines = _lines(kernels.numpy_rows_with_a_masked_key_zeroed, "refimpl")
    assert not any("output-placement" in line for line in lines), lines


@pytest.mark.parametrize("edge", ["left", "right"])
def test_a_window_edge_handed_on_negated_is_fitted_as_that_edge_negated(edge):
    """(-left, right): a window's left edge n > 0 read as unbounded and an unbounded one (-1) as 1."""
    line = _one(_lines(kernels.flash_kernel(negate=edge), "flash-attn"), "window-bounds")
    form = "(-left, right)" if edge == "left" else "(left, -right)"
    assert f"the kernel applied {form}" in line, line


def test_a_window_edge_of_zero_read_as_unbounded_is_fitted_on_both_edges():
    """`edge or max_span`: a bound of 0 is falsy, so causal's right edge and a window side of 0 become unbounded."""
    line = _one(_lines(kernels.flash_kernel(zero_unbounded=True), "flash-attn"), "window-bounds")
    assert "the kernel applied (left (0 as unbounded), right (0 as unbounded))" in line, line


@pytest.mark.parametrize("tile", [16, 32])
def test_value_tiles_stored_without_their_offset_are_fitted_with_the_tile_width(tile):
    line = _one(_lines(kernels.sdpa_kernel(value_tiles=tile), "torch-sdpa"), "output-columns")
    assert f"value tiles of {tile} channels each stored from channel 0" in line, line
    dv, shown = re.search(r"on a case of Dv=(\d+), channels 0\.\.\d+ hold the reference's channels ([-\d ]+) \(",
                          line).groups()
    first = list(range(0, int(dv), tile))[-1]                  # the last tile's first channel lands on channel 0
    assert shown.split()[0] == str(first), line


@pytest.mark.parametrize("form, said", [("unscaled", "without the scale"), ("first key twice", None)])
def test_a_wrong_softmax_denominator_is_fitted_as_a_factor_per_row(form, said):
    line = _one(_lines(kernels.numpy_denominator(form), "refimpl"), "softmax-denominator")
    lo, hi = (float(x) for x in re.search(r"sum to ([\d.e+-]+) \.\. ([\d.e+-]+) instead of 1", line).groups())
    if said:
        assert said in line, line
    else:                                    # the first key counted twice: the weights sum to less than 1
        assert 0 < lo <= hi < 1 and "fitted, the denominator" not in line, line


@pytest.mark.parametrize("splits", [2, 4])
def test_split_kv_partials_merged_with_another_rows_lses_are_fitted_with_the_split_count(splits):
    line = _one(_lines(kernels.numpy_split_merge_rolled(splits), "refimpl"), "split-merge")
    assert f"({splits} splits of ceil(Sk / {splits}) keys" in line, line


def test_rows_off_by_one_common_factor_are_never_read_as_a_split_merge():
    """Every row the right one times 1 + 5e-5 Sk is a mix of any split layout's partials with the shares times that
    factor: one factor over every split is a denominator's mistake, so split-merge must not claim it (the factor
    stays within 1e-3 of 1 on the short cases, where the denominator's fit wants a row further off)."""
    lines = _lines(kernels.numpy_denominator("grows with Sk"), "refimpl")
    assert lines and not any(" split-merge — " in line for line in lines), lines


def test_a_constant_factor_on_every_row_is_said_to_be_one():
    line = _one(_lines(kernels.numpy_denominator("doubled"), "refimpl"), "softmax-denominator")
    assert "one factor on every row: the output scaled by 0.5" in line, line


def test_a_table_model_with_rows_off_by_a_factor_on_some_calls_keeps_its_name_and_condition():
    """Masked weights zeroed after the softmax (rows the right ones times their kept share) only when B > 1: the
    conditional fit names mask-after-softmax with its condition before the denominator's factor is tried."""
    line = _one(_lines(kernels.numpy_odd_one("mask after softmax when B > 1"), "refimpl"), "mask-after-softmax")
    assert "when batch > 1" in line, line


@pytest.mark.parametrize("form, forms", [("first 32 keys", ("split-merge", "softmax-denominator")),
                                         ("zeros when B > 1", ("output-columns",))])
def test_keys_never_attended_or_nothing_written_are_not_read_as_a_merge_or_a_channel_map(form, forms):
    lines = _lines(kernels.numpy_odd_one(form), "refimpl")
    assert lines and not any(f" {f} — " in line for f in forms for line in lines), lines


def _zero_scored_dropped_keys(q, k, v, mask=None, scale=None):
    """Dropped keys scored 0 (not -inf) and their values zeroed: each kept row's weights sum to Z / (Z + n exp(-m)),
    which underflows to 0 where every kept score is far below 0 (the extreme-logits family's far-below-fill rows)."""
    s = q @ np.swapaxes(k, -1, -2) * (1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    keep = np.ones(s.shape, bool) if mask is None else np.broadcast_to(mask, s.shape)
    s = np.where(keep, s, 0.0)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    w = e / e.sum(axis=-1, keepdims=True)                                  # (..., Sq, Sk)
    return np.einsum("...ij,...ijd->...id", w, np.where(keep[..., None], np.expand_dims(v, -3), 0.0))


def test_dropped_keys_scored_zero_are_a_denominator_even_where_the_factor_underflows():
    line = _one(_lines(_zero_scored_dropped_keys, "refimpl"), "softmax-denominator")
    lo, hi = (float(x) for x in re.search(r"sum to ([\d.e+-]+) \.\. ([\d.e+-]+) instead of 1", line).groups())
    assert lo < 1e-3 and hi < 1, line                  # rows zeroed by the underflow are in the fitted range


def test_rows_zeroed_beside_right_rows_are_no_denominator():
    def fn(q, k, v, mask=None, scale=None):            # right, but every other query row of a masked call zeroed
        s = q @ np.swapaxes(k, -1, -2) * (1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
        s = s if mask is None else np.where(mask, s, -np.inf)
        m = s.max(axis=-1, keepdims=True)
        e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
        z = e.sum(axis=-1, keepdims=True)
        out = (e / np.where(z > 0, z, 1.0)) @ v
        if mask is not None:
            out[..., ::2, :] = 0.0
        return out
    lines = _lines(fn, "refimpl")
    assert lines and not any(" softmax-denominator — " in line for line in lines), lines


@pytest.mark.parametrize("when, said", [(lambda B, L: True, ""), (lambda B, L: L == 1, "; when Sq == 1")])
def test_every_batch_reading_batch_0s_keys_and_values_is_fitted_with_its_condition(when, said):
    line = _one(_lines(kernels.sdpa_kernel(kv_batch0_when=when), "torch-sdpa"), "kv-batch")
    assert line.endswith("every batch reads batch 0's keys and values" + said), line


@pytest.mark.parametrize("limit", [8, 20])
def test_a_decode_path_reading_batch_0s_keys_is_said_to_hold_below_a_size_with_its_gap(limit):
    line = _one(_lines(kernels.sdpa_kernel(kv_batch0_when=lambda B, L: L <= limit), "torch-sdpa"), "kv-batch")
    largest, first = (int(x) for x in re.search(
        r"every batch reads batch 0's keys and values; when Sq <= (\d+) \(the largest failing; passing cases it "
        r"would change from (\d+)\)$", line).groups())
    assert largest <= limit < first, line           # the suite's sizes bracket the true limit; both are printed


def test_a_batch_with_no_key_explains_no_other_batchs_output():
    """A kernel reading keys one position late on calls where some sequence has no key: batch 0's empty mask
    leaves every row of every batch without a key under it, which must not "explain" another batch's wrong rows."""
    def fn(q, k, v, mask=None, scale=None):
        if mask is not None and mask.dtype == bool and mask.ndim == 4 and mask.shape[0] > 1:
            full = np.broadcast_to(mask, q.shape[:-2] + (q.shape[-2], k.shape[-2]))
            if any(not full[b].any() for b in range(full.shape[0])):
                k, v = np.roll(k, -1, axis=-2), np.roll(v, -1, axis=-2)
        s = q @ np.swapaxes(k, -1, -2) * (1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
        if mask is not None:
            s = np.where(mask, s, -np.inf) if mask.dtype == bool else s + mask
        m = s.max(axis=-1, keepdims=True)
        e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
        z = e.sum(axis=-1, keepdims=True)
        return (e / np.where(z > 0, z, 1.0)) @ v
    lines = _lines(fn, "refimpl")
    assert lines and not any(" mask-broadcast — " in line or " kv-batch — " in line for line in lines), lines


def test_every_batch_reading_batch_0s_mask_is_a_mask_broadcast_with_that_map():
    line = _one(_lines(kernels.sdpa_kernel(mask_batch0=True), "torch-sdpa"), "mask-broadcast")
    assert "a per-batch mask is read from the wrong batch: fitted, every batch reads batch 0's masks" in line, line
