"""The face of a built-in column (:class:`Column`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...masks import band_mask
from ..targets.target import Target

__all__ = ["Column", "fold_band"]


@dataclass(frozen=True)
class Column:
    name: str
    make: Callable[[], Target]            # the column's target; raises Unavailable when it cannot run here
    doc: str                              # one line for the README's column list
    divergences: dict = field(default_factory=dict)    # id -> title: catalogued behaviours (docs/divergences.md)
    # what it runs on, for the environment line ({"torch": "1.13.0"}); a key with "_" in it is a detail (the JSON
    # report has it, the line not)
    versions: Callable[[], dict[str, str]] = dict
    r_rows: bool = False                  # its presence runs the rows R computes (vignettes' R run, R's batch)


def fold_band(mask, sq: int, sk: int, is_causal: bool, alignment: str, window):
    """``mask`` (None, bool keep or float additive) with the causal/window band of a case folded in: what a
    runtime without that feature receives instead."""
    keep = band_mask(sq, sk, is_causal=is_causal, window=window, alignment=alignment)
    if keep is None:
        return mask
    if mask is None:
        return keep
    if mask.dtype == bool:
        return mask & keep
    return np.where(keep, mask, -np.inf)
