"""The HTML report of a check run: the matrix, and expected / target / difference heatmaps of the weights."""
from __future__ import annotations

import base64
import html
import io

import numpy as np

from ..env import environment
from ..io import write_atomic
from .report import cell_text, result_word
from .cases import CheckRun

__all__ = ["write_html"]


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
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>refimpl check</title><style>"
             "body{font-family:sans-serif;margin:1.5em} table{border-collapse:collapse} td,th{border:1px solid #bbb;"
             "padding:3px 7px;font-size:13px} .pass{background:#dfd} .FAIL,.error{background:#fbb} .known{background:#ffd}"
             " .skip,.reference{background:#eee}</style></head><body>",
             f"<h1>refimpl check: {result_word(run)}</h1>",
             "<p>" + esc(", ".join(f"{k} {v}" for k, v in env.items())) + "</p>",
             "<table><tr><th>case</th>" + "".join(f"<th>{esc(t)}</th>" for t in run.targets) + "</tr>"]
    for c in run.cases:
        parts.append(f"<tr><td title='{esc(c.description)}'>{esc(c.id)}</td>")
        for t in run.targets:
            o = run.results[(c.id, t)]
            parts.append(f"<td class='{o.status}' title='{esc(o.detail)}'>{esc(cell_text(o))}</td>")
        parts.append("</tr>")
    parts.append("</table><h2>Attention weights</h2>")
    for c in run.cases:
        for t in run.targets:
            o = run.results[(c.id, t)]
            for name, (exp, act) in o.heat.items():
                png = _heatmap_png(exp, act, f"{c.id} — {name} — target {t}")
                if png:
                    parts.append(f"<figure><img alt='{esc(c.id)} {esc(name)} {esc(t)}' src='data:image/png;base64,{png}'>"
                                 f"<figcaption>{esc(c.id)}: {esc(name)}, target {esc(t)} ({esc(cell_text(o))})</figcaption></figure>")
    parts.append("</body></html>\n")
    write_atomic(path, "".join(parts))
