"""One adapter per target API: what it can express (decided here, never discovered mid-run) and how a case
becomes a call.

* ``refimpl`` — ``fn(q, k, v, mask=None, scale=None)`` -> output or (output, weights); NumPy arrays
  (..., S, D) (``layout`` BSHD transposes; ``torch`` hands tensors); a bool keep-mask carries causal,
  window and padding; no additive mask, softcap, ALiBi or GQA.
* ``torch-sdpa`` — ``torch.nn.functional.scaled_dot_product_attention``'s signature and semantics:
  ``fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False)``,
  tensors (B, H, S, D); bool masks True = attend, float masks added (ALiBi arrives as one); ``is_causal``
  is top-left (other alignments and windows arrive as masks); no softcap.
* ``flash-attn`` — ``flash_attn_func``'s: ``fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
  window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False)``,
  tensors (B, S, H, D), GQA by fewer kv heads, causal and windows bottom-right; no masks.

Every call gets fresh copies of its inputs; :func:`call` reports which inputs the target wrote to.
float16/bfloat16 cases reach NumPy targets as float32 arrays of representable values, torch targets as
real tensors of that dtype.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..masks import band_mask

__all__ = ["APIS", "expressible", "call", "Returned", "check_signature"]

APIS = ("refimpl", "torch-sdpa", "flash-attn")
NATIVE = "native"      # refimpl's own scaled_dot_product_attention with every feature (the built-in column)
_TORCH_APIS = ("torch-sdpa", "flash-attn")
_PARAMS = {"torch-sdpa": ("attn_mask", "is_causal", "scale"),
           "flash-attn": ("softmax_scale", "causal", "window_size")}


@dataclass
class Returned:
    """What a target returned for one case, in refimpl's layout and float64."""
    output: np.ndarray                  # (B, Hq, Sq, Dv)
    weights: np.ndarray | None          # (B, Hq, Sq, Sk) when the API returns them
    dtype: str                          # the precision the target returned
    mutated: list[str]                  # inputs the target wrote to


def expressible(api: str, spec) -> str | None:
    """None when ``api`` can express every feature of ``spec``; otherwise why not (the cell's ``n/a``)."""
    if api == NATIVE:
        return None
    if api == "refimpl":
        for bad, why in ((spec.mask == "additive", "additive float masks"), (spec.softcap is not None, "softcap"),
                         (spec.alibi, "ALiBi biases"), (spec.gqa, "GQA (Hq != Hkv)")):
            if bad:
                return f"the refimpl protocol has no {why}"
        return None
    if api == "torch-sdpa":
        return "torch's SDPA has no softcap" if spec.softcap is not None else None
    if api == "flash-attn":
        if spec.mask != "none":
            return f"flash_attn_func takes no {spec.mask} mask"
        if (spec.is_causal or spec.window is not None) and spec.alignment == "top-left" and spec.Sq != spec.Sk:
            return "flash_attn_func aligns causal and windows bottom-right"
        return None
    raise UsageError(f"--api must be one of {APIS}, got {api!r}")


def check_signature(fn, api: str) -> None:
    """Refuse, before any case runs, a target whose signature cannot be the API's (exit 2 with the fix)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return                                           # builtins, C extensions: no signature to read
    params = sig.parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 3 and not any(p.kind == p.VAR_POSITIONAL for p in params.values()):
        raise UsageError(f"the target takes {len(positional)} positional arguments {tuple(params)}; every API passes "
                         f"q, k, v first")
    if api == "refimpl":
        missing = [n for n in ("mask", "scale") if n not in params]
        hint = next((a for a, ps in _PARAMS.items() if all(p in params for p in ps)), None)
        if missing:
            raise UsageError(f"the target's signature {sig} has no {', '.join(missing)}: the refimpl protocol is "
                             f"fn(q, k, v, mask=None, scale=None)" + (f"; it looks like --api {hint}" if hint else ""))
        return
    missing = [n for n in _PARAMS[api] if n not in params]
    if missing:
        hint = next((a for a, ps in _PARAMS.items() if a != api and all(p in params for p in ps)), None)
        if hint is None and all(n in params for n in ("mask", "scale")):
            hint = "refimpl"
        raise UsageError(f"the target's signature {sig} lacks {', '.join(missing)} of --api {api}"
                         + (f"; it looks like --api {hint}" if hint else ""))


def check_backward_signature(fn, spec: str) -> None:
    """Refuse a ``--backward`` function that cannot be ``FN(q, k, v, d_out, mask=None, scale=None)``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return                                           # builtins, C extensions: no signature to read
    kinds = [p.kind for p in params.values()]
    if inspect.Parameter.VAR_KEYWORD in kinds:
        return
    arrays = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
              and p.name not in ("mask", "scale")]                 # q, k, v, d_out
    missing = [n for n in ("mask", "scale") if n not in params]
    if (len(arrays) < 4 and inspect.Parameter.VAR_POSITIONAL not in kinds) or missing:
        raise UsageError(f"--backward {spec!r}: the function's signature is {inspect.signature(fn)}; expected "
                         f"FN(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv)")


def keep_mask(s, mask: np.ndarray | None) -> np.ndarray | None:
    """A case's (spec ``s``) bool keep-mask ``mask`` with causal and window folded in (None: nothing masked)."""
    return band_mask(s.Sq, s.Sk, is_causal=s.is_causal, window=s.window, alignment=s.alignment, mask=mask)


def _array_dtype(dtype: str) -> str:
    return dtype if dtype in ("float64", "float32") else "float32"


def _torch_dtype(dtype: str):
    import torch
    return getattr(torch, dtype)


def _to_numpy(x, what: str) -> tuple[np.ndarray, str]:
    if hasattr(x, "detach") and hasattr(x, "dtype"):
        name = str(x.dtype).replace("torch.", "")
        return x.detach().to("cpu").float().numpy().astype(np.float64) if name in ("float16", "bfloat16") else \
            x.detach().cpu().numpy().astype(np.float64), name
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


def _snapshots(given: dict) -> dict:
    return {n: _snap(a) for n, a in given.items() if a is not None}


def _mutations(given: dict, pristine: dict) -> list[str]:
    return [n for n, before in pristine.items()
            if (now := _snap(given[n])).shape != before.shape or not np.array_equal(now, before, equal_nan=True)]


def call(fn, api: str, data, *, layout: str = "SD", torch: bool = False) -> Returned:
    """Call ``fn`` on ``data`` through ``api``; the output comes back in refimpl's (B, Hq, Sq, Dv) layout."""
    s = data.spec
    use_torch = torch or api in _TORCH_APIS
    if use_torch:
        import torch as th
        tdt = _torch_dtype(s.dtype)

        def conv(a):
            return None if a is None else (th.tensor(a) if a.dtype == bool else th.tensor(a, dtype=tdt))
    else:
        def conv(a):
            return None if a is None else np.array(a, dtype=bool if a.dtype == bool else _array_dtype(s.dtype))
    q, k, v = data.q, data.k, data.v
    if api == NATIVE:
        given = {"q": conv(q), "k": conv(k), "v": conv(v)}
        pristine = _snapshots(given)
        kw = data.reference_kwargs()
        if kw["mask"] is not None:
            kw["mask"] = conv(kw["mask"])
        res = fn(given["q"], given["k"], given["v"], **kw)
        out, w = res if isinstance(res, tuple) and len(res) == 2 else (res, None)
    elif api == "refimpl":
        mask = keep_mask(s, data.mask)
        if layout in ("BHSD", "BSHD") and mask is not None:     # the mask stays (B, H, Sq, Sk), in full
            mask = np.broadcast_to(mask, (s.B, s.Hq, s.Sq, s.Sk))
        if layout == "BSHD":                                   # q, k, v (B, S, H, D), FlashAttention's layout
            q, k, v = (np.swapaxes(a, 1, 2) for a in (q, k, v))
        given = {"q": conv(q), "k": conv(k), "v": conv(v), "mask": conv(mask)}
        pristine = _snapshots(given)
        res = fn(given["q"], given["k"], given["v"], mask=given["mask"], scale=s.scale)
        out, w = res if isinstance(res, tuple) and len(res) == 2 else (res, None)
    elif api == "torch-sdpa":
        mask, causal = data.mask, False
        if data.spec.alibi or (mask is not None and mask.dtype != bool):
            kw = data.reference_kwargs()
            mask = kw["mask"]
            extra = keep_mask(s, None)
            if extra is not None:
                mask = np.where(extra, mask, -np.inf)
        elif s.is_causal and s.alignment == "top-left" and s.window is None and mask is None:
            causal = True
        else:
            mask = keep_mask(s, data.mask)
        given = {"query": conv(q), "key": conv(k), "value": conv(v), "attn_mask": conv(mask)}
        pristine = _snapshots(given)
        kwargs = dict(attn_mask=given["attn_mask"], dropout_p=0.0, is_causal=causal, scale=s.scale)
        if s.gqa:
            kwargs["enable_gqa"] = True
        res = fn(given["query"], given["key"], given["value"], **kwargs)
        out, w = res, None
    else:   # flash-attn
        left, right = s.window if s.window is not None else (-1, -1)
        if s.is_causal:
            right = 0 if right < 0 else min(right, 0)
        given = {"q": conv(np.swapaxes(q, 1, 2)), "k": conv(np.swapaxes(k, 1, 2)), "v": conv(np.swapaxes(v, 1, 2))}
        pristine = _snapshots(given)
        slopes = None if not s.alibi else th.tensor(data.slopes, dtype=th.float32)
        res = fn(given["q"], given["k"], given["v"], dropout_p=0.0, softmax_scale=s.scale, causal=s.is_causal,
                 window_size=(left, right) if s.window is not None else (-1, -1), softcap=s.softcap or 0.0,
                 alibi_slopes=slopes, deterministic=True, return_attn_probs=False)
        out, w = (res[0] if isinstance(res, tuple) else res), None
        out = out.transpose(1, 2) if hasattr(out, "transpose") and hasattr(out, "detach") else np.swapaxes(out, 1, 2)
    mutated = _mutations(given, pristine)
    o, odt = _to_numpy(out, "output")
    if w is not None:
        w, _ = _to_numpy(w, "weights")
    if api == "refimpl" and layout == "BSHD":
        o = np.swapaxes(o, 1, 2) if o.ndim == 4 else o          # weights come back (B, H, Sq, Sk) as the mask went
    return Returned(o, w, odt, mutated)
