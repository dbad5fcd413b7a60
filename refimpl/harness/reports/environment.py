"""The environment a result was measured in: Python, NumPy and its BLAS, then what each built-in column runs on
(its ``Column.versions``: R, rpy2, attention, knitr, torch, onnxruntime-node), in the matrix's order.

R's facts come from :func:`refimpl.r.bridge.probe` (``Rscript`` in a subprocess): printing the environment
never embeds R, so it cannot abort however R is broken.
"""
from __future__ import annotations

import platform
import sys

import numpy as np

from ..columns import versions

__all__ = ["environment", "describe"]

_LABELS = {"r": "R"}


def environment() -> dict[str, str]:
    env = {"python": sys.version.split()[0], "numpy": np.__version__, "platform": platform.platform()}
    try:
        from threadpoolctl import threadpool_info
        blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        env["blas"] = ", ".join(f"{i['internal_api']} {i.get('version') or ''} ({i.get('num_threads')} threads, "
                                f"{i.get('architecture') or ''})".replace(" ,", ",") for i in blas) or "unknown"
    except ImportError:
        env["blas"] = "unknown (threadpoolctl not installed)"
    env.update(versions())
    return env


def describe(env: dict[str, str]) -> str:
    """One line: the versions a report header shows (details such as ``r_reason`` stay in the JSON)."""
    own = ("python", "numpy", "platform", "blas")
    columns = ", ".join(f"{_LABELS.get(k, k)} {v}" for k, v in env.items() if k not in own and "_" not in k)
    return f"Python {env['python']}, NumPy {env['numpy']} ({env['blas']})" + (f", {columns}" if columns else "")
