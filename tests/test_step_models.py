"""The forward models of a kernel's softmax steps and output layout fit the parameter a kernel was built with:
kernels written here (NumPy and torch, each a plain attention with one mistake and one parameter value) are named
by the model with that very value, and the model's line says nothing the cases did not pin."""
import numpy as np
import pytest

from refimpl.harness.analysis.diagnosis import diagnose
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.targets.target import Target

torch = pytest.importorskip("torch")
STORE = CaseStore()


def _lines(fn, api, families, dtype="float64"):
    specs = select(families, "quick", (dtype,))
    target = Target("k", fn, api=api)
    results = [run_one(target, s, STORE) for s in specs]
    assert any(r.status == Status.FAIL for r in results), "nothing failed"
    return diagnose(results, STORE, target="k", specs={s.id: s for s in specs})


def _online_row_sum_unrescaled(block):
    def fn(q, k, v, mask=None, scale=None):
        sc = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
        keep = np.ones(q.shape[:-1] + (k.shape[-2],), bool) if mask is None else np.broadcast_to(
            mask, np.broadcast_shapes(q.shape[:-1] + (k.shape[-2],), np.shape(mask)))
        m = np.full(q.shape[:-1] + (1,), -np.inf)
        row, acc = np.zeros_like(m), np.zeros(q.shape[:-1] + (v.shape[-1],))
        for j in range(0, k.shape[-2], block):
            s = np.where(keep[..., j:j + block], q @ np.swapaxes(k[..., j:j + block, :], -1, -2) * sc, -np.inf)
            new = np.maximum(m, s.max(axis=-1, keepdims=True))
            base = np.where(np.isfinite(new), new, 0.0)
            p = np.exp(s - base)
            row = row + p.sum(axis=-1, keepdims=True)          # the mistake: the old sum is not rescaled
            acc = np.exp(m - base) * acc + p @ v[..., j:j + block, :]
            m = new
        return acc / np.where(row == 0, 1.0, row)
    return fn


@pytest.mark.parametrize("block", [16, 64])
def test_an_online_row_sum_never_rescaled_is_named_with_its_block(block):
    lines = _lines(_online_row_sum_unrescaled(block), "refimpl", ["sizes", "bool-mask"])
    assert len(lines) == 1 and lines[0].startswith("diagnosis k: online-rescale — "), lines
    assert f"row sum never rescaled, blocks of {block}" in lines[0], lines


def _causal_tiles_from_first_row(block):
    """torch-sdpa signature; causal (top-left) key range of each query tile from the tile's first row."""
    def fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        sc = query.size(-1) ** -0.5 if scale is None else scale
        if enable_gqa and key.size(-3) != query.size(-3):
            rep = query.size(-3) // key.size(-3)
            key, value = key.repeat_interleave(rep, -3), value.repeat_interleave(rep, -3)
        s = query @ key.transpose(-2, -1) * sc
        Sq, Sk = s.shape[-2:]
        keep = torch.ones(Sq, Sk, dtype=torch.bool)
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                keep = keep & attn_mask
            else:
                s = s + attn_mask
        if is_causal:
            keep = keep & torch.ones(Sq, Sk, dtype=torch.bool).tril()
            for m0 in range(0, Sq, block):
                end = -(-(m0 + 1) // 16) * 16                           # key tiles of 16 up to row m0's last key
                keep[..., m0:m0 + block, min(end, Sk):] = False          # the mistake: the range of row m0 only
        s = s.masked_fill(~keep, float("-inf"))
        w = torch.softmax(s, -1).nan_to_num(0.0)
        return w @ value
    return fn


@pytest.mark.parametrize("block", [32, 64])
def test_a_causal_tile_range_from_its_first_row_is_named_with_its_tile(block):
    lines = _lines(_causal_tiles_from_first_row(block), "torch-sdpa", ["causal"])
    assert len(lines) == 1 and lines[0].startswith("diagnosis k: band-tile-range — "), lines
    variants = lines[0].rsplit(" (", 1)[1]
    assert f"end from first row, query tiles of {block}, key tiles of 16" in lines[0], lines
    assert "start from last row" not in variants, lines


def _laid_out(layout):
    def fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        B, Hq, Sq, _ = query.shape
        Hkv = key.size(-3)
        G = Hq // Hkv
        k2, v2 = key.repeat_interleave(G, -3), value.repeat_interleave(G, -3)
        s = query @ k2.transpose(-2, -1) * (query.size(-1) ** -0.5 if scale is None else scale)
        if attn_mask is not None:
            s = s.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask
        if is_causal:
            s = s.masked_fill(~torch.ones(Sq, k2.size(-2), dtype=torch.bool).tril(), float("-inf"))
        o = torch.softmax(s, -1).nan_to_num(0.0) @ v2                     # (B, Hq, Sq, Dv)
        if layout == "merge":                                              # heads merged without the permute
            return o.reshape(B, Sq, Hq * o.size(-1)).reshape(B, Sq, Hq, -1).permute(0, 2, 1, 3)
        if layout == "channel-major":                                      # O^T (Dv, Sq) reshaped, not transposed
            return o.transpose(-2, -1).contiguous().reshape(B, Hq, Sq, -1)
        if layout == "channel-major, inverse":                             # O's (Sq, Dv) read as (Dv, Sq), transposed
            return o.reshape(B, Hq, o.size(-1), Sq).transpose(-2, -1)
        return o.reshape(B, Hkv, G, Sq, -1).transpose(1, 2).reshape(B, Hq, Sq, -1)   # heads flattened (G, Hkv)
    return fn


@pytest.mark.parametrize("layout,label", [("merge", "heads as positions"), ("groups", "GQA heads (G, Hkv)"),
                                          ("channel-major", "rows and channels (Dv, Sq) read as (Sq, Dv)"),
                                          ("channel-major, inverse", "rows and channels (Sq, Dv) read as (Dv, Sq)")])
def test_an_output_laid_out_wrong_is_named_with_its_layout(layout, label):
    lines = _lines(_laid_out(layout), "torch-sdpa", ["batched-heads", "gqa"])
    assert len(lines) == 1 and lines[0].startswith("diagnosis k: head-layout — "), lines
    assert lines[0].endswith(f"({label})"), lines
