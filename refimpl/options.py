"""The options a user's check takes, declared once: ``refimpl check`` renders them into argparse (``--layout``)
and the pytest plugin into ``addoption`` (``--refimpl-layout``), so the two front doors cannot drift apart.

Each :class:`Option` holds argparse's keyword arguments; ``plugin`` overrides some of them for pytest (the plugin's
default suite is ``quick``). The argparse types (``duration``, ``memory``, ``dtype_list``) are here too.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field

from .harness.apis import names as api_names
from .precision import NAMES as DTYPE_NAMES, parse_dtypes

__all__ = ["Option", "OPTIONS", "add_to_argparse", "add_to_pytest", "duration", "memory", "positive", "dtype_list"]

_SECONDS = {"": 1.0, "s": 1.0, "ms": 1e-3, "m": 60.0, "min": 60.0, "h": 3600.0}
_MIB = {"": 1.0, "k": 2.0 ** -10, "kb": 2.0 ** -10, "kib": 2.0 ** -10, "m": 1.0, "mb": 1.0, "mib": 1.0,
        "g": 1024.0, "gb": 1024.0, "gib": 1024.0, "t": 2.0 ** 20, "tb": 2.0 ** 20, "tib": 2.0 ** 20}


def _with_unit(text: str, units: dict[str, float], what: str) -> float:
    m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).lower() not in units:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return positive(m.group(1)) * units[m.group(2).lower()]


def duration(text: str) -> float:
    """An argparse type for a time limit: seconds, or a number with a unit (``30s``, ``2m``, ``500ms``, ``1h``)."""
    return _with_unit(text, _SECONDS, "a duration > 0 like 30, 30s, 2m or 500ms")


def memory(text: str) -> float:
    """An argparse type for a memory limit in MiB: a number of MiB or one with a unit (``512M``, ``2GiB``, ``2G``;
    binary units: K/M/G/T = KiB/MiB/GiB/TiB); at least 1 MiB (a worker cannot even start in less)."""
    x = _with_unit(text, _MIB, "a memory size > 0 like 512, 512M, 2G or 2GiB")
    if x < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 MiB, got {text!r}")
    return x


def positive(text: str) -> float:
    """An argparse type: a finite number > 0 (a timeout or a memory limit of 0 would refuse every call)."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not 0 < x < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return x


def dtype_list(text: str) -> tuple[str, ...]:
    """An argparse type for ``--dtype``: precision names, comma-separated (:func:`refimpl.precision.parse_dtypes`)."""
    try:
        return parse_dtypes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def repeat_count(text: str) -> int:
    """``--repeat``'s value: an integer from 1 to 100."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 100:
        raise argparse.ArgumentTypeError(f"--repeat takes a whole number of calls from 1 to 100, got {text!r}")
    return n


def dropout_p(text: str) -> float:
    """``--dropout``'s value: a probability in (0, 1) (0: off)."""
    try:
        p = float(text)
    except ValueError:
        p = -1.0
    if not 0.0 <= p < 1.0:
        raise argparse.ArgumentTypeError(f"--dropout takes a probability 0 <= P < 1, got {text!r}")
    return p


@dataclass(frozen=True)
class Option:
    name: str                           # the long option without dashes: "layout"
    kwargs: dict
    plugin: dict = field(default_factory=dict)   # what differs in the pytest plugin


OPTIONS = (
    Option("layout", dict(default="SD", choices=["SD", "BHSD", "BSHD"],
                          help="layout a refimpl-protocol target takes (default SD: (..., S, D))")),
    Option("api", dict(default="refimpl", choices=api_names(),
                       help="the signature and semantics user targets follow (README: Target APIs)")),
    Option("torch-tensors", dict(action="store_true", help="hand user targets torch tensors")),
    Option("repeat", dict(type=repeat_count, default=1, metavar="N",
                          help="call each case N times: user targets must return bitwise the same output "
                               "(weights, LSE; the KV cache they leave; with --grad dq, dk, dv) every time, or the "
                               "case is 'nondeterministic' (default 1: off)")),
    Option("dropout", dict(type=dropout_p, default=0.0, metavar="P",
                           help="call user targets with dropout P and judge the output replayed from the keep-mask: "
                                "flash-attn, flash-attn-varlen return theirs (dropout_p=P, return_attn_probs=True; "
                                "its keep rate is tested too); refimpl targets are given refimpl's (dropout_p=P, "
                                "dropout_mask=KEEP, bool (B, H, Sq, Sk), True = kept, to apply after the softmax "
                                "with 1/(1-P) scaling)")),
    Option("lse", dict(action="store_true",
                       help="ask user targets for their log-sum-exp too (flash-attn, flash-attn-varlen: "
                            "return_attn_probs=True; flash-attn-kvcache: return_softmax_lse=True; flex-attention: "
                            "return_lse=True) and judge it "
                            "against refimpl.sdpa_lse")),
    Option("dtype", dict(type=dtype_list, default=("float64", "float32"), metavar="LIST",
                         help=f"input dtypes of the family cases: {','.join(DTYPE_NAMES)} (default float64,float32)")),
    Option("family", dict(action="append", default=None, metavar="NAME",
                          help="run only these case families (repeatable; --list-families lists them)")),
    Option("suite", dict(default="default", choices=["quick", "default", "full"],
                         help="how many cases per family (quick ~10%%, default >= 1,500 cases, full 3x and long "
                              "sequences)"),
           plugin=dict(default="quick", help="cases per family (default quick here; refimpl check's is default)")),
    Option("shard", dict(default=None, metavar="K/N", help="run shard K of N of the family cases (CI matrices)")),
    Option("masked-rows", dict(default=None, choices=["zeros", "nan", "uniform"],
                               help="pin the one accepted output for a query with no key (default: any of the three)")),
    Option("timeout", dict(type=duration, default=None, metavar="DURATION",
                           help="per call of a user target (default: adaptive, 20x its slowest call so far for as "
                                "much work, at least 5 s, at most 60 s; a value like 30s or 2m fixes it); past it: "
                                "'timeout'")),
    Option("deadline", dict(type=duration, default=1800.0, metavar="DURATION",
                            help="the whole run (default 30m; units: 90s, 10m, 1h): past it nothing more is called "
                                 "and the cases not called are 'not run': the run is incomplete, exit 3")),
    Option("max-memory", dict(type=memory, default=None, metavar="SIZE",
                              help="memory of a user target's worker (default half the machine's RAM; units: 512M, "
                                   "2GiB); past it: 'oom'")),
    Option("no-isolation", dict(action="store_true",
                                help="call user targets in this process (debugging); a crash then ends the run")),
    Option("repro-dir", dict(default=None, metavar="DIR",
                             help="write one standalone reproduction script per failing family case")),
)


def add_to_argparse(parser) -> None:
    for o in OPTIONS:
        parser.add_argument(f"--{o.name}", **o.kwargs)


def add_to_pytest(group) -> None:
    for o in OPTIONS:
        group.addoption(f"--refimpl-{o.name}", **{**o.kwargs, **o.plugin})
