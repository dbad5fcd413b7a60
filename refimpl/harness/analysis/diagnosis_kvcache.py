"""Diagnosis of a KV-cache kernel (``--api flash-attn-kvcache``) by the models of :mod:`refimpl.bugs_kvcache`.

Each model is run on the cache the case handed the target (the API module's ``caches``: the same garbage beyond
every sequence's keys, the same shuffled block table) and must, on every failed case of the sample (at most
``MAX_FAILING``, the families interleaved), reproduce what the target did and explain why the case failed:

* a FAIL: the model's output matches the target's on every row of a sequence, rows with no key included (as
  :func:`.diagnosis.fits`: rtol 1e-3, atol 1e-6 * (1 + max|v|), NaN == NaN), the cache it leaves is the one the
  target left (bitwise, NaN == NaN), and either the judge named the output (or the rows with no key) and the
  model's output is nearer the target's than the expected output is (by ``EXPLAINS``, the expected one not equal
  to it), or the judge named the cache (``k_cache``/``v_cache`` in the case's detail) and the model leaves it
  wrong the same way: a case that failed on something else (its log-sum-exp) is explained by none;
* an error: the model raises IndexError there and the target's error is an index out of range.

On the passing cases of the sample (at most ``MAX_PASSING``) it must give the same output and cache and not raise.
A failed case of another kind (a crash, a timeout, another error) is explained by none. The models are tried only
when the API could express every case the target was judged on and a ``kvcache`` case is among them (a target of
another API meets cases that have no cache, or none that has one). Lines as
:func:`refimpl.harness.cases.fitting_models` prints them, except that when several variants of a model fit, the
cases do not tell them apart, and the line names each (``N = 16, 32 or 64``).
"""
from __future__ import annotations

import os

import numpy as np

from ...bugs_kvcache import MODELS
from ..apis.base import flash_band
from ..cases import Status
from .diagnosis_sample import EXPLAINS, MAX_FAILING, MAX_PASSING, case_data as _data, too_long

__all__ = ["kvcache_lines"]

INDEX_ERRORS = ("IndexError", "out of bounds", "out of range")
NAMED = ("output", "fully masked rows", "k_cache", "v_cache")     # what the judge says a model may explain


def _distance(a: np.ndarray, b: np.ndarray, rows: np.ndarray) -> float:
    a, b = a[rows], b[rows]
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.where((a == b) | (np.isnan(a) & np.isnan(b)), 0.0, np.abs(a - b))
    d = np.where(np.isnan(d), np.inf, d)
    return float(d.max()) if d.size else 0.0


def _run(variant, data, c):
    """The model on this case: (output, k_cache, v_cache), or "raises" (IndexError), or None (it cannot run)."""
    s = data.spec
    causal, window = flash_band(s)
    try:
        with np.errstate(all="ignore"):
            return variant.fn(data.q, c["k_cache"][0], c["v_cache"][0], c["new_k"], c["new_v"], c["cache_seqlens"],
                              c["block_table"], scale=s.scale, causal=causal, window=window, softcap=s.softcap,
                              slopes=data.slopes)
    except IndexError:
        return "raises"
    except Exception:
        return None


def _consistent(variant, data, r, c) -> bool:
    """The model does what the target did on this case and, where the case failed, explains the failure."""
    made = _run(variant, data, c)
    if r.status == Status.ERROR:
        return made == "raises" and any(w in (r.detail or "") for w in INDEX_ERRORS)
    got = getattr(r, "got", None)
    if made is None or made == "raises" or got is None or r.status not in (Status.PASS, Status.FAIL):
        return False
    out, kc, vc = made
    rows = np.ones(out.shape[:-1], bool) if data.absent is None else ~data.absent       # rows with no key too
    fin = np.abs(data.v[np.isfinite(data.v)])
    atol = 1e-6 * (1.0 + (fin.max() if fin.size else 0.0))
    if out.shape != got.output.shape:
        return False
    with np.errstate(invalid="ignore", over="ignore"):
        if not np.allclose(out[rows], got.output[rows], rtol=1e-3, atol=atol, equal_nan=True):
            return False
    detail = r.detail or ""
    written = getattr(got, "written", None) or {}
    wrong_cache = False
    for name, model in (("k_cache", kc), ("v_cache", vc)):
        before, after = c[name]
        left = written.get(name, before)
        if np.shape(left) != model.shape or not np.array_equal(left, model, equal_nan=True):
            return False
        wrong_cache |= name in detail and not np.array_equal(model, after, equal_nan=True)
    if r.status == Status.PASS:
        return True                                             # a passing case: nothing to explain
    far = _distance(data.expected, got.output, rows)            # the judge named the output, and the model is nearer
    wrong_output = any(w in detail for w in NAMED[:2]) and far > 0 \
        and _distance(out, got.output, rows) <= EXPLAINS * far
    return wrong_cache or wrong_output


def _spread(rs: list, specs: dict | None) -> list:
    """``rs`` with the families interleaved, the ``kvcache`` family's first: a sample of its head covers every
    family (a full cache read with its garbage fails alike under several models; a decode step tells them apart)."""
    fam = (lambda r: specs[r.id].family if specs is not None and r.id in specs else "")
    order = sorted(dict.fromkeys(fam(r) for r in rs), key=lambda f: f != "kvcache")
    queues = [[r for r in rs if fam(r) == f] for f in order]
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


def kvcache_lines(results: list, store, target: str, specs: dict | None, kvcache_api) -> list[str]:
    """``diagnosis TARGET: MODEL — explanation (variant)`` for each KV-cache model that explains every failed case
    of the sample and agrees with the passing ones (see the module doc); [] when none does or none applies.
    ``kvcache_api`` is the API module (:mod:`refimpl.harness.apis.flash_attn_kvcache`: ``API``, ``caches``)."""
    judged = [r for r in results if r.status in (Status.PASS, Status.FAIL, Status.ERROR)]
    failed = [r for r in results if Status(r.status).failed]
    if not failed or any(r.status not in (Status.FAIL, Status.ERROR) for r in failed):
        return []
    if any(r.status == Status.FAIL and not any(w in (r.detail or "") for w in NAMED) for r in failed):
        return []                                  # a failure none of these models can explain (its LSE alone)
    mine = [specs[r.id] if specs is not None and r.id in specs else store._data[r.id].spec      # no case made here
            for r in judged if (specs is not None and r.id in specs) or r.id in store._data]
    if any(kvcache_api.API.cannot(s) for s in mine) or not any(s.cache_lens is not None for s in mine):
        return []                                  # a target of another API: cases with no cache, or none with one
    sample: list[tuple] = []
    passed = [r for r in results if r.status == Status.PASS]
    for group, cap in ((_spread(failed, specs), MAX_FAILING), (_spread(passed, specs), MAX_PASSING)):
        kept = 0
        for r in group:
            if kept >= cap:
                break
            if too_long(store, r, specs):
                continue                           # long sequences: not modelled
            data = _data(store, r, specs)
            if data is None or (r.status == Status.PASS and getattr(r, "got", None) is None):
                continue
            sample.append((data, r, kvcache_api.caches(data)))
            kept += 1
    if not any(r.status != Status.PASS for _, r, _ in sample):
        return []

    def fit(variant) -> bool:
        return all(_consistent(variant, data, r, c) for data, r, c in sample)
    lines = []
    for model in MODELS.values():
        good = [v.label for v in model.variants if fit(v)]
        if len(good) > 1:                       # the cases do not tell the variants apart: each is named
            common = os.path.commonprefix(good).rpartition(" ")[0]
            rest = [g[len(common):].strip() for g in good[1:]]
            good = [f"{', '.join(good[:1] + rest[:-1])} or {rest[-1]}: these cases do not tell them apart"]
        if good:
            tail = f" ({good[0]})" if len(model.variants) > 1 else ""
            lines.append(f"diagnosis {target}: {model.name} — {model.explanation}{tail}")
    return lines
