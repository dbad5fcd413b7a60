"""``refimpl check`` as one pipeline: :func:`run` takes the parsed options and owns every stage: the options are
validated (nothing runs on a bad path or name), the columns and the user's targets are chosen and loaded (user
functions in their worker), probed, the rows collected and run, failing targets diagnosed and localised, the
reproduction scripts written, ``--explore`` searched. The CLI parses, calls :func:`run`, renders and exits.

``options`` is the argparse namespace of ``refimpl check`` (its options: :mod:`refimpl.cli_args`, the ones the
pytest plugin shares: :mod:`refimpl.options`). With ``--target`` a run is a user's check: the reference and the
user's targets only, built-in columns joining with ``--with``; the targets that decide the verdict are the
user's and the columns named (``CheckRun.judged``).
"""
from __future__ import annotations

import time
from typing import Callable

from .errors import Unavailable, UsageError
from .precision import get as precision

__all__ = ["run", "validate", "MAX_RANDOM"]

MAX_RANDOM = 1_000_000   # --random: ~10 s of R per 100,000 cases; beyond this is a typo
QUICK_RANDOM = 40        # --random with --suite quick (default: r_cases.RANDOM_CASES): the quick share


def validate(options, builtins) -> None:
    """Refuse, before anything is loaded or run, an option that cannot work (UsageError naming it)."""
    from .io import check_directory, check_writable
    missing = [n for n in options.only if n not in builtins and n not in options.target]
    if missing:
        raise UsageError(f"--only {missing}: no such target (have {sorted(builtins) + list(options.target)})")
    named = [n.strip() for n in options.with_.split(",") if n.strip()]
    if named and (not options.target or options.only):
        raise UsageError("--with adds built-in columns beside --target: without --target every column runs, and "
                         "--only names the targets to run itself")
    if any(n not in builtins and n != "all" for n in named):
        raise UsageError(f"--with {options.with_!r}: expected 'all' or built-in columns among {', '.join(builtins)}")
    options.random_given = options.random is not None      # a user's check runs R's batch only when asked
    if options.random is None:                      # the quick suite's share of the random batch against R
        from .harness.rows.r_cases import RANDOM_CASES
        options.random = QUICK_RANDOM if options.suite == "quick" else RANDOM_CASES
    if not 0 <= options.random <= MAX_RANDOM:
        raise UsageError(f"--random must be between 0 and {MAX_RANDOM:,}, got {options.random}")
    for opt, path in (("--output", options.output), ("--html", options.html), ("--explore-db", options.explore_db)):
        if path:
            check_writable(path, opt)          # a report is never lost at the end
    if options.repro_dir:
        check_directory(options.repro_dir, "--repro-dir")
    if options.explore_db:
        from .harness.analysis.explore import load_db
        load_db(options.explore_db)            # junk in it: refused now, not after the run


def _columns(options, builtins) -> tuple[set[str], list[str] | None]:
    """(the built-in columns to start, the targets that decide the verdict; None: every one)."""
    named = [n.strip() for n in options.with_.split(",") if n.strip()]
    if options.target and not options.only:       # a user's check: their targets against the reference
        joining = set(builtins) if "all" in named else {"refimpl", *named}
        return joining, list(options.target) + [n for n in builtins if n in named]
    return {n for n in builtins if not options.only or n in options.only}, None


def deadline_text(seconds: float) -> str:
    """``--deadline``'s value as a user would write it: 1800 -> "30m", 90 -> "90s"."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _isolate(options, flag: str):
    """``isolate(spec, check)`` for load_target / load_backward: a worker per user function (None: this process)."""
    if options.no_isolation:
        return None
    from .harness.targets.isolation import isolator
    return isolator(timeout=options.timeout, max_memory_mib=options.max_memory, flag=flag,
                    deadline=options.deadline_at, deadline_text=deadline_text(options.deadline))


def _load(options, builtins, joining) -> tuple[list, dict[str, str]]:
    from .harness.target_spec import load_target
    targets, unavailable = [], {}
    for name, factory in builtins.items():       # only the columns asked for are started (R, Node, torch)
        if name in joining:
            try:
                targets.append(factory())
            except Unavailable as e:
                unavailable[name] = str(e)
    highest = max(options.dtype, key=lambda d: precision(d).rank)
    for spec in options.target:                   # user functions load (and are checked) in their worker
        t = load_target(spec, layout=options.layout, torch=options.torch_tensors, api=options.api,
                        isolate=_isolate(options, "--target"), lse=options.lse,
                        dropout=options.dropout)                       # UsageError: exit 2
        t.repeat = options.repeat                 # --repeat N: bitwise the same N times
        targets.append(t)                         # (appended first: a later refusal still closes its worker)
        if precision(highest).low:                # a lower-precision kernel: the float64 rows are n/a for it
            t.precision = highest
    return targets, unavailable


def run(options, progress: Callable[[str], None], script: Callable[[str], None]):
    """The whole check; returns the :class:`~refimpl.harness.cases.CheckRun` (None after ``--repro``, whose
    script went to ``script``). Raises UsageError for what the user must fix (exit 2)."""
    from .harness.rows.runner import close_targets
    from .harness.target_spec import builtin_targets
    builtins = builtin_targets()
    validate(options, builtins)
    from .r.rprobe import probe_in_background
    probe_in_background()                         # R's Rscript probe runs while targets load and families run
    options.deadline_at = time.monotonic() + options.deadline     # the whole run's, from here
    joining, judged = _columns(options, builtins)
    targets: list = []
    backward = None
    try:
        loaded, unavailable = _load(options, builtins, joining)
        targets += loaded
        running = [t for t in targets if not options.only or t.name in options.only]
        user = [t for t in running if t.name in options.target]
        from .harness.targets.probe import probe_targets
        probed = probe_targets(running, options.dtype[0], user=set(options.target))   # a wrong target: exit 2
        if options.repro:
            from .harness.analysis.repro import script_for
            if len(user) != 1:
                raise UsageError("--repro CASE_ID needs exactly one --target")
            script(script_for(options.repro, user[0], dtypes=options.dtype, masked_rows=options.masked_rows))
            return None
        if options.backward:
            from .harness.rows.grad_cases import load_backward
            backward = load_backward(options.backward, _isolate(options, "--backward"))   # wrong signature: exit 2
        return _run(options, running, unavailable, user, probed, backward, judged, progress)
    finally:
        close_targets(targets)
        if backward is not None and not options.no_isolation:
            backward.fn.close()                          # its worker


def _r_rows(options, targets) -> bool:
    """Whether the rows whose expected values R computes run as R's (vignettes against R's own run, R's documented
    examples, the random batch): in the matrix, and in a user's check when the ``r`` column was asked for
    (``--with r``); otherwise the vignettes are judged against refimpl's recomputation and R is never started
    (``--random N`` given explicitly still runs the batch against R)."""
    from .harness.columns import runs_r_rows
    return not options.target or bool(options.only) or runs_r_rows(t.name for t in targets)


def _run(options, targets, unavailable, user, probed, backward, judged, progress):
    from .fixtures.schema import FixtureError
    from .harness.cases.families import parse_shard
    from .harness.targets.probe import record
    from .harness.cases import Status
    from .harness.rows.runner import CHECKED, collect_cases, run_check
    try:
        r_rows = _r_rows(options, targets)
        random_n = options.random if r_rows or getattr(options, "random_given", True) else 0
        cases = collect_cases(random_n=random_n, families=[] if options.no_families else options.family, r_rows=r_rows,
                              suite=options.suite, dtypes=options.dtype,
                              shard=parse_shard(options.shard) if options.shard else None,
                              masked_rows=options.masked_rows, progress=progress, grad=options.grad,
                              backward=backward)
    except FixtureError as e:
        raise UsageError(f"a fixture is invalid: {e}\n(what to do: restore it from git, or run "
                         f"'refimpl regen --write' if the generator changed)") from None
    run = run_check(targets, unavailable, cases, progress, deadline=options.deadline_at,
                    deadline_text=deadline_text(options.deadline))
    run.judged = judged
    mine = {t.name for t in user}
    if not options.only:                                   # a column named with --only is judged, deaths too
        run.columns = frozenset(t.name for t in targets if t.name not in mine) | frozenset(
            n for n in unavailable if n not in mine)
    if judged and not run.interrupted and not run.nothing_checked:
        idle = [t for t in judged if t not in run.unavailable
                and not any(Status(o.status) in CHECKED for (_, n), o in run.results.items() if n == t)]
        if idle:                                           # a named target that checked nothing is not a pass
            details = dict.fromkeys(f"{o.status}: {o.detail}" for (_, n), o in run.results.items() if n in idle)
            run.nothing_checked = (f"NOTHING CHECKED for {', '.join(idle)}: every cell is skip, n/a, reference or "
                                   f"unsupported; why: " + "; ".join(list(details)[:3])[:600])
    record(run, probed)                                    # the probed conventions (causal) reach the reports
    if not run.interrupted:
        from .harness.analysis.diagnosis import analyse_run
        analyse_run(run)                                   # diagnosis and localisation of failing targets
        if options.grad or options.backward:
            from .harness.rows.grad_cases import analyse_grad
            analyse_grad(run)
        if options.repro_dir:
            from .harness.analysis.repro import write_repros
            run.repros = write_repros(run, user, options.repro_dir, options.masked_rows)
        if options.explore:
            from .harness.analysis.explore import explore
            for t in user:
                run.explored[t.name] = explore(t, options.explore, db=options.explore_db, dtypes=options.dtype,
                                               say=progress, run_lines=run.diagnoses.get(t.name))
    return run
