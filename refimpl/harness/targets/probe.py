"""Before a run: one probe call per user target on a small case, so that a target which cannot work as
configured gets ONE message with the fix (a :class:`UsageError`, exit 2) instead of the same error on every
case; and the target's causal convention, measured.

The probe case: B = 1, Hq = Hkv = 2, Sq = 3, Sk = 5, D = 4, Dv = 6, no mask, in the run's first dtype. Every
size differs from the others, so a target reading (B, H, S, D) as (B, S, H, D) meets heads 3 vs 5 and raises,
and an output with the wrong axes shows in its shape. The output "matches" an expected E when

    |got - E| <= 0.02 * (1 + max|v|) + 0.02 * |E|      elementwise, shapes equal,

loose enough for any precision down to bfloat16, far below the O(1) difference of a wrong layout, API or
causal alignment. Decided (in this order):

* the call as configured matches: fine. The worker died, timed out or ran out of memory (TargetDied):
  nothing here — the run reports it case by case.
* otherwise the same case is called under every other configuration the flags allow (``--layout BSHD`` or
  not, ``--torch-tensors`` or not, each other ``--api`` whose signature fits); the first that matches is the
  fix: UsageError naming what happened as configured and the flags to use.
* none matches and what came back is not an array or tensor (list, dict, None, str, a tuple other than
  ``(output, weights)``): UsageError naming the type and what to return.
* the output is the expected (B, H, Sq, Dv) with axes 1 and 2 swapped, i.e. (B, S, H, D): UsageError.
* the call raised, the API hands torch tensors, and the same call with NumPy arrays instead (the output turned back
  into a tensor) returns the expected output: a function written for NumPy arrays, UsageError saying so.
* otherwise (the target raised, or returned wrong values of the right shape): nothing — that is a verdict,
  and the run gives it.

Causal (``causal=`` of the conventions line): the alignment of the API's own causal flag. One case with
Sq = 3 < Sk = 5 (no query loses every key in either alignment) is run with the flag (torch-sdpa
``is_causal=True``, flash-attn ``causal=True``, refimpl's own ``is_causal=True`` without an alignment) and
compared with the expected output of both alignments: ``top-left`` | ``bottom-right`` | ``other`` (it
returned neither); ``n/a`` when the API has no causal flag (the refimpl protocol: causality arrives as a
keep-mask, so its alignment is the harness's) or the call raised (nothing measured; the run reports it).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ...errors import UsageError
from .. import apis
from ..apis import call, check_signature
from ..cases import TargetDied
from ...precision import PRECISIONS
from ..cases.features import CaseData, CaseSpec, materialise
from .target import Target

__all__ = ["probe", "probe_targets", "record", "causal_convention", "PROBE_SPEC", "matches"]

PROBE_SPEC = CaseSpec(family="probe", index=0, B=1, Hq=2, Hkv=2, Sq=3, Sk=5, D=4, Dv=6, seed=15)
RTOL = ATOL = 0.02


def matches(got, expected: np.ndarray, v: np.ndarray) -> bool:
    """The module doc's loose closeness (shapes equal, NaN never matches)."""
    got = np.asarray(got, np.float64)
    if got.shape != expected.shape:
        return False
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.abs(got - expected) <= ATOL * (1.0 + np.abs(v).max()) + RTOL * np.abs(expected)))


class _Recorder:
    """Stands in for the target's function and keeps what it returned (call() converts it, or refuses)."""

    def __init__(self, fn):
        self.fn, self.raw, self.returned = fn, None, False

    def __call__(self, *args, **kwargs):
        self.raw = self.fn(*args, **kwargs)
        self.returned = True
        return self.raw


def _flags(t: Target) -> str:
    return apis.get(t.api).flags(t.layout, t.torch)


def _try(t: Target, data: CaseData):
    """``(Returned or None, exception or None, recorder)`` of one call of ``t`` on ``data``; TargetDied passes."""
    rec = _Recorder(t.fn)
    try:
        return call(rec, t.api, data, layout=t.layout, torch=t.torch), None, rec
    except TargetDied:
        raise
    except Exception as e:          # what the target raised, or call() refusing what it returned
        return None, e, rec


def _as_numpy(fn):
    """``fn`` called with NumPy arrays in place of tensors, its NumPy output handed back as a tensor."""
    import torch as th

    def adapted(*args, **kwargs):
        def np_(x):
            return x.detach().cpu().numpy() if isinstance(x, th.Tensor) else x
        out = fn(*(np_(x) for x in args), **{n: np_(x) for n, x in kwargs.items()})
        return th.from_numpy(np.ascontiguousarray(out)) if isinstance(out, np.ndarray) else out
    return adapted


def _numpy_would_work(t: Target, data: CaseData) -> bool:
    """The target raised under a tensor API and, given NumPy arrays instead, returns the expected output: it was
    written for NumPy (the refusal's proof; a torch kernel with a bug of its own is left to the run)."""
    try:
        got, _, _ = _try(replace(t, fn=_as_numpy(t.fn)), data)
    except TargetDied:
        return False
    return got is not None and matches(got.output, data.expected, data.v)


def _alternatives(t: Target) -> list[Target]:
    """Every other configuration the flags allow whose signature fits (layout SD and BHSD are one for 4-D)."""
    out = []
    for api in sorted(apis.names(), key=lambda n: -len(apis.get(n).params)):    # the most specific first
        a = apis.get(api)
        try:
            check_signature(t.fn, a)
        except UsageError:
            continue
        if len(a.layouts) > 1:                 # its layout and tensor type are flags: every combination
            combos = [(lay, th) for lay in ("BHSD", "BSHD") for th in (False, True)]
            out += [replace(t, api=api, layout=lay, torch=th) for lay, th in combos
                    if (api, lay == "BSHD", th) != (t.api, t.layout == "BSHD", t.torch)]
        elif api != t.api:
            out.append(replace(t, api=api, layout="BHSD", torch=False))
    return out


def _returned_kind(raw, api: str) -> str | None:
    """None when ``raw`` is something the API can return; else what it is, for the message."""
    def array(x):
        return isinstance(x, np.ndarray) or (hasattr(x, "detach") and hasattr(x, "dtype"))
    if array(raw):
        return None
    if isinstance(raw, tuple):
        if apis.get(api).accepts(raw, array):
            return None
        return f"a tuple of {len(raw)} ({', '.join(type(x).__name__ for x in raw[:3])})"
    if isinstance(raw, dict):
        return f"a dict with keys {sorted(map(str, raw))[:4]}"
    return "None" if raw is None else f"a {type(raw).__name__}"


def _hint(raw) -> str:
    if raw is None:
        return " (is a `return` missing?)"
    if isinstance(raw, list):
        return " (np.asarray(...) of it would do)"
    if isinstance(raw, str):
        return " (the printed form of an array is not an array)"
    if isinstance(raw, dict):
        return " (return (d['output'], d['weights']) as a tuple instead)" if "output" in raw else ""
    return ""


def probe(target: Target, dtype: str = "float64") -> dict:
    """Check a user target on the probe case (module doc); raises UsageError with the fix. Returns the
    conventions it measured: ``{"causal": ...}``."""
    spec = replace(PROBE_SPEC, dtype=dtype)
    data = materialise(spec)
    name, flags = target.name, _flags(target)
    shapes = f"q {data.q.shape}, k {data.k.shape}, v {data.v.shape} as (B, H, S, D), {dtype}"
    try:
        got, err, rec = _try(target, data)
        if got is not None and matches(got.output, data.expected, data.v):
            return {"causal": causal_convention(target, dtype)}
        for alt in _alternatives(target):
            alt_got, _, _ = _try(alt, data)
            if alt_got is not None and matches(alt_got.output, data.expected, data.v):
                if err is not None:
                    what = f"raised {type(err).__name__}: {str(err)[:160]}"
                else:
                    what = (f"returned output {got.output.shape} that is not the expected {data.expected.shape}"
                            if got.output.shape != data.expected.shape else
                            f"returned output of the expected shape {data.expected.shape} with other values")
                raise UsageError(f"--target {name}: as configured ({flags}) it {what} on a probe case ({shapes}); "
                                 f"with {_flags(alt)} it returns the expected output: run it with {_flags(alt)}")
    except TargetDied:
        return {"causal": "n/a"}
    a = apis.get(target.api)
    if err is not None and a.uses_torch(target.torch) and _numpy_would_work(target, data):
        said = str(err)                                   # (a worker reports "the target raised TypeError: ...")
        said = said.removeprefix("the target raised ") if said.startswith("the target raised ") else \
            f"{type(err).__name__}: {said}"
        raise UsageError(f"--target {name}: raised {said[:200]} on a probe case ({shapes}); {flags} hands torch "
                         f"tensors, as the library function it stands for takes them, and given NumPy arrays it "
                         f"returns the expected output: convert them (x.numpy()) and return torch.from_numpy(out)")
    if err is not None and rec.returned and (kind := _returned_kind(rec.raw, target.api)) is not None:
        raise UsageError(f"--target {name}: returned {kind} on a probe case ({shapes}); expected an array: "
                         f"{apis.get(target.api).returns}{_hint(rec.raw)}")
    if got is not None and got.output.ndim == 4 and got.output.shape == data.expected.swapaxes(1, 2).shape \
            and matches(np.swapaxes(got.output, 1, 2), data.expected, data.v):
        a = apis.get(target.api)
        if a.output_bshd(target.layout):               # the API returns (B, Sq, H, Dv): the target did not
            raw = tuple(np.swapaxes(got.output, 1, 2).shape)
            raise UsageError(f"--target {name}: returned output {raw} = (B, H, Sq, Dv) on a probe case ({shapes}); "
                             f"{flags} returns (B, Sq, H, Dv) {tuple(data.expected.swapaxes(1, 2).shape)}: "
                             f"{a.returns} (out.transpose(1, 2))")
        raise UsageError(f"--target {name}: returned output {got.output.shape} = (B, Sq, H, Dv) on a probe case "
                         f"({shapes}); {flags} expects (B, H, Sq, Dv) {data.expected.shape}: return "
                         f"out.transpose(1, 2), or, if it also takes (B, S, H, D) inputs, run it with --layout BSHD")
    return {"causal": causal_convention(target, dtype)}


def causal_convention(target: Target, dtype: str = "float64") -> str:
    """top-left | bottom-right | other | n/a: what the API's causal flag does (module doc)."""
    flag = apis.get(target.api).causal_flag
    if flag is None:
        return "n/a"
    spec = replace(PROBE_SPEC, dtype=dtype, is_causal=True)
    tl = materialise(replace(spec, alignment="top-left"))
    br = materialise(replace(spec, alignment="bottom-right"))
    try:
        if apis.get(target.api).keywords:  # refimpl's own keywords: is_causal=True, no alignment given
            out = target.fn(tl.q, tl.k, tl.v, is_causal=True)
            out = out[0] if isinstance(out, tuple) else out
        else:                             # the spec whose causal apis.call passes as the API's flag
            out = call(target.fn, target.api, tl if flag == "top-left" else br, layout=target.layout,
                       torch=target.torch).output
    except Exception:                     # NotImplementedError, TargetDied included: nothing measured
        return "n/a"
    for word, d in (("top-left", tl), ("bottom-right", br)):
        if matches(out, d.expected, d.v):
            return word
    return "other"


def probe_targets(targets: list[Target], dtype: str = "float64", user: set[str] | None = None) -> dict[str, dict]:
    """``{name: conventions}`` for every target; the ``user`` ones (default: those not built in) are probed and
    may raise UsageError; the others only get their causal convention measured."""
    out, dtype = {}, dtype if dtype in PRECISIONS else "float64"        # a bad --dtype is refused later, by name
    for t in targets:
        is_user = (t.name in user) if user is not None else (":" in t.name)
        out[t.name] = probe(t, dtype) if is_user else {"causal": causal_convention(t, dtype)}
    return out


def record(run, probed: dict[str, dict]) -> None:
    """Put the probed conventions into every cell of their target (``Outcome.conventions``), where the reports
    read them; targets not probed (unavailable ones) get ``causal = n/a``."""
    for (_, t), o in run.results.items():
        for key, value in probed.get(t, {"causal": "n/a"}).items():
            o.conventions.setdefault(key, value)
