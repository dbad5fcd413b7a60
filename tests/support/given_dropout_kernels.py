"""NumPy kernels of the refimpl protocol given refimpl's dropout keep-mask (tests/test_dropout_given.py):
fn(q, k, v, mask=None, scale=None, dropout_p=0.0, dropout_mask=None), dropout_mask bool (B, H, Sq, Sk), True = kept.
One is right (drop after the softmax, the kept weights scaled by 1/(1 - p)); each other has one mistake: the mask
ignored (no dropout at all), the kept weights scaled by (1 - p) instead, the mask applied to the scores before the
softmax (then scaled by 1/(1 - p))."""
import numpy as np


def _attend(q, k, v, mask, scale, p, keep, mode):
    s = (1.0 / np.sqrt(q.shape[-1]) if scale is None else scale) * (q @ np.swapaxes(k, -1, -2))
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    if keep is not None and mode == "before-softmax":
        s = np.where(keep, s, -np.inf)                      # mistake: dropped before the softmax renormalises
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
    z = e.sum(axis=-1, keepdims=True)
    w = e / np.where(z == 0, 1.0, z)
    if keep is not None and mode != "ignores":
        w = w * keep
        w = w * ((1.0 - p) if mode == "by-1-minus-p" else 1.0 / (1.0 - p))
    return w @ v


def _make(mode):
    def fn(q, k, v, mask=None, scale=None, dropout_p=0.0, dropout_mask=None):
        return _attend(q, k, v, mask, scale, dropout_p, dropout_mask if dropout_p else None, mode)
    fn.__name__ = "given_" + mode.replace("-", "_")
    return fn


given_right = _make("right")
given_ignores_mask = _make("ignores")
given_scaled_by_1_minus_p = _make("by-1-minus-p")
given_before_softmax = _make("before-softmax")
