"""``mask-rows``: a kernel that walks the queries in chunks of C and slices the mask per chunk with a length of 1
(every row of a chunk reads its first row's mask) is named with the C it was built with; the model's arithmetic is
checked against rows written out here."""
import math

import numpy as np
import pytest

from refimpl.bugs_mask_use import mask_rows_collapsed
from tests.support.quick_runs import forward_lines


def _chunked(chunk: int):
    """fn(q, k, v, mask=None, scale=None) over query chunks of `chunk`, each chunk's mask its first row's."""
    def fn(q, k, v, mask=None, scale=None):
        sq = q.shape[-2]
        c = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        out = np.zeros(np.broadcast_shapes(q.shape[:-2], k.shape[:-2]) + (sq, v.shape[-1]))
        for start in range(0, sq, chunk):
            s = q[..., start:start + chunk, :] @ np.swapaxes(k, -1, -2) * c
            if mask is not None:
                m = np.asarray(mask)
                m = m[..., start:start + 1, :] if m.ndim >= 2 and m.shape[-2] > 1 else m
                s = np.where(np.broadcast_to(m, s.shape), s, -np.inf) if m.dtype == bool else s + m
            top = s.max(axis=-1, keepdims=True)
            e = np.exp(s - np.where(np.isfinite(top), top, 0.0))
            d = e.sum(axis=-1, keepdims=True)
            out[..., start:start + chunk, :] = (e / np.where(d == 0, 1.0, d)) @ v
        return out.astype(q.dtype)
    return fn


@pytest.mark.parametrize("chunk", [8, 32])
def test_the_query_chunk_whose_first_mask_row_every_row_reads_is_named(chunk):
    lines = forward_lines(_chunked(chunk))
    assert len(lines) == 1 and lines[0].startswith("diagnosis k: mask-rows — "), lines
    assert f"(chunks of {chunk} query rows, each reading its first row's mask)" in lines[0], lines


def test_each_row_attends_with_its_chunks_first_mask_row():
    rng = np.random.default_rng(3)
    q, k, v = rng.standard_normal((1, 1, 5, 4)), rng.standard_normal((1, 1, 6, 4)), rng.standard_normal((1, 1, 6, 3))
    mask = rng.random((5, 6)) < 0.6
    mask[:, 0] = True
    out = mask_rows_collapsed(q, k, v, mask=mask, chunk=2)[0, 0]
    for i in range(5):
        keep = mask[i // 2 * 2]
        s = q[0, 0, i] @ k[0, 0].T / 2.0
        w = np.where(keep, np.exp(s - s[keep].max()), 0.0)
        np.testing.assert_allclose(out[i], (w / w.sum()) @ v[0, 0], rtol=0, atol=1e-12)
    row0 = mask_rows_collapsed(q, k, v, mask=mask, chunk=None)
    np.testing.assert_allclose(row0, mask_rows_collapsed(q, k, v, mask=mask, chunk=8), rtol=0, atol=0)
