"""The HTML report of a check run: failures first, with every detail on the page, then the matrix, then
heatmaps of the failing and known cells.

Layout of the page, top to bottom:

* the result, the environment, the cell counts;
* one section per target with a failed cell: its diagnosis, localisation, reproduction scripts and
  conventions line, each failed cell's full detail, and the first ``MAX_CASES`` failing cases of each family
  row (id, shapes and features, status, ratio, detail); then every target's conventions line;
* the matrix, rows with a failed cell first, then rows with a known divergence, then the rest (the detail is
  in the tooltip as well as above);
* heatmaps (matplotlib, when importable) of FAIL, error and known cells only: the weights of fixture and R
  rows (``Outcome.heat``), and the output of a family row's first failing case (batch 0, head 0, Sq x Dv).

The difference panel plots ``(target - expected) / tolerance`` on a symmetric scale of ``+-max(2, worst)``,
linear inside ``[-1, 1]`` and logarithmic beyond (:func:`diff_scale`), whose colours are pale grey inside
``[-1, 1]`` (noise within the tolerance is not alarming) and blue / red of growing strength beyond it. The
tolerance of a cell is its worst array's: ``max_abs / max_ratio`` (the absolute tolerance where the worst
ratio was found); a family case's is ``max |target - expected| / ratio``.
Without a finite tolerance the panel shows the raw difference on a symmetric scale, and says so.
"""
from __future__ import annotations

import base64
import html
import io
import math

import numpy as np

from .environment import environment
from ...io import write_atomic
from ..cases import CheckRun, Status
from .report import cell_text, conventions, conventions_line, result_word, target_lines

__all__ = ["write_html", "diff_scale", "MAX_CASES", "MAX_HEATMAPS"]

MAX_CASES = 20          # failing family cases listed per row and target
MAX_HEATMAPS = 40       # figures per page (each is a PNG of ~20-40 kB)

_CSS = ("body{font-family:sans-serif;margin:1.5em;max-width:110em} table{border-collapse:collapse;margin:.5em 0}"
        " td,th{border:1px solid #bbb;padding:3px 7px;font-size:13px;vertical-align:top} .pass{background:#dfd}"
        " .FAIL,.error,.crash,.timeout,.oom{background:#fbb} .known{background:#ffd}"
        " .skip,.reference,.n\\/a,.unsupported{background:#eee} .target{border:2px solid #c33;padding:.3em 1em;"
        "margin:1em 0} .ok{border-color:#3a3} pre{white-space:pre-wrap;font-size:12px;margin:.2em 0}"
        " .detail{font-family:monospace;font-size:12px;white-space:pre-wrap} h1.bad{color:#b00} h1.good{color:#070}")


def diff_scale(limit: float):
    """``(norm, cmap)`` for differences in units of the tolerance on [-limit, limit] (limit >= 2): a symmetric
    log scale beyond +-1 (ratios of 1e12 and of 3 both stay readable), pale grey within [-1, 1], then blue
    (below) / red (above) of growing strength. ``norm(-x) == 1 - norm(x)``."""
    from matplotlib.colors import LinearSegmentedColormap, SymLogNorm
    norm = SymLogNorm(linthresh=1.0, linscale=1.0, vmin=-limit, vmax=limit, base=10)
    a = float(norm(1.0)) - 0.5                           # where +-1 falls, from the middle
    eps = min(1e-3, a / 10)
    stops = [(0.0, "#08306b"), (0.5 - a - eps, "#9ecae1"), (0.5 - a, "#e4e4ea"), (0.5, "#f7f7f7"),
             (0.5 + a, "#eae4e4"), (0.5 + a + eps, "#fcae91"), (1.0, "#67000d")]
    return norm, LinearSegmentedColormap.from_list("refimpl_diff", stops)


def _heatmap_png(expected: np.ndarray, actual: np.ndarray, title: str, tolerance: float | None) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    expected, actual = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    if expected.ndim != 2 or actual.shape != expected.shape:
        return None
    with np.errstate(invalid="ignore", over="ignore"):
        diff = actual - expected
    fin = np.abs(diff[np.isfinite(diff)])
    worst = float(fin.max()) if fin.size else 0.0
    if tolerance is not None and tolerance > 0 and math.isfinite(tolerance):
        data, limit = diff / tolerance, max(2.0, worst / tolerance)
        (norm, cmap), label = diff_scale(limit), "(target - expected) / tolerance"
    else:
        limit = max(worst, 1e-300)
        data, cmap, label = diff, matplotlib.colormaps["RdBu_r"], "target - expected (no tolerance)"
        norm = matplotlib.colors.Normalize(-limit, limit)
    finite = expected[np.isfinite(expected)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)   # one scale for both
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
    value = matplotlib.colors.Normalize(lo, hi)
    panels = ((expected, "expected", "viridis", value), (actual, "target", "viridis", value), (data, label, cmap, norm))
    for ax, (img, name, cm_, nm) in zip(axes, panels):
        im = ax.imshow(np.where(np.isfinite(img), img, np.nan), cmap=cm_, norm=nm, aspect="auto",
                       interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("key / column")
        ax.set_ylabel("query")
        bar = fig.colorbar(im, ax=ax, fraction=0.046)
        if nm is norm:                              # the difference: the tolerance marks and the ends only
            ticks = sorted({-limit, -1.0, 0.0, 1.0, limit} if label.endswith("tolerance") else {-limit, 0.0, limit})
            bar.set_ticks(ticks)
            bar.set_ticklabels([f"{x:.2g}" for x in ticks])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _cell_tolerance(o) -> float | None:
    if o.max_ratio and math.isfinite(o.max_ratio) and math.isfinite(o.max_abs) and o.max_ratio > 0 and o.max_abs > 0:
        return o.max_abs / o.max_ratio
    return None


def _family_heat(case, o):
    """``(title, expected, actual, tolerance)`` of the row's first failing case with an output, or None."""
    if case.store is None:
        return None
    specs = {s.id: s for s in case.specs}
    for r in o.cases:
        got = getattr(r, "got", None)
        if r.status != Status.FAIL or got is None or r.id not in specs or specs[r.id].long:
            continue
        data = case.store.get(specs[r.id])
        if got.output.shape != data.expected.shape or got.output.ndim != 4:
            continue
        with np.errstate(invalid="ignore"):
            d = np.abs(got.output - data.expected)[data.live]
        d = d[np.isfinite(d)]
        tol = float(d.max()) / r.ratio if d.size and math.isfinite(r.ratio) and r.ratio > 0 else None
        return (f"{r.id}: output[0, 0] (Sq x Dv) — {specs[r.id].describe()}", data.expected[0, 0],
                got.output[0, 0], tol)
    return None


def _failures(run: CheckRun, esc) -> list[str]:
    parts = []
    for t in run.targets:
        bad = [(c, run.results[(c.id, t)]) for c in run.cases if run.results[(c.id, t)].failed]
        if not bad:
            continue
        parts.append(f"<div class='target'><h3>{esc(t)}: {len(bad)} failed row(s)</h3>")
        parts += [f"<div class='detail'>{esc(line)}</div>" for line in target_lines(run, t)]
        for c, o in bad:
            parts.append(f"<h4>{esc(c.id)} — <span class='{esc(str(o.status))}'>{esc(cell_text(o))}</span></h4>"
                         f"<div class='detail'>{esc(o.detail)}</div>")
            failing = [r for r in o.cases if Status(r.status).failed]
            if failing:
                specs = {s.id: s for s in c.specs}
                parts.append("<table><tr><th>case</th><th>shapes and features</th><th>status</th><th>ratio</th>"
                             "<th>detail</th></tr>")
                for r in failing[:MAX_CASES]:
                    desc = specs[r.id].describe() if r.id in specs else ""
                    ratio = f"{r.ratio:.3g}" if math.isfinite(r.ratio) else "inf"
                    parts.append(f"<tr><td>{esc(r.id)}</td><td>{esc(desc)}</td><td class='{esc(str(r.status))}'>"
                                 f"{esc(str(r.status))}</td><td>{ratio}</td>"
                                 f"<td class='detail'>{esc(r.detail)}</td></tr>")
                parts.append("</table>")
                if len(failing) > MAX_CASES:
                    parts.append(f"<p>+{len(failing) - MAX_CASES} more failing cases (the JSON report lists all)</p>")
        parts.append("</div>")
    return parts


def write_html(run: CheckRun, path, env: dict | None = None) -> None:
    env = env or environment()
    esc = html.escape
    counts = {s.value: sum(1 for o in run.results.values() if o.status == s) for s in Status}
    word = result_word(run)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>refimpl check</title><style>{_CSS}</style>"
             "</head><body>",
             f"<h1 class='{'good' if run.ok else 'bad'}'>refimpl check: {esc(word)}</h1>",
             "<p>" + esc(", ".join(f"{k} {v}" for k, v in env.items())) + "</p>",
             f"<p>{len(run.cases)} rows x {len(run.targets)} targets: "
             + esc(", ".join(f"{v} {k}" for k, v in counts.items() if v)) + f" ({run.seconds:.1f} s)</p>"]
    for name, reason in run.unavailable.items():
        parts.append(f"<p>target {esc(name)}: unavailable — {esc(reason)}</p>")
    fails = _failures(run, esc)
    if fails:
        parts.append("<h2>Failures</h2>")
        parts += fails
    parts.append("<h2>Conventions</h2>")
    parts += [f"<div class='detail'>{esc(conventions_line(t, conventions(run, t)))}</div>" for t in run.targets]

    def rank(c):
        cells = [run.results[(c.id, t)] for t in run.targets]
        return 0 if any(o.failed for o in cells) else (1 if any(o.status == "known" for o in cells) else 2)
    parts.append("<h2>Matrix</h2><table><tr><th>row</th>" + "".join(f"<th>{esc(t)}</th>" for t in run.targets)
                 + "</tr>")
    for c in sorted(run.cases, key=rank):
        parts.append(f"<tr><td title='{esc(c.description)}'>{esc(c.id)}</td>")
        for t in run.targets:
            o = run.results[(c.id, t)]
            parts.append(f"<td class='{esc(str(o.status))}' title='{esc(o.detail)}'>{esc(cell_text(o))}</td>")
        parts.append("</tr>")
    parts.append("</table>")
    figures: list[str] = []
    for c in sorted(run.cases, key=rank):
        for t in run.targets:
            o = run.results[(c.id, t)]
            if not (o.failed or o.status == "known") or len(figures) >= MAX_HEATMAPS:
                continue
            items = [(f"{c.id} — {name} — target {t}", e, a, _cell_tolerance(o)) for name, (e, a) in o.heat.items()]
            if o.cases and (fam := _family_heat(c, o)) is not None:
                items.append((f"{fam[0]} — target {t}",) + fam[1:])
            for title, e, a, tol in items:
                png = _heatmap_png(e, a, title, tol)
                if png:
                    tol_text = f"tolerance {tol:.3g}" if tol else "no finite tolerance"
                    figures.append(f"<figure><img alt='{esc(title)}' src='data:image/png;base64,{png}'><figcaption>"
                                   f"{esc(title)} ({esc(cell_text(o))}; {tol_text})</figcaption></figure>")
    if figures:
        parts.append("<h2>Heatmaps of the failing and known cells</h2><p>Difference panels are in units of the "
                     "tolerance: pale grey within it, blue or red beyond it.</p>")
        parts += figures[:MAX_HEATMAPS]
    parts.append("</body></html>\n")
    write_atomic(path, "".join(parts))
