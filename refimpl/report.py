"""Reports of a check run: table (terminal), markdown, json, junit, and an HTML page with heatmaps.

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

import base64
import html
import io
import json
import math
import platform
import sys
import xml.etree.ElementTree as ET

import numpy as np

from .check import DIVERGENCE_TITLES, CheckRun

__all__ = ["environment", "render", "FORMATS", "write_html", "JSON_SCHEMA"]

FORMATS = ("table", "json", "junit", "markdown")

JSON_SCHEMA = {  # the documented shape, checked by tests/test_check.py
    "top": {"schema": str, "ok": bool, "seconds": float, "environment": dict, "targets": list,
            "unavailable": dict, "divergences": dict, "cases": list},
    "case": {"id": str, "group": str, "description": str, "results": dict},
    "result": {"status": str, "max_ratio": (float, type(None)), "max_abs": (float, type(None)), "detail": str,
               "divergences": list},
    "statuses": ("pass", "FAIL", "error", "known", "skip", "reference"),
}


def environment() -> dict[str, str]:
    env = {"python": sys.version.split()[0], "numpy": np.__version__, "platform": platform.platform()}
    try:
        from threadpoolctl import threadpool_info
        blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        env["blas"] = ", ".join(f"{i['internal_api']} {i.get('version') or ''} ({i.get('num_threads')} threads, "
                                f"{i.get('architecture') or ''})".replace(" ,", ",") for i in blas) or "unknown"
    except ImportError:
        env["blas"] = "unknown (threadpoolctl not installed)"
    from . import rbridge
    a = rbridge.availability()
    env["r"] = a.r_version or "unavailable"
    env["rpy2"] = a.rpy2_version or "unavailable"
    env["attention"] = a.attention_version or "unavailable"
    if not a.ok:
        env["r_reason"] = a.reason
    try:
        import torch
        env["torch"] = torch.__version__
    except ImportError:
        env["torch"] = "not installed"
    return env


def _fmt_ratio(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "inf"
    return f"{x:.2g}"


def _cell(o) -> str:
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
    envs = (f"Python {env['python']}, NumPy {env['numpy']} ({env['blas']}), R {env['r']}, rpy2 {env['rpy2']}, "
            f"attention {env['attention']}, torch {env['torch']}")
    head = ["case"] + run.targets
    rows = [[c.id] + [_cell(run.results[(c.id, t)]) for t in run.targets] for c in run.cases]
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
    from .rbridge import EXPECTED_ATTENTION_VERSION
    if env.get("attention") not in ("unavailable", EXPECTED_ATTENTION_VERSION):
        lines.append(f"note: the divergence catalogue was measured on attention {EXPECTED_ATTENTION_VERSION}; "
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
    used = sorted({d for o in run.results.values() for d in o.divergences})
    for d in used:
        lines.append(f"  {d}: {DIVERGENCE_TITLES.get(d, '?')} (docs/divergences.md)")
    n = len(run.results)
    counts = {s: sum(1 for o in run.results.values() if o.status == s) for s in ("pass", "FAIL", "error", "known", "skip", "reference")}
    lines.append(f"{len(run.cases)} cases x {len(run.targets)} targets = {n} cells: " +
                 ", ".join(f"{v} {k}" for k, v in counts.items() if v) + f" ({run.seconds:.1f} s)")
    lines.append("RESULT: " + ("all targets conform" if run.ok else "NON-CONFORMANCE"))
    return "\n".join(lines) + "\n"


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


def _heatmap_png(expected: np.ndarray, actual: np.ndarray, title: str) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    expected, actual = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
    for ax, data, name, cmap in ((axes[0], expected, "expected", "viridis"), (axes[1], actual, "target", "viridis"),
                                 (axes[2], actual - expected if actual.shape == expected.shape else np.zeros((1, 1)),
                                  "target - expected", "coolwarm")):
        im = ax.imshow(data, cmap=cmap, aspect="auto")
        ax.set_title(name, fontsize=9)
        if data.shape[1] <= 16:
            ax.set_xticks(range(data.shape[1]))
        if data.shape[0] <= 16:
            ax.set_yticks(range(data.shape[0]))
        ax.set_xlabel("key")
        ax.set_ylabel("query")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def write_html(run: CheckRun, path, env: dict | None = None) -> None:
    env = env or environment()
    from .fixtures import write_atomic
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>refimpl check</title><style>"
             "body{font-family:sans-serif;margin:1.5em} table{border-collapse:collapse} td,th{border:1px solid #bbb;"
             "padding:3px 7px;font-size:13px} .pass{background:#dfd} .FAIL,.error{background:#fbb} .known{background:#ffd}"
             " .skip,.reference{background:#eee}</style></head><body>",
             f"<h1>refimpl check: {'all targets conform' if run.ok else 'NON-CONFORMANCE'}</h1>",
             "<p>" + esc(", ".join(f"{k} {v}" for k, v in env.items())) + "</p>",
             "<table><tr><th>case</th>" + "".join(f"<th>{esc(t)}</th>" for t in run.targets) + "</tr>"]
    for c in run.cases:
        parts.append(f"<tr><td title='{esc(c.description)}'>{esc(c.id)}</td>")
        for t in run.targets:
            o = run.results[(c.id, t)]
            parts.append(f"<td class='{o.status}' title='{esc(o.detail)}'>{esc(_cell(o))}</td>")
        parts.append("</tr>")
    parts.append("</table><h2>Attention weights</h2>")
    for c in run.cases:
        if not (c.group in ("vignettes",) or c.id.startswith("fixture:")):
            continue
        for t in run.targets:
            o = run.results[(c.id, t)]
            for name, (exp, act) in o.heat.items():
                png = _heatmap_png(exp, act, f"{c.id} — {name} — target {t}")
                if png:
                    parts.append(f"<figure><img alt='{esc(c.id)} {esc(name)} {esc(t)}' src='data:image/png;base64,{png}'>"
                                 f"<figcaption>{esc(c.id)}: {esc(name)}, target {esc(t)} ({esc(_cell(o))})</figcaption></figure>")
    parts.append("</body></html>\n")
    write_atomic(path, "".join(parts))
