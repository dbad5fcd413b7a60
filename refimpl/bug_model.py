"""The shape of a bug model, one row of the bug-model tables (:mod:`refimpl.bugs`, :mod:`refimpl.bugs_backward`):
its name, the explanation a diagnosis prints, its variants and the closeness a fit needs; and the two helpers every
model module uses (the keywords a model takes, a function bound to its parameter). Imports nothing of refimpl."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

__all__ = ["BugModel", "Variant", "_kw", "_named"]


@dataclass(frozen=True)
class Variant:
    label: str                          # how this variant makes the mistake, e.g. "1/sqrt(Dv)"
    fn: Callable                        # refimpl's inputs and keywords -> the output with the mistake
    splits_alibi: bool = False          # takes the user's mask and the ALiBi slopes apart (mask=, slopes=)
    packed: bool = False                # a packed (varlen) batch's model: takes seqlens, seq_causal, seq_window,
    #                                     slopes; tried only on packed cases
    tiled: bool = False                 # walks a block mask's tiles: takes block= (the case's BLOCK_SIZE, as
    #                                     --api flex-attention hands it); tried only where the API hands one
    in_float32: bool = False            # computes in float32: it names a mistake only where it differs from
    #                                     float32 arithmetic done right (the diagnosis checks that)
    flags: bool = False                 # a mistake in handling the causal/window flags: where the target got the
    #                                     band folded into its mask, it is called with the band in the mask too


@dataclass(frozen=True)
class BugModel:
    """One bug model: a row of the bug-model table (forward here, backward in :mod:`refimpl.bugs_backward`)."""
    name: str
    explanation: str
    variants: tuple[Variant, ...]
    tolerance: tuple[float, float] = (1e-3, 1e-6)   # (rtol, atol relative to 1 + max|v|) a fit must meet
    distinct_from: tuple[str, ...] = ()             # models it is named beside only where the cases tell them apart


# what every model of refimpl's keywords is called with, and a model's function bound to its parameter
def _kw(kw):
    names = ("mask", "scale", "is_causal", "alignment", "window", "softcap", "enable_gqa")
    d = dict(mask=None, scale=None, is_causal=False, alignment="top-left", window=None, softcap=None, enable_gqa=False)
    d.update({n: kw[n] for n in names if n in kw})
    return d


def _named(fn, **param):
    f = partial(fn, **param)
    f.__doc__ = fn.__doc__
    return f
