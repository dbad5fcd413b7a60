"""A family case as data: its shape and features (:class:`CaseSpec`), its inputs, and its float64 expected values.

A spec is metadata only (reports, localisation, sharding and the API adapters read it; nothing parses
case ids). :func:`materialise` makes the inputs deterministically from the spec's seed and computes the
expected output with refimpl in float64 (the online variant for long sequences), once per spec and dtype.

Layout is refimpl's (B, H, S, D): q (B, Hq, Sq, D), k (B, Hkv, Sk, D), v (B, Hkv, Sk, Dv); masks
broadcast to (B, Hq, Sq, Sk). For a lower precision the inputs are first rounded to that precision, so
the float64 expected values are exact for the numbers the target actually receives.
"""
from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field

import numpy as np

from ...attention import scaled_dot_product_attention
from ...masks import alibi_bias, band_mask
from ...online import sdpa_online
from ...precision import PRECISIONS, get as precision

__all__ = ["CaseSpec", "CaseData", "materialise", "lower_precision", "CASE_MASKS", "packed_keep", "packed_alibi",
           "values_mean"]


def lower_precision(returned: str, given: str, what: str = "") -> str:
    """"" when ``returned`` is at least the precision ``given``; otherwise the message naming the --dtype to use."""
    if returned in PRECISIONS and PRECISIONS[returned].at_least(precision(given)):
        return ""
    what = f" {what}" if what else ""
    return (f"returns {returned}{what} for {given} inputs: a {returned} kernel is judged by its own budget: "
            f"run it with --dtype {returned}")


CASE_MASKS = ("none", "bool", "additive", "padding")      # CaseSpec.mask (strategies.MASK_KINDS: the math's)


@dataclass(frozen=True)
class CaseSpec:
    family: str
    index: int
    Sq: int
    Sk: int
    D: int
    Dv: int
    B: int = 1
    Hq: int = 1
    Hkv: int = 1
    mask: str = "none"                  # none | bool | additive | padding (per-batch key lengths)
    is_causal: bool = False
    alignment: str = "top-left"         # for is_causal and window
    window: tuple[int, int] | None = None
    softcap: float | None = None
    alibi: bool = False                 # ALiBi slopes 2**(-8 (h+1) / Hq), bias -slope * |i + offset - j|
    alibi_per_batch: bool = False       # the slopes (B, Hq): batch b's are the heads' times 2**-b (flash-attn's form)
    scale: float | None = None
    magnitude: float = 1.0              # q and k entries drawn from +-magnitude (extreme logits: large)
    pattern: str = "random"             # random | far-below-fill (attended scores far below any finite fill) |
    #                                     zero-bias (an additive mask of exactly 0 on kept keys, -inf elsewhere) |
    #                                     per-head (a bool mask of its own per head, (Hq, Sq, Sk): no batch axis)
    dead_rows: bool = False             # the mask leaves some query rows with no key by construction
    long: bool = False                  # expected values from the online variant (no S x S array)
    dtype: str = "float64"
    seed: int = 0
    tags: tuple[str, ...] = field(default=())
    # a packed (variable-length) batch: sequence b has seqlens[b] = (lq, lk) queries and keys, the first of its
    # Sq and Sk rows (the rest are padding, never judged); seq_causal and seq_window are per sequence,
    # bottom-right (flash_attn_varlen_func's), and fold into the bool keep-mask that dense APIs receive
    seqlens: tuple[tuple[int, int], ...] | None = None
    seq_causal: bool = False
    seq_window: tuple[int, int] | None = None
    # a KV-cache decode step (flash_attn_with_kvcache): sequence b has cache_lens[b] keys cached before the call
    # and new_len new ones appended (its lk = cache_lens[b] + new_len; every lq = Sq); block_size: a paged cache
    # of that many positions per block (None: one dense cache row per sequence)
    cache_lens: tuple[int, ...] | None = None
    new_len: int = 0
    block_size: int | None = None

    @property
    def id(self) -> str:
        return f"{self.family}/{self.index:04d}-{self.dtype}"

    @staticmethod
    def dtype_of(case_id: str) -> str:
        """The dtype of a case from its :attr:`id` (``family/index-dtype``)."""
        return case_id.rsplit("-", 1)[-1]

    @property
    def gqa(self) -> bool:
        return self.Hq != self.Hkv

    def with_dtype(self, dtype: str) -> "CaseSpec":
        d = asdict(self)
        d.update(dtype=dtype, window=self.window, tags=self.tags, seqlens=self.seqlens, seq_window=self.seq_window,
                 cache_lens=self.cache_lens)
        return CaseSpec(**d)

    def describe(self) -> str:
        """Shapes and features in one line: what a report shows for a case."""
        parts = [f"B={self.B} Hq={self.Hq} Hkv={self.Hkv} Sq={self.Sq} Sk={self.Sk} D={self.D} Dv={self.Dv}",
                 self.dtype]
        if self.cache_lens is not None:
            parts.append(f"KV cache: cached {' '.join(map(str, self.cache_lens))} + {self.new_len} new"
                         + (f", paged by {self.block_size}" if self.block_size else ", dense"))
        elif self.seqlens is not None:
            parts.append("packed lengths (lq, lk) " + " ".join(f"({a}, {b})" for a, b in self.seqlens))
        if self.seqlens is not None:
            if self.seq_causal:
                parts.append("causal per sequence bottom-right")
            if self.seq_window is not None:
                parts.append(f"window {self.seq_window} per sequence bottom-right")
        elif self.mask != "none":
            parts.append(f"{self.mask} mask")
        if self.is_causal:
            parts.append(f"causal {self.alignment}")
        if self.window is not None:
            parts.append(f"window {self.window} {self.alignment}")
        if self.softcap is not None:
            parts.append(f"softcap {self.softcap:g}")
        if self.alibi:
            parts.append("alibi, slopes (B, Hq)" if self.alibi_per_batch else "alibi")
        if self.scale is not None:
            parts.append(f"scale {self.scale:g}")
        if self.magnitude != 1.0:
            parts.append(f"|q|,|k| up to {self.magnitude:g}")
        if self.pattern != "random":
            parts.append(self.pattern)
        return ", ".join(parts)

    def features(self) -> dict[str, bool]:
        """Boolean features of the case, for localisation (``fails only when: ...``)."""
        return {
            "Sq == 1": self.Sq == 1, "Sq != Sk": self.Sq != self.Sk, "Sq > Sk": self.Sq > self.Sk,
            "Sk == 1": self.Sk == 1, "Dv != D": self.Dv != self.D, "D > 128": self.D > 128,
            "Sk % 64 != 0": self.Sk % 64 != 0, "Sk > 64": self.Sk > 64, "batch > 1": self.B > 1,
            "heads > 1": self.Hq > 1, "GQA (Hq != Hkv)": self.gqa, "bool mask": self.mask == "bool",
            "additive mask": self.mask == "additive", "padding mask": self.mask == "padding",
            "batch > 1 with per-batch masks": self.B > 1 and self.mask == "padding",
            "causal": self.is_causal, "bottom-right alignment": self.alignment == "bottom-right" and (
                self.is_causal or self.window is not None),
            "window": self.window is not None, "softcap": self.softcap is not None, "alibi": self.alibi,
            "ALiBi slopes per batch": self.alibi_per_batch,
            "explicit scale": self.scale is not None, "fully masked rows": self.dead_rows,
            "large logits": self.magnitude > 4,
            "attended scores far below a finite fill": self.pattern == "far-below-fill",
            "a 0 / -inf additive mask": self.pattern == "zero-bias",
            "a per-head mask without a batch axis": self.pattern == "per-head",
            "long sequence": self.long, f"{self.dtype}": True,
            **self._packed_features(),
        }

    def _packed_features(self) -> dict[str, bool]:
        lens = self.seqlens or ()
        cache = {} if self.cache_lens is None else {
            "KV cache": True, "paged KV cache": self.block_size is not None, "new keys appended": self.new_len > 0,
            "an empty cache": 0 in self.cache_lens, "Sq > 1 decode": self.Sq > 1}
        if not lens:
            return cache
        return {**cache, "packed (varlen) batch": True, "a sequence of length 1": any(1 in p for p in lens),
                "an empty sequence": any(0 in p for p in lens), "lq != lk in a sequence": any(a != b for a, b in lens),
                "per-sequence causal": self.seq_causal, "per-sequence window": self.seq_window is not None}


@dataclass
class CaseData:
    """The inputs of one case (float64 values representable in the case's dtype) and what is expected."""
    spec: CaseSpec
    q: np.ndarray                        # (B, Hq, Sq, D)
    k: np.ndarray                        # (B, Hkv, Sk, D)
    v: np.ndarray                        # (B, Hkv, Sk, Dv)
    mask: np.ndarray | None              # bool keep (True = attend) or additive float, broadcasts to (B, Hq, Sq, Sk)
    slopes: np.ndarray | None            # (Hq,) ALiBi slopes
    expected: np.ndarray                 # (B, Hq, Sq, Dv) float64
    dead: np.ndarray                     # (B, Hq, Sq) bool: rows with no attended key in the reference
    weights: np.ndarray | None = None    # (B, Hq, Sq, Sk) float64 (None for long cases)
    absent: np.ndarray | None = None     # (B, Hq, Sq) bool: a packed batch's padding rows (no sequence's query)
    band_flags: bool = True              # a target received the causal band and window as flags (False: folded
    #                                      into its mask; set by the diagnosis from what the target returned)
    mask_given: bool | None = None       # a mask argument reached the target (set by the diagnosis; None: unknown)
    block: int | None = None             # the BLOCK_SIZE its block mask reached the target in (set by the diagnosis;
    #                                      None: no block mask, and no model of a block mask's tiles applies)

    @property
    def live(self) -> np.ndarray:
        """(B, Hq, Sq) bool: the rows judged by value (a key to attend, part of a sequence)."""
        return ~self.dead if self.absent is None else ~self.dead & ~self.absent

    def reference_kwargs(self) -> dict:
        """refimpl's keyword arguments for this case (ALiBi folded into an additive mask)."""
        s = self.spec
        mask = self.mask
        if s.alibi:
            if s.seqlens is None:
                bias = alibi_bias(self.slopes, s.Sq, s.Sk, alignment="bottom-right")    # (Hq|B, Hq, Sq, Sk)
                bias = bias if bias.ndim == 4 else bias[None]                               # (B|1, Hq, Sq, Sk)
            else:
                bias = packed_alibi(self.slopes, s)                                      # (B, Hq, Sq, Sk)
            mask = bias if mask is None else (np.where(mask, bias, -np.inf) if mask.dtype == bool else mask + bias)
            mask = precision(s.dtype).round(mask)   # what a target of this dtype receives as its float mask
        return dict(mask=mask, scale=s.scale, is_causal=s.is_causal, alignment=s.alignment, window=s.window,
                    softcap=s.softcap, enable_gqa=s.gqa)


def packed_keep(spec: CaseSpec) -> np.ndarray:
    """(B, 1, Sq, Sk) bool: a packed batch's keep-mask. Query i and key j of sequence b (lengths lq, lk) meet
    iff i < lq, j < lk and, with offset lk - lq (bottom-right per sequence), the causal and window rules hold."""
    out = []
    for lq, lk in spec.seqlens or ():
        keep = np.zeros((spec.Sq, spec.Sk), bool)
        if lq and lk:                          # refimpl's own band, bottom-right within the sequence
            band = band_mask(lq, lk, is_causal=spec.seq_causal, window=spec.seq_window, alignment="bottom-right")
            keep[:lq, :lk] = True if band is None else band
        out.append(keep)
    return np.stack(out)[:, None]


def packed_alibi(slopes: np.ndarray | None, spec: CaseSpec) -> np.ndarray:
    """(B, Hq, Sq, Sk): ALiBi's -slope * |i + lk - lq - j| per sequence (0 outside it; masked there)."""
    i, j = np.arange(spec.Sq)[:, None], np.arange(spec.Sk)[None, :]
    dist = np.stack([np.abs(i + lk - lq - j) for lq, lk in spec.seqlens or ()]).astype(np.float64)   # (B, Sq, Sk)
    return -(np.asarray(slopes, np.float64)[None, :, None, None] * dist[:, None])


def _rng(spec: CaseSpec) -> np.random.Generator:
    return np.random.default_rng([spec.seed, zlib.crc32(spec.family.encode()), spec.index])


def _mask(spec: CaseSpec, rng: np.random.Generator) -> np.ndarray | None:
    B, Sq, Sk = spec.B, spec.Sq, spec.Sk
    if spec.seqlens is not None:
        return packed_keep(spec)
    if spec.mask == "bool" and spec.pattern == "per-head":   # (Hq, Sq, Sk): broadcast over the batch from the left
        keep = rng.uniform(size=(spec.Hq, Sq, Sk)) < 0.7
        return keep | (rng.integers(0, Sk, size=(spec.Hq, Sq))[..., None] == np.arange(Sk))    # one key each
    if spec.mask == "bool":
        keep = rng.uniform(size=(B, 1, Sq, Sk)) < 0.7
        if spec.dead_rows:                                  # whole query rows with no key
            keep[:, :, rng.uniform(size=Sq) < 0.3, :] = False
            keep[:, :, 0, :] = False
        elif Sk > 0:
            keep |= rng.integers(0, Sk, size=(B, 1, Sq))[..., None] == np.arange(Sk)    # one key each: no dead row
        if spec.pattern == "far-below-fill" and Sk > 64 and not spec.dead_rows:
            # every other query row left-padded past a whole 64-key tile: a tiled kernel that takes the running
            # max of a fully masked tile as 0 and keeps it underflows those rows (their scores far below 0)
            keep[:, :, ::2, :64] = False
            keep[:, :, ::2, 64 + int(rng.integers(0, Sk - 64))] = True
        return keep
    if spec.mask == "additive" and spec.pattern == "zero-bias":     # 0 kept, -inf masked: per-batch key lengths
        lengths = rng.integers(Sk // 2 + 1, Sk, size=B)            # over half the keys, not all; odd batches causal
        keep = np.broadcast_to(np.arange(Sk) < lengths[:, None, None, None], (B, 1, Sq, Sk)).copy()
        keep[1::2] &= np.arange(Sk) <= np.arange(Sq)[:, None] + Sk - Sq       # bottom-right: no row left empty
        return np.where(keep, 0.0, -np.inf)
    if spec.mask == "additive":
        add = rng.normal(0.0, 2.0, size=(B, 1, Sq, Sk))
        add[rng.uniform(size=add.shape) < 0.2] = -np.inf
        if spec.dead_rows:
            add[:, :, 0, :] = -np.inf
        else:
            add[..., 0] = np.where(np.isinf(add[..., 0]), 0.0, add[..., 0])
        return add
    if spec.mask == "padding":                              # per-batch key lengths, as a (B, 1, 1, Sk) keep-mask
        lengths = rng.integers(1 if not spec.dead_rows else 0, Sk + 1, size=B)
        lengths[0] = max(1, Sk // 2) if not spec.dead_rows else 0
        return (np.arange(Sk)[None, :] < lengths[:, None])[:, None, None, :]
    return None


def materialise(spec: CaseSpec) -> CaseData:
    rng = _rng(spec)
    p = precision(spec.dtype)
    m = min(spec.magnitude, p.largest / 4)                    # q, k up to 2m: finite in the case's dtype
    q = rng.uniform(-m, m, size=(spec.B, spec.Hq, spec.Sq, spec.D))
    k = rng.uniform(-m, m, size=(spec.B, spec.Hkv, spec.Sk, spec.D))
    v = rng.normal(size=(spec.B, spec.Hkv, spec.Sk, spec.Dv))
    if spec.pattern == "far-below-fill":                    # every attended score about -m*m*D*scale
        q = np.abs(q) + m
        k = -(np.abs(k) + m)
    q, k, v = (p.round(a) for a in (q, k, v))
    mask = _mask(spec, rng)
    if mask is not None and mask.dtype != bool:
        mask = p.round(mask)
    # ALiBi slopes 2**(-8 h / Hq), rounded to float32: kernels take them as float32 tensors (flash_attn_func)
    slopes = 2.0 ** (-8.0 * np.arange(1, spec.Hq + 1) / spec.Hq) if spec.alibi else None
    if slopes is not None and spec.alibi_per_batch:                           # (B, Hq): batch b's times 2**-b
        slopes = slopes[None, :] * 2.0 ** -np.arange(spec.B)[:, None]
    slopes = None if slopes is None else PRECISIONS["float32"].round(slopes)
    data = CaseData(spec, q, k, v, mask, slopes, np.empty(0), np.empty(0, bool))
    kw = data.reference_kwargs()
    if spec.long:
        data.expected = sdpa_online(q, k, v, block_q=1024, block_k=1024, **kw)
        data.dead = np.zeros(data.expected.shape[:-1], bool)
    else:
        data.expected, w = scaled_dot_product_attention(q, k, v, **kw)       # (B, Hq, Sq, Dv), (B, Hq, Sq, Sk)
        data.dead = ~(w > 0).any(axis=-1)
        data.weights = w
    if spec.seqlens is not None:                              # padding rows: part of no sequence, never judged
        lq = np.array([a for a, _ in spec.seqlens])
        data.absent = np.broadcast_to((np.arange(spec.Sq)[None, :] >= lq[:, None])[:, None],
                                      data.dead.shape).copy()
        data.dead &= ~data.absent
    return data


def values_mean(data: CaseData) -> np.ndarray:
    """(B, Hq, 1, Dv): each query head's mean of its values over the keys (the output of a row that weighs every key
    alike; GQA's kv heads repeated to the query heads)."""
    return np.repeat(data.v, data.spec.Hq // data.spec.Hkv, axis=1).mean(axis=-2, keepdims=True)
