"""The sample every forward diagnosis reads, one rule for all four (:mod:`.diagnosis`, :mod:`.diagnosis_kvcache`,
:mod:`.diagnosis_lse`, :mod:`.diagnosis_dropout`): at most ``MAX_FAILING`` failing and ``MAX_PASSING`` passing
cases of a target's run; a case of more than ``MAX_SCORES`` scores (B * Hq * Sq * Sk: long sequences) left out (the
dropout diagnosis never meets one: long cases are n/a under --dropout); a
model explains a failure when its distance to what the target returned is at most ``EXPLAINS`` times the expected
answer's; a case's inputs come from the case store (by its spec, or as materialised while the target ran). The
backward reads its own, smaller sample (:mod:`..verdicts.grad_judge`: a gradient case costs three backwards)."""
from __future__ import annotations

__all__ = ["MAX_FAILING", "MAX_PASSING", "EXPLAINS", "MAX_SCORES", "case_data", "small", "too_long"]

MAX_FAILING = 40
MAX_PASSING = 20
EXPLAINS = 0.5
MAX_SCORES = 4_000_000


def case_data(store, r, specs):
    """The inputs of result ``r``: from its spec when ``specs`` (id -> spec) has it, else as the store kept them
    while the target ran (None: neither)."""
    if specs is not None and r.id in specs:
        return store.get(specs[r.id])
    return store._data.get(r.id)


def small(spec) -> bool:
    """At most ``MAX_SCORES`` scores: a case the diagnosis reads (long sequences are not modelled)."""
    return spec.B * spec.Hq * spec.Sq * spec.Sk <= MAX_SCORES


def too_long(store, r, specs) -> bool:
    """Result ``r``'s case has more than ``MAX_SCORES`` scores, told without materialising it (its spec from
    ``specs``, else the case the run kept); False when neither knows it."""
    s = specs[r.id] if specs is not None and r.id in specs else getattr(store._data.get(r.id), "spec", None)
    return s is not None and not small(s)
