"""The ``refimpl`` command line: every subcommand and option (the commands themselves are in :mod:`refimpl.cli`)."""
from __future__ import annotations

import argparse
import sys

from .options import add_to_argparse, dtype_list

__all__ = ["parser", "FORMATS"]

FORMATS = ("table", "json", "junit", "markdown")
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def parse_known_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)   # for error(): what the user typed
        return super().parse_known_args(args, namespace)

    def error(self, message):  # usage errors exit 2 with a hint, as argparse does, but say what to do
        subs = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
        if subs is not None and message.startswith("the following arguments are required") and subs.dest in message:
            # argparse reports a missing subcommand before an unknown option: name the option, list the commands
            names = ", ".join(subs.choices)
            unknown = [a for a in getattr(self, "_argv", []) if a.startswith("-") and a not in ("-h", "--help")]
            message = (f"unrecognized option(s) {' '.join(unknown)}: expected a subcommand first, one of {names}"
                       if unknown else f"a subcommand is required: one of {names}")
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="refimpl",
                description="Reference-test harness for attention: conformance check, fixtures, benchmarks.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    c = sub.add_parser("check", help="run every conformance case against every target and print the matrix")
    add_to_argparse(c)                          # the options the pytest plugin shares (refimpl.options)
    c.add_argument("--target", action="append", default=[], metavar="SPEC",
                   help="add a target: package.module:function (protocol in the README); repeatable")
    c.add_argument("--with", dest="with_", default="", metavar="LIST",
                   help="with --target: built-in columns to run beside it (comma-separated names, or 'all'); "
                        "a column named here also decides the exit code")
    c.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="run only these targets (refimpl, r, torch, or a --target SPEC)")
    c.add_argument("--format", default="table", choices=FORMATS)
    c.add_argument("--output", metavar="FILE", help="write the report to FILE instead of stdout")
    c.add_argument("--html", metavar="FILE", help="also write an HTML report with attention-weight heatmaps")
    c.add_argument("--random", type=int, default=None, metavar="N",
                   help="random cases cross-checked against R (default 200; 40 with --suite quick)")
    c.add_argument("--quiet", action="store_true", help="no progress lines")
    c.add_argument("--list-families", action="store_true", help="print the families (name, cases, what they check)")
    c.add_argument("--no-families", action="store_true", help="only the fixtures, vignettes and R rows")
    c.add_argument("--traceback", action="store_true", help="show the target's own traceback for a case that raised")
    c.add_argument("--repro", metavar="CASE_ID",
                   help="print the reproduction script of one case (e.g. sizes/0003-float32)")
    c.add_argument("--explore", type=int, default=0, metavar="N",
                   help="also search N Hypothesis examples for a counterexample, shrink and print the first")
    c.add_argument("--explore-db", metavar="FILE",
                   help="keep explored counterexamples in FILE; replayed first next time")
    c.add_argument("--grad", action="store_true", help="also check dQ, dK, dV of torch-tensor targets through autograd")
    c.add_argument("--backward", metavar="MOD:FN",
                   help="a NumPy backward FN(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv) to check")
    r = sub.add_parser("regen", help="recompute the fixtures' generated parts; detect drift (--check) or write them")
    r.add_argument("sources", nargs="*", metavar="SOURCE")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 on drift, new or orphaned fixtures (default)")
    g.add_argument("--write", action="store_true", help="write the fixtures atomically")
    b = sub.add_parser("bench", help="print performance figures (nothing is asserted)")
    b.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    b.add_argument("--only", action="append", default=[], help="run only these sections")
    sub.add_parser("env", help="print the environment: Python, NumPy, BLAS, R, rpy2, attention, torch")
    x = sub.add_parser("export",
                       help="write the chosen families' cases as plain JSON files (any language can read them)")
    x.add_argument("--family", action="append", default=None, metavar="NAME", help="families to export (default all)")
    x.add_argument("--suite", default="default", choices=("quick", "default", "full"))
    x.add_argument("--dtype", type=dtype_list, default=("float64",), metavar="LIST",
                   help="input dtypes (default float64)")
    x.add_argument("--out", required=True, metavar="DIR",
                   help="the directory to write (one file per case + index.json): new, empty or a previous export; "
                        "a symlink is followed (the files go where it points, the link stays); only files a previous "
                        "export wrote are ever deleted")
    x.add_argument("--force", action="store_true",
                   help="write into a non-empty DIR that is not a previous export (deleting nothing there)")
    n = sub.add_parser("native-template", help="write a minimal correct kernel of the C ABI (C, C++ or Rust) and "
                       "the header, and print the build line")
    n.add_argument("--lang", required=True, choices=("c", "cpp", "rust"))
    n.add_argument("--out", default=".", metavar="DIR", help="where to write attn.<ext> and refimpl_attention.h "
                                                             "(default: here; an existing file is not overwritten)")
    return p
