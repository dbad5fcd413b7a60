"""The face every target API has (:class:`Api`) and what all of them share: fresh copies of the inputs, the
conversion of what a target returns, and the rule that decides whether an API can express a case.

An API module declares its name, its signature, the parameters that identify it, whether it hands torch
tensors, the features it cannot express (feature -> the ``n/a`` reason), and two functions: the arguments of
a case (``arguments``) and the output in refimpl's layout (``unpack``). Nothing outside ``apis/`` compares
API names: callers ask the API object.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from ...masks import band_mask
from ...precision import get as precision, of as precision_of

__all__ = ["Api", "Returned", "needs", "keep_mask", "flash_band", "to_numpy", "snapshots", "mutations", "converter",
           "dropout_draw"]

FEATURES = ("bool-mask", "additive-mask", "padding-mask", "sequence-lengths", "dv-ne-d", "softcap", "alibi", "gqa",
            "top-left-band", "bottom-right-band")


def needs(spec) -> list[str]:
    """The features (of :data:`FEATURES`) a case needs from an API, in the order their reasons are given.
    A packed batch needs ``sequence-lengths``: an API with bool masks gets them folded into its keep-mask."""
    if spec.seqlens is not None:
        out = ["sequence-lengths"]
    else:
        out = [f"{spec.mask}-mask"] if spec.mask != "none" else []
    out += ["dv-ne-d"] if spec.Dv != spec.D else []
    out += [f for f, on in (("softcap", spec.softcap is not None), ("alibi", spec.alibi), ("gqa", spec.gqa)) if on]
    if (spec.is_causal or spec.window is not None) and spec.Sq != spec.Sk:
        out.append(f"{spec.alignment}-band")
    return out


@dataclass
class Returned:
    """What a target returned for one case, in refimpl's layout and float64."""
    output: np.ndarray                  # (B, Hq, Sq, Dv)
    weights: np.ndarray | None          # (B, Hq, Sq, Sk) when the API returns them
    dtype: str                          # the precision the target returned
    mutated: list[str]                  # inputs the target wrote to
    lse: np.ndarray | None = None       # (B, Hq, Sq) log-sum-exp when asked for (--lse)
    lse_dtype: str = ""                 # the precision the LSE came in
    problems: list[str] = field(default_factory=list)   # what the API's own checks found (a KV cache not updated)
    dropout_keep: np.ndarray | None = None   # (B, Hq, Sq, Sk) bool: which weights the target kept (--dropout P)
    dropout_p: float = 0.0
    dropout_given: bool = False         # the keep-mask was refimpl's draw, given to the target (no keep-rate test)
    written: dict = field(default_factory=dict)   # name -> float64 content of the inputs of Api.writes it wrote
    band_flags: bool = True             # the causal band and window reached the target as flags, not in its mask
    mask_given: bool | None = None      # a mask (or bias) argument reached the target (None: not known)
    block: int | None = None            # the BLOCK_SIZE the API handed the target (flex-attention's, with or without
    #                                     a mask); None: the API has no block mask


@dataclass(frozen=True)
class Api:
    name: str
    signature: str                           # the call as the API documents it
    params: tuple[str, ...]                  # parameter names that identify the API in a signature
    tensors: bool                            # hands torch tensors whatever --torch-tensors says
    cannot_express: dict = field(default_factory=dict)   # feature -> why the API cannot express it (n/a)
    layouts: tuple[str, ...] = ("BHSD",)     # the layouts q, k, v can be given in; the first is its own
    output_layout: str | None = None         # the output's layout when it is not the inputs' (hf: BSHD)
    returns: str = ""                        # what it must return (the probe's fix)
    returns_weights: bool = False            # (output, weights) is a documented return
    causal_flag: str | None = None           # the alignment its causal flag means (probed), None: no flag
    keywords: bool = False                   # takes refimpl's own keywords (is_causal=..., alignment=...)
    arg_names: tuple[str, ...] = ("q", "k", "v")   # the positional arguments' names
    qkv_at: int = 0                          # where q, k, v start among the positional arguments (hf: 1)
    spec_prefix: str | None = None           # a --target prefix that only this API can call ("c:")
    lse_kwargs: dict | None = None           # the keywords that make it return its log-sum-exp (None: it cannot)
    lse_returns: str = ""                    # what it then returns (the error's words)
    writes: tuple[str, ...] = ()             # inputs it must write to (a KV cache): checked, not a failure
    dropout_returns: str = ""                # how it returns its dropout pattern ("": it returns none)
    band_always_flags: bool = False          # every band arrives as flags, in any alignment (refimpl's keywords)
    dropout_given: str = ""                  # how it is given refimpl's keep-mask instead ("": it is not)
    no_dropout: str = ""                     # why it has no --dropout, when neither form applies (the refusal)
    repro_imports: tuple[str, ...] = ()      # lines a reproduction script needs to rebuild its arguments
    dead_rows: str | None = None             # the output it documents for a row with no key (pins --masked-rows)

    def block_size(self, data) -> int | None:
        """The BLOCK_SIZE the case's block mask is handed in (None: the API takes no block mask); a bug model that
        walks a block mask's tiles applies only with it (a kernel cannot have used a tile size it was never given)."""
        return None

    def band_as_flags(self, data) -> bool:
        """Whether the case's causal band and window reach the target as flags rather than folded into its mask (a
        bug model of flag handling applies only then): no band, or refimpl's keywords, or a causal flag that means
        the case's alignment (an API handing a band some other way says so)."""
        s = data.spec
        if not (s.is_causal or s.window is not None) or self.band_always_flags:
            return True
        return self.causal_flag is not None and (self.causal_flag == s.alignment or s.Sq == s.Sk)

    def cannot(self, spec) -> str | None:
        """None when the API can express every feature of ``spec``; otherwise why not (the cell's ``n/a``)."""
        return next((self.cannot_express[f] for f in needs(spec) if f in self.cannot_express), None)

    def can(self, feature: str) -> bool:
        return feature not in self.cannot_express

    def uses_torch(self, torch: bool = False) -> bool:
        """Tensors: the API's own, or ``--torch-tensors`` for an API whose layout is a flag (refimpl's)."""
        return self.tensors or (torch and len(self.layouts) > 1)

    def given_dtype(self, dtype: str, torch: bool = False) -> str:
        """The dtype a case's inputs reach the target in (NumPy holds the 16-bit types as float32)."""
        return dtype if self.uses_torch(torch) else precision(dtype).carrier

    def bshd(self, layout: str) -> bool:
        """Whether q, k, v are (B, S, H, D) when called with ``--layout layout``."""
        own = self.layouts[0]
        return (layout if len(self.layouts) > 1 else own) == "BSHD"

    def output_bshd(self, layout: str) -> bool:
        """Whether the output comes back (B, Sq, H, Dv)."""
        return self.output_layout == "BSHD" if self.output_layout else self.bshd(layout)

    def flags(self, layout: str, torch: bool) -> str:
        """The command-line flags that select this configuration."""
        if len(self.layouts) == 1:
            return f"--api {self.name}"
        return f"--api {self.name} --layout {'BSHD' if layout == 'BSHD' else layout}" + \
            (" --torch-tensors" if torch else "")

    def arguments(self, data, conv, layout: str) -> tuple[dict, tuple, dict]:
        """``(inputs to watch for writes, positional arguments, keyword arguments)`` of one case."""
        raise NotImplementedError

    def place(self, output: np.ndarray, data) -> np.ndarray:
        """The output (float64, the API's own arrangement after :meth:`unpack`) in refimpl's (B, Hq, Sq, Dv)."""
        return output

    def unpack(self, res) -> tuple:
        """``(output, weights or None)`` from what the target returned, still in the API's layout."""
        return (res[0] if isinstance(res, tuple) else res), None

    def unpack_lse(self, res) -> tuple:
        """``(output, lse)`` from what the target returned when called with :attr:`lse_kwargs`."""
        if not (isinstance(res, tuple) and len(res) >= 2):
            asked = ", ".join(f"{k}={v}" for k, v in (self.lse_kwargs or {}).items())
            raise TypeError(f"asked for its log-sum-exp ({asked}) the target returned {type(res).__name__}; "
                            f"expected {self.lse_returns}")
        return res[0], res[1]

    def check_writes(self, wrote: dict, data) -> list[str]:
        """What is wrong with the inputs of :attr:`writes` after the call (``wrote``: name -> its content, for
        those the target wrote to); [] when they hold what they must."""
        return []

    def dropout_kwargs(self, p: float, keep=None) -> dict:
        """The keywords that run it with dropout probability ``p`` and return its dropout pattern, or (an API
        with :attr:`dropout_given`) hand it ``keep``, refimpl's keep-mask as the target receives it."""
        raise NotImplementedError

    def unpack_dropout(self, res, data) -> tuple:
        """``(output, lse or None, keep (B, Hq, Sq, Sk) bool)`` from what it returned with :meth:`dropout_kwargs`
        (keep None for an API that was given its mask)."""
        raise NotImplementedError

    def place_lse(self, lse: np.ndarray, data) -> np.ndarray:
        """The LSE (float64, the API's own arrangement) in refimpl's (B, Hq, Sq)."""
        return lse

    def accepts(self, raw, is_array) -> bool:
        """Whether ``raw`` is a return value the API allows (the probe's return-type check)."""
        return bool(is_array(raw))

    def repro_unpack(self) -> list[str]:
        """Source lines of a reproduction script that turn ``res`` into ``res`` (output) and ``w``."""
        return ["    if isinstance(res, tuple):", "        res = res[0]"]


def flash_band(spec) -> tuple[bool, tuple[int, int]]:
    """FlashAttention's ``(causal, window_size)`` of a case (a packed batch's per-sequence band, else the case's):
    ``window_size`` (left, right), -1 unbounded, the right side capped at 0 by causal (or, in every other eight
    cases, left as the case gives it: flash-attn caps it itself, and a kernel must too); (-1, -1) without a window."""
    packed = spec.seqlens is not None
    causal = spec.seq_causal if packed else spec.is_causal
    window = spec.seq_window if packed else spec.window
    if window is None:
        return causal, (-1, -1)
    left, right = window
    if causal and spec.index // 8 % 2 == 0:   # every other eight cases: the right edge as given, as callers
        return causal, (left, right)   # pass it; flash-attn sets it to 0 under causal (flash_api.cpp)
    return causal, (left, 0) if causal else (left, right)        # causal caps the right edge at 0


def dropout_draw(spec, p: float) -> np.ndarray:
    """The keep-mask refimpl gives a target of an API with :attr:`Api.dropout_given`: (B, Hq, Sq, Sk) bool, True =
    kept, each weight kept with probability 1 - p, seeded by the case (every call of a case gets the same)."""
    rng = np.random.default_rng([zlib.crc32(spec.id.encode()), round(p * 2**32), 6271])
    return rng.random((spec.B, spec.Hq, spec.Sq, spec.Sk)) >= p


def keep_mask(s, mask: np.ndarray | None) -> np.ndarray | None:
    """A case's (spec ``s``) bool keep-mask ``mask`` with causal and window folded in (None: nothing masked)."""
    return band_mask(s.Sq, s.Sk, is_causal=s.is_causal, window=s.window, alignment=s.alignment, mask=mask)


def converter(dtype: str, torch: bool, copy: bool = True):
    """``conv(array or None)``: an input as the target receives it (bool stays bool). ``copy=False``: NumPy
    inputs already in their dtype are handed as they are (a worker's own copies, or refimpl's own column)."""
    p = precision(dtype)
    if torch:
        import torch as th
        tdt = p.torch_dtype()
        return lambda a: None if a is None else (th.tensor(a) if a.dtype == bool else th.tensor(a, dtype=tdt))

    def make(a):
        dt = bool if a.dtype == bool else p.carrier
        out = np.asarray(a, dtype=dt) if not copy else None
        return out if out is not None and out.flags.writeable else np.array(a, dtype=dt)   # a target may write
    return lambda a: None if a is None else make(a)


def to_numpy(x, what: str) -> tuple[np.ndarray, str]:
    """``(float64 array, precision name)`` of a returned array or tensor; TypeError naming ``what`` otherwise."""
    if hasattr(x, "detach") and hasattr(x, "dtype"):
        p = precision_of(x.dtype)
        t = x.detach().to("cpu")
        name = p.name if p is not None else str(x.dtype).replace("torch.", "")
        return (t.float() if p is not None and not p.native else t).numpy().astype(np.float64), name
    if isinstance(x, np.ndarray):
        if x.dtype.kind != "f":
            raise TypeError(f"the target returned a {what} of dtype {x.dtype}; expected a float array")
        return x.astype(np.float64), x.dtype.name
    raise TypeError(f"the target returned {type(x).__name__} as its {what}; expected a NumPy array or a torch tensor")


def _snap(a) -> np.ndarray:
    """A NumPy copy of an input as it is now (bfloat16 tensors via float32, exactly)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu()
        return (a.float() if a.is_floating_point() else a).numpy().copy()
    return np.array(a, copy=True)


def snapshots(given: dict) -> dict:
    return {n: _snap(a) for n, a in given.items() if a is not None}


def mutations(given: dict, pristine: dict) -> list[str]:
    return [n for n, before in pristine.items()
            if (now := _snap(given[n])).shape != before.shape or not np.array_equal(now, before, equal_nan=True)]
