"""The environment a result was measured in: Python, NumPy and its BLAS, R, rpy2, attention, knitr, torch.

R's facts come from :func:`refimpl.r.bridge.probe` (``Rscript`` in a subprocess): printing the environment
never embeds R, so it cannot abort however R is broken.
"""
from __future__ import annotations

import platform
import sys

import numpy as np

from .r import bridge

__all__ = ["environment", "describe"]


def environment() -> dict[str, str]:
    env = {"python": sys.version.split()[0], "numpy": np.__version__, "platform": platform.platform()}
    try:
        from threadpoolctl import threadpool_info
        blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        env["blas"] = ", ".join(f"{i['internal_api']} {i.get('version') or ''} ({i.get('num_threads')} threads, "
                                f"{i.get('architecture') or ''})".replace(" ,", ",") for i in blas) or "unknown"
    except ImportError:
        env["blas"] = "unknown (threadpoolctl not installed)"
    a = bridge.probe()        # R asked in a subprocess: a broken R_HOME or package cannot abort this process
    env["r"] = a.r_version or "unavailable"
    env["rpy2"] = a.rpy2_version or "unavailable"
    env["attention"] = a.attention_version or "unavailable"
    env["knitr"] = a.knitr_version or ("missing (the vignettes' setup chunk needs it)" if a.r_version
                                       else "unavailable")
    if not a.ok:
        env["r_reason"] = a.reason
    try:
        import torch
        env["torch"] = torch.__version__
    except ImportError:
        env["torch"] = "not installed"
    return env


def describe(env: dict[str, str]) -> str:
    """One line: the versions a report header shows."""
    return (f"Python {env['python']}, NumPy {env['numpy']} ({env['blas']}), R {env['r']}, rpy2 {env['rpy2']}, "
            f"attention {env['attention']}, torch {env['torch']}")
