"""A --target spec resolved to a :class:`Target`: a built-in column by name (:mod:`.columns`), a user function
(``module:function``, ``file.py:function``, checked against its API before any case runs) or an R function.

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

Built-in targets are the registered columns (:mod:`.columns`). A user target is ``package.module:function``.
This module sits above both ``targets`` and ``columns`` (columns are made of ``targets.target.Target``), so the
sub-packages' arrows point one way.
"""
from __future__ import annotations

from typing import Callable

from ..errors import UsageError
from .columns import builtin_targets
from .targets.loading import load_function
from .targets.target import LAYOUTS, Target

__all__ = ["Target", "load_target", "load_function", "builtin_targets", "LAYOUTS"]


def load_target(spec: str, layout: str = "SD", torch: bool = False, api: str = "refimpl",
                isolate: Callable | None = None, lse: bool = False, dropout: float = 0.0) -> Target:
    """``refimpl`` | ``r`` | ``torch`` | ``module:function`` | ``file.py:function`` | ``R:...`` (raises
    UsageError / Unavailable).

    The user's function is checked against ``api``'s signature before any case runs. ``isolate(spec,
    check)``: load and check a user function in a worker instead (:func:`.isolation.isolated`); its module
    (or R file) is then never loaded into this process."""
    from .apis import check_signature, for_target, get as get_api, names as api_names
    builtins = builtin_targets()
    if spec in builtins:
        return builtins[spec]()
    if spec.startswith("R:"):                  # an R function (refimpl.harness.targets.r_targets)
        from .targets.r_targets import load_r_target, parse_spec
        if isolate is None:
            return load_r_target(spec, Target)
        parse_spec(spec)                        # a malformed spec or a missing file: said here, before a worker
        return load_r_target(spec, Target, isolate(spec, None))
    if ":" not in spec:
        raise UsageError(f"--target must be one of {sorted(builtins)} or module:function, got {spec!r}")
    api = for_target(spec, api)                # a C-ABI kernel (c:lib.so:symbol) speaks c-abi
    if dropout and not (get_api(api).dropout_returns or get_api(api).dropout_given):
        able = [f"{a} ({'given its keep-mask' if get_api(a).dropout_given else 'returns its pattern'})"
                for a in api_names() if get_api(a).dropout_returns or get_api(a).dropout_given]
        why = get_api(api).no_dropout or "returns no dropout pattern to replay and is given none"
        raise UsageError(f"--dropout: --api {api} {why}; the APIs with dropout: {', '.join(able)}")
    if lse and get_api(api).lse_kwargs is None:
        able = [a for a in api_names() if get_api(a).lse_kwargs is not None]
        raise UsageError(f"--lse: --api {api} has no log-sum-exp to return; the APIs that do: {', '.join(able)}")
    if layout not in LAYOUTS:
        raise UsageError(f"layout must be SD, BHSD or BSHD, got {layout!r}")
    if torch and not get_api(api).uses_torch(True):          # (get_api: a UsageError naming the choices)
        raise UsageError(f"--torch-tensors: --api {api} hands NumPy arrays ({get_api(api).signature}); "
                         f"torch tensors go to --api refimpl, torch-sdpa, flash-attn or hf")
    if isolate is not None:
        fn = isolate(spec, api)
    else:
        fn = load_function(spec)
        try:
            check_signature(fn, api)
        except UsageError as e:                 # the same words as from a worker (isolation.isolated)
            raise UsageError(f"--target {spec!r}: {e}") from None
    return Target(spec, fn, layout=layout, torch=torch, api=api, note=f"user target, --api {api}"
                  + (", its log-sum-exp judged" if lse else "") + (f", dropout p={dropout:g}" if dropout else ""),
                  lse=lse, dropout=dropout)
