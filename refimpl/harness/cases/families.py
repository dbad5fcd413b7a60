"""Case families: named, seeded, deterministic groups of :class:`~.features.CaseSpec`.

Each family draws its specs from its own seeded generator, so a family's cases do not change when another
family changes. A suite picks how many cases each family gets: ``quick`` (a smoke run in seconds),
``default`` (the pre-release suite, >= 1,500 cases with the default two dtypes), ``full`` (more, and long
sequences up to S = 16,384). :func:`shard` splits any list of specs deterministically for CI matrices.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ...errors import UsageError
from ...precision import NAMES as DTYPE_NAMES
from .features import CaseSpec, packed_keep

__all__ = ["Family", "FAMILIES", "SUITES", "family_specs", "select", "shard", "parse_shard", "check_dtypes"]

SUITES = {"quick": 0.1, "default": 1.0, "full": 3.0}       # cases per family relative to the default suite
SEED = 20261123


@dataclass(frozen=True)
class Family:
    name: str
    doc: str
    n_default: int
    draw: Callable[[np.random.Generator, int], dict]        # (rng, index) -> CaseSpec fields

    def count(self, suite: str) -> int:
        if self.name == "long":
            return {"quick": 0, "default": 2, "full": 4}[suite]
        return max(1, round(self.n_default * SUITES[suite]))


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


_ODD = (1, 2, 3, 5, 7, 13, 31, 33, 63, 65, 100, 127, 129, 200)


def _sizes(rng, i):
    D = _pick(rng, (1, 3, 8, 17, 32, 64, 80, 96, 128, 160, 256))
    return dict(Sq=_pick(rng, _ODD), Sk=_pick(rng, _ODD), D=D, Dv=_pick(rng, (D, D, 1, 5, 24, 64, 130)))


def _small(rng, sq=(1, 3, 8, 17, 40), sk=(1, 2, 5, 16, 33, 64, 65, 100)):
    D = _pick(rng, (4, 8, 16, 32, 64))
    return dict(Sq=_pick(rng, sq), Sk=_pick(rng, sk), D=D, Dv=_pick(rng, (D, 8, 12)))


def _heads(rng, i):
    return dict(_small(rng), B=int(rng.integers(1, 4)), Hq=int(rng.integers(1, 5)), Hkv=None)


def _bool(rng, i):
    """Random keep-masks (B, 1, Sq, Sk); every eleventh case one mask per head with no batch axis, (Hq, Sq, Sk), over
    two batches of three heads: a kernel that promotes a 3-D mask to (B, 1, Sq, Sk) reads it wrong (no draw)."""
    d = dict(_heads(rng, i), mask="bool")
    return dict(d, B=2, Hq=3, pattern="per-head") if i % 11 == 10 else d


def _gqa(rng, i):
    """Grouped heads, and every other case a per-batch mask (B, 1, Sq, Sk) over B of 2 or 3: a mask broadcast
    against (B, Hkv, G, Sq, Sk) scores must keep its batch axis (a GQA kernel that reshapes the scores to five
    dimensions and broadcasts the 4-D mask as it is puts the batch on the kv-head axis)."""
    hkv = _pick(rng, (1, 1, 2, 4))                       # 1: multi-query attention
    mask = ("none", "padding", "bool")[i % 3] if i % 2 else "none"
    d = dict(_small(rng), B=int(rng.integers(2, 4)) if mask != "none" else int(rng.integers(1, 3)))
    group = _pick(rng, (2, 3, 4))
    if i % 4 == 3:          # every fourth case a group of 5 or 6: a kernel that walks a group's query heads in
        group, hkv = 5 + i // 4 % 2, max(hkv, 2)    # tiles of 4 (or 2) and assumes whole tiles is wrong only
    if i % 10 == 9:         # causal under grouped heads, bottom-right, no mask: a kernel packing a group's heads into
        d = dict(d, Sq=max(d["Sq"], 17), is_causal=True, alignment="bottom-right", B=1)   # the query rows must
        mask = "none"       # unpack them for the band (row m // G read as m passed); no draw from rng
        d["dead_rows"] = d["Sq"] > d["Sk"]
    elif i % 11 == 10:      # a sliding window (left 4, right 0) under grouped heads, bottom-right, no mask: a kernel
        #                     packing a group's heads into the query rows must test the window at the row's query
        d = dict(d, Sq=max(d["Sq"], 17), Sk=max(d["Sk"], d["Sq"], 17), window=(4, 0), alignment="bottom-right",
                 B=1)       # (no draw from rng)
        mask = "none"
    return dict(d, Hq=hkv * group, Hkv=hkv, mask=mask)                  # there, and only with 2 kv heads or more


def _causal(rng, i):
    d = _small(rng, sq=(1, 4, 16, 33, 64, 100), sk=(1, 4, 16, 33, 64, 100))
    if i % 3 == 0:
        d["Sq"], d["Sk"] = min(d["Sq"], d["Sk"]), max(d["Sq"], d["Sk"])      # Sq < Sk
    elif i % 3 == 1:
        d["Sq"], d["Sk"] = max(d["Sq"], d["Sk"]), min(d["Sq"], d["Sk"])      # Sq > Sk
    align = "top-left" if i % 2 == 0 else "bottom-right"
    if i % 6 == 0:                     # one query, top-left: it sees key 0 only (a kernel that skips the causal mask
        d["Sq"], d["Sk"] = 1, max(d["Sk"], 4)        # for a one-query step, as a decode step needs, is caught here)
    if i % 13 == 12:                   # square and whole tiles (64 or 128): a kernel whose even-tile path (no
        n = (64, 128)[i // 13 % 2]     # boundary step) skips the causal mask is caught; two batches of two heads: a
        #                                causal mask built for batch 0 (or head 0) alone is caught; no draw from rng
        d = dict(d, Sq=n, Sk=n, B=2, Hq=2, Hkv=None)
        align = ("top-left", "bottom-right")[i // 26 % 2]
    return dict(d, is_causal=True, alignment=align, dead_rows=align == "bottom-right" and d["Sq"] > d["Sk"])


def _window(rng, i):
    d = _small(rng, sq=(1, 8, 33, 64), sk=(8, 33, 64, 100))
    left, right = _pick(rng, (-1, 0, 1, 4, 16)), _pick(rng, (-1, 0, 1, 4, 16))
    if left == -1 and right == -1:
        left = 3
    if i % 2:                          # sliding-window models (Mistral, Gemma-2) have Dv == D: half the cases do
        d["Dv"] = d["D"]
    align = _pick(rng, ("top-left", "bottom-right"))
    if i % 8 == 0:                     # causal with a left edge that bites, bottom-right (as FlashAttention aligns)
        left, align = (4 if d["Sk"] > 8 else 1), "bottom-right"
    if i % 8 == 5:                     # more queries than keys, bottom-right, the right side unbounded: the top rows
        d = dict(d, Sq=33, Sk=8)       # (i + Sk - Sq < -1) see keys only through that unbounded side
        left, right, align = 4, -1, "bottom-right"
    if i % 11 == 10:                   # a decode step under a sliding window (Mistral's serving): one query, the left
        #                                edge biting in FlashAttention's alignment (a kernel dropping the window for
        #                                Sq == 1 passed); no draw from rng, so every other case stays as it was
        d = dict(d, Sq=1, Sk=(64, 100, 33)[i // 11 % 3])
        left, right, align = (4, 16)[i // 11 % 2], (0, -1)[i // 22 % 2], "bottom-right"
    if i % 8 in (3, 7):                # one side 0, the other unbounded: (0, -1) the diagonal and every key after it
        #                                (bottom-right, as flash-attn takes it), (-1, 0) causal as a window; sides
        #                                summing below 0 are no "no window" (a kernel normalising them so passed)
        left, right, align = (0, -1, "bottom-right") if i % 8 == 3 else (-1, 0, align)
    return dict(d, window=(left, right), alignment=align, is_causal=bool(i % 4 == 0))


def _masked_rows(rng, i):
    return dict(_small(rng, sq=(2, 5, 16), sk=(1, 3, 16, 40)), B=int(rng.integers(1, 3)),
                mask=_pick(rng, ("bool", "bool", "additive", "padding")), dead_rows=True)


def _extreme(rng, i):
    d = _small(rng, sk=(2, 5, 16, 64))
    if i % 9 == 8:                                       # no mask, every score below -8e4: a running max started
        return dict(d, D=64, Dv=8, magnitude=100.0, pattern="far-below-fill")   # at a finite sentinel underflows
    if i % 3 == 2:                                       # attended scores far below a finite fill
        sk = {"Sk": 100} if i % 6 == 5 else {}           # ... past a left-padded 64-key tile every other row
        return dict(d, D=64, Dv=8, mask="bool", magnitude=_pick(rng, (50.0, 4e4)), pattern="far-below-fill", **sk)
    return dict(d, magnitude=_pick(rng, (12.0, 30.0, 1e3, 1e5)), mask=_pick(rng, ("none", "bool")))


def _decode(rng, i):
    """One query against a cache of up to 4,096 keys (each length in turn), every fourth under grouped heads; the
    long caches with one sequence (a 4,096 x 4 x 128 cache is 16 MiB a side in float64: every copy a
    worker-isolated target needs costs milliseconds)."""
    sk = (1000, 1, 255, 64, 4096, 7, 2048, 256)[i % 8]      # the quick suite's four: one long cache, three short
    b = int(rng.integers(1, 3))
    d = dict(Sq=1, Sk=sk, D=_pick(rng, (64, 128)), Dv=_pick(rng, (64, 128)), B=1 if sk >= 1000 else b,
             Hq=_pick(rng, (1, 4)), Hkv=None, mask=_pick(rng, ("none", "padding")))
    if i % 4 == 2:                     # grouped heads, G = 2 or 3: a decode kernel that packs query heads in tiles
        d["Hq"], d["Hkv"] = (6, 3) if i % 8 == 2 else (9, 3)     # of 4 and reads one kv head per tile is caught;
        d["B"] = 2 if sk < 1000 else 1  # two sequences: one that folds a kv head's query heads must offset by batch
    return d


_SEQ_LENGTHS = (1, 1, 2, 5, 17, 31, 33, 64, 65, 100, 127, 129)


def _varlen(rng, i):
    """A packed batch: 2 to 5 sequences of mixed lengths (1, not multiples of 32/64, lq != lk), now and then
    an empty one (no query, or no key: its queries' rows are dead); causal and windows per sequence."""
    n = int(rng.integers(2, 6))
    lens = []
    for _ in range(n):
        lq = _pick(rng, _SEQ_LENGTHS)
        lk = lq if rng.uniform() < 0.4 else _pick(rng, _SEQ_LENGTHS)
        lens.append((lq, lk))
    if i % 7 == 3:
        lens[int(rng.integers(n))] = (0, _pick(rng, (5, 33)))               # a sequence with no query
    if i % 11 == 5:
        lens[int(rng.integers(n))] = (_pick(rng, (1, 4)), 0)                # a sequence with no key
    D = _pick(rng, (8, 16, 32, 64))
    hkv = _pick(rng, (1, 2))
    alibi = i % 6 == 4
    causal = i % 3 == 0
    window = (_pick(rng, (0, 3, 16)), _pick(rng, (-1, 0, 4))) if i % 4 == 1 else None
    spec = dict(Sq=max(a for a, _ in lens), Sk=max(b for _, b in lens), D=D, Dv=_pick(rng, (D, D, 8)), B=n,
                Hq=hkv * (1 if alibi else _pick(rng, (1, 1, 2))), Hkv=hkv, mask="bool", seqlens=tuple(lens),
                seq_causal=causal, seq_window=window, softcap=30.0 if i % 5 == 2 else None, alibi=alibi)
    keep = packed_keep(CaseSpec(family="varlen", index=i, **spec))           # (B, 1, Sq, Sk)
    rows = np.arange(spec["Sq"])[None, :] < np.array([a for a, _ in lens])[:, None]
    spec["dead_rows"] = bool((rows & ~keep[:, 0].any(axis=-1)).any())
    return spec


def _kvcache(rng, i):
    """A KV-cache decode step: B sequences with ragged cached lengths (0 and a full cache among them), 0, 1 or Sq
    new keys appended, Sq = 1 (decode) or 2-5 (speculative decode, causal bottom-right), a dense cache or pages
    of 16 or 256 positions; GQA, windows, softcap and ALiBi now and then."""
    n = int(rng.integers(1, 5))
    sq = 1 if i % 3 else int(rng.integers(2, 6))
    new = (0, 1, sq)[(i // 3) % 3] if sq > 1 else _pick(rng, (0, 1))
    block = (None, 16, 256)[i % 3 if i % 2 else (i // 2) % 3]
    top = _pick(rng, (17, 64, 100, 300))
    cache = [int(rng.integers(0, top + 1)) for _ in range(n)]
    if i % 4 == 1:
        cache[0] = 0                                                        # an empty cache
    if new == 0 and i % 5 != 2:                                             # a sequence needs a key to attend
        cache = [max(c, 1) for c in cache]
    lens = tuple((sq, c + new) for c in cache)
    D = _pick(rng, (16, 32, 64))
    hkv = _pick(rng, (1, 2))
    alibi = i % 7 == 3
    causal = sq > 1 and i % 2 == 0
    window = (_pick(rng, (8, 40)), 0 if causal else -1) if i % 6 == 5 else None
    spec = dict(Sq=sq, Sk=max(1, max(b for _, b in lens)), D=D, Dv=_pick(rng, (D, D, 8)), B=n,
                Hq=hkv * (1 if alibi else _pick(rng, (1, 2, 4))), Hkv=hkv, mask="bool", seqlens=lens,
                seq_causal=causal, seq_window=window, softcap=20.0 if i % 8 == 6 else None, alibi=alibi,
                cache_lens=tuple(cache), new_len=new, block_size=block)
    keep = packed_keep(CaseSpec(family="kvcache", index=i, **spec))          # (B, 1, Sq, Sk)
    spec["dead_rows"] = bool((~keep[:, 0].any(axis=-1)).any())
    return spec


def _long(rng, i):
    S = (2048, 4096, 8192, 16384)[i % 4]
    return dict(Sq=S, Sk=S, D=64, Dv=64, is_causal=bool(i % 2), long=True)


def _alibi(rng, i: int) -> dict:
    """ALiBi's slopes are per query head: every 4th case with an even head count reads half as many kv heads,
    so a kernel that hands its bias the kv head (or groups heads the wrong way) meets a head-dependent bias."""
    fields = dict(_small(rng), Hq=_pick(rng, (1, 2, 3, 4, 6, 8)), Hkv=None, alibi=True)
    if i % 4 == 3 and fields["Hq"] % 2 == 0:
        fields["Hkv"] = fields["Hq"] // 2
    if i % 4 == 1:                       # slopes (B, Hq), as flash_attn_func takes them: a kernel reading them as
        fields.update(B=2 + i % 8 // 5, alibi_per_batch=True)      # (Hq,) (batch 0's for all) meets other batches
    return fields


def _additive(rng, i):
    """N(0, 2) biases with -inf entries; case i mod 9 = 8 is a float mask as code builds one from padding and
    causality (Hugging Face's extended attention mask): 0 on every kept key, -inf elsewhere, over whole tiles of 32
    and 64 keys, self-attention (Sq = Sk = 64, as a padded batch's encoder builds it) and then 40 queries over 97
    keys. A kernel that skips a tile whose bias is all zero (right for a bool tile that keeps nothing) drops
    kept keys there; the N(0, 2) biases are never exactly 0. Family size 80 -> 90: the quick suite keeps its eight
    earlier cases and gains this one; its sizes are set, not drawn, so the other cases keep theirs."""
    fields = dict(_heads(rng, i), mask="additive")
    if i % 9 == 8:
        fields.update(Sq=(64, 40)[i // 9 % 2], Sk=(64, 97)[i // 9 % 2], pattern="zero-bias")   # self-attention first
    return fields


def _padding(rng, i):
    """Per-batch key lengths; case i mod 9 = 8 is self-attention, Sq == Sk, where the (B, 1, 1, Sk) mask keeps the
    padded queries' rows on the kept keys (a kernel that turns it into a pairwise mask, padded with padded, fails
    there). Family size 80 -> 90: the quick suite keeps its eight earlier cases and gains this one; Sk is set to the
    drawn Sq (no draw of its own), so the other cases keep theirs."""
    fields = dict(_small(rng), B=int(rng.integers(2, 5)), mask="padding")
    if i % 9 == 8:
        fields["Sk"] = fields["Sq"]
    return fields


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("sizes", "non-powers of two, D up to 256, Sq != Sk, Dv != D, Sk == 1", 140, _sizes),
    Family("batched-heads", "batch and head dimensions (B up to 3, H up to 4)", 90, _heads),
    Family("gqa", "grouped-query and multi-query attention (Hq a multiple of Hkv; groups of 2 to 6; causal and a "
           "sliding window too)", 110, _gqa),
    Family("bool-mask", "random bool keep-masks (True = attend), no empty row; one per head without a batch axis",
           110, _bool),
    Family("additive-mask", "float masks added to the scores, with -inf entries; 0 / -inf masks over whole tiles",
           90, _additive),
    Family("padding", "per-batch key lengths (a (B, 1, 1, Sk) keep-mask), self-attention (Sq == Sk) among them", 90,
           _padding),
    Family("causal", "causal masks in both alignments, Sq < Sk (one query among them), Sq > Sk and square whole "
           "tiles over two batches and heads", 130, _causal),
    Family("window", "sliding windows (left, right), -1 unbounded, both alignments", 110, _window),
    Family("softcap", "logit soft-capping cap * tanh(scores / cap), alone, under a causal mask (Gemma-2) and with "
                      "ALiBi added after the cap", 60,
           lambda r, i: dict(_small(r), softcap=_pick(r, (1.0, 5.0, 30.0, 50.0)), magnitude=_pick(r, (1.0, 4.0)),
                             is_causal=bool(i % 2), alignment="bottom-right", alibi=i % 3 == 2)),
    Family("alibi", "ALiBi biases -slope * |i + Sk - Sq - j| (FlashAttention's alignment), some under GQA", 60,
           _alibi),
    Family("scale", "explicit softmax scales", 40, lambda r, i: dict(_small(r), scale=_pick(r, (0.01, 0.5, 1.0, 3.0)))),
    Family("masked-rows", "queries with no key at all (bool, additive, padding)", 80, _masked_rows),
    Family("extreme-logits", "scores beyond exp's range; attended scores far below a finite fill", 90, _extreme),
    Family("decode", "one query (Sq = 1) against up to 4,096 keys", 40, _decode),
    Family("varlen", "packed batches of mixed lengths (1, 0, not multiples of 64, lq != lk) with per-sequence "
                     "causal, windows, GQA, softcap, ALiBi (flash_attn_varlen_func's cu_seqlens)", 60, _varlen),
    Family("kvcache", "KV-cache decode steps (flash_attn_with_kvcache): ragged cached lengths, new keys appended, "
                      "dense and paged caches (blocks of 16, 256), Sq up to 5 causal bottom-right", 60, _kvcache),
    Family("long", "long sequences (S = 2,048 to 16,384; expected from the online variant)", 2, _long),
)}


def family_specs(name: str, suite: str = "default", dtypes: tuple[str, ...] = ("float64", "float32")) -> list[CaseSpec]:
    """The family's specs for ``suite``, one per (case, dtype), deterministic."""
    fam = FAMILIES[name]
    rng = np.random.default_rng([SEED, zlib.crc32(name.encode())])
    out = []
    for i in range(fam.count(suite)):
        fields = fam.draw(rng, i)
        if fields.get("Hkv", 1) is None:
            fields["Hkv"] = fields["Hq"]
        base = CaseSpec(family=name, index=i, seed=SEED, **fields)
        out += [base.with_dtype(dt) for dt in dtypes]
    return out


def select(families: list[str] | None, suite: str, dtypes: tuple[str, ...]) -> list[CaseSpec]:
    """Every spec of the chosen families (all when None), validated names."""
    if suite not in SUITES:
        raise UsageError(f"--suite must be one of {tuple(SUITES)}, got {suite!r}")
    check_dtypes(dtypes)
    unknown = [f for f in families or [] if f not in FAMILIES]
    if unknown:
        raise UsageError(f"--family {unknown}: no such family; --list-families lists them ({', '.join(FAMILIES)})")
    return [s for name in (families or list(FAMILIES)) for s in family_specs(name, suite, dtypes)]


def check_dtypes(dtypes: tuple[str, ...]) -> None:
    """Refuse an empty or unknown ``--dtype`` list, naming the choices."""
    if not dtypes or any(d not in DTYPE_NAMES for d in dtypes):
        raise UsageError(f"--dtype takes a comma-separated list of {', '.join(DTYPE_NAMES)}, "
                         f"got {','.join(dtypes) or 'nothing'}")


def parse_shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard takes K/N with 1 <= K <= N (e.g. 2/4), got {text!r}") from None
    if not 1 <= k <= n:
        raise UsageError(f"--shard takes K/N with 1 <= K <= N, got {text!r}")
    return k, n


def shard(ids: list[str], k: int, n: int) -> set[str]:
    """The ids of shard ``k`` of ``n``: a stable hash of the id, so shards do not move when cases are added."""
    return {i for i in ids if zlib.crc32(i.encode()) % n == k - 1}
