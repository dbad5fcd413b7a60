"""Bug models: attention computed with one known mistake each, for diagnosing a failing target.

Every model takes refimpl's inputs and keywords and returns the output only::

    fn(q, k, v, *, mask=None, scale=None, is_causal=False, alignment="top-left", window=None,
       softcap=None, enable_gqa=False) -> (B..., Sq, Dv)

with q (B, Hq, Sq, D), k (B, Hkv, Sk, D), v (B, Hkv, Sk, Dv); ``mask`` a bool keep-mask (True = attend)
or a float additive mask, broadcastable to (B, Hq, Sq, Sk). The correct computation is

    S = scale * q @ k^T  (scale = 1/sqrt(D)),  S = cap * tanh(S / cap),  S += additive,
    P = softmax over keys of S where kept (a row with no kept key -> zeros),  O = P @ v.

Models that change an argument call :func:`refimpl.attention.scaled_dot_product_attention`; the others rebuild S
and its keep-mask (:mod:`refimpl.scores_parts`) with one step changed. Here and in ``bugs_general``: arguments;
``bugs_softmax_steps``, ``bugs_scores``: the softmax's steps; ``bugs_layout``; ``bugs_packed``; ``bugs_operands``.
``MODELS`` maps a model id to its :class:`BugModel` row: the explanation printed, the variants, the closeness.
"""
from __future__ import annotations

import numpy as np

from .attention import scaled_dot_product_attention
from .bug_model import BugModel, Variant
from .bugs_layout import INPUT_LAYOUTS, LAYOUTS, input_layout, output_layout
from .bugs_mask_use import (ROWS as MASK_USE, bool_mask_filled, mask_inverted_filled, mask_polarity,
                            padding_lengths_inverted)
from .bugs_normaliser import ROWS as NORMALISER
from .bugs_operands import ROWS as OPERANDS
from .bugs_packed import packed_attention
from .bugs_softmax_steps import (SOFTCAP_FORMS, TILE_RANGES, band_tile_range, bias_before_scale, denominator_epsilon,
                                 exp_times_mask, keys_from_offset, low_precision, max_floored, no_max_subtraction,
                                 online_rescale, online_row_sum, softcap_form, softmax_then_mask)
from .bugs_scores import (_expand_heads, _kw, _named, _parts, _sdpa, _softmax, causal_diagonal, dead_rows_nan,
                          gqa_divisor, mods_before_scale, mods_by_kv_head, online_inverted, online_max_clamped,
                          online_unguarded, rounded_step, scale_compounded, softcap_after_mask, softmax_axis,
                          tile_padded_tail, tile_transposed, tiles_unmasked, zero_padded_tail)
from .bugs_general import (ROWS as GENERAL, _with_alibi, alibi_dropped, alibi_first_batch, alibi_signed,
                           bool_mask_added, causal_dropped, causal_only_realigned, float_mask_as_bool,
                           left_edge_realigned, mask_after_softmax, mask_transposed, offset_clamped, OFFSET_VARIANTS,
                           other_alignment, scale_after_softmax, scale, window_edges, window_bounds)

__all__ = ["MODELS", "BugModel", "Variant"]


# --- models that change an argument ------------------------------------------------------------------

def additive_mask_sign(q, k, v, *, mask=None, slopes=None, alibi_in_mask=False, **kw):
    """A float mask subtracted instead of added: S - mask on its finite entries (-inf still masks). ``mask`` is
    the user's mask; ALiBi (``slopes``) keeps its sign, unless ``alibi_in_mask``: an API that receives ALiBi as
    part of its float mask (torch's SDPA) subtracts it with the rest."""
    if alibi_in_mask:
        mask, slopes = _with_alibi(mask, slopes, q.shape[-2], k.shape[-2]), None
    if mask is not None and np.asarray(mask).dtype != bool:
        m = np.asarray(mask)
        mask = np.where(np.isneginf(m), -np.inf, -m)
    return _sdpa(q, k, v, mask=_with_alibi(mask, slopes, q.shape[-2], k.shape[-2]), **kw)


def additive_mask_negated(q, k, v, *, mask=None, slopes=None, **kw):
    """The whole float mask (ALiBi included, as torch's SDPA receives it) subtracted, -inf entries too:
    S - mask, where a -inf becomes +inf (NaN rows)."""
    mask = _with_alibi(mask, slopes, q.shape[-2], k.shape[-2])
    if mask is None or np.asarray(mask).dtype == bool:
        return _sdpa(q, k, v, mask=mask, **kw)
    s, keep, v = _parts(q, k, v, **dict(_kw(kw), mask=None))
    with np.errstate(invalid="ignore", over="ignore"):
        s = s - np.asarray(mask, np.float64)
        return _softmax(s, keep) @ v


def alibi_sign(q, k, v, *, mask=None, slopes=None, **kw):
    """ALiBi with the wrong sign: bias +slope * |i + Sk - Sq - j| (distant keys favoured) instead of -slope * ...;
    without ALiBi (no ``slopes``) the mistake does not show: the reference."""
    return _sdpa(q, k, v, mask=_with_alibi(mask, slopes, q.shape[-2], k.shape[-2], sign=-1.0), **kw)


def weights_transposed(q, k, v, **kw):
    """The output is right; the weights are returned transposed, (B..., Sk, Sq) instead of (B..., Sq, Sk).
    Returns ``(output, weights)``: the one model about what a target returns besides its output."""
    out, w = scaled_dot_product_attention(q, k, v, **kw)
    return out, np.swapaxes(w, -1, -2)


def causal_alignment(q, k, v, *, alignment="top-left", **kw):
    """Causal/window band placed with the other alignment (top-left <-> bottom-right)."""
    return _sdpa(q, k, v, alignment=other_alignment(alignment), **kw)


def gqa_grouping(q, k, v, *, enable_gqa=False, **kw):
    """GQA heads grouped by h % Hkv instead of h // (Hq // Hkv)."""
    k, v = _expand_heads(np.asarray(q), np.asarray(k), np.asarray(v), enable_gqa, by_modulo=True)
    return _sdpa(q, k, v, enable_gqa=False, **kw)


# --- models that change a step -----------------------------------------------------------------------

def finite_mask_fill(q, k, v, *, fill=-1e9, dtype="float64", dead_zero=False, additive=False, **kw):
    """Excluded scores filled with a finite ``fill`` (-1e9, -1e4) instead of -inf: dead rows become uniform and
    masked keys win when kept scores fall below the fill. ``dtype`` float32: the float32 kernel of half code.
    ``dead_zero``: rows with no key are zeroed afterwards (the kernel guards them, not the masked keys);
    ``additive``: the fill added to the excluded scores (s + fill), not put in their place."""
    dt = np.dtype(dtype).type
    s, keep, v = _parts(q, k, v, dtype=dt, **_kw(kw))
    out = _softmax(np.where(keep, s, s + dt(fill) if additive else dt(fill)), np.ones(s.shape, bool)) @ v
    if dead_zero:
        out = np.where(keep.any(axis=-1)[..., None], out, 0.0)
    return out.astype(np.float64)


def softcap_order(q, k, v, **kw):
    """Softcap applied to the unscaled scores: S = scale * cap * tanh(q k^T / cap)."""
    s, keep, v = _parts(q, k, v, cap_before_scale=True, **_kw(kw))
    return _softmax(s, keep) @ v


def blocked_tail(q, k, v, *, block=64, short_too=False, **kw):
    """Key blocks counted with Sk // block: when Sk > block, keys from block * (Sk // block) on are never seen
    (``short_too``: a kernel that also runs no block at all when Sk < block, so its output is zeros there)."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    Sk = s.shape[-1]
    if Sk > block or short_too:
        keep = keep & (np.arange(Sk) < block * (Sk // block))
    return _softmax(s, keep) @ v


def _v(label, fn, **param) -> Variant:
    return Variant(label, _named(fn, **param) if param else fn)


def _pk(label, **param) -> Variant:                # a packed-batch model (the diagnosis passes seqlens and slopes)
    return Variant(label, _named(packed_attention, **param), packed=True)


def _tile(label, fn, **param) -> Variant:      # the diagnosis passes block= (the BLOCK_SIZE a block mask comes in)
    return Variant(label, _named(fn, **param) if param else fn, tiled=True)


def _fl(label, fn, **param) -> Variant:         # where the API hands the band inside the mask, it is called so
    return Variant(label, _named(fn, **param), flags=True)


def _split(label, fn, **param) -> Variant:        # the diagnosis passes the user's mask and the ALiBi slopes apart
    return Variant(label, _named(fn, **param) if param else fn, splits_alibi=True)


MODELS: dict[str, BugModel] = {m.name: m for m in (
    BugModel("scale", "the default softmax scale is not 1/sqrt(D)",
             tuple(_v(f, scale, factor=f) for f in ("1/sqrt(Sk)", "1/sqrt(Dv)", "1/D", "1", "1 always"))
             + tuple(_v(f"log2(e) folded into the scale again on each key block of {b}{w}", scale_compounded, block=b,
                        every_call=not w) for w in (" (calls without a mask)", "") for b in (16, 32, 64, 128))),
    BugModel("mask-polarity", "True in a bool mask is treated as masked out",
             (_fl("True = masked", mask_polarity),           # a band handed inside the mask inverted with it
              _v("True = masked, band included", mask_polarity, with_band=True),
              _fl("True = masked, filled with a finite -finfo.max: a row kept whole is uniform, one kept nothing of "
                  "zeros", mask_inverted_filled),
              _fl("True = masked, -10000 added to those keys (mask * -10000): a row kept whole is right, one kept "
                  "nothing of zeros", mask_inverted_filled, fill=-1e4, added=True),
              _fl("key lengths counted from a padding mask's False entries: a sequence of n keys attends its first "
                  "Sk - n", padding_lengths_inverted))),
    BugModel("additive-mask-sign", "the float mask is subtracted from the scores instead of added",
             (_split("S - mask", additive_mask_sign),
              _split("S - mask, ALiBi in the mask too", additive_mask_sign, alibi_in_mask=True),
              _split("S - mask, -inf too", additive_mask_negated))),
    BugModel("causal-alignment", "the causal/window band uses the other alignment",
             (_fl("other alignment", causal_alignment), _fl("the causal diagonal only", causal_only_realigned),
              _fl("the bottom-right offset clamped at 0, max(Sk - Sq, 0): top-left where Sq > Sk", offset_clamped),
              *OFFSET_VARIANTS,
              _fl("the window's left edge only (causal and the right edge keep the case's alignment)",
                  left_edge_realigned),
              _pk("top-left in each sequence", seq_alignment="top-left"),
              _pk("top-left in each sequence of more than one query (a one-query decode step right)",
                  seq_alignment="top-left past one query"),
              _pk("top-left in each sequence of more than one query, ALiBi's distance too",
                  seq_alignment="top-left past one query", alibi_aligned=True))),
    BugModel("sequence-boundary", "a packed batch's sequence reads keys of the next sequence",
             (_pk("one key past its end", keys="one-past-end"), _pk("every key of the batch", keys="all"),
              _pk("every key from its start to the batch's end", keys="to-end"))),
    BugModel("cu-seqlens-off-by-one", "each packed sequence's last key is dropped (end = cu_seqlens_k[b + 1] - 1)",
             (_pk("last key dropped", keys="last-dropped"),
              _pk("ranges shifted one key back (cu_seqlens_k[b + 1] - 1 as the end and the next start)",
                  keys="shifted"))),
    BugModel("causal-packed-index", "causal, windows or ALiBi use the index in the packed batch, not in the sequence",
             tuple(_pk(f"packed positions in {label}", positions="packed", packed_in=parts, packed_offset=off)
                   for parts, label in ((("right", "left", "alibi"), "the band and ALiBi"),
                                        (("right",), "the causal (right) edge"), (("left",), "the window's left edge"),
                                        (("alibi",), "the ALiBi distance"))
                   for off in ("batch", "sequence"))),
    BugModel("padding-unmasked", "sequences are padded with zero keys to the longest and the padding is attended",
             (_pk("zero keys up to max_seqlen_k", zero_padding=True),)),
    BugModel("weights-transposed", "the output is right but the weights are returned transposed, (Sk, Sq) per head",
             ()),   # no output variant: diagnosed from the returned weights (diagnosis.py)
    BugModel("alibi-sign", "the ALiBi bias is +slope * distance (distant keys favoured) instead of -slope * distance",
             (_split("+slope * distance", alibi_sign),
              _split("signed distance -slope * (i + offset - j), no |.|: keys right of the diagonal favoured",
                     alibi_signed),
              _split("+slope * (i - j), no |.|: the sign flipped, distant past keys favoured", alibi_signed,
                     sign=-1.0))),
    BugModel("alibi-dropped", "ALiBi's bias is not added in some calls",
             (_split("ALiBi never added", alibi_dropped, when="always"),
              _split("ALiBi added only under causal (it rides on the causal mask)", alibi_dropped, when="causal"))),
    BugModel("alibi-batch-slopes", "ALiBi slopes given per batch, (B, Hq), are read as batch 0's for every batch",
             (_split("batch 0's slopes", alibi_first_batch),)),
    BugModel("window-bounds", "the sliding window's edges are not the (left, right) asked for",
             (_v("left + 1", window_bounds, shift=1), _v("left - 1", window_bounds, shift=-1))
             + tuple(_v(e, window_edges, edge=e) for e in ("right from left", "right ignored", "right 0",
                                                           "left -1 as 0", "right + 1", "right - 1"))
             + (_fl("left edge dropped under causal (the causal path resets the window to (-1, 0))", causal_dropped,
                    when="left window"),
                _fl("an unbounded right edge (-1) read as Sk", window_edges, edge="right -1 as Sk"))),
    BugModel("causal-dropped", "the causal flag is not applied in some cases: no causal band at all there",
             (_fl("when Sq != Sk (forwarded only when the lengths agree)", causal_dropped, when="Sq != Sk"),
              _fl("when a window is given (causal derived from an unbounded window; the window alone)",
                  causal_dropped, when="with a window")),
             distinct_from=("causal-alignment",)),     # one query: causal dropped is the other alignment's band
    BugModel("causal-diagonal", "the diagonal is excluded: a query does not see the key at its own position (under "
             "causal, or always: a self-exclusion mask left on)",
             (_fl("j < i + offset", causal_diagonal),
              _fl("j < i + offset, a row left with no key NaN", causal_diagonal, nan_rows=True),
              _v("j != i on every call", causal_diagonal, always=True))),
    BugModel("mask-kind", "the user's mask of one kind is read as the other", (
        _split("bool mask added to the scores as numbers (True = +1): nothing masked", bool_mask_added),
        _split("bool mask added to the scores as numbers (True = +1), the causal band and window folded into it",
               bool_mask_added, with_band=True),
        Variant("bool mask, with the band the API folds into it, added as numbers (True = +1), a row it keeps no "
                "key of zeroed (a has-key guard)", _named(bool_mask_added, dead_zero=True), splits_alibi=True,
                flags=True),
        *(Variant(f"bool mask as a bias of {c:g} on the dropped keys (not -inf)",
                  _named(bool_mask_added, kept=0.0, dropped=c), splits_alibi=True, flags=True)
          for c in (-1.0, -10.0, -100.0, -1000.0)),
        Variant("float mask cast to bool (nonzero = attend)", _named(float_mask_as_bool, how="nonzero"),
                splits_alibi=True, flags=True),
        _fl("float mask, ALiBi inside it, cast to bool (nonzero = attend)", float_mask_as_bool, how="nonzero"),
        _split("float mask's finite values dropped (only -inf masks)", float_mask_as_bool, how="finite"),
        _split("float mask cast to bool as a drop-mask (nonzero = masked: only 0-bias keys attend)",
               float_mask_as_bool, how="zero"),
        _fl("float mask, ALiBi inside it, cast to bool as a drop-mask (nonzero = masked)", float_mask_as_bool,
            how="zero"))),
    BugModel("mask-transposed", "the mask is read with query and key indices swapped (a mask_mod called as "
             "(kv_idx, q_idx), an expanded mask transposed)",
             (_v("keep(j, i)", mask_transposed), _tile("keep(j, i) inside the block mask's tiles", tile_transposed)),
             distinct_from=("causal-alignment",)),       # one query: a transposed top-left band is bottom-right
    BugModel("softmax-axis", "softmax is taken over another axis than the keys (the queries, the heads, the batch, "
             "batch x heads, or a size-1 axis)",
             (_v("over queries", softmax_axis), _v("over queries by a guarded library softmax: a key no query "
                                                   "keeps NaN", softmax_axis, library=True),
              _v("over the flattened batch x heads (an implicit dim 0)", softmax_axis, batch=True),
              _v("over the heads (dim 1 of (B, H, Sq, Sk))", softmax_axis, heads=True),
              _v("over the batch (dim 0 of (B, H, Sq, Sk))", softmax_axis, axis0=True),
              _v("over a size-1 axis (a keepdims score column): every kept key weighs 1, O = the sum of V",
                 softmax_axis, single=True))),
    BugModel("no-max-subtraction", "exp(scores) without subtracting the row max overflows",
             (_v("exp(S)", no_max_subtraction),
              Variant("exp(S) in float32 (overflow past ~88.7)", _named(no_max_subtraction, dtype="float32"),
                      in_float32=True),
              _v("exp(S), a row summing to 0 NaN", no_max_subtraction, guarded=False),
              _v("exp(S - S[i, 0]): rows shifted by their first score", no_max_subtraction, first=True),
              _v("exp(S - S[i, 0]), a NaN row sum left NaN", no_max_subtraction, first=True, guarded=False)),
             distinct_from=("row-max-floor",)),     # where only all-negative rows fail: exp(S) is a floor of 0 there
    BugModel("mask-after-softmax", "the mask is applied after the softmax (or its exponentials): masked weights set "
             "to 0 afterwards", (_v("weights zeroed after the softmax, not renormalised", mask_after_softmax),
                                 _v("weights zeroed after the softmax, then renormalised (0/0 where the kept weights "
                                    "underflow)", softmax_then_mask),
                                 _v("exp of every score times the mask (inf * 0 = NaN where a masked score "
                                    "overflows)", exp_times_mask)),
             distinct_from=("dead-rows-nan",)),      # renormalised: 0/0 on rows with no key, as dead-rows-nan
    BugModel("scale-after-softmax", "the softmax is of the unscaled scores and its weights are multiplied by the "
             "scale (rows sum to the scale)", (_v("scale * softmax(q k^T)", scale_after_softmax),)),
    BugModel("finite-mask-fill", "masked scores are filled with a finite value instead of -inf",
             (_v("-1e9", finite_mask_fill, fill=-1e9), _v("-1e4", finite_mask_fill, fill=-1e4),
              _v("0", finite_mask_fill, fill=0.0),
              _v("an additive -1e10 * (1 - mask): a row with no key attends every key by its scores", finite_mask_fill,
                 fill=-1e10, additive=True),
              _v("0, rows with no key zeroed", finite_mask_fill, fill=0.0, dead_zero=True),
              _v("-1e4, rows with no key zeroed", finite_mask_fill, fill=-1e4, dead_zero=True),
              _fl("0 on a bool mask's dropped keys only (the causal / window flags masked)", bool_mask_filled),
              Variant("-1e4 float32", _named(finite_mask_fill, fill=-1e4, dtype="float32"), in_float32=True),
              _v("+inf (a negated -inf): every row with a masked key NaN, rows with no key zeroed", finite_mask_fill,
                 fill=np.inf, dead_zero=True))),
    BugModel("gqa-grouping", "GQA query head h uses the wrong kv head instead of h // (Hq // Hkv)",
             (_v("h % Hkv", gqa_grouping), _v("h // Hkv, even under MHA", gqa_divisor),
              _v("h // Hkv where Hkv != Hq", gqa_divisor, mha_too=False))),
    BugModel("softcap", "the softcap is computed wrong: tanh before the scores are scaled, or another formula than "
             "cap * tanh(S / cap)",
             (_v("tanh before scaling", softcap_order),
              _v("softcap and additive terms before scaling: the scale multiplies both", mods_before_scale))
             + tuple(_v(f, softcap_form, form=f) for f in SOFTCAP_FORMS),
             distinct_from=("additive-before-scale",)),   # no softcap case: its terms before the scale are that one
    BugModel("additive-before-scale", "the additive terms (a float mask, ALiBi) are added to q k^T before the scale: "
             "the scale multiplies them too", (_v("scale * (q k^T + bias)", bias_before_scale),)),
    BugModel("softcap-after-mask", "the softcap is applied after masking: a masked -inf becomes -cap, masked keys "
             "get weight", (_v("-inf -> -cap", softcap_after_mask),)),
    BugModel("score-mod-head", "the score modification (ALiBi slope, per-head bias) of query head h is the one of "
             "the kv head it reads, h // (Hq // Hkv)", (_split("kv head's modification", mods_by_kv_head),)),
    BugModel("dead-rows-nan", "a row with no key is NaN (softmax of all -inf), where zeros are required",
             (_v("0/0", dead_rows_nan),)),
    BugModel("padded-tail", "the last key block is padded with zero keys that are attended (score 0, value 0)",
             tuple(_v(f"blocks of {b}", zero_padded_tail, block=b) for b in (16, 32, 64, 128))
             + tuple(_split(f"blocks of {b}, the pads inside the causal band and window, ALiBi on them too"
                            + (", their -inf softcapped to -cap" if c else ""), zero_padded_tail, block=b,
                            banded=True, capped=c) for c in (False, True) for b in (16, 32, 64, 128))
             + tuple(_tile(f"the block mask's tiles ({b} without a mask)", tile_padded_tail, own=b)
                     for b in (16, 32, 64, 128))),
    BugModel("partial-blocks-unmasked", "the block mask is applied per tile only: inside a partially masked tile "
             "every key is attended (mask_mod never evaluated)", (_tile("the block mask's tiles", tiles_unmasked),)),
    BugModel("denominator-epsilon", "the softmax denominator has an epsilon added (sum + 1e-6)",
             (_v("+1e-6", denominator_epsilon),)),
    BugModel("blocked-tail", "the partial last key block is dropped (Sk // block blocks)",
             tuple(_v(f"blocks of {b}" + (f", none when Sk < {b}" if short else ""), blocked_tail, block=b,
                      short_too=short) for b in (64, 16, 32, 128) for short in (False, True))),
    BugModel("online-rescale", "online softmax over key blocks rescales the output accumulator wrongly",
             tuple(_v(f"never rescaled, blocks of {b}", online_rescale, block=b) for b in (32, 16, 64, 128))
             + tuple(_v(f"by exp(m_new - m_old), blocks of {b}", online_inverted, block=b) for b in (16, 32, 64, 128))
             + tuple(_v(f"accumulator and row sum by exp(m_new - m_old), blocks of {b}", online_inverted, block=b,
                        both=True) for b in (16, 32, 64, 128))
             + tuple(_v(f"row sum never rescaled, blocks of {b}", online_row_sum, block=b) for b in (16, 32, 64, 128))),
    BugModel("masked-block-nan", "online softmax leaves its running max at -inf: a row whose leading key block is "
             "fully masked gets NaN (exp(-inf - -inf))",
             tuple(_v(f"blocks of {b}{z}", online_unguarded, block=b, zeroed=bool(z))
                   for z in ("", ", the NaN rows zeroed by a final l > 0 guard") for b in (16, 32, 64, 128)),
             distinct_from=("dead-rows-nan",)),
    BugModel("masked-block-max-zero", "online softmax sets the running max of fully masked key blocks to 0 and keeps "
             "it: a row whose scores lie far below 0 past a masked leading block underflows to zeros",
             tuple(_v(f"blocks of {b}", online_max_clamped, block=b) for b in (16, 32, 64, 128))),
    BugModel("band-tile-range", "a tiled kernel computes each query tile's key range (causal band, window) wrong: "
             "keys inside the band are never visited",
             tuple(_fl(f"{form}, query tiles of {m}, key tiles of {n}", band_tile_range, form=form, block_m=m,
                       block_n=n)
                   for form in TILE_RANGES
                   for m in (16, 32, 64, 128) for n in (16, 32, 64, 128))
             + (_v("every query's key loop from the offset Sk - Sq (keys before it never visited), band or not",
                   keys_from_offset),)),
    BugModel("row-max-floor", "the softmax's row max starts at a finite value instead of -inf (max(floor, row max)): "
             "a row whose kept scores all lie far below the floor underflows",
             tuple(_v(f"floor {f:g}, a row summing to 0 {'zeroed' if g else 'NaN'}", max_floored, floor=f, guarded=g)
                   for f in (0.0, -1e4, -3e4, -5e4, -1e5) for g in (True, False))),
    BugModel("head-layout", "the output or the inputs are laid out wrong: a buffer of one layout read as another (a "
             "reshape without its permute)", tuple(_v(f, output_layout, layout=f) for f in LAYOUTS)
             + tuple(_v(f, input_layout, layout=f) for f in INPUT_LAYOUTS)),
    # reproduced only up to its own rounding noise
    BugModel("low-precision", "an intermediate of the softmax is computed in a 16-bit float",
             (_v("softmax in float16", low_precision),)
             + tuple(_v(f"{step} in {dt}", rounded_step, step=step, dtype=dt)
                     for dt in ("bfloat16", "float16")
                     for step in ("scores", "exps", "row sum", "weights", "q k^T", "q, k and q k^T",
                                  "scores and weights"))
             + tuple(_v(f"q k^T, scores and weights each rounded to {dt}: computed in the 16-bit input dtype",
                        rounded_step, step="throughout", dtype=dt) for dt in ("bfloat16",)),
             tolerance=(2e-2, 1e-2), distinct_from=("no-max-subtraction",)),    # both overflow to inf alike
    *MASK_USE, *NORMALISER, *GENERAL, *OPERANDS)}
