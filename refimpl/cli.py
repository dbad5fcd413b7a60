"""The ``refimpl`` command: ``check`` (the conformance run), ``regen`` (fixtures), ``bench``, ``env``.

Exit codes: 0 success / all targets conform; 1 non-conformance, drift or a failed regen check;
2 usage or setup error (the message says what to do); 130 interrupted by Ctrl-C (after printing what finished).
"""
from __future__ import annotations

import sys
import time

from .cli_args import FORMATS, MAX_RANDOM, parser as _parser
from .errors import RefimplError

__all__ = ["main", "EXIT_OK", "EXIT_NONCONFORMANCE", "EXIT_USAGE", "EXIT_INTERRUPTED", "FORMATS"]

EXIT_OK, EXIT_NONCONFORMANCE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "check":
            return _check(args)
        if args.cmd == "regen":
            return _regen(args)
        if args.cmd == "bench":
            from .bench import main as bench_main
            return bench_main(quick=args.quick, only=args.only)
        if args.cmd == "export":
            from .harness.export import export
            n = export(args.family, args.out, suite=args.suite, dtypes=args.dtype)
            print(f"refimpl export: {n} cases written to {args.out} (index.json lists them)")
            return EXIT_OK
        if args.cmd == "env":
            from .env import environment
            for k, v in environment().items():
                print(f"{k:10} {v}")
            return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RefimplError as e:
        print(f"refimpl {args.cmd}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:       # a report or export path that failed while writing
        print(f"refimpl {args.cmd}: {e.strerror or e}: {e.filename or ''}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_USAGE


def _check(args) -> int:
    from .errors import Unavailable
    from .harness.runner import close_targets
    from .harness.targets import builtin_targets, load_target
    from .precision import get as precision

    if args.list_families:
        from .harness.families import FAMILIES, family_specs
        for name, fam in FAMILIES.items():
            n = len(family_specs(name, args.suite, dtypes=("float64",)))
            print(f"{name:16} {n:5d} cases per dtype ({args.suite})  {fam.doc}")
        return EXIT_OK
    builtins = builtin_targets()
    missing = [n for n in args.only if n not in builtins and n not in args.target]
    if missing:
        print(f"refimpl check: --only {missing}: no such target (have {sorted(builtins) + list(args.target)})",
              file=sys.stderr)
        return EXIT_USAGE
    named = [n.strip() for n in args.with_.split(",") if n.strip()]
    if any(n not in builtins and n != "all" for n in named):
        print(f"refimpl check: --with {args.with_!r}: expected 'all' or built-in columns among "
              f"{', '.join(builtins)}", file=sys.stderr)
        return EXIT_USAGE
    focused = bool(args.target) and not args.only       # a user's check: their targets against the reference
    if focused:
        joining = set(builtins) if "all" in named else {"refimpl", *named}
        args.judged = list(args.target) + [n for n in builtins if n in named]
    else:
        joining, args.judged = set(builtins), None
    targets, unavailable = [], {}
    for name, factory in builtins.items():       # only the columns asked for are started (R, Node, torch)
        if (args.only and name not in args.only) or name not in joining:
            continue
        try:
            targets.append(factory())
        except Unavailable as e:
            unavailable[name] = str(e)
    try:
        for spec in args.target:                   # user functions load (and are checked) in their worker
            t = load_target(spec, layout=args.layout, torch=args.torch_tensors, api=args.api,
                            isolate=_isolate(args, "--target"))                     # UsageError: exit 2
            highest = max(args.dtype, key=lambda d: precision(d).rank)
            if precision(highest).low:                 # a lower-precision kernel: the float64 rows are n/a for it
                t.precision = highest
            targets.append(t)
        return _run_and_report(args, targets, unavailable)
    finally:
        close_targets(targets)


def _isolate(args, flag: str):
    """``isolate(spec, check)`` for load_target / load_backward: a worker per user function (None: this process)."""
    if args.no_isolation:
        return None
    from .harness.isolation import isolator
    return isolator(timeout=args.timeout, max_memory_mib=args.max_memory, flag=flag)


def _run_and_report(args, targets, unavailable) -> int:
    from .env import environment
    from .errors import UsageError
    from .io import check_directory, check_writable

    if args.only:
        targets = [t for t in targets if t.name in args.only]
    if not 0 <= args.random <= MAX_RANDOM:
        print(f"refimpl check: --random must be between 0 and {MAX_RANDOM:,}, got {args.random}", file=sys.stderr)
        return EXIT_USAGE
    for opt, path in (("--output", args.output), ("--html", args.html), ("--explore-db", args.explore_db)):
        if path:
            check_writable(path, opt)          # before the run: a report is never lost at the end
    if args.repro_dir:
        check_directory(args.repro_dir, "--repro-dir")
    if args.explore_db:
        from .harness.explore import load_db
        load_db(args.explore_db)               # junk in it: exit 2 now, not after the run
    from .harness.probe import probe_targets
    probed = probe_targets(targets, args.dtype[0], user=set(args.target))
    env = environment()
    t0 = time.perf_counter()
    state = {"last": 0.0}

    def progress(msg: str) -> None:
        now = time.perf_counter() - t0
        if args.quiet or now < 2.0 or (now - state["last"] < 0.5 and not msg.endswith("...")):
            return
        state["last"] = now
        print(f"  {now:5.1f}s {msg}", file=sys.stderr, flush=True)
    from .harness.families import parse_shard
    shard = parse_shard(args.shard) if args.shard else None
    dtypes = args.dtype
    user = [t for t in targets if t.name in args.target]
    if args.repro:
        from .harness.repro import script_for
        if len(user) != 1:
            raise UsageError("--repro CASE_ID needs exactly one --target")
        sys.stdout.write(script_for(args.repro, user[0], dtypes=dtypes))
        return EXIT_OK
    backward = None
    if args.backward:
        from .harness.grad_cases import load_backward
        backward = load_backward(args.backward, _isolate(args, "--backward"))   # a wrong signature: exit 2
    try:
        return _collect_run_report(args, targets, unavailable, env, progress, dtypes, shard, user, probed, backward)
    finally:
        if backward is not None and not args.no_isolation:
            backward.fn.close()                          # its worker


def _collect_run_report(args, targets, unavailable, env, progress, dtypes, shard, user, probed, backward) -> int:
    from .fixtures.schema import FixtureError
    from .harness.html import write_html
    from .harness.probe import record
    from .harness.report import render
    from .harness.runner import collect_cases, run_check
    from .io import write_atomic
    try:
        cases = collect_cases(random_n=args.random, families=[] if args.no_families else args.family,
                              suite=args.suite, dtypes=dtypes, shard=shard, masked_rows=args.masked_rows,
                              progress=lambda m: progress(m), grad=args.grad, backward=backward)
    except FixtureError as e:
        print(f"refimpl check: a fixture is invalid: {e}\n(what to do: restore it from git, or run "
              f"'refimpl regen --write' if the generator changed)", file=sys.stderr)
        return EXIT_USAGE

    run = run_check(targets, unavailable, cases, progress)
    run.judged = getattr(args, "judged", None)
    record(run, probed)                                    # the probed conventions (causal) reach the reports
    if not run.interrupted:
        from .harness.diagnosis import analyse_run
        analyse_run(run)                                   # diagnosis and localisation of failing targets
        if args.grad or args.backward:
            from .harness.grad_cases import analyse_grad
            analyse_grad(run)
        if args.repro_dir:
            from .harness.repro import write_repros
            run.repros = write_repros(run, user, args.repro_dir)
        if args.explore:
            from .harness.explore import explore
            for t in user:
                run.explored[t.name] = explore(t, args.explore, db=args.explore_db, dtypes=dtypes, say=progress)
    text = render(run, args.format, env, traceback=args.traceback)
    if args.output:
        write_atomic(args.output, text)
        print(f"report written to {args.output}")
    else:
        sys.stdout.write(text)
    if args.html:
        write_html(run, args.html, env)
        print(f"HTML report written to {args.html}", file=sys.stderr)
    if run.interrupted:
        return EXIT_INTERRUPTED
    if run.nothing_checked:
        print(f"refimpl check: {run.nothing_checked}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK if run.ok else EXIT_NONCONFORMANCE


def _regen(args) -> int:
    from .fixtures.regen import regen
    res = regen(args.sources or None, write=args.write)
    for s, why in res.skipped.items():
        print(f"skipped {s}: {why}")
    for p in res.problems:
        print(f"PROBLEM: {p}")
    mode = "write" if args.write else "check"
    print(f"regen --{mode}: {res.fixtures} fixtures, {res.arrays} arrays compared, {len(res.written)} written, "
          f"{len(res.removed)} removed, {len(res.skipped)} sources skipped, {len(res.problems)} problems")
    return EXIT_OK if res.ok else EXIT_NONCONFORMANCE
