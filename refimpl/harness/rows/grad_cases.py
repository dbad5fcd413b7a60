"""``grad:<family>`` rows (``refimpl check --grad`` / ``--backward MOD:FN``): dQ, dK, dV of a target on a case
family, each gradient judged on its own against the float64 oracle (:mod:`.grad_judge`).

How a column gets its gradients:

* torch-tensor targets (``--torch-tensors``, ``--api torch-sdpa``, ``--api flash-attn``, the built-in
  ``torch``): through autograd. The case is called as in the forward rows (:func:`.apis.call`) with inputs
  that require grad; then ``torch.autograd.grad(out, (q, k, v), d_out)`` with the case's seeded ``d_out``
  in the output's dtype and layout. Gradients come back to refimpl's (B, H, S, D) layout.
* NumPy targets: the ``--backward MOD:FN`` function, ``FN(q, k, v, d_out, mask=None, scale=None) ->
  (dq, dk, dv)``, called like the refimpl protocol (a bool keep-mask with causal and window folded in;
  ``--layout BSHD`` transposes q, k, v, d_out and the gradients; float32 arrays for the half types). It
  is judged in the column of every NumPy user target (the forward it differentiates); a NumPy user
  target without ``--backward`` is skipped, with the flag to use.
* ``refimpl`` is the reference (its backward is the oracle); other built-ins without autograd and ``R:``
  function targets are n/a.
* Isolation: as in the forward rows, a user target's gradients are computed in its worker
  (:meth:`.isolation.IsolatedFunction.grads`: the graph is built and differentiated there, only arrays
  cross), and ``--backward`` runs in a worker of its own; a crash, ``sys.exit``, hang or memory past
  ``--max-memory`` in either is that case's verdict (``crash``, ``timeout``, ``oom``), and the run goes on.

``--repeat N``: each gradient case is computed N times and dq, dk, dv must be bitwise the same every time, or the
case is ``nondeterministic`` (:mod:`.determinism`: which gradient, how many values differ, by how much).

Families with no gradient meaning are n/a: ``long`` (S up to 16,384: the autograd graph of an
Sq x Sk matrix per head). ``extreme-logits`` (saturated softmax) is judged as every case in float64 and
float32; in float16 and bfloat16 (the weights one-hot up to rounding, ties decided by rounding, the budget
vacuous) on shapes and finiteness only: a NaN or inf where the float64 oracle is finite fails (a backward that
exponentiates the scores without the row max overflows there). Fully masked query rows expect zero gradients
whatever the forward's masked-rows convention.

The row's cell: FAIL when any case fails, with the first failing cases and the ``diagnosis TARGET: MODEL —
explanation`` lines of the backward bug models that fit (:func:`.grad_judge.diagnose_grads`); the
lines are kept on the :class:`GradCase` and :func:`analyse_grad` copies them into ``CheckRun.diagnoses``.
"""
from __future__ import annotations

import math
from collections import Counter
from itertools import zip_longest
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol, cast

import numpy as np

from ...errors import Unavailable, UsageError
from ...precision import lowest
from .. import apis
from ..apis import PROTOCOL, check_backward_signature, keep_mask, to_numpy, expressible
from ..targets.autograd_grads import autograd_grads
from ..cases import Case, Outcome, Status, TargetDied
from ..cases.families import FAMILIES
from ..cases.features import CaseSpec
from ..verdicts.determinism import repeat_calls
from ..verdicts.grad_judge import GRADS, MAX_FAILING, MAX_PASSING, GradReturned, diagnose_grads, grad_data, judge_grads
from ..verdicts.judge import CaseResult
from ..targets.target import Target
from ..targets.loading import load_function

__all__ = ["Backward", "GradCase", "GRAD_NA", "load_backward", "grad_case", "run_grad_one", "analyse_grad"]

GRAD_NA = {"varlen": "gradients of packed batches are not checked (no varlen backward API yet)",
           "kvcache": "a KV-cache decode step has no backward pass (inference only, as flash_attn_with_kvcache)",
           "long": "gradients of S >= 2,048 are not checked (an Sq x Sk autograd graph per head)"}


@dataclass
class Backward:
    """The ``--backward MOD:FN`` function: ``FN(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv)``
    (``fn`` is a worker proxy, :class:`.isolation.IsolatedFunction`, unless ``--no-isolation``)."""
    spec: str
    fn: Callable


def load_backward(spec: str, isolate: Callable | None = None) -> Backward:
    """Load and check ``--backward``'s function (UsageError naming the flag, what was expected and what came).

    ``isolate(spec, check)``: load and check it in a worker instead (:func:`.isolation.isolated`): the
    user's module is then never imported into this process."""
    if isolate is not None:
        return Backward(spec, isolate(spec, "backward"))
    try:
        fn = load_function(spec)
    except UsageError as e:
        raise UsageError(str(e).replace("--target", "--backward", 1)) from None
    check_backward_signature(fn, spec)
    return Backward(spec, fn)


class _RemoteGrads(Protocol):
    """A worker proxy's function (:class:`.isolation.IsolatedFunction`): its gradients come from its worker."""

    def grads(self, api: str, layout: str, data, d_out: np.ndarray) -> tuple[dict, str]: ...


@dataclass
class GradCase(Case):
    """A ``grad:<family>`` row; ``diagnoses`` holds, per target, the diagnosis lines of its failing cases."""
    grad_specs: list = field(default_factory=list)
    diagnoses: dict = field(default_factory=dict)
    grad_samples: dict = field(default_factory=dict)     # target -> (failing, passing) (GradData, returned) pairs


def _mode(target: Target, backward: Backward | None) -> tuple[str, str]:
    """(mode, why): "reference" | "autograd" | "numpy" | "skip" | "n/a"."""
    if target.is_reference:
        return "reference", "refimpl.backward.sdpa_backward is the gradients' oracle"
    if apis.get(target.api).uses_torch(target.torch):
        return "autograd", ""
    if ":" not in target.name:
        return "n/a", f"the built-in target {target.name} computes no gradients"
    if target.name.startswith("R:"):
        return "n/a", "an R function target computes no gradients here"
    if backward is None:
        return "skip", "a NumPy target's gradients are checked with --backward MOD:FN"
    return "numpy", ""


def _autograd(target: Target, data, d_out: np.ndarray) -> GradReturned:
    """Through autograd where the target runs: in its worker when its function is a worker proxy
    (:class:`.isolation.IsolatedFunction`, marked ``refimpl_remote_grads`` on its class), else in this process.
    The class is not imported here: that would put the worker under the grad rows' layer."""
    fn = target.fn
    remote = getattr(type(fn), "refimpl_remote_grads", False) is True
    grads, dtype = cast(_RemoteGrads, fn).grads(target.api, target.layout, data, d_out) if remote else \
        autograd_grads(fn, target.api, target.layout, data, d_out)
    return GradReturned(grads, dtype)


def _numpy(backward: Backward, target: Target, data, d_out: np.ndarray) -> GradReturned:
    s = data.spec
    dt = PROTOCOL.given_dtype(s.dtype)
    mask = keep_mask(s, data.mask)
    if target.layout in ("BHSD", "BSHD") and mask is not None:
        mask = np.broadcast_to(mask, (s.B, s.Hq, s.Sq, s.Sk))
    arrays = [data.q, data.k, data.v, d_out]
    if target.layout == "BSHD":
        arrays = [np.swapaxes(a, 1, 2) for a in arrays]       # (B, S, H, D)
    res = backward.fn(*(np.array(a, dtype=dt) for a in arrays),
                      mask=None if mask is None else np.array(mask), scale=s.scale)
    if not isinstance(res, (tuple, list)) or len(res) != 3:
        raise TypeError(f"--backward returned {type(res).__name__}"
                        f"{f' of length {len(res)}' if isinstance(res, (tuple, list)) else ''}; expected (dq, dk, dv)")
    out, dtypes = {}, []
    for name, a in zip(GRADS, res):
        arr, d = to_numpy(a, name)
        out[name] = np.swapaxes(arr, 1, 2) if target.layout == "BSHD" and arr.ndim == 4 else arr
        dtypes.append(d)
    return GradReturned(out, lowest(dtypes))


def _where_dead_rows_reach(data, grads: dict) -> bool:
    """Every non-finite gradient entry lies where a fully masked row's NaN softmax puts it: dq on those rows
    (data.dead, (B, Hq, Sq)), dk and dv in the (batch, kv head) blocks one of whose query heads has such a row."""
    dead = np.asarray(data.dead)
    B, Hq, Sq = dead.shape
    Hkv = data.spec.Hkv
    block = dead.reshape(B, Hkv, Hq // Hkv, Sq).any(axis=(2, 3))[:, :, None, None]            # (B, Hkv, 1, 1)
    allowed = {"dq": dead[..., None], "dk": block, "dv": block}
    for name, a in grads.items():
        a = np.asarray(a)
        lead = dead.shape if name == "dq" else (B, Hkv)              # another shape: the judge says so, no excuse
        if a.ndim != 4 or a.shape[:len(lead)] != lead or (~np.isfinite(a) & ~allowed[name]).any():
            return False
    return True


def _known(target: Target, data, res: CaseResult, rejudge: Callable | None = None) -> CaseResult:
    """A catalogued divergence on fully masked rows (the built-in torch's NaN softmax, T1) excuses NaN gradients
    where those rows put them, and nothing else: a NaN on a row with a key stays a failure, and ``rejudge(grads)``
    (the judge on the gradients with those NaN set to the oracle's values) must pass on the rest."""
    if res.status != Status.FAIL or not data.dead.any() or "NaN or inf" not in res.detail:
        return res
    keep = keep_mask(data.spec, data.mask)
    keep = None if keep is None else np.broadcast_to(keep, data.expected.shape[:-1] + (data.spec.Sk,))
    codes = target.known(data.q, data.k, data.v, keep)      # asked first: a target with no catalogue costs nothing
    if not codes or res.got is None or not _where_dead_rows_reach(data, res.got.grads):
        return res
    again = None if rejudge is None else rejudge(res.got.grads)
    if again is not None and again.status != Status.PASS:
        res.detail = f"{res.detail}; besides the NaN of fully masked rows: {again.detail}"
        return res
    res.status, res.detail = Status.KNOWN, f"known {', '.join(codes)}: {res.detail}"
    return res


def _row_cache(store, family: str) -> dict:
    """Per-case caches (d_out, the oracle's and the naive backward's gradients) of the grad row running now,
    shared by its targets. The runner goes row by row, so the previous row's are dropped: the gradients of a
    whole suite would not fit in memory; cases the store does not keep (decode's long key sequences) are not
    kept here either."""
    held = getattr(store, "grad_row", None)
    if held is None or held[0] != family:
        held = (family, {})
        store.grad_row = held
    return held[1]


def _case_cache(store, data) -> dict:
    """The case's cache in the row's (a fresh one for cases larger than the store keeps: its own policy)."""
    small = data.k.nbytes + data.v.nbytes <= getattr(store, "CACHE_BYTES", math.inf)
    return _row_cache(store, data.spec.family).setdefault(data.spec.id, {}) if small else {}


def _numpy_cannot(spec: CaseSpec) -> str | None:
    """Why a ``--backward`` function (refimpl's protocol) cannot take ``spec``: the protocol's own reasons, except
    that one kv head serving every query head (MQA) is given as k, v with a head axis of 1, which NumPy broadcasts
    against q's heads; dk, dv must come back with that axis of 1 (each the sum over the query heads)."""
    why = PROTOCOL.cannot(spec)
    if why is not None and spec.Hkv == 1 and PROTOCOL.cannot(replace(spec, Hkv=spec.Hq)) is None:
        return None
    return why


def run_grad_one(target: Target, spec: CaseSpec, store, backward: Backward | None = None) -> CaseResult:
    """One gradient case on one target: n/a, skip, unsupported, error, or the gradient judge's verdict.
    ``store``: the run's :class:`.family_cases.CaseStore` (not imported here: that would add an import layer)."""
    mode, why = _mode(target, backward)
    if mode in ("reference", "n/a", "skip"):
        status = {"reference": Status.REFERENCE, "n/a": Status.NA, "skip": Status.SKIP}[mode]
        return CaseResult(spec.id, status, detail=why, features=spec.features())
    na = GRAD_NA.get(spec.family) or (_numpy_cannot(spec) if mode == "numpy" else expressible(target.api, spec))
    extra = getattr(target, "expressible", None)
    na = na or (extra(spec) if extra else None)
    if na is not None:
        return CaseResult(spec.id, Status.NA, detail=na, features=spec.features())
    data = store.get(spec)
    cache = _case_cache(store, data)
    gd = grad_data(data, cache)

    def once() -> GradReturned:
        if mode == "autograd":
            return _autograd(target, data, gd.d_out)
        assert backward is not None                       # _mode is "numpy" only with a --backward
        return _numpy(backward, target, data, gd.d_out)
    try:
        got = once()
        repeated = repeat_calls(once, got, target.repeat) if target.repeat > 1 else None   # bitwise dq, dk, dv
    except TargetDied as e:
        return CaseResult(spec.id, Status(e.status), math.inf, str(e)[:300], features=spec.features())
    except NotImplementedError as e:
        return CaseResult(spec.id, Status.UNSUPPORTED, detail=f"NotImplementedError: {e}"[:200],
                          features=spec.features())
    except Unavailable:
        raise
    except Exception as e:  # the target raised, or returned something unusable
        return CaseResult(spec.id, Status.ERROR, math.inf, f"{type(e).__name__}: {e}"[:300], features=spec.features())
    given = spec.dtype if mode == "autograd" else PROTOCOL.given_dtype(spec.dtype)
    v = judge_grads(gd, got, given, cache)

    def rejudge(grads: dict):                        # the NaN set aside (the oracle's values there), the rest judged
        kept = {n: np.where(np.isfinite(a), a, gd.oracle[n]) for n, a in grads.items()}
        return judge_grads(gd, GradReturned(kept, got.dtype), given, cache)
    res = _known(target, data, CaseResult(spec.id, v.status, v.ratio, v.detail, features=spec.features(), got=got),
                 rejudge)
    if repeated is not None and res.status == Status.PASS:
        res.status, res.detail = Status.NONDETERMINISTIC, repeated
    elif repeated is not None:
        res.detail = f"{res.detail}; {repeated}"
    return res


def _aggregate(results: list[CaseResult], specs: dict[str, CaseSpec], diagnosis: list[str]) -> Outcome:
    counts = Counter(r.status for r in results)
    ordered = sorted(counts.items(), key=lambda x: x[0].value)
    summary = f"{len(results)} cases: " + ", ".join(f"{n} {s}" for s, n in ordered)
    bad = [r for r in results if Status(r.status).failed]
    judged = [r for r in results if r.status in (Status.PASS, Status.FAIL)]
    worst = max((r.ratio for r in judged), default=0.0)
    if bad:
        details = [f"{r.id} ({specs[r.id].describe()}): {r.status}: {r.detail}" for r in bad[:3]]
        status = Status.FAIL if any(r.status == Status.FAIL for r in bad) else Status(bad[0].status)
        return Outcome(status, worst, 0.0, "; ".join([summary] + details + diagnosis), n_arrays=len(results),
                       cases=results)
    if counts[Status.KNOWN]:
        known = next(r.detail for r in results if r.status == Status.KNOWN)
        return Outcome(Status.KNOWN, worst, 0.0, f"{summary}; {known}", n_arrays=len(results), cases=results)
    if not judged:
        only = results[0] if len(counts) == 1 else None
        if only is not None and only.status in (Status.REFERENCE, Status.SKIP, Status.NA):
            return Outcome(Status(only.status), detail=only.detail, cases=results)
        return Outcome(Status.NA, detail=summary, cases=results)
    return Outcome(Status.PASS, worst, 0.0, summary, n_arrays=len(results), cases=results)


def grad_case(name: str, specs: list[CaseSpec], store, backward: Backward | None = None,
              progress: Callable[[str], None] | None = None) -> GradCase:
    """The ``grad:<name>`` row over ``specs`` (the family's forward specs: same inputs, same store)."""
    by_id = {s.id: s for s in specs}
    case = GradCase(f"grad:{name}", "gradients", f"dQ, dK, dV: {FAMILIES[name].doc}", lambda t: Outcome(Status.SKIP),
                    grad_specs=specs, store=store)

    def run(target: Target) -> Outcome:
        results: list[CaseResult] = []
        kept: Counter[Status] = Counter()
        for i, spec in enumerate(specs):
            if progress is not None and i % 100 == 99:
                progress(f"grad:{name} x {target.name}: {i + 1}/{len(specs)} cases ...")
            r = run_grad_one(target, spec, store, backward)
            kept[r.status] += r.got is not None
            if r.got is not None and kept[r.status] > (MAX_FAILING if r.status == Status.FAIL else MAX_PASSING):
                r.got = None                 # the diagnosis reads at most this many: memory stays one row's
            results.append(r)

        def again(r):
            data = store.get(by_id[r.id])
            return grad_data(data, _case_cache(store, data)), r.got
        lines = []
        if any(r.status == Status.FAIL for r in results):
            fails = [again(r) for r in results if r.status == Status.FAIL and isinstance(r.got, GradReturned)
                     and r.got.allowed]
            passes = [again(r) for r in results if r.status == Status.PASS and isinstance(r.got, GradReturned)]
            lines = diagnose_grads(fails, passes, target.name)
            case.grad_samples[target.name] = (fails, passes)     # the run's diagnosis pools every row's
        for r in results:                    # the report keeps the failing cases' gradients only
            if r.status != Status.FAIL:
                r.got = None
        if lines:
            case.diagnoses[target.name] = lines
        return _aggregate(results, by_id, lines)

    case.run = run
    return case


def analyse_grad(run) -> None:
    """One gradient diagnosis per target into ``run.diagnoses`` (after :func:`.diagnosis.analyse_run`): the backward
    models fitted over the failing and passing cases of every grad row together, taken in turn from each row (a
    model must explain the run, not one family's share of it); a row's own lines stay in its report."""
    pooled: dict[str, tuple[list, list]] = {}
    for c in run.cases:
        for t, (fails, passes) in getattr(c, "grad_samples", {}).items():
            f, p = pooled.setdefault(t, ([], []))
            f.append(fails)
            p.append(passes)
        if hasattr(c, "grad_samples"):
            c.grad_samples = {}              # read once: the cases' gradients are not kept past the diagnosis
    for t, (fails, passes) in pooled.items():
        lines = diagnose_grads(_in_turn(fails), _in_turn(passes), t)
        have = run.diagnoses.setdefault(t, [])
        have += [line for line in lines if line not in have]


def _in_turn(lists: list[list]) -> list:
    """The items of ``lists`` taken one from each in turn: [a0, b0, c0, a1, b1, ...]."""
    return [x for group in zip_longest(*lists) for x in group if x is not None]
