"""The precisions a case can run in: one record each, every dtype fact of refimpl read from here.

=========  ===========  ==============  ====  ===========  ==========
name       unit roundoff largest finite rank  NumPy carrier torch name
=========  ===========  ==============  ====  ===========  ==========
float64    2**-53       1.80e308        3     float64      float64
float32    2**-24       3.40e38         2     float32      float32
float16    2**-11       65504           1     float32      float16
bfloat16   2**-8        3.39e38         1     float32      bfloat16
=========  ===========  ==============  ====  ===========  ==========

``rank`` orders precisions (a target may not return a lower rank than it was given); the carrier is the NumPy
dtype that holds a precision's values exactly (NumPy has no bfloat16, and NumPy targets get the 16-bit types
as float32 arrays of representable values). :meth:`Precision.round` rounds float64 values to the precision
(round to nearest even) and returns float64. It stands on the ground floor (imports nothing of refimpl): a
wrong name is a ValueError naming the argument and the allowed names, which the CLI turns into exit 2.
Sources: IEEE 754-2008 (binary64/32/16); bfloat16 is binary32 with the low 16 bits of the significand
dropped (8 significant bits).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Precision", "PRECISIONS", "NAMES", "get", "of", "parse_dtypes", "lowest"]


@dataclass(frozen=True)
class Precision:
    name: str
    eps: float              # unit roundoff u = 2**-p
    largest: float          # largest finite value
    rank: int               # float64 > float32 > the 16-bit types
    carrier: str            # the NumPy dtype holding its values exactly

    @property
    def native(self) -> bool:
        """NumPy has this dtype itself (its carrier is itself)."""
        return self.carrier == self.name

    @property
    def low(self) -> bool:
        """Below float64: judged by the FlashAttention budget rather than the forward bound."""
        return self.rank < 3

    def torch_dtype(self):
        import torch
        return getattr(torch, self.name)

    def round(self, a) -> np.ndarray:
        """``a`` rounded to this precision (round to nearest even), returned as float64."""
        a = np.asarray(a, np.float64)
        if self.name == "float64":
            return a
        if self.name == "bfloat16":
            u = a.astype(np.float32).view(np.uint32).astype(np.uint64)
            u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000              # round the low 16 bits away, ties to even
            return u.astype(np.uint32).view(np.float32).astype(np.float64)
        return a.astype(self.name).astype(np.float64)

    def at_least(self, other: "Precision") -> bool:
        return self.rank >= other.rank

    def __str__(self) -> str:
        return self.name


PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision("float64", 2.0 ** -53, float(np.finfo(np.float64).max), 3, "float64"),
    Precision("float32", 2.0 ** -24, float(np.finfo(np.float32).max), 2, "float32"),
    Precision("float16", 2.0 ** -11, 65504.0, 1, "float32"),
    Precision("bfloat16", 2.0 ** -8, 3.3895313892515355e38, 1, "float32"),
)}
NAMES: tuple[str, ...] = tuple(PRECISIONS)


def get(name: str, what: str = "dtype") -> Precision:
    """The precision called ``name``; a ValueError naming ``what`` and the allowed names otherwise."""
    try:
        return PRECISIONS[str(name)]
    except KeyError:
        raise ValueError(f"{what} must be one of {', '.join(NAMES)}, got {name!r}") from None


def of(dtype) -> Precision | None:
    """The precision of a NumPy dtype, a torch dtype or a name (``torch.bfloat16`` included); None for
    anything else (integers, bool, float128)."""
    name = str(dtype).replace("torch.", "")
    if name not in PRECISIONS:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            return None
    return PRECISIONS.get(name)


def parse_dtypes(text: str) -> tuple[str, ...]:
    """``--dtype``'s value: a comma-separated list of precision names (argparse ``type=``)."""
    names = tuple(d.strip() for d in str(text).split(",") if d.strip())
    bad = [d for d in names if d not in PRECISIONS]
    if not names or bad:
        raise ValueError(f"--dtype takes a comma-separated list of {', '.join(NAMES)}, got {text!r}")
    return names


def lowest(names) -> str:
    """The lowest precision among dtype names (unknown names rank lowest)."""
    return min(names, key=lambda d: PRECISIONS[d].rank if d in PRECISIONS else 0)
