"""Held-out attention kernels, API ``refimpl``: ``fn(q, k, v, mask=None, scale=None)`` on NumPy arrays.

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); ``mask`` a bool keep-mask (True = attend) broadcastable to
(..., Sq, Sk); ``scale=None`` means 1/sqrt(D). A row with no kept key returns zeros. Six kernels carry one
mistake each (marked by a BUG comment on the mistake line), two are correct. See README.md.
"""
import numpy as np


# --- kernel: online_normalized_accumulator ---
def _onm_div(x, den):
    out = np.zeros(np.broadcast_shapes(x.shape, den.shape), dtype=x.dtype)
    np.divide(x, den, out=out, where=den > 0)
    return out


def online_normalized_accumulator(q, k, v, mask=None, scale=None):
    """Decode-style online softmax over key blocks of 32 that keeps the accumulator normalised."""
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    dt = q.dtype
    sc = dt.type(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    sq, sk = q.shape[-2], k.shape[-2]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if mask is not None:
        lead = np.broadcast_shapes(lead, np.shape(mask)[:-2])
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    else:
        keep = np.ones(lead + (sq, sk), dtype=bool)
    m = np.full(lead + (sq, 1), -np.inf, dtype=dt)
    l_run = np.zeros(lead + (sq, 1), dtype=dt)
    acc = np.zeros(lead + (sq, v.shape[-1]), dtype=dt)
    for j0 in range(0, sk, 32):
        kb, vb = k[..., j0:j0 + 32, :], v[..., j0:j0 + 32, :]
        s = (q @ np.swapaxes(kb, -1, -2)) * sc
        s = np.where(keep[..., j0:j0 + 32], s, -np.inf)
        m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
        m_ref = np.where(np.isneginf(m_new), 0, m_new).astype(dt)
        alpha = np.exp(m - m_ref)
        p = np.exp(s - m_ref)
        l_new = alpha * l_run + p.sum(axis=-1, keepdims=True)
        acc = _onm_div(acc * alpha + p @ vb, l_new)  # BUG: previous block's normalisation (l) not undone
        m, l_run = m_new, l_new
    return acc.astype(dt, copy=False)


# --- kernel: keymajor_softmax_full_transpose ---
def _kmt_softmax_last(x):
    mx = x.max(axis=-1, keepdims=True)
    mx = np.where(np.isneginf(mx), 0, mx)
    e = np.exp(x - mx)
    z = e.sum(axis=-1, keepdims=True)
    out = np.zeros_like(e)
    np.divide(e, z, out=out, where=z > 0)
    return out


def keymajor_softmax_full_transpose(q, k, v, mask=None, scale=None):
    """Scores kept key-major (..., Sk, Sq); the key-axis softmax is taken through a transpose."""
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    dt = q.dtype
    sc = dt.type(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    s_t = (k @ np.swapaxes(q, -1, -2)) * sc
    if mask is not None:
        keep_t = np.swapaxes(np.asarray(mask, dtype=bool), -1, -2)
        s_t = np.where(keep_t, s_t, -np.inf)
    w_t = np.transpose(_kmt_softmax_last(np.transpose(s_t)))  # BUG: bare transpose reverses every axis
    out = np.swapaxes(w_t, -1, -2) @ v
    return out.astype(dt, copy=False)


# --- kernel: rank3_mask_promoted_as_batch ---
def rank3_mask_promoted_as_batch(q, k, v, mask=None, scale=None):
    """Plain attention; a rank-3 mask is promoted to rank 4 before broadcasting."""
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    dt = q.dtype
    sc = dt.type(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    s = (q @ np.swapaxes(k, -1, -2)) * sc
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim == 3 and q.ndim == 4:
            mask = mask[:, None]  # BUG: rank-3 mask read as (B, Sq, Sk) instead of right-aligned (H, Sq, Sk)
        s = np.where(mask, s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    mx = np.where(np.isneginf(mx), 0, mx)
    e = np.exp(s - mx)
    z = e.sum(axis=-1, keepdims=True)
    w = np.zeros_like(e)
    np.divide(e, z, out=w, where=z > 0)
    return (w @ v).astype(dt, copy=False)


# --- kernel: query_query_similarity ---
def query_query_similarity(q, k, v, mask=None, scale=None):
    """Textbook softmax(Q K^T / sqrt(d)) V written out step by step."""
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    dt = q.dtype
    sc = dt.type(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    s = (q @ np.swapaxes(q, -1, -2)) * sc  # BUG: Q Q^T instead of Q K^T
    if mask is not None:
        s = np.where(np.asarray(mask, dtype=bool), s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    mx = np.where(np.isneginf(mx), 0, mx)
    e = np.exp(s - mx)
    z = e.sum(axis=-1, keepdims=True)
    w = np.zeros_like(e)
    np.divide(e, z, out=w, where=z > 0)
    return (w @ v).astype(dt, copy=False)


# --- kernel: epilogue_fixed_row_stride ---
def epilogue_fixed_row_stride(q, k, v, mask=None, scale=None):
    """Query blocks of 16; each output tile goes through a flat scratch buffer sized for Dv <= 64."""
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    dt = q.dtype
    sc = dt.type(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if mask is not None:
        lead = np.broadcast_shapes(lead, np.shape(mask)[:-2])
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk)).reshape(-1, sq, sk)
    else:
        keep = np.ones((1, sq, sk), dtype=bool)
    qf = np.broadcast_to(q, lead + q.shape[-2:]).reshape(-1, sq, q.shape[-1])
    kf = np.broadcast_to(k, lead + k.shape[-2:]).reshape(-1, sk, k.shape[-1])
    vf = np.broadcast_to(v, lead + v.shape[-2:]).reshape(-1, sk, dv)
    keep = np.broadcast_to(keep, (qf.shape[0], sq, sk))
    out = np.zeros((qf.shape[0], sq, dv), dtype=dt)
    smem = np.zeros(16 * 64, dtype=dt)
    for g in range(qf.shape[0]):
        for i0 in range(0, sq, 16):
            bm = min(16, sq - i0)
            s = (qf[g, i0:i0 + bm] @ kf[g].T) * sc
            s = np.where(keep[g, i0:i0 + bm], s, -np.inf)
            mx = s.max(axis=-1, keepdims=True)
            mx = np.where(np.isneginf(mx), 0, mx)
            p = np.exp(s - mx)
            z = p.sum(axis=-1, keepdims=True)
            o = np.zeros((bm, dv), dtype=dt)
            np.divide(p @ vf[g], z, out=o, where=z > 0)
            smem[:bm * dv] = o.reshape(-1)
            for r in range(bm):
                row = smem[r * 64:r * 64 + dv]  # BUG: hard-coded 64-wide row stride; the tile was stored Dv wide
                out[g, i0 + r] = row
    return out.reshape(lead + (sq, dv))


# --- kernel: finite_fill_masked_scores ---
def finite_fill_masked_scores(q, k, v, mask=None, scale=None):
    """Unfused path: masked scores filled before a stable softmax."""
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    dt = q.dtype
    sc = dt.type(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    s = (q @ np.swapaxes(k, -1, -2)) * sc
    if mask is not None:
        s = np.where(np.asarray(mask, dtype=bool), s, dt.type(-10000.0))  # BUG: finite fill value
    mx = s.max(axis=-1, keepdims=True)
    mx = np.where(np.isneginf(mx), 0, mx)
    e = np.exp(s - mx)
    z = e.sum(axis=-1, keepdims=True)
    w = np.zeros_like(e)
    np.divide(e, z, out=w, where=z > 0)
    return (w @ v).astype(dt, copy=False)


# --- kernel: attend_base2_key_blocks ---
def attend_base2_key_blocks(q, k, v, mask=None, scale=None):
    """Online softmax in base 2 (exp2 with log2(e) folded into the scale) over key blocks of 24."""
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    dt = q.dtype
    sc = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    sc2 = dt.type(sc * np.log2(np.e))
    sq, sk = q.shape[-2], k.shape[-2]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if mask is not None:
        lead = np.broadcast_shapes(lead, np.shape(mask)[:-2])
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    else:
        keep = None
    m = np.full(lead + (sq, 1), -np.inf, dtype=dt)
    l_run = np.zeros(lead + (sq, 1), dtype=dt)
    acc = np.zeros(lead + (sq, v.shape[-1]), dtype=dt)
    for j0 in range(0, sk, 24):
        s2 = (q @ np.swapaxes(k[..., j0:j0 + 24, :], -1, -2)) * sc2
        if keep is not None:
            s2 = np.where(keep[..., j0:j0 + 24], s2, -np.inf)
        m_new = np.maximum(m, s2.max(axis=-1, keepdims=True))
        m_ref = np.where(np.isneginf(m_new), 0, m_new).astype(dt)
        corr = np.exp2(m - m_ref)
        p = np.exp2(s2 - m_ref)
        l_run = corr * l_run + p.sum(axis=-1, keepdims=True)
        acc = corr * acc + p @ v[..., j0:j0 + 24, :]
        m = m_new
    out = np.zeros_like(acc)
    np.divide(acc, l_run, out=out, where=l_run > 0)
    return out


# --- kernel: attend_lse_merged_halves ---
def _lmh_partial(q, k, v, keep, sc):
    s = (q @ np.swapaxes(k, -1, -2)) * sc
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    mx0 = np.where(np.isneginf(mx), 0, mx)
    e = np.exp(s - mx0)
    z = e.sum(axis=-1, keepdims=True)
    o = np.zeros(e.shape[:-1] + (v.shape[-1],), dtype=q.dtype)
    np.divide(e @ v, z, out=o, where=z > 0)
    with np.errstate(divide='ignore'):
        lse = np.where(z > 0, mx0 + np.log(np.where(z > 0, z, 1)), -np.inf)
    return o, lse


def attend_lse_merged_halves(q, k, v, mask=None, scale=None):
    """Keys split in two halves; the partial outputs are merged by their log-sum-exp."""
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    dt = q.dtype
    sc = dt.type(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    sq, sk = q.shape[-2], k.shape[-2]
    h = (sk + 1) // 2
    keep = None
    if mask is not None:
        lead = np.broadcast_shapes(q.shape[:-2], np.shape(mask)[:-2])
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    ka = None if keep is None else keep[..., :h]
    kb = None if keep is None else keep[..., h:]
    o1, l1 = _lmh_partial(q, k[..., :h, :], v[..., :h, :], ka, sc)
    o2, l2 = _lmh_partial(q, k[..., h:, :], v[..., h:, :], kb, sc)
    lse = np.logaddexp(l1, l2)
    lse0 = np.where(np.isneginf(lse), 0, lse)
    w1 = np.where(np.isneginf(l1), 0, np.exp(l1 - lse0))
    w2 = np.where(np.isneginf(l2), 0, np.exp(l2 - lse0))
    return (w1 * o1 + w2 * o2).astype(dt, copy=False)


CATALOG = [
    {
        'name': 'np-onebit-normalized-accumulator', 'api': 'refimpl', 'fn': 'online_normalized_accumulator',
        'correct': False, 'bug': 'online-accumulator-renormalized-each-block',
        'parameter': ('the online softmax keeps its accumulator divided by the running row sum; each new key '
                      'block of 32 rescales it by exp(m_old - m_new) but does not multiply the previous row sum '
                      'back in before dividing by the new one, so earlier blocks end up divided by their own '
                      'row sums again. Triggers: Sk > 32 (kept keys in two or more key blocks of 32).'),
        'source': '1bit-MONSTER/1bit-MONSTER#495',
        'report': 'https://github.com/1bit-MONSTER/1bit-MONSTER/pull/495',
        'dtype': 'float64', 'features': ['mask', 'dv-ne-d'],
    },
    {
        'name': 'np-esim-transpose-reverses-axes', 'api': 'refimpl', 'fn': 'keymajor_softmax_full_transpose',
        'correct': False, 'bug': 'softmax-axis-full-transpose',
        'parameter': ('key-major scores (..., Sk, Sq) are brought to query-major for the softmax with a bare '
                      'np.transpose, which reverses every axis: for 3-D and 4-D inputs the softmax runs over '
                      'the leading (head or batch) axis instead of the key axis (2-D inputs are right). '
                      'Triggers: inputs with 3 or more dimensions.'),
        'source': 'HsiaoYetGun/ESIM#5',
        'report': 'https://github.com/HsiaoYetGun/ESIM/issues/5',
        'dtype': 'float64', 'features': ['mask', 'dv-ne-d'],
    },
    {
        'name': 'np-onnx-rank3-mask-as-batch', 'api': 'refimpl', 'fn': 'rank3_mask_promoted_as_batch',
        'correct': False, 'bug': 'rank3-mask-leading-axis-misread',
        'parameter': ('with 4-D inputs a 3-D mask (H, Sq, Sk) is promoted to (H, 1, Sq, Sk), i.e. read as (B, '
                      "Sq, Sk), instead of right-aligned (1, H, Sq, Sk): batch b gets head b's mask on every "
                      'head, or the broadcast fails / the output shape is wrong when B != H. Triggers: 4-D '
                      'inputs with a 3-D mask whose leading size is > 1.'),
        'source': 'onnx/onnx#8108',
        'report': 'https://github.com/onnx/onnx/pull/8108',
        'dtype': 'float64', 'features': ['mask', 'dv-ne-d'],
    },
    {
        'name': 'np-learnnlp-query-query-scores', 'api': 'refimpl', 'fn': 'query_query_similarity',
        'correct': False, 'bug': 'scores-query-times-query',
        'parameter': ('the scores are Q Q^T * scale instead of Q K^T * scale (wrong values; with a mask and Sq '
                      '!= Sk the broadcast fails). Triggers: always.'),
        'source': 'datawhalechina/learn-nlp-with-transformers#40',
        'report': 'https://github.com/datawhalechina/learn-nlp-with-transformers/pull/40',
        'dtype': 'float64', 'features': ['mask', 'dv-ne-d'],
    },
    {
        'name': 'np-sparkinfer-epilogue-row-stride', 'api': 'refimpl', 'fn': 'epilogue_fixed_row_stride',
        'correct': False, 'bug': 'output-tile-row-stride-mismatch',
        'parameter': ('each output tile of 16 query rows is stored into a flat scratch buffer Dv wide but read '
                      'back with a hard-coded row stride of 64, so tile row r >= 1 gets elements r*64 .. '
                      "r*64+Dv-1 (other rows' values or zeros) unless Dv == 64. Triggers: Dv != 64 with Sq >= "
                      '2.'),
        'source': 'gittensor-ai-lab/sparkinfer#425',
        'report': 'https://github.com/gittensor-ai-lab/sparkinfer/issues/425',
        'dtype': 'float64', 'features': ['mask', 'dv-ne-d'],
    },
    {
        'name': 'np-megatron-finite-mask-fill', 'api': 'refimpl', 'fn': 'finite_fill_masked_scores',
        'correct': False, 'bug': 'finite-mask-fill-dead-row-uniform',
        'parameter': ('dropped keys are filled with -10000.0 instead of -inf: harmless on rows that keep a key '
                      '(the exponential underflows), but a row with no kept key gets uniform weights (the mean '
                      'of V) instead of zeros. Triggers: a mask with a row that has no kept key.'),
        'source': 'NVIDIA/Megatron-LM#731',
        'report': 'https://github.com/NVIDIA/Megatron-LM/pull/731',
        'dtype': 'float64', 'features': ['mask', 'dv-ne-d'],
    },
    {
        'name': 'np-base2-key-blocks', 'api': 'refimpl', 'fn': 'attend_base2_key_blocks',
        'correct': True, 'bug': None,
        'parameter': None,
        'source': None,
        'report': None,
        'dtype': 'float64', 'features': ['mask', 'dv-ne-d'],
    },
    {
        'name': 'np-lse-merged-halves', 'api': 'refimpl', 'fn': 'attend_lse_merged_halves',
        'correct': True, 'bug': None,
        'parameter': None,
        'source': None,
        'report': None,
        'dtype': 'float64', 'features': ['mask', 'dv-ne-d'],
    },
]
