"""The ``refimpl`` command: ``check`` (the conformance run), ``regen`` (fixtures), ``bench``, ``env``.

Exit codes: 0 success / all targets conform; 1 non-conformance, drift or a failed regen check;
2 usage or setup error (the message says what to do); 130 interrupted by Ctrl-C (after printing what finished).
"""
from __future__ import annotations

import argparse
import sys
import time

from .errors import RefimplError

EXIT_OK, EXIT_NONCONFORMANCE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
FORMATS = ("table", "json", "junit", "markdown")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors exit 2 with a hint, as argparse does, but say what to do
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="refimpl", description="Reference-test harness for attention: conformance check, fixtures, benchmarks.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    c = sub.add_parser("check", help="run every conformance case against every target and print the matrix")
    c.add_argument("--target", action="append", default=[], metavar="SPEC",
                   help="add a target: package.module:function (protocol in the README); repeatable")
    c.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="run only these targets (refimpl, r, torch, or a --target SPEC)")
    c.add_argument("--layout", default="SD", choices=["SD", "BHSD", "BSHD"], help="layout user targets take")
    c.add_argument("--torch-tensors", action="store_true", help="hand user targets torch tensors")
    c.add_argument("--format", default="table", choices=FORMATS)
    c.add_argument("--output", metavar="FILE", help="write the report to FILE instead of stdout")
    c.add_argument("--html", metavar="FILE", help="also write an HTML report with attention-weight heatmaps")
    c.add_argument("--random", type=int, default=200, metavar="N", help="random cases cross-checked against R (default 200)")
    c.add_argument("--quiet", action="store_true", help="no progress lines")
    c.add_argument("--api", default="refimpl", choices=("refimpl", "torch-sdpa", "flash-attn"),
                   help="the signature and semantics user targets follow (README: Target APIs)")
    c.add_argument("--family", action="append", default=None, metavar="NAME",
                   help="run only these case families (repeatable; --list-families lists them)")
    c.add_argument("--suite", default="default", choices=("quick", "default", "full"),
                   help="how many cases per family (quick ~10%%, default >= 1,500 cases, full 3x and long sequences)")
    c.add_argument("--list-families", action="store_true", help="print the families (name, cases, what they check)")
    c.add_argument("--no-families", action="store_true", help="only the fixtures, vignettes and R rows")
    c.add_argument("--dtype", default="float64,float32", metavar="LIST",
                   help="input dtypes of the family cases: float64,float32,float16,bfloat16 (default float64,float32)")
    c.add_argument("--masked-rows", default=None, choices=("zeros", "nan", "uniform"),
                   help="pin the one accepted output for a query with no key (default: any of the three)")
    c.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="per call of a user target (default 60); a call past it is that case's 'timeout'")
    c.add_argument("--max-memory", type=float, default=None, metavar="MIB",
                   help="memory of a user target's worker (default half the machine's RAM); past it: 'oom'")
    c.add_argument("--no-isolation", action="store_true",
                   help="call user targets in this process (debugging); a crash then ends the run")
    c.add_argument("--shard", default=None, metavar="K/N", help="run shard K of N of the family cases (CI matrices)")
    r = sub.add_parser("regen", help="recompute the fixtures' generated parts; detect drift (--check) or write them")
    r.add_argument("sources", nargs="*", metavar="SOURCE")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="write nothing; exit 1 on drift, new or orphaned fixtures (default)")
    g.add_argument("--write", action="store_true", help="write the fixtures atomically")
    b = sub.add_parser("bench", help="print performance figures (nothing is asserted)")
    b.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    b.add_argument("--only", action="append", default=[], help="run only these sections")
    sub.add_parser("env", help="print the environment: Python, NumPy, BLAS, R, rpy2, attention, torch")
    return p


MAX_RANDOM = 1_000_000   # --random: ~10 s of R per 100,000 cases; beyond this is a typo


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
    return EXIT_USAGE


def _check(args) -> int:
    from .env import environment
    from .errors import Unavailable
    from .fixtures.schema import FixtureError
    from .harness.html import write_html
    from .harness.report import render
    from .harness.runner import collect_cases, run_check
    from .harness.targets import builtin_targets, load_target
    from .io import check_writable, write_atomic

    targets, unavailable = [], {}
    for name, factory in builtin_targets().items():
        try:
            targets.append(factory())
        except Unavailable as e:
            unavailable[name] = str(e)
    if args.list_families:
        from .harness.families import FAMILIES, family_specs
        for name, fam in FAMILIES.items():
            n = len(family_specs(name, args.suite, dtypes=("float64",)))
            print(f"{name:16} {n:5d} cases per dtype ({args.suite})  {fam.doc}")
        return EXIT_OK
    for spec in args.target:
        t = load_target(spec, layout=args.layout, torch=args.torch_tensors, api=args.api)   # UsageError: exit 2
        if not args.no_isolation and spec not in builtin_targets():
            from .harness.isolation import IsolatedFunction
            t.fn = IsolatedFunction(spec, timeout=args.timeout,
                                    max_memory=None if args.max_memory is None else int(args.max_memory * 2**20))
        targets.append(t)
    if args.only:
        known = {t.name for t in targets} | set(unavailable)
        missing = [n for n in args.only if n not in known]
        if missing:
            print(f"refimpl check: --only {missing}: no such target (have {sorted(known)})", file=sys.stderr)
            return EXIT_USAGE
        targets = [t for t in targets if t.name in args.only]
        unavailable = {n: r for n, r in unavailable.items() if n in args.only}
    if not 0 <= args.random <= MAX_RANDOM:
        print(f"refimpl check: --random must be between 0 and {MAX_RANDOM:,}, got {args.random}", file=sys.stderr)
        return EXIT_USAGE
    for opt, path in (("--output", args.output), ("--html", args.html)):
        if path:
            check_writable(path, opt)          # before the run: a report is never lost at the end
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
    dtypes = tuple(d.strip() for d in args.dtype.split(",") if d.strip())
    try:
        cases = collect_cases(random_n=args.random, families=[] if args.no_families else args.family,
                              suite=args.suite, dtypes=dtypes, shard=shard, masked_rows=args.masked_rows,
                              progress=lambda m: progress(m))
    except FixtureError as e:
        print(f"refimpl check: a fixture is invalid: {e}\n(what to do: restore it from git, or run "
              f"'refimpl regen --write' if the generator changed)", file=sys.stderr)
        return EXIT_USAGE

    run = run_check(targets, unavailable, cases, progress)
    text = render(run, args.format, env)
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
