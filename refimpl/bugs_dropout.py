"""Bug models of attention with dropout (``--dropout P``): the output a kernel gives from the keep pattern it used
(returned as flash-attn's ``S_dmask``, or given as ``dropout_mask``), with one mistake each.

Every model takes the float64 softmax weights of the case, the values expanded to the query heads, the keep
pattern and the dropout probability, and returns the output it gives::

    fn(weights (B, Hq, Sq, Sk), v (B, Hq, Sk, Dv), keep (B, Hq, Sq, Sk) bool, p) -> (B, Hq, Sq, Dv)

The right output is ``(weights * keep / (1 - p)) @ v``. The mistakes: the kept weights scaled by another factor
(none, p, 1/p, 1 - p), dropout never applied, the pattern read inverted (True = dropped), dropout before the
softmax (or the row sum taken after it: the kept weights renormalised to 1), and keep and drop probabilities
swapped (kept with probability p, scaled by 1/p: the pattern's rate is p, not 1 - p).
"""
from __future__ import annotations

import numpy as np

from .bug_model import BugModel, Variant

__all__ = ["MODELS", "right"]


def right(w, v, keep, p):
    """The output dropout gives: the kept weights scaled by 1 / (1 - p)."""
    return (w * keep / (1.0 - p)) @ v


def _scaled(factor):
    def fn(w, v, keep, p):
        return (w * keep * factor(p)) @ v
    return fn


def _ignored(w, v, keep, p):
    return w @ v


def _inverted(factor):
    def fn(w, v, keep, p):
        return (w * ~keep * factor(p)) @ v
    return fn


def _renormalised(factor):
    def fn(w, v, keep, p):
        kept = w * keep                                                  # (B, Hq, Sq, Sk)
        total = kept.sum(axis=-1, keepdims=True)
        return (kept / np.where(total > 0, total, 1.0) * factor(p)) @ v
    return fn


def _one(p):
    return 1.0


def _inv_keep(p):
    return 1.0 / (1.0 - p)


MODELS = {m.name: m for m in (
    BugModel("dropout-scale", "the kept weights are not scaled by 1/(1 - p)", (
        Variant("x 1: no rescaling", _scaled(_one)),
        Variant("x p", _scaled(lambda p: p)),
        Variant("x 1/p", _scaled(lambda p: 1.0 / p)),
        Variant("x (1 - p)", _scaled(lambda p: 1.0 - p)))),
    BugModel("dropout-ignored", "dropout is never applied: the output is the one without dropout, whatever the "
             "pattern", (Variant("no dropout", _ignored),)),
    BugModel("dropout-inverted", "the keep pattern is read (or reported) inverted: the weights it keeps are the "
             "ones dropped", (Variant("inverted, x 1/(1 - p)", _inverted(_inv_keep)),
                              Variant("inverted, x 1/p", _inverted(lambda p: 1.0 / p)))),
    BugModel("dropout-renormalised", "dropout before the softmax (or the row sum taken after dropout): the kept "
             "weights are renormalised to sum to one", (
                 Variant("renormalised, x 1/(1 - p)", _renormalised(_inv_keep)),
                 Variant("renormalised", _renormalised(_one)))),
    BugModel("dropout-rate-swapped", "keep and drop probabilities swapped: weights kept with probability p and "
             "scaled by 1/p", (Variant("kept with p, x 1/p", _scaled(lambda p: 1.0 / p)),)),
)}
