"""Mutation check: break refimpl on purpose, one mutant at a time, and show which tests catch it.

    .venv/bin/python tools/mutation_check.py        (from the repository root; restores every file)

Each mutant patches one place in the working tree, runs the suite (Hypothesis profile ci, no slow
tests), records the failing tests, and puts the file back. A mutant no test catches is reported as
SURVIVED and the script exits 1.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = [
    ("drop the max-subtraction in sdpa", "refimpl/attention.py",
     "        np.subtract(z, m, out=z)                         # <= 0\n", "        pass\n"),
    ("drop the max-subtraction in softmax()", "refimpl/softmax.py",
     "        np.subtract(z, m, out=z)                 # <= 0 everywhere; may overflow to -inf -> weight 0\n", "        pass\n"),
    ("scale by 1/sqrt(n_queries)", "refimpl/attention.py",
     "    s = check_scale(scale, 1.0 / math.sqrt(q.shape[-1]), dtype)", "    s = check_scale(scale, 1.0 / math.sqrt(q.shape[-2]), dtype)"),
    ("ignore the mask", "refimpl/masks.py",
     "        if m.dtype.kind == \"b\":\n            keep = m\n", "        if m.dtype.kind == \"b\":\n            keep = None\n"),
    ("transpose a weight (W_k in multi-head)", "refimpl/multihead.py",
     "    q, k, v = xh @ wq, xh @ wk, xh @ wv", "    q, k, v = xh @ wq, xh @ np.swapaxes(wk, -1, -2), xh @ wv"),
    ("transpose a weight (W_q in self-attention)", "refimpl/attention.py",
     "    q, k, v = (project(x, ws[n], weights_layout) for n in (\"w_q\", \"w_k\", \"w_v\"))",
     "    q, k, v = (project(x, ws[n].T if n == \"w_q\" else ws[n], weights_layout) for n in (\"w_q\", \"w_k\", \"w_v\"))"),
]


def run(name: str, path: str, old: str, new: str) -> list[str]:
    p = ROOT / path
    original = p.read_text()
    if original.count(old) != 1:
        raise SystemExit(f"mutant {name!r}: the pattern occurs {original.count(old)} times in {path}")
    try:
        p.write_text(original.replace(old, new))
        env = dict(os.environ, HYPOTHESIS_PROFILE="ci", PYTHONDONTWRITEBYTECODE="1")
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                            "-n", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
        return re.findall(r"^FAILED (\S+)", r.stdout, re.M)
    finally:
        p.write_text(original)


def main() -> int:
    survived = 0
    for name, path, old, new in MUTANTS:
        failed = run(name, path, old, new)
        survived += not failed
        print(f"{'CAUGHT  ' if failed else 'SURVIVED'} {name}: {len(failed)} failing tests")
        for t in failed[:8]:
            print(f"           {t}")
        if len(failed) > 8:
            print(f"           ... and {len(failed) - 8} more")
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main())
