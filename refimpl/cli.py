"""The ``refimpl`` command: ``check`` (the conformance run), ``regen`` (fixtures), ``bench``, ``env``, ``export``,
``native-template``.

Exit codes: 0 success / all targets conform; 1 non-conformance, drift or a failed regen check;
2 usage or setup error (the message says what to do); 130 interrupted by Ctrl-C (after printing what finished).
"""
from __future__ import annotations

import sys

from .cli_args import FORMATS, parser as _parser
from .errors import RefimplError
from .heap import keep_freed_memory

__all__ = ["main", "EXIT_OK", "EXIT_NONCONFORMANCE", "EXIT_USAGE", "EXIT_INCOMPLETE", "EXIT_INTERRUPTED", "FORMATS"]

EXIT_OK, EXIT_NONCONFORMANCE, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    keep_freed_memory()                 # large arrays reused, not page-faulted again (refimpl.heap)
    try:
        if args.cmd == "check":
            return _check(args)
        if args.cmd == "regen":
            return _regen(args)
        if args.cmd == "bench":
            from .bench import main as bench_main
            return bench_main(quick=args.quick, only=args.only)
        if args.cmd == "export":
            from .harness.reports.export import Terminated, export
            try:
                r = export(args.family, args.out, suite=args.suite, dtypes=args.dtype, force=args.force)
            except Terminated:
                print("refimpl export: terminated (SIGTERM); its temporary files are removed and index.json "
                      "names only files that are there", file=sys.stderr)
                return EXIT_INTERRUPTED
            link = f" (a link to {r.directory})" if str(r.directory) != str(args.out) else ""
            print(f"refimpl export: {r.cases} cases written to {args.out}{link} (index.json lists them)"
                  + (f"; removed {len(r.removed)} files of the previous export" if r.removed else "")
                  + (f"; kept {len(r.kept)} files it did not write: {', '.join(r.kept[:5])}"
                     f"{' ...' if len(r.kept) > 5 else ''}" if r.kept else ""))
            return EXIT_OK
        if args.cmd == "native-template":
            return _native_template(args.lang, args.out)
        if args.cmd == "env":
            from .harness.reports.environment import environment
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


def _native_template(lang: str, out: str) -> int:
    """Write the ``lang`` template and the header into ``out`` (never over an existing file); print the build."""
    import os
    from .errors import UsageError
    from .harness.native import HEADER, template
    from .io import write_atomic
    name, source, build = template(lang)
    if not os.path.isdir(out):
        raise UsageError(f"--out {out!r}: not a directory")
    with open(HEADER, encoding="utf-8") as f:
        header = f.read()
    files = ((name, source), (os.path.basename(HEADER), header))
    there = [n for n, _ in files if os.path.exists(os.path.join(out, n))]
    if there:
        raise UsageError(f"--out {out!r}: {', '.join(there)} already there; not overwritten (pick another --out)")
    for n, text in files:
        write_atomic(os.path.join(out, n), text)
    print(f"wrote {os.path.join(out, name)} and {os.path.join(out, files[1][0])}\n"
          f"build: (cd {out} && {build})\n"
          f"check: refimpl check --target c:{os.path.join(out, 'libattn.so')}:attn")
    return EXIT_OK


def _check(args) -> int:
    """Parse (done), run the pipeline (:func:`refimpl.check.run`), render, exit code."""
    from .check import run
    from .harness.reports.environment import environment
    from .harness.reports.html import write_html
    from .harness.reports.progress import Progress
    from .harness.reports.report import render
    from .io import write_atomic

    if args.list_families:
        from .harness.cases.families import FAMILIES, family_specs
        for name, fam in FAMILIES.items():
            n = len(family_specs(name, args.suite, dtypes=("float64",)))
            print(f"{name:16} {n:5d} cases per dtype ({args.suite})  {fam.doc}")
        return EXIT_OK
    progress = Progress(quiet=args.quiet)          # one line on a terminal, plain lines in CI
    try:
        checked = run(args, progress, sys.stdout.write)
    finally:
        progress.close()
    if checked is None:                                   # --repro printed its script
        return EXIT_OK
    env = environment()
    text = render(checked, args.format, env, traceback=args.traceback)
    if args.output:
        write_atomic(args.output, text)
        print(f"report written to {args.output}")
    else:
        sys.stdout.write(text)
    if args.html:
        write_html(checked, args.html, env)
        print(f"HTML report written to {args.html}", file=sys.stderr)
    if checked.interrupted:
        return EXIT_INTERRUPTED
    if checked.nothing_checked:
        print(f"refimpl check: {checked.nothing_checked}", file=sys.stderr)
        return EXIT_USAGE
    if checked.not_run and not checked.failing():
        return EXIT_INCOMPLETE
    return EXIT_OK if checked.ok else EXIT_NONCONFORMANCE


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
