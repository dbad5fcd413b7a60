"""The forms fitted from the output when no bug model of the table fits, in order: the attention written to the
wrong place (:mod:`.fitting_placement`), output channels from the wrong channel (:mod:`.fitting_columns`), query
heads reading the wrong kv head (:mod:`.fitting_heads`), batches reading another batch's K/V or mask
(:mod:`.fitting_sources`), heads given another head's ALiBi slope (:mod:`.fitting_slopes`), an argument ignored
under a fitted condition (:mod:`.fitting_ignored`), a model of the table on some calls only
(:mod:`.fitting_conditional`), the band's edges and alignment (:mod:`.fitting_band`), each row the right one times
a factor (the softmax's denominator, :mod:`.fitting_normaliser`; after the conditional fit, so a table model with
such rows on some calls keeps its name and condition), split-KV partials merged with the wrong weights
(:mod:`.fitting_splits`). Each parameter (the map, the rule, the condition: :mod:`.conditions`) is fitted on the
failing cases and checked against the passing ones; the first that holds is named."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .fitting_band import band_line
from .fitting_conditional import conditional_line
from .fitting_columns import columns_line
from .fitting_heads import heads_line
from .conditions import Seen, condition
from .fitting_ignored import ignored_line
from .fitting_normaliser import denominator_line
from .fitting_placement import placement_line
from .fitting_slopes import slopes_line
from .fitting_sources import sources_line
from .fitting_splits import splits_line

__all__ = ["fitted_form_lines"]


def fitted_form_lines(target: str, fail_cases: list, pass_cases: list, close: Callable, explains: Callable,
                      model_out: Callable, models: dict) -> list[str]:
    """``fail_cases``: the failing sample, (CaseData, output) pairs; ``pass_cases``: every usable passing case;
    ``close(a, b, v)``: the diagnosis's closeness (atol scaled by max |v|); ``explains(out, data, got)``;
    ``model_out(variant, data)``: a table variant's output on a case; ``models``: the table (refimpl.bugs.MODELS)."""
    def changes(out, data) -> bool:             # it changes a passing case's output where the judge holds it
        if np.shape(out) != data.expected.shape:
            return True
        live = np.broadcast_to(data.live, data.expected.shape[:-1])
        return not close(np.asarray(out)[live], data.expected[live], data.v)

    def reproduces(out, data, got) -> bool:
        return close(out, got, data.v) and explains(out, data, got)
    return (placement_line(target, fail_cases, pass_cases)
            or columns_line(target, fail_cases)
            or heads_line(target, fail_cases, pass_cases, close, changes, condition, Seen)
            or sources_line(target, fail_cases, pass_cases, close, changes, condition, Seen)
            or slopes_line(target, fail_cases, pass_cases, close, changes, condition, Seen)
            or ignored_line(target, fail_cases, pass_cases, reproduces, changes)
            or conditional_line(target, fail_cases, pass_cases, reproduces, changes, model_out, models)
            or band_line(target, fail_cases, pass_cases, close, explains)
            or denominator_line(target, fail_cases)      # after the conditional fit: a table model whose rows
            or splits_line(target, fail_cases))          # are the right ones times a factor keeps its condition
