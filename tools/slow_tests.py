"""Write tests/slow_tests.txt, the split of the suite into `make test` and `make test-slow`, from the
durations of a whole run of `make test` on the 2-core machine (pytest ``--durations=0``).

    .venv/bin/python -m pytest -n 2 -m "not slow" -p no:cacheprovider --durations=0 > durations.log
    .venv/bin/python tools/slow_tests.py durations.log            # rewrites tests/slow_tests.txt

Two kinds of line (tests/conftest.py reads them; both kinds still run in CI's slow leg):

    sweep FILE::FUNCTION   a test run over every kernel of a zoo or every variant of a model (SWEEP_PARAMS or
                           more parameters, SWEEP_SECONDS or more in all): `make test` runs one parameter in
                           SWEEP_KEEP (the first, then every SWEEP_KEEP-th in collection order), make test-slow
                           the others
    slow FILE::TEST        one test (a parameter of a smaller parametrised test included) that took SLOW_SECONDS
                           or more: make test-slow runs it

Entries already in the file are kept (a test already listed has no figure in a `-m "not slow"` run). An entry
naming no test (a function or a parameter renamed or removed) fails tests/test_ci_config.py's checks (the slow one
collects the whole suite and compares exact ids): delete it, or rerun the durations.
"""
from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIST = ROOT / "tests" / "slow_tests.txt"
SWEEP_PARAMS, SWEEP_SECONDS, SWEEP_KEEP = 8, 2.0, 8
SLOW_SECONDS = 0.6
HEADER = f"""\
# The split of the suite into `make test` (every test not listed here, and one parameter in {SWEEP_KEEP} of each
# sweep) and `make test-slow` (the rest; .ci/run runs both legs, so CI runs every test). Written by
# tools/slow_tests.py from a `--durations=0` run on the 2-core machine: a sweep has {SWEEP_PARAMS} or more parameters
# and took {SWEEP_SECONDS:g} s or more in all; a slow test took {SLOW_SECONDS:g} s or more. Regenerate it when
# `make test` grows past 2 minutes (see the tool's docstring).
"""
LINE = re.compile(r"\s*([\d.]+)s (?:call|setup|teardown)\s+(\S+?::\S.*?)\s*$")


def read_entries(path: Path = LIST) -> list[tuple[str, str]]:
    """(kind, node) per line of the list; kind is "sweep" or "slow"."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        kind, _, node = line.partition(" ")
        if kind not in ("sweep", "slow") or "::" not in node:
            raise ValueError(f"{path.name} line {n}: expected 'sweep FILE::FUNCTION' or 'slow FILE::TEST', "
                             f"got {line!r}")
        out.append((kind, node.strip()))
    return out


def split(log: str) -> list[tuple[str, str]]:
    """The entries a durations log calls for."""
    per_item: dict[str, float] = defaultdict(float)
    for line in log.splitlines():
        m = LINE.match(line)
        if m:
            per_item[m.group(2)] += float(m.group(1))
    per_fn: dict[str, list[float]] = defaultdict(list)
    for node, t in per_item.items():
        per_fn[node.split("[", 1)[0]].append(t)
    sweeps = {fn for fn, ts in per_fn.items() if len(ts) >= SWEEP_PARAMS and sum(ts) >= SWEEP_SECONDS}
    slow = sorted(node for node, t in per_item.items()
                  if t >= SLOW_SECONDS and node.split("[", 1)[0] not in sweeps)
    return [("sweep", fn) for fn in sorted(sweeps)] + [("slow", node) for node in slow]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    new = split(Path(argv[0]).read_text())
    old = read_entries() if LIST.exists() else []
    entries = sorted(set(new) | set(old), key=lambda e: (e[0] != "sweep", e[1]))
    tmp = LIST.with_suffix(".tmp")
    tmp.write_text(HEADER + "".join(f"{k} {n}\n" for k, n in entries))
    tmp.replace(LIST)
    print(f"{LIST.relative_to(ROOT)}: {sum(k == 'sweep' for k, _ in entries)} sweeps, "
          f"{sum(k == 'slow' for k, _ in entries)} slow tests")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
