"""The target APIs: one module each (its face is :class:`.base.Api`), registered here by name.

Adding an API is one module with an ``API`` object and its line in ``_MODULES``; the CLI's and the plugin's
``--api`` choices, the probe, explore, repro and the gradient rows all ask the API object.
Every call gets fresh copies of its inputs; :func:`call` reports which inputs the target wrote to.
float16/bfloat16 cases reach NumPy targets as float32 arrays of representable values, torch targets as
real tensors of that dtype.
"""
from __future__ import annotations

import inspect

from ...errors import UsageError
from ...registry import Registry
from .base import Api, Returned, converter, dropout_draw, keep_mask, mutations, needs, snapshots, to_numpy

__all__ = ["Api", "Returned", "get", "names", "register", "unregister", "expressible", "call", "check_signature",
           "check_backward_signature", "keep_mask", "to_numpy", "needs", "NATIVE", "PROTOCOL"]

_MODULES = ("refimpl_protocol", "torch_sdpa", "flash_attn", "flash_attn_varlen", "flash_attn_kvcache", "jax_api",
            "hf_api", "flex_attention", "c_abi", "js_api", "native")
_REGISTRY: Registry[Api] = Registry("API", __name__, _MODULES, "API")
register, unregister = _REGISTRY.register, _REGISTRY.unregister    # a test's or a plugin's own API
NATIVE = "native"          # refimpl's own keywords, every feature (the built-in columns)
DEFAULT = "refimpl"         # --api when not given
PROTOCOL = _REGISTRY[DEFAULT]     # what R functions and --backward functions follow


def names(*, user: bool = True) -> tuple[str, ...]:
    """The registered API names (``user``: only those a user target can pick with ``--api``)."""
    return tuple(n for n in _REGISTRY.names() if not (user and n == NATIVE))


def get(api) -> Api:
    """The API called ``api`` (an :class:`Api` passes through); a UsageError naming the choices otherwise."""
    if isinstance(api, Api):
        return api
    try:
        return _REGISTRY[api]
    except KeyError:
        raise UsageError(f"--api must be one of {', '.join(names())}, got {api!r}") from None


def for_target(spec: str, api) -> str:
    """The API a ``--target`` spec is called through: a prefix only one API can call (``c:``) picks that API
    when ``api`` is the default; with another ``--api`` it is a UsageError naming both."""
    for other in _REGISTRY:
        if other.spec_prefix and spec.startswith(other.spec_prefix):
            if api == DEFAULT:
                return other.name
            if get(api).name != other.name:
                raise UsageError(f"--target {spec!r}: a {other.spec_prefix!r} target is called through --api "
                                 f"{other.name}, got --api {get(api).name}")
    return api


def expressible(api, spec) -> str | None:
    """None when ``api`` can express every feature of ``spec``; otherwise why not (the cell's ``n/a``)."""
    return get(api).cannot(spec)


def call(fn, api, data, *, layout: str = "SD", torch: bool = False, lse: bool = False,
         trusted: bool = False, dropout: float = 0.0) -> Returned:
    """Call ``fn`` on ``data`` through ``api``; the output comes back in refimpl's (B, Hq, Sq, Dv) layout.
    ``lse``: ask for the log-sum-exp too (the API's :attr:`~.base.Api.lse_kwargs`), returned (B, Hq, Sq).
    ``dropout``: call it with that dropout probability; the keep-mask (B, Hq, Sq, Sk) is the one it returns, or,
    for an API with :attr:`~.base.Api.dropout_given`, refimpl's draw (:func:`.base.dropout_draw`) handed to it.
    What it left in the inputs of :attr:`~.base.Api.writes` comes back in ``written`` (``--repeat`` compares it).

    Inputs are fresh copies, watched for writes, except where that is done already: a worker-backed target
    (``fn.isolates_inputs``) receives its own copies and reports the inputs it wrote to (``fn.last_writes``);
    ``trusted`` (refimpl's own column only) gets the case's arrays."""
    a = get(api)
    remote = bool(getattr(fn, "isolates_inputs", False))
    conv = converter(data.spec.dtype, a.uses_torch(torch), copy=not (remote or trusted))
    given, args, kwargs = a.arguments(data, conv, layout)
    pristine = {} if remote or trusted else snapshots(given)
    lse_raw = keep = None
    if dropout:                                # --dropout P: the output and the pattern the target dropped
        drawn = dropout_draw(data.spec, dropout) if a.dropout_given else None     # ... or was given
        extra = a.dropout_kwargs(dropout, None if drawn is None else conv(drawn))
        out, lse_raw, keep = a.unpack_dropout(fn(*args, **{**kwargs, **extra}), data)
        keep = drawn if drawn is not None else keep
        lse_raw = lse_raw if lse else None
        w = None
    elif lse:
        out, lse_raw = a.unpack_lse(fn(*args, **{**kwargs, **(a.lse_kwargs or {})}))
        w = None
    else:
        out, w = a.unpack(fn(*args, **kwargs))
    if remote:                                 # the worker says which arguments it wrote to, and what they hold
        named = dict(enumerate(args)) | dict(kwargs)
        wrote = {n: content for key, content in (getattr(fn, "last_writes", None) or {}).items()
                 for n, g in given.items() if named.get(key) is g}
    else:
        wrote = {n: given[n] for n in mutations(given, pristine)}
    mutated = [n for n in wrote if n not in a.writes]          # writing an input is a failure, unless the API's
    problems = a.check_writes(wrote, data) if a.writes else []
    o, odt = to_numpy(out, "output")
    if w is not None:
        w, _ = to_numpy(w, "weights")
    if a.output_bshd(layout) and o.ndim == 4:
        o = o.swapaxes(1, 2)                  # (B, Sq, Hq, Dv) -> (B, Hq, Sq, Dv); weights come as (B, H, Sq, Sk)
    o = a.place(o, data)
    if lse and lse_raw is None:
        raise TypeError(f"asked for its log-sum-exp ({', '.join(f'{k}={v}' for k, v in (a.lse_kwargs or {}).items())})"
                        f" the target returned none; expected {a.lse_returns}")
    got = Returned(o, w, odt, mutated, problems=problems, dropout_keep=keep, dropout_p=dropout,
                   dropout_given=bool(dropout and a.dropout_given),
                   written={n: to_numpy(c, n)[0] for n, c in wrote.items() if n in a.writes},   # for --repeat
                   band_flags=a.band_as_flags(data), mask_given=any(
                       given.get(n) is not None for n in ("mask", "attn_mask", "attention_mask", "bias", "keep")),
                   block=a.block_size(data))
    if lse_raw is not None:
        got.lse, got.lse_dtype = to_numpy(lse_raw, "log-sum-exp")
        got.lse = a.place_lse(got.lse, data)
    return got


def _hint(params, exclude: str) -> str | None:
    """The API whose identifying parameters ``params`` all has (the most specific first)."""
    fits = [a for a in _REGISTRY if a.name not in (exclude, NATIVE) and a.params
            and all(p in params for p in a.params)]
    return max(fits, key=lambda a: len(a.params)).name if fits else None


def check_signature(fn, api) -> None:
    """Refuse, before any case runs, a target whose signature cannot be the API's (exit 2 with the fix)."""
    a = get(api)
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
    missing = [n for n in a.params if n not in params]
    if not missing:
        return
    hint = _hint(params, a.name)
    if a is PROTOCOL:
        raise UsageError(f"the target's signature {sig} has no {', '.join(missing)}: the refimpl protocol is "
                         f"{a.signature}" + (f"; it looks like --api {hint}" if hint else ""))
    raise UsageError(f"the target's signature {sig} lacks {', '.join(missing)} of --api {a.name}"
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
