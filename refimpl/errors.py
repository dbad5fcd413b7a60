"""The errors a user of refimpl's harness can see. Every one is a :class:`RefimplError`.

The math's own argument errors (``InputTypeError``, ``InputValueError``, ``ShapeError``,
``NonFiniteInputError``) live in :mod:`refimpl._checks`; this module adds the ones above the math:

* :class:`Unavailable` — something a step needs is not here (R, rpy2, the ``attention`` package, torch,
  Node, a published fact); the message says what and what to do. The one "is X here?" exception: a
  check column becomes ``skip`` with the message, a regeneration source is skipped with it.
* :class:`UsageError` — a command or a target was given wrongly (wrong signature, layout, return type,
  unknown name); the CLI exits 2 with the message.
"""
from __future__ import annotations

from ._checks import RefimplError

__all__ = ["RefimplError", "Unavailable", "UsageError"]


class Unavailable(RefimplError, RuntimeError):
    """A dependency is missing or hidden here; the message names it and what to do."""


class UsageError(RefimplError, ValueError):
    """The user asked for something that cannot be done as asked; the message says how to fix it."""
