"""Implementations under test ("targets") and the protocol they follow.

The protocol: a callable ``fn(q, k, v, mask=None, scale=None)`` returning ``output`` or
``(output, weights)``:

* ``q`` (..., Sq, D), ``k`` (..., Sk, D), ``v`` (..., Sk, Dv) NumPy arrays (float64, or float32 for
  float32 cases); leading dimensions are batch/head dimensions.
* ``mask``: None or a bool keep-mask broadcastable to (..., Sq, Sk), True = attend (PyTorch's
  convention for a boolean ``attn_mask``). Causal cases arrive as such a mask.
* ``scale``: None (meaning 1/sqrt(D)) or a positive float multiplying ``q k^T``.
* it returns NumPy arrays or torch tensors (converted with ``.detach().cpu().numpy()``).

Adapters: ``layout="BSHD"`` for targets that take (B, S, H, D) (FlashAttention's layout): refimpl's
(B, H, S, D) is transposed on the way in and out. ``layout="SD"``/``"BHSD"`` pass arrays as they are.
``torch=True`` hands the target torch tensors instead of NumPy arrays.

Built-in targets: ``refimpl`` (always), ``r`` (the R package through the bridge, when available),
``torch`` (a manual ``softmax(q k^T s) v`` in torch, when importable). A user target is
``package.module:function``.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..attention import scaled_dot_product_attention
from ..errors import Unavailable, UsageError
from ..r import compat as r_compat

__all__ = ["Target", "load_target", "builtin_targets", "LAYOUTS"]

LAYOUTS = ("SD", "BHSD", "BSHD")


@dataclass
class Target:
    name: str
    fn: Callable[..., Any]
    layout: str = "SD"
    torch: bool = False
    api: str = "refimpl"                    # a registered API's name (refimpl.harness.apis)
    is_reference: bool = False              # refimpl itself
    known: Callable[..., list[str]] = field(default=lambda q, k, v, mask: [])
    predict: Callable[..., Any] | None = None   # the catalogued behaviour: (q, k, v, keep) -> output, or raises
    expressible: Callable[..., Any] | None = None   # spec -> None or why this target cannot run the case (n/a)
    precision: str = "float64"              # what it computes in; float32-only runtimes skip float64 expectations
    note: str = ""

    def attend(self, q, k, v, mask=None, scale=None, is_causal=False):
        """One call outside the families (fixture, vignette and random rows): ``(output, weights or None)`` in
        the inputs' own leading dims. It goes through the same adapter as the families (:func:`.apis.call`:
        fresh copies of the inputs, the API's signature and layout), so no row has semantics of its own.

        ``q`` (..., Sq, D), ``k`` (..., Sk, D), ``v`` (..., Sk, Dv) with at most 2 leading dims; ``mask`` None
        or a bool keep-mask. A target that writes to its inputs raises here (the row's cell says so)."""
        from . import apis
        from .features import CaseData, CaseSpec
        q, k, v = (np.asarray(a) for a in (q, k, v))
        if mask is not None:
            mask = np.asarray(mask)
            if mask.dtype != bool:
                raise Unavailable("the target protocol takes bool keep-masks; this case has an additive mask")
        batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
        if len(batch) > 2:
            raise Unavailable(f"at most 2 batch dims (B, H), the case has {batch}")
        full = (1,) * (2 - len(batch)) + batch                        # (B, H)
        q4, k4, v4 = (np.broadcast_to(a, full + a.shape[-2:]) for a in (q, k, v))
        m4 = None if mask is None else np.broadcast_to(mask, full + (q.shape[-2], k.shape[-2]))
        dtype = "float32" if all(a.dtype == np.float32 for a in (q, k, v)) else "float64"
        spec = CaseSpec("row", 0, Sq=q.shape[-2], Sk=k.shape[-2], D=q.shape[-1], Dv=v.shape[-1], B=full[0],
                        Hq=full[1], Hkv=full[1], mask="none" if mask is None else "bool", is_causal=bool(is_causal),
                        scale=scale, dtype=dtype)
        why = apis.expressible(self.api, spec)
        if why is not None:
            raise Unavailable(why)
        data = CaseData(spec, q4, k4, v4, m4, None, np.empty(0), np.empty(0, bool))
        got = apis.call(self.fn, self.api, data, layout=self.layout, torch=self.torch)
        if got.mutated:
            raise ValueError(f"the target writes to its inputs ({', '.join(got.mutated)}): callers' arrays are changed")
        out, w = got.output, got.weights
        out = out.reshape(batch + out.shape[-2:])
        w = None if w is None else w.reshape(batch + w.shape[-2:])
        return out, w


def _refimpl_fn(q, k, v, mask=None, scale=None, **features):
    return scaled_dot_product_attention(q, k, v, mask=mask, scale=scale, **features)


def _per_case(q, k, v, mask):
    """``(batch_shape, [(Q, K, V, mask or None), ...])``: one float64 2-D case per batch index, as the R
    package takes them (a bool mask becomes 0/1)."""
    q, k, v = (np.asarray(a) for a in (q, k, v))
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    flat = [np.broadcast_to(a, batch + a.shape[-2:]).reshape((-1,) + a.shape[-2:]).astype(np.float64) for a in (q, k, v)]
    m = None if mask is None else np.broadcast_to(mask, batch + (q.shape[-2], k.shape[-2])).reshape(
        (-1, q.shape[-2], k.shape[-2])).astype(np.float64)
    return batch, [(flat[0][i], flat[1][i], flat[2][i], None if m is None else m[i]) for i in range(flat[0].shape[0])]


def _r_target() -> Target:
    from ..r.bridge import availability, require_r
    rb = require_r()
    a = availability()

    def fn(q, k, v, mask=None, scale=None):
        qs = q if scale is None else q * (scale * math.sqrt(q.shape[-1]))
        batch, cases = _per_case(qs, k, v, mask)
        res = rb.batch("attention", cases, ("Q", "K", "V", "mask"))
        outs, ws = [], []
        for r in res:
            o, w = r.unwrap()
            outs.append(o)
            ws.append(w)
        return (np.stack(outs).reshape(batch + outs[0].shape), np.stack(ws).reshape(batch + ws[0].shape))

    def known(q, k, v, mask):
        return sorted({c for case in _per_case(q, k, v, mask)[1] for c in r_compat.attention_divergences(*case)})

    def predict(q, k, v, mask):
        """What the package does, quirks included (refimpl.r.compat): the catalogued behaviour."""
        batch, cases = _per_case(q, k, v, mask)
        outs = [r_compat.attention(*case)[0] for case in cases]
        return np.stack(outs).reshape(batch + outs[0].shape)

    return Target("r", fn, known=known, predict=predict, note=f"R attention {a.attention_version} through the bridge")


def _torch_target() -> Target:
    try:
        import torch
    except ImportError as e:
        raise Unavailable(f"torch is not importable ({e})") from None

    def fn(q, k, v, mask=None, scale=None):
        s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        scores = (q @ k.transpose(-2, -1)) * s                        # (..., Sq, D) x (..., D, Sk) -> (..., Sq, Sk)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        w = torch.softmax(scores, dim=-1)
        return w @ v, w

    def known(q, k, v, mask):
        if mask is not None and (~np.asarray(mask, dtype=bool)).all(axis=-1).any():
            return ["T1"]   # torch: softmax of an all -inf row is NaN; refimpl gives zeros
        return []

    return Target("torch", fn, torch=True, known=known, note=f"torch {torch.__version__}: softmax(q k^T s) v")


def builtin_targets() -> dict[str, Callable[[], Target]]:
    return {"refimpl": lambda: Target("refimpl", _refimpl_fn, is_reference=True, api="native",
                                      note="refimpl float64/float32, every feature"),
            "r": _r_target, "torch": _torch_target, "onnxruntime": _runtime("onnxruntime_target"),
            "torch-mha": _runtime("torch_mha_target")}


def _runtime(name: str) -> Callable[[], Target]:
    def make() -> Target:
        from . import runtimes
        return Target(**getattr(runtimes, name)())
    return make


def load_function(spec: str):
    """The callable named by ``module.path:function`` or ``path/to/file.py:function``.

    Like ``python -m`` and pytest, the current directory is importable, so ``mymod:fn`` finds ./mymod.py.
    Any failure to import is a :class:`UsageError` naming the spec and the cause.
    """
    import os
    import sys
    mod_name, _, attr = spec.rpartition(":")
    if not mod_name or not attr:
        raise UsageError(f"--target {spec!r}: expected module:function or path/to/file.py:function")
    try:
        if mod_name.endswith(".py"):
            path = os.path.abspath(mod_name)
            if not os.path.isfile(path):
                raise UsageError(f"--target {spec!r}: no file {mod_name}")
            name = "refimpl_target_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
            sp = importlib.util.spec_from_file_location(name, path)
            mod = importlib.util.module_from_spec(sp)
            sys.modules[name] = mod
            sp.loader.exec_module(mod)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            mod = importlib.import_module(mod_name)
    except UsageError:
        raise
    except BaseException as e:         # ImportError, SyntaxError, an exception or sys.exit at import time
        raise UsageError(f"--target {spec!r}: cannot import module {mod_name!r}: {type(e).__name__}: {e}") from None
    fn: Any = mod
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise UsageError(f"--target {spec!r}: module {mod_name!r} has no attribute {attr!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise UsageError(f"--target {spec!r}: {attr!r} is not callable")
    return fn


def load_target(spec: str, layout: str = "SD", torch: bool = False, api: str = "refimpl",
                isolate: Callable | None = None) -> Target:
    """``refimpl`` | ``r`` | ``torch`` | ``module:function`` | ``file.py:function`` | ``R:...`` (raises
    UsageError / Unavailable).

    The user's function is checked against ``api``'s signature before any case runs. ``isolate(spec,
    check)``: load and check a user function in a worker instead (:func:`.isolation.isolated`); its module
    (or R file) is then never loaded into this process."""
    from .apis import check_signature, get as get_api
    builtins = builtin_targets()
    if spec in builtins:
        return builtins[spec]()
    if spec.startswith("R:"):                  # an R function (refimpl.harness.r_targets)
        from .r_targets import load_r_target, parse_spec
        if isolate is None:
            return load_r_target(spec, Target)
        parse_spec(spec)                        # a malformed spec or a missing file: said here, before a worker
        return load_r_target(spec, Target, isolate(spec, None))
    if ":" not in spec:
        raise UsageError(f"--target must be one of {sorted(builtins)} or module:function, got {spec!r}")
    if layout not in LAYOUTS:
        raise UsageError(f"layout must be SD, BHSD or BSHD, got {layout!r}")
    get_api(api)                                # a UsageError naming the choices
    if isolate is not None:
        fn = isolate(spec, api)
    else:
        fn = load_function(spec)
        try:
            check_signature(fn, api)
        except UsageError as e:                 # the same words as from a worker (isolation.isolated)
            raise UsageError(f"--target {spec!r}: {e}") from None
    return Target(spec, fn, layout=layout, torch=torch, api=api, note=f"user target, --api {api}")
