"""The condition under which a mistake shows, searched from the cases rather than assumed: the diagnosis's fits
of a form that holds on some calls only (an argument ignored, a scale, a head map, a table model) share it.

:func:`condition` takes the failing cases, the passing cases the form would change ("decided") and every passing
case, each as a :class:`Seen` (its spec's boolean features, and whether a mask argument reached the target), and
returns "always" (nothing decided), "when X" or None.
"""
from __future__ import annotations

from itertools import combinations
from typing import Callable

__all__ = ["Seen", "condition"]


class Seen:
    """A case as the condition search reads it: its spec's features and sizes, and what reached the target (a mask
    argument: the API's own folding of bands, ALiBi and padding into it)."""

    def __init__(self, data):
        self.spec, self.mask_given = data.spec, getattr(data, "mask_given", None)

    def features(self) -> dict:
        extra = {} if self.mask_given is None else {"a mask argument is given": bool(self.mask_given)}
        return {**(self.spec.features() if hasattr(self.spec, "features") else {}), **extra}

    def __getattr__(self, name):
        if name == "spec":                      # not set yet (a copy, a pickle): no recursion through it
            raise AttributeError(name)
        return getattr(self.spec, name)


def _conditions(fail_specs: list, decided_specs: list) -> list[tuple[str, Callable]]:
    """(name, predicate on a spec): the boolean case features, either way round. Size thresholds drawn from the
    failing cases are not offered: from a sample of 40 they separate by accident too easily."""
    names = sorted({n for s in fail_specs + decided_specs for n, x in s.features().items() if isinstance(x, bool)})
    out: list[tuple[str, Callable]] = []
    for n in names:
        out += [(n, lambda s, n=n: bool(s.features().get(n, False))),
                (f"not {n}", lambda s, n=n: not s.features().get(n, False))]
    return out


def condition(fail_specs: list, decided_specs: list, every: list | None = None) -> str | None:
    """"always", "when X": the single conditions true on every failing spec and on no decided one (else pairs of
    them), the most specific first (true on the fewest of ``every`` spec of the run); where several separate the
    cases, the first three and how many more (the cases do not pin one); None when none does."""
    if not decided_specs:
        return "always"
    conds = [(n, p) for n, p in _conditions(fail_specs, decided_specs) if all(p(s) for s in fail_specs)]
    found = [(n, p) for n, p in conds if not any(p(s) for s in decided_specs)]
    if not found:
        found = [(f"{a} and {b}", lambda s, pa=pa, pb=pb: pa(s) and pb(s))
                 for (a, pa), (b, pb) in combinations(conds, 2)
                 if not any(pa(s) and pb(s) for s in decided_specs)]
    if not found:
        return None
    pool = (every or []) + fail_specs
    names = [n for n, p in sorted(found, key=lambda c: sum(c[1](s) for s in pool))]      # the most specific first
    more = f"; or {len(names) - 3} more" if len(names) > 3 else ""
    return "when " + names[0] + (f" (or: {'; '.join(names[1:3])}{more})" if len(names) > 1 else "")
