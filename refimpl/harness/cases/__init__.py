"""What a check is made of: a :class:`Case` (a row), the :class:`Outcome` of one case on one target (a
cell), the :class:`Status` vocabulary, a whole :class:`CheckRun`, and :func:`summarise`, the one rule turning
comparisons into a cell.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

from ... import tolerance as tol

__all__ = ["Status", "Outcome", "Case", "CheckRun", "TargetDied", "summarise", "error_outcome", "fitting_models"]


class Status(str, Enum):
    """A cell's verdict. ``failed`` statuses make the run non-conformant."""
    PASS = "pass"              # every compared array within its tolerance
    FAIL = "FAIL"              # some array beyond its tolerance
    ERROR = "error"            # the target raised (or returned something unusable)
    KNOWN = "known"            # differs only where a catalogued divergence applies
    SKIP = "skip"              # could not run here (reason in the detail)
    REFERENCE = "reference"    # the target is where this case's expected values come from
    NA = "n/a"                 # the target's API cannot express this case's features
    UNSUPPORTED = "unsupported"  # the target raised NotImplementedError: listed, not a failure
    CRASH = "crash"            # the target's worker died (signal, abort, os._exit) or called sys.exit
    TIMEOUT = "timeout"        # a call took longer than --timeout
    OOM = "oom"                # a call used more memory than --max-memory
    NOT_RUN = "not run"        # the run's --deadline passed before this case was called: no verdict, run incomplete
    NONDETERMINISTIC = "nondeterministic"   # --repeat N: the N calls did not return bitwise the same output

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def failed(self) -> bool:
        return self in (Status.FAIL, Status.ERROR, Status.CRASH, Status.TIMEOUT, Status.OOM, Status.NONDETERMINISTIC)


@dataclass
class Outcome:
    status: Status
    max_ratio: float = 0.0             # worst |error| / tolerance over the case's arrays (<= 1 passes)
    max_abs: float = 0.0
    detail: str = ""
    divergences: list[str] = field(default_factory=list)
    heat: dict = field(default_factory=dict)   # name -> (expected, actual) 2-D weights, for the HTML report
    n_arrays: int = 0
    cases: list = field(default_factory=list)  # per-case results of a family row (harness.judge.CaseResult)
    conventions: dict = field(default_factory=dict)   # what the target does where conventions differ

    @property
    def failed(self) -> bool:
        return Status(self.status).failed


@dataclass
class Case:
    id: str
    group: str
    description: str
    run: Callable[[Any], Outcome]      # target (refimpl.harness.targets.target.Target) -> its cell
    specs: list = field(default_factory=list)   # a family row's CaseSpecs (refimpl.harness.cases.features)
    store: Any = None                  # a family row's CaseStore: materialised inputs and expected values


@dataclass
class CheckRun:
    """A whole check: the rows, the target names, every cell, why absent targets are absent."""
    cases: list[Case]
    targets: list[str]
    results: dict[tuple[str, str], Outcome]
    unavailable: dict[str, str]
    seconds: float
    interrupted: bool = False          # Ctrl-C: ``results`` holds the cells finished before it
    nothing_checked: str = ""          # why no cell checked anything (then the run is not a pass: exit 2)
    diagnoses: dict = field(default_factory=dict)       # target -> ["diagnosis TARGET: MODEL — explanation", ...]
    localisations: dict = field(default_factory=dict)   # target -> "fails only when: ..."
    repros: dict = field(default_factory=dict)          # target -> [paths of reproduction scripts]
    explored: dict = field(default_factory=dict)        # target -> lines of the --explore search
    judged: list[str] | None = None    # the targets whose cells decide the verdict (None: every target)
    columns: frozenset = frozenset()   # which targets are built-in columns (their runtime dying is theirs alone)

    @property
    def not_run(self) -> int:
        """How many cases (of all cells) were never called because the run's --deadline passed."""
        return sum(sum(1 for c in o.cases if c.status == Status.NOT_RUN) if o.cases else int(o.status == Status.NOT_RUN)
                   for o in self.results.values())

    def excused(self, target: str) -> bool:
        """Whether ``target``'s failed cells are all its runtime dying and are reported, not judged: only a
        built-in column of the whole matrix (``judged`` None) that was not named with --only (``columns``), and
        only when it checked something in other cells, so that a column whose runtime never answered is not
        called conformant."""
        cells = [o for (_, n), o in self.results.items() if n == target]
        return (self.judged is None and target in self.columns
                and all(runtime_died(o) for o in cells if o.failed)
                and any(Status(c.status) in (Status.PASS, Status.FAIL, Status.KNOWN)
                        for o in cells for c in (o.cases or [o])))

    def failing(self) -> list[str]:
        """The judged targets with a failed cell or a counterexample, in column order; in a user's check
        (``judged`` set) also a column asked for by name that could not start here."""
        names = self.judged if self.judged is not None else self.targets
        return [t for t in names if (not self.excused(t)
                                     and any(o.failed for (_, n), o in self.results.items() if n == t))
                or any(line.startswith("counterexample") for line in self.explored.get(t, []))
                or (self.judged is not None and t in self.unavailable)]

    @property
    def ok(self) -> bool:
        return not self.interrupted and not self.nothing_checked and not self.failing() and not self.not_run


def error_outcome(e: BaseException, known: list[str] | None = None, prefix: str = "") -> Outcome:
    """The cell of a target that raised: ``known`` when a catalogued divergence explains the error; a worker
    that died, timed out or ran out of memory (:class:`TargetDied`) is ``crash``/``timeout``/``oom``."""
    if isinstance(e, TargetDied):
        return Outcome(Status(e.status), math.inf, math.inf, f"{prefix}{e}"[:300])
    return Outcome(Status.KNOWN if known else Status.ERROR, math.inf, math.inf,
                   f"{prefix}{type(e).__name__}: {e}"[:300], list(known or []))


def summarise(comps: list[tuple[str, tol.Comparison]], known: list[str], heat: dict) -> Outcome:
    """The cell from named comparisons: pass when all are within tolerance; otherwise known (a catalogued
    divergence applies) or FAIL. Nothing compared is a skip."""
    if not comps:
        return Outcome(Status.SKIP, detail="nothing this target returns is checked by this case", divergences=known,
                       heat=heat)
    worst_name, worst = max(comps, key=lambda nc: nc[1].max_ratio)
    bad = [(n, c) for n, c in comps if not c.ok]
    max_abs = max(c.max_abs for _, c in comps)
    if not bad:
        return Outcome(Status.PASS, worst.max_ratio, max_abs,
                       f"{len(comps)} arrays; worst {worst_name}: {worst.summary()}", known, heat, len(comps))
    detail = "; ".join(f"{n}: {c.summary()}" for n, c in bad[:4]) + (f"; +{len(bad) - 4} more" if len(bad) > 4 else "")
    if known:
        return Outcome(Status.KNOWN, worst.max_ratio, max_abs, f"known divergence {', '.join(known)}: {detail}", known,
                       heat, len(comps))
    return Outcome(Status.FAIL, worst.max_ratio, max_abs, detail, known, heat, len(comps))


DIED = frozenset({"crash", "timeout", "oom"})    # a process dying: no answer was computed


def runtime_died(outcome: Outcome) -> bool:
    """Whether every failed case of ``outcome`` is its process dying (``crash``, ``timeout``, ``oom``). In the
    whole matrix such a cell of a built-in column (onnxruntime's Node worker killed, say) is reported but
    decides no RESULT (``CheckRun.failing``): a column's failure is that column's. A user's target crashing,
    and a column's FAIL or error, still do."""
    failed = [c.status for c in outcome.cases if Status(c.status).failed] or [outcome.status]
    return all(str(s) in DIED for s in failed)


class TargetDied(RuntimeError):
    """The target's call ended its worker (crash, exit), ran out of time, or out of memory."""

    def __init__(self, status: str, message: str, output_tail: str = ""):
        self.status, self.output_tail = status, output_tail
        tail = output_tail.strip().splitlines()[-3:]
        super().__init__(message + (f" (last output: {' | '.join(tail)})"[:300] if tail else ""))


SHOWN = 3        # the fitting variants of one model a diagnosis line names (it counts the rest)


def fitting_models(target: str, models: dict, fits: Callable[[Any, Any], bool],
                   same: Callable[[Any, Any], bool] | None = None) -> list[str]:
    """``diagnosis TARGET: MODEL — explanation (variant)`` for every bug model (:class:`refimpl.bugs.BugModel`)
    one of whose variants ``fits`` (``fits(model, variant)``): the one rule the forward and the backward
    diagnoses share. When several variants of a model fit, the cases cannot tell them apart and the line names
    each (``(variant; or variant)``: the first ``SHOWN`` and how many more), so a parameter the cases do not pin is
    never printed as if they did. A model with ``distinct_from`` is not named when its first fitting variant is
    ``same`` (the forward diagnosis: the same output on every sampled failing case) as the first fitting variant of
    one of those models, wherever they stand in the table: the failing cases cannot tell them apart, and the one it
    is distinct from says it."""
    fitted = {}
    for model in models.values():
        variants = [v for v in model.variants if fits(model, v)]
        if variants:
            fitted[model.name] = (model, variants[0], variants)
    lines = []
    for model, variant, variants in fitted.values():
        if same is not None and any(n in fitted and same(fitted[n][1], variant)
                                    for n in getattr(model, "distinct_from", ())):
            continue
        more = f"; or {len(variants) - SHOWN} more of its variants" if len(variants) > SHOWN else ""
        tail = f" ({'; or '.join(v.label for v in variants[:SHOWN])}{more})" if len(model.variants) > 1 else ""
        lines.append(f"diagnosis {target}: {model.name} — {model.explanation}{tail}")
    return lines
