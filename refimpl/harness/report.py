"""Reports of a check run: table (terminal), markdown, json, junit (the HTML page is :mod:`.html`).

The JSON shape (``refimpl-check/1``)::

    {"schema": "refimpl-check/1", "ok": bool, "seconds": float,
     "environment": {"python", "numpy", "blas", "r", "rpy2", "attention", "torch", "platform"},
     "targets": [name, ...], "unavailable": {name: reason},
     "divergences": {id: title},
     "cases": [{"id", "group", "description",
                "results": {target: {"status", "max_ratio", "max_abs", "detail", "divergences"}}}]}

``status`` is one of pass | FAIL | error | known | skip | reference; ``max_ratio`` is the worst
|error| / tolerance (null when not finite).
"""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

from ..env import describe, environment
from ..r import bridge
from .cases import CheckRun, Status
from .divergences import DIVERGENCE_TITLES

__all__ = ["render", "FORMATS", "JSON_SCHEMA", "cell_text"]

FORMATS = ("table", "json", "junit", "markdown")

JSON_SCHEMA = {  # the documented shape, checked by tests/test_check.py
    "top": {"schema": str, "ok": bool, "seconds": float, "environment": dict, "targets": list,
            "unavailable": dict, "divergences": dict, "cases": list},
    "case": {"id": str, "group": str, "description": str, "results": dict},
    "result": {"status": str, "max_ratio": (float, type(None)), "max_abs": (float, type(None)), "detail": str,
               "divergences": list},
    "statuses": tuple(s.value for s in Status),
}


def _fmt_ratio(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "inf"
    return f"{x:.2g}"


def cell_text(o) -> str:
    if o.status == "pass":
        return f"pass {_fmt_ratio(o.max_ratio)}"
    if o.status == "FAIL":
        return f"FAIL {_fmt_ratio(o.max_ratio)}x"
    if o.status == "known":
        return "known " + ",".join(o.divergences)
    if o.status == "skip":
        return "skip"
    return o.status


def _as_dict(run: CheckRun, env: dict) -> dict:
    def num(x):
        return None if x is None or not math.isfinite(x) else float(x)
    return {
        "schema": "refimpl-check/1", "ok": run.ok, "seconds": round(run.seconds, 3), "environment": env,
        "targets": run.targets, "unavailable": run.unavailable, "divergences": DIVERGENCE_TITLES,
        "cases": [{"id": c.id, "group": c.group, "description": c.description,
                   "results": {t: {"status": o.status, "max_ratio": num(o.max_ratio), "max_abs": num(o.max_abs),
                                   "detail": o.detail, "divergences": o.divergences}
                               for t in run.targets for o in [run.results[(c.id, t)]]}} for c in run.cases],
    }


def _table(run: CheckRun, env: dict, markdown: bool) -> str:
    lines = []
    envs = describe(env)
    head = ["case"] + run.targets
    rows = [[c.id] + [cell_text(run.results[(c.id, t)]) for t in run.targets] for c in run.cases]
    if markdown:
        lines.append("# refimpl check\n")
        lines.append(f"Environment: {envs}\n")
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        lines.append(f"refimpl check — {envs}")
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
        lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)))
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(x.ljust(w) for x, w in zip(r, widths)) for r in rows]
    lines.append("")
    lines.append("Cells: pass <worst error as a fraction of its tolerance>; FAIL <that fraction>x; "
                 "known <catalogued divergence>; skip (reason below).")
    for name, reason in run.unavailable.items():
        lines.append(f"target {name}: unavailable — {reason}")
    if env.get("attention") not in ("unavailable", bridge.EXPECTED_ATTENTION_VERSION):
        lines.append(f"note: the divergence catalogue was measured on attention {bridge.EXPECTED_ATTENTION_VERSION}; "
                     f"installed {env['attention']}: 'known' labels may be stale (tests/test_divergences.py re-measures)")
    details = []
    for c in run.cases:
        for t in run.targets:
            o = run.results[(c.id, t)]
            if o.status in ("FAIL", "error") or (o.status == "skip" and t not in run.unavailable):
                details.append(f"  {c.id} x {t}: {o.status}: {o.detail}")
            elif o.status == "known":
                details.append(f"  {c.id} x {t}: known: {o.detail[:160]}")
    if details:
        lines.append("Details:")
        lines += details
    for t in run.targets:
        lines += run.diagnoses.get(t, [])
        if run.localisations.get(t):
            lines.append(f"localisation {t}: {run.localisations[t]}")
    used = sorted({d for o in run.results.values() for d in o.divergences})
    for d in used:
        lines.append(f"  {d}: {DIVERGENCE_TITLES.get(d, '?')} (docs/divergences.md)")
    n = len(run.results)
    counts = {s.value: sum(1 for o in run.results.values() if o.status == s) for s in Status}
    lines.append(f"{len(run.cases)} cases x {len(run.targets)} targets = {n} cells: " +
                 ", ".join(f"{v} {k}" for k, v in counts.items() if v) + f" ({run.seconds:.1f} s)")
    if run.interrupted:
        lines.append("interrupted (Ctrl-C): the cells above are the ones that finished")
    lines.append("RESULT: " + result_word(run))
    return "\n".join(lines) + "\n"


def result_word(run: CheckRun) -> str:
    if run.interrupted:
        return "INTERRUPTED"
    return "all targets conform" if run.ok else "NON-CONFORMANCE"


def _junit(run: CheckRun) -> str:
    suites = ET.Element("testsuites", name="refimpl check", time=f"{run.seconds:.3f}")
    for t in run.targets:
        cells = [(c, run.results[(c.id, t)]) for c in run.cases]
        s = ET.SubElement(suites, "testsuite", name=f"refimpl.{t}", tests=str(len(cells)),
                          failures=str(sum(o.status == "FAIL" for _, o in cells)),
                          errors=str(sum(o.status == "error" for _, o in cells)),
                          skipped=str(sum(o.status in ("skip", "reference") for _, o in cells)))
        for c, o in cells:
            tc = ET.SubElement(s, "testcase", classname=f"refimpl.{t}.{c.group}", name=c.id)
            if o.status == "FAIL":
                ET.SubElement(tc, "failure", message=o.detail[:500]).text = o.detail
            elif o.status == "error":
                ET.SubElement(tc, "error", message=o.detail[:500]).text = o.detail
            elif o.status in ("skip", "reference"):
                ET.SubElement(tc, "skipped", message=o.detail[:500])
            elif o.status == "known":
                ET.SubElement(tc, "system-out").text = o.detail
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def render(run: CheckRun, fmt: str, env: dict | None = None) -> str:
    env = env or environment()
    if fmt == "json":
        return json.dumps(_as_dict(run, env), indent=1) + "\n"
    if fmt == "junit":
        return _junit(run)
    return _table(run, env, markdown=(fmt == "markdown"))
