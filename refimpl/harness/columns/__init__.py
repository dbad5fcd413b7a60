"""The built-in columns of the matrix: one module each, registered here by name, in the matrix's order.

A column module has a ``COLUMN`` (:class:`.base.Column`: its name, how its target is made, its catalogued
divergences, a line for the docs). ``builtin_targets()`` and the divergence titles the reports print are built
from this registry; adding a column is one module and its line in ``_MODULES`` (or :func:`register` from a test).
"""
from __future__ import annotations

from typing import Callable

from ...r.compat import DIVERGENCES as R_DIVERGENCES
from ...registry import Registry
from ..targets.target import Target
from .base import Column

__all__ = ["Column", "runs_r_rows", "register", "unregister", "names", "builtin_targets", "divergence_titles",
           "DIVERGENCE_TITLES", "versions"]

_MODULES = ("refimpl_column", "r_column", "torch_column", "onnxruntime_column", "torch_mha_column")
_REGISTRY: Registry[Column] = Registry("column", __name__, _MODULES, "COLUMN")
register, unregister, names = _REGISTRY.register, _REGISTRY.unregister, _REGISTRY.names


def builtin_targets() -> dict[str, Callable[[], Target]]:
    """``{name: make}`` of every registered column, in the matrix's order (``make`` may raise Unavailable)."""
    return {c.name: c.make for c in _REGISTRY}


def runs_r_rows(names) -> bool:
    """Whether one of the columns ``names`` brings the rows whose expected values R computes."""
    names = set(names)
    return any(c.r_rows for c in _REGISTRY if c.name in names)


def versions() -> dict[str, str]:
    """What every registered column runs on (``Column.versions``), merged in the matrix's order."""
    out: dict[str, str] = {}
    for c in _REGISTRY:
        out.update(c.versions())
    return out


def divergence_titles() -> dict[str, str]:
    """Every catalogued divergence: the R package's (refimpl.r.compat) and each column's."""
    out = dict(R_DIVERGENCES)
    for c in _REGISTRY:
        out.update(c.divergences)
    return out


DIVERGENCE_TITLES = divergence_titles()
