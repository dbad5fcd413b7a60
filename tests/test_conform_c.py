"""refimpl/harness/native/conform.c: an export checked against a C-ABI kernel by a C program alone (no Python).

conform.c and the C zoo (tests/zoo/c: two correct kernels, seven broken ones) are built with gcc into a temporary
directory; quick-suite families are exported: masked-rows, gqa, causal, sizes and extreme-logits in float64 and
float32 (bool and padding masks, causal, GQA, fully masked rows, D > 64, Sk > 32, Dv != D, scores beyond exp's
range, an additive mask the ABI cannot express), varlen in float64 (packed batches with padding rows, softcap and
ALiBi cases that are n/a). Each kernel's verdict from conform.c must equal, case by case, the one
``refimpl check --target c:LIB.so:SYMBOL`` gives (run in process here, as tests/test_js_targets.py does for
tools/conform.mjs). varlen is float64 only to keep this file fast (it is most of the bytes). A float32 case is
judged by the export's ``budget_atol`` and ``budget_slope``: refimpl check's own float32 allowance.
Without gcc these tests skip saying so (tools/setup.sh installs it)."""
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from refimpl.harness.cases.families import select
from refimpl.harness.reports.export import export
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.target_spec import load_target
from refimpl.harness.targets.isolation import isolator

ROOT = Path(__file__).resolve().parents[1]
CONFORM_C = ROOT / "refimpl" / "harness" / "native" / "conform.c"
ZOO_C = ROOT / "tests" / "zoo" / "c"
GCC = shutil.which("gcc")
FAMILIES = ["masked-rows", "gqa", "causal", "sizes", "extreme-logits"]
DTYPES = ("float64", "float32")
EXPORTS = {"cases": (FAMILIES, DTYPES), "float64": (["varlen"], ("float64",))}   # families, dtypes
NA = {"cases": 4, "float64": 2}                                 # n/a cases: additive masks; softcap and ALiBi
CORRECT = ["attn", "attn_online"]
BROKEN = ["attn_mask_inverted", "attn_no_max", "attn_gqa_modulo", "attn_last_key_dropped", "attn_float_accum_reset",
          "attn_segfault_on_wide", "attn_error_code"]
WORDS = ("pass", "FAIL", "error", "crash", "timeout", "n/a")
pytestmark = [pytest.mark.skipif(GCC is None, reason="no gcc on PATH: conform.c and the C zoo cannot be built here "
                                                     "(tools/setup.sh installs gcc)"),
              pytest.mark.slow]    # gcc, an export and every C zoo kernel run twice: the slow leg (CI runs it)

HOSTILE = r"""
#include <stdint.h>
#include <stdlib.h>
int hangs(int bits, const void *q, const void *k, const void *v, const unsigned char *keep, const int64_t *shape,
          double scale, void *out, void *weights) {
    (void)bits; (void)q; (void)k; (void)v; (void)keep; (void)shape; (void)scale; (void)out; (void)weights;
    for (volatile int i = 0;; i++) {}
}
int quits(int bits, const void *q, const void *k, const void *v, const unsigned char *keep, const int64_t *shape,
          double scale, void *out, void *weights) {
    (void)bits; (void)q; (void)k; (void)v; (void)keep; (void)shape; (void)scale; (void)out; (void)weights;
    exit(3);
}
"""


@dataclass
class Runs:
    conform: Path
    lib: Path
    hostile: Path
    exports: dict          # name: export directory
    c: dict                # (symbol, export name): (exit code, stdout, stderr) of conform.c
    py: dict               # (symbol, export name): {case id: CaseResult} of the Python run


def _python(lib, symbol, specs, store):
    """{case id: CaseResult} of the Python run, in this process; the crashing kernel's D > 64 cases in a worker,
    only the first one's (in both dtypes): each crash costs a new worker, and conform.c's are all checked apart."""
    results, wide = {}, [s for s in specs if s.D > 64 and symbol == "attn_segfault_on_wide"]
    for group, isolate in (([s for s in specs if s not in wide], None),
                           ([s for s in wide if (s.family, s.index) == (wide[0].family, wide[0].index)] if wide else [],
                            isolator(timeout=60, max_memory_mib=None, flag="--target"))):
        if not group:
            continue
        target = load_target(f"c:{lib}:{symbol}", isolate=isolate)
        try:
            results.update({s.id: run_one(target, s, store) for s in group})
        finally:
            close = getattr(target.fn, "close", None)
            if close:
                close()
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Everything built, exported and run once, overlapping: gcc while exporting, Python while conform.c runs."""
    d = tmp_path_factory.mktemp("conform_c")
    (d / "hostile.c").write_text(HOSTILE)
    conform, lib, hostile = d / "conform", d / "libattn.so", d / "libhostile.so"
    cmds = [[GCC, "-std=c11", "-O2", "-Wall", "-Wextra", "-o", str(conform), str(CONFORM_C), "-ldl", "-lm"],
            [GCC, "-O2", "-shared", "-fPIC", "-o", str(lib), *map(str, sorted(ZOO_C.glob("*.c"))), "-lm"],
            [GCC, "-O2", "-shared", "-fPIC", "-o", str(hostile), str(d / "hostile.c")]]
    builds = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    exports = {}
    for name, (families, dtypes) in EXPORTS.items():
        exports[name] = d / name
        export(families, exports[name], suite="quick", dtypes=dtypes)
    for c, p in zip(cmds, builds):
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, (c, err)
        if c[0:2] == [GCC, "-std=c11"]:
            assert err == "", f"conform.c compiles with warnings:\n{err}"
    procs = {(s, name): subprocess.Popen([str(conform), str(path), str(lib), s], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
             for s in CORRECT + BROKEN for name, path in exports.items()}
    store = CaseStore()
    py = {(s, name): _python(lib, s, select(families, "quick", dtypes), store)
          for s in CORRECT + BROKEN for name, (families, dtypes) in EXPORTS.items()}
    c = {}
    for key, p in procs.items():
        out, err = p.communicate(timeout=300)
        c[key] = (p.returncode, out, err)
    return Runs(conform, lib, hostile, exports, c, py)


def _verdicts(stdout: str) -> dict:
    """{case id: (word, detail)} from conform's per-case lines."""
    found = {}
    for line in stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("pass", "FAIL"):
            rest = rest.partition(" ")[2]                       # the ratio
        if word in WORDS:
            case, _, detail = rest.partition(": ") if word != "pass" else (rest, "", "")
            assert case not in found, f"two lines for {case}"
            found[case] = (word, detail)
    return found


@pytest.mark.parametrize("symbol", CORRECT + BROKEN)
def test_conform_c_gives_the_python_runs_verdicts(runs, symbol):
    """Case by case, conform.c's word is the Python run's status, with the same n/a reason, the kernel's error
    code and the crash's signal; the summary lines and exit code are conform.mjs's."""
    caught = 0
    for name in EXPORTS:
        code, stdout, stderr = runs.c[symbol, name]
        index = json.loads((runs.exports[name] / "index.json").read_text())
        c = _verdicts(stdout)
        assert sorted(c) == sorted(row["id"] for row in index["cases"]), stdout[-800:] + stderr
        py = runs.py[symbol, name]
        missing = set(c) - set(py)                  # the crashing kernel's wide cases after the first (see `runs`)
        assert set(py) <= set(c) and (not missing or symbol == "attn_segfault_on_wide"), sorted(set(py) ^ set(c))
        assert all(c[i][0] == "crash" for i in missing), {i: c[i] for i in missing}
        differ = {i: (r.status.value, r.detail[:120], c[i]) for i, r in py.items() if r.status.value != c[i][0]}
        assert not differ, differ
        for i, r in py.items():
            word, detail = c[i]
            if word == "n/a":
                assert detail == r.detail
            elif word == "error":
                assert "error code 7" in detail and "error code 7" in r.detail, (detail, r.detail)
            elif word == "crash":
                assert detail == r.detail == "killed by SIGSEGV"
        counts = {w: sum(v[0] == w for v in c.values()) for w in WORDS}
        failed = counts["FAIL"] + counts["error"] + counts["crash"] + counts["timeout"]
        lines = stdout.splitlines()
        assert lines[-2] == f"{counts['pass']} passed, {failed} failed, {counts['n/a']} n/a"
        assert counts["n/a"] == NA[name] and stderr == ""
        assert (code, lines[-1]) == ((0, "RESULT: all targets conform") if failed == 0 else
                                     (1, "RESULT: NON-CONFORMANCE"))
        caught += failed
    assert (caught == 0) == (symbol in CORRECT)          # every broken kernel is caught, no correct one


def test_a_segfault_is_that_cases_crash_and_the_run_goes_on(runs):
    c = _verdicts(runs.c["attn_segfault_on_wide", "cases"][1])
    wide = {s.id for s in select(FAMILIES, "quick", DTYPES) if s.D > 64}
    assert len(wide) == 12 and {i for i, (w, _) in c.items() if w == "crash"} == wide
    assert all(c[i][1] == "killed by SIGSEGV" for i in wide)
    order = list(c)
    first = min(order.index(i) for i in wide)
    assert any(c[i][0] == "pass" for i in order[first + 1:])          # cases after the first crash still ran


def _subset(exported, dest: Path, ids) -> list[dict]:
    """A copy of the export holding only the cases ``ids`` (in that order), with its own index.json."""
    index = json.loads((exported / "index.json").read_text())
    rows = [next(r for r in index["cases"] if r["id"] == i) for i in ids]
    for r in rows:
        (dest / r["file"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(exported / r["file"], dest / r["file"])
    (dest / "index.json").write_text(json.dumps({**index, "cases": rows}))
    return rows


def test_a_malformed_case_file_is_that_cases_error_naming_it_and_the_run_goes_on(runs, tmp_path):
    ids = ["masked-rows/0000-float64", "masked-rows/0002-float64", "masked-rows/0003-float64",
           "masked-rows/0004-float64"]
    rows = _subset(runs.exports["cases"], tmp_path, ids)
    truncated = tmp_path / rows[1]["file"]
    truncated.write_text(truncated.read_text()[:-40])
    wrong = tmp_path / rows[2]["file"]
    case = json.loads(wrong.read_text())
    case["inputs"]["k"]["shape"][3] += 1                        # k's D no longer q's
    wrong.write_text(json.dumps(case))
    p = subprocess.run([str(runs.conform), str(tmp_path), str(runs.lib), "attn"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1, p.stdout + p.stderr
    c = _verdicts(p.stdout)
    assert [c[i][0] for i in ids] == ["pass", "error", "error", "pass"]
    assert c[ids[1]][1].startswith(f"unreadable case file {rows[1]['file']}: not JSON: ")
    assert c[ids[2]][1].startswith("malformed case: inputs.k has extent")
    assert p.stdout.splitlines()[-2:] == ["2 passed, 2 failed, 0 n/a", "RESULT: NON-CONFORMANCE"]


def test_a_hang_or_an_exit_is_that_cases_timeout_or_crash(runs, tmp_path):
    ids = ["gqa/0000-float64", "gqa/0000-float32"]
    _subset(runs.exports["cases"], tmp_path, ids)
    procs = {fn: subprocess.Popen([str(runs.conform), str(tmp_path), str(runs.hostile), fn, *limit],
                                  stdout=subprocess.PIPE, text=True)
             for fn, limit in (("hangs", ["--timeout", "0.3"]), ("quits", []))}
    for fn, word, detail in (("hangs", "timeout", "no answer in 0.3 s"),
                             ("quits", "crash", "the kernel ended the process (exit code 3) instead of returning")):
        out = procs[fn].communicate(timeout=60)[0]
        assert procs[fn].returncode == 1, out
        assert _verdicts(out) == {i: (word, detail) for i in ids}       # the second case ran after the first
        assert out.splitlines()[-2:] == ["0 passed, 2 failed, 0 n/a", "RESULT: NON-CONFORMANCE"]


def test_a_bad_command_line_library_symbol_or_export_is_exit_2_with_the_reason(runs, tmp_path):
    def run(*args):
        return subprocess.run([str(runs.conform), *map(str, args)], capture_output=True, text=True, timeout=60)
    exported, lib = runs.exports["cases"], runs.lib
    p = run(exported, lib, "no_such_symbol")
    assert p.returncode == 2 and p.stdout == ""
    assert "exports no symbol 'no_such_symbol'" in p.stderr and "refimpl_attention.h" in p.stderr
    p = run(exported, tmp_path / "missing.so", "attn")
    assert p.returncode == 2 and f"no file {tmp_path / 'missing.so'}" in p.stderr
    p = run(tmp_path, lib, "attn")
    assert p.returncode == 2 and "index.json not found: DIR must be a refimpl export" in p.stderr
    (tmp_path / "index.json").write_text('{"schema": "something else", "cases": []}')
    p = run(tmp_path, lib, "attn")
    assert p.returncode == 2 and "is not a refimpl export index" in p.stderr
    for args in ((exported, lib), (exported, lib, "attn", "--timeout", "0"), (exported, lib, "attn", "extra")):
        p = run(*args)
        assert p.returncode == 2 and p.stderr.startswith("usage: conform DIR LIB.so SYMBOL [--timeout SECONDS]")
    (tmp_path / "index.json").write_text('{"schema": "refimpl-export-index/1", "cases": []}')
    p = run(tmp_path, lib, "attn")
    assert p.returncode == 2 and p.stdout.splitlines()[-1] == "RESULT: NOTHING CHECKED"
