"""A correct NumPy kernel whose every other call differs in the last bit of one value (tests/test_determinism.py)."""
import numpy as np

_calls = [0]


def attn(q, k, v, mask=None, scale=None):
    s = (1.0 / np.sqrt(q.shape[-1]) if scale is None else scale) * (q @ np.swapaxes(k, -1, -2))
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
    z = e.sum(axis=-1, keepdims=True)
    out = (e / np.where(z == 0, 1.0, z)) @ v
    _calls[0] += 1
    if _calls[0] % 2 == 0 and out.size:
        out.flat[0] = np.nextafter(out.flat[0], out.dtype.type(np.inf))
    return out
