"""User targets run in a worker process (:mod:`.worker`): one per target per run, and one for ``--backward``.

:class:`IsolatedFunction` stands in for the user's function everywhere the harness calls it (family,
fixture and vignette rows alike). The child loads the function by its spec; each call ships the
arguments, the child calls the function, and returns the result together with any argument the function
wrote to (the proxy writes those changes back, so the harness's mutation check sees them).
:meth:`IsolatedFunction.grads` ships a whole gradient case instead: the child builds the autograd graph and
differentiates it there (:mod:`.autograd_grads`; a graph cannot cross the process boundary). A crash,
``sys.exit``, a hang past ``timeout`` or memory past ``max_memory`` becomes :class:`TargetDied` for that
call only; the worker restarts and the run goes on. What the target prints stays in the worker.

Results come back as plain data, never pickled (:mod:`.wire`): a torch tensor is rebuilt here with its dtype
(bfloat16 stays bfloat16), an R batch's results and exceptions are rebuilt from tuples, and a return value
that is not plain data is refused in the worker: that call raises a TypeError naming the type.
"""
from __future__ import annotations

import numpy as np

from ...errors import Unavailable, UsageError
from . import wire
from ..cases import TargetDied
from .call_policy import ADAPT_FACTOR, ADAPT_FLOOR, DEFAULT_TIMEOUT, CallPolicy, work_of
from .worker import Worker, WorkerLoadError

__all__ = ["IsolatedFunction", "IsolatedRFunction", "TargetDied", "child_loader", "isolated", "isolator",
           "r_child_loader"]


def _snap(a):
    if hasattr(a, "detach"):
        return a.detach().clone()
    return np.array(a, copy=True) if isinstance(a, np.ndarray) else None


def _same(a, b) -> bool:
    """Unchanged, NaN for NaN (a target that writes NaN into an input has changed it)."""
    if hasattr(a, "detach"):
        a, b = (x.detach().cpu() for x in (a, b))
        a, b = ((x.float() if x.is_floating_point() else x).numpy() for x in (a, b))
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


def _carrying(e: Exception, traceback: str) -> Exception:
    """``e`` with the worker's traceback of the target as ``e.target_traceback`` (CaseResult.traceback)."""
    setattr(e, "target_traceback", traceback)
    return e


def _tensors(x):
    """``x`` with each :class:`.wire.Tensor` record (as the worker sends a torch tensor) a torch tensor again."""
    if isinstance(x, wire.Tensor):
        import torch
        dtype = getattr(torch, x.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"the worker sent a tensor of unknown dtype {x.dtype!r}")
        return torch.from_numpy(x.values).to(dtype)
    if type(x) in (tuple, list):
        return type(x)(_tensors(v) for v in x)
    if type(x) is dict:
        return {k: _tensors(v) for k, v in x.items()}
    return x


def _plain_case(x) -> tuple:
    """Runs in the worker: one case of an R batch (RReturned, or the exception of its failure) as plain data."""
    if isinstance(x, BaseException):
        return ("raised", type(x).__name__, str(x), getattr(x, "r_message", None), getattr(x, "r_call", None))
    return ("returned", x.output, x.weights, x.dtype, list(x.mutated), list(x.warnings), x.band_flags)


def _case_back(x: tuple):
    """The RReturned or exception that :func:`_plain_case` sent."""
    if x[0] == "returned":
        from .r_targets import RReturned
        return RReturned(*x[1:])
    _, kind, text, r_message, r_call = x
    if kind == "RError":
        from ...r.bridge import RError
        e = RError(r_message, r_call)
        e.args = (text,)                      # R's words with the context the worker's RError had
        return e
    return ValueError(text) if kind == "ValueError" else RuntimeError(f"{kind}: {text}")


def child_loader(spec: str, check: str | None = None):
    """Runs in the worker: load ``spec``, check its signature (``check``: an API name, or ``"backward"``)
    and return the per-call function. A UsageError here reaches the user as it is (exit 2)."""
    from ..apis import check_backward_signature, check_signature
    from .loading import load_function
    fn = load_function(spec)
    if check == "backward":
        check_backward_signature(fn, spec)
    elif check is not None:
        check_signature(fn, check)

    def call(payload):
        if payload[0] == "grad":                     # ("grad", api, layout, data, d_out): autograd in here
            from .autograd_grads import autograd_grads
            return autograd_grads(fn, *payload[1:]), {}
        args, kwargs = payload[1:]
        named = {i: a for i, a in enumerate(args)} | dict(kwargs)
        before = {key: snap for key, snap in ((key, _snap(a)) for key, a in named.items()) if snap is not None}
        res = fn(*args, **kwargs)
        wire.check(res, "the target returned")       # refused here, in its words, if it is not plain data
        changed = {key: named[key] for key, b in before.items() if not _same(named[key], b)}
        return res, changed
    return call


def r_child_loader(spec: str, check: str | None = None):
    """Runs in the worker: embed R there, load the R function ``spec`` (R:file.R:fn or R:pkg::fn) and return the
    per-call function; a ``("batch", datas)`` payload is one batched bridge call for a family row. ``check`` is
    not used: loading an R function checks that it exists, and R functions have no signature to read."""
    from .r_targets import load_r_target
    from .target import Target
    fn = load_r_target(spec, Target).fn

    def call(payload):
        if payload[0] == "batch":
            return [_plain_case(x) for x in fn.batch(payload[1])], {}
        args, kwargs = payload[1:]
        return fn(*args, **kwargs), {}
    return call


class IsolatedFunction:
    """A callable proxy for ``spec`` running in a worker process (started at construction). Loading (the
    user's imports) is bounded by ``max(timeout, LOAD_SECONDS)``: torch or R alone can take seconds."""

    LOAD_SECONDS = 60.0
    refimpl_remote_grads = True   # grad_cases: gradients come from :meth:`grads`, in the worker
    isolates_inputs = True        # apis.call: the worker has its own copies and says which it wrote to
    last_writes: dict = {}        # ... for the last call: argument position or keyword -> its content after it

    LOADER = "refimpl.harness.targets.isolation:child_loader"

    def __init__(self, spec: str, *, timeout: float | None = None, max_memory: int | None = None,
                 flag: str = "--target", check: str | None = None, policy: CallPolicy | None = None):
        """``timeout``: a fixed per-call limit, or None for the adaptive one (:mod:`.call_policy`); ``policy``
        (the stop rules, the run's deadline) is made from ``timeout`` when not given."""
        self.spec = spec
        self.policy = policy or CallPolicy(timeout)
        first = DEFAULT_TIMEOUT if timeout is None else timeout
        self.worker = Worker(self.LOADER, (spec, check), timeout=first, max_memory=max_memory,
                             start_timeout=max(first, self.LOAD_SECONDS))
        try:
            self.worker.start()
        except WorkerLoadError as e:                     # the loader's own verdicts keep their kind and words
            kind, text = e.raised or ("", "")
            if kind == "UsageError":
                if text.startswith("--target "):                 # load_function's words, for this flag
                    text = flag + text[len("--target"):]
                raise UsageError(text if text.startswith("--") else f"{flag} {spec!r}: {text}") from None
            if kind == "Unavailable":
                raise Unavailable(text) from None
            why = str(e).replace(f"loader {self.LOADER!r} ", "loading ").replace(f"loader {self.LOADER!r}: ", "") \
                .replace(f" while loading {self.LOADER!r}", " while loading")      # the user's words, not ours
            raise UsageError(f"{flag} {spec!r}: the worker could not load it: {why}") from None

    def __call__(self, *args, **kwargs):
        return self._send(("call", args, kwargs), args, kwargs)

    def _send(self, payload, args=(), kwargs=None):
        """Run one payload, if the call policy lets it (:mod:`.call_policy`: the run's deadline, deaths in a
        row or at a high rate, counted per kind of call: a backward (a "grad" payload) that keeps hanging
        stops further gradient calls, not the forward ones), within its per-call limit."""
        kwargs = kwargs or {}
        counter = "grad" if payload[0] == "grad" else "call"
        refused = self.policy.refuse(counter)
        if refused is not None:
            raise refused
        work = work_of(payload[1:], {}) if payload[0] == "call" else None    # batches, grads: no adaptive limit
        self.worker.timeout = limit = self.policy.limit(work)
        r = self.worker.run([payload])[0]
        if r.status == "timeout" and self.policy.retry(limit):    # the adaptive limit proves itself once
            self.worker.timeout = DEFAULT_TIMEOUT
            r = self.worker.run([payload])[0]
            self.policy.retried(r.status)
        self.policy.record(counter, r.status, r.seconds, work)
        if r.status == "timeout" and self.policy.fixed is None and work is not None and limit < DEFAULT_TIMEOUT:
            r.error += (f" (the adaptive limit: {ADAPT_FACTOR:g}x the slowest call so far for this much work, "
                        f"at least {ADAPT_FLOOR:g} s, at most {DEFAULT_TIMEOUT:g} s; --timeout DURATION fixes it)")
        if r.status == "ok":
            res, changed = _tensors(r.value)
            self.last_writes = changed                   # the arguments it wrote to (position or keyword: now)
            return res
        if r.status == "error":
            if r.error.startswith(f"{wire.UnsupportedResult.__name__}: "):     # not plain data: refused there
                raise _carrying(TypeError(r.error.partition(": ")[2]), r.traceback)
            if r.error.startswith("NotImplementedError"):
                raise NotImplementedError(r.error.partition(": ")[2])
            if payload[0] == "grad" and r.error.startswith("NoGraph: "):
                from .autograd_grads import NoGraph
                raise NoGraph(r.error.partition(": ")[2])
            raise _carrying(RuntimeError(f"the target raised {r.error}"), r.traceback)
        raise _carrying(TargetDied("crash" if r.status == "exit" else r.status, r.error, r.output_tail), r.traceback)

    def grads(self, api: str, layout: str, data, d_out: np.ndarray) -> tuple[dict, str]:
        """:func:`.autograd_grads.autograd_grads` of the target, run in the worker (TargetDied if it dies)."""
        return self._send(("grad", api, layout, data, d_out))

    def close(self) -> None:
        self.worker.close()


class IsolatedRFunction(IsolatedFunction):
    """An R function as a target, with embedded R in the worker process (an R crash or hang is that call's
    verdict, not the run's); ``batch`` keeps the one-bridge-call-per-family-row batching of r_targets."""

    LOADER = "refimpl.harness.targets.isolation:r_child_loader"
    refimpl_remote_grads = False   # an R function has no autograd: its grad rows are n/a (grad_cases)

    def batch(self, datas: list) -> list:
        return [_case_back(x) for x in self._send(("batch", datas))]


def isolated(spec: str, check: str | None = None, *, timeout: float | None = None, max_memory: int | None = None,
             flag: str = "--target", deadline: float | None = None, deadline_text: str = "") -> IsolatedFunction:
    """The worker-backed stand-in for the user function ``spec``, loaded and signature-checked (``check``)
    in the worker only: a module that crashes or exits while it is imported is a usage error naming it,
    not the end of the run. R functions (``R:...``) get embedded R there."""
    cls = IsolatedRFunction if spec.startswith("R:") else IsolatedFunction
    return cls(spec, timeout=timeout, max_memory=max_memory, flag=flag, check=check,
               policy=CallPolicy(timeout, deadline, deadline_text))


def isolator(*, timeout: float | None, max_memory_mib: float | None, flag: str, deadline: float | None = None,
             deadline_text: str = ""):
    """``isolate(spec, check)`` for ``targets.load_target`` / ``grad_cases.load_backward``: a worker per user
    function with these limits (``max_memory_mib``: the ``--max-memory`` option, MiB; None: the default)."""
    max_memory = None if max_memory_mib is None else int(max_memory_mib * 2**20)
    return lambda spec, check: isolated(spec, check, timeout=timeout, max_memory=max_memory, flag=flag,
                                        deadline=deadline, deadline_text=deadline_text)
