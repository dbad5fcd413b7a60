"""``fixture:<id>`` cases: every golden fixture as a row of the check.

refimpl is checked on every expectation of the fixture. Another target replaces the attention steps of
the fixture's computation (sdpa, general/self/multi-head attention; see
:data:`refimpl.fixtures.steps.ATTENTION_STEPS`) and is checked on their outputs.
"""
from __future__ import annotations

import numpy as np

from ... import tolerance as tol
from ...attention import self_attention_with
from ...errors import Unavailable
from ...fixtures.schema import Fixture
from ...fixtures.steps import ATTENTION_STEPS, STEP_FUNCTIONS, evaluate, tolerance_of, verify_fixture
from ...multihead import multi_head_with
from ...precision import get as precision
from ..cases import Case, Outcome, Status, error_outcome, summarise
from ..targets.target import Target

__all__ = ["fixture_case", "attention_fixtures"]


def _weights_2d(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        return a[None, :]
    while a.ndim > 2:
        a = a[0]
    return a


def _target_functions(target: Target, calls: list) -> dict:
    """The fixture's step functions with every attention step routed through ``target``; ``calls`` collects
    the (q, k, v, mask) of each call (the divergence catalogue is consulted on them)."""
    def attend(q, k, v, mask=None, scale=None, is_causal=False):
        calls.append((q, k, v, mask))
        return target.attend(q, k, v, mask=mask, scale=scale, is_causal=is_causal)

    def general(query, keys, values, scale=None):
        out, w = attend(np.asarray(query)[None, :], keys, values, scale=scale)
        return out[0], (None if w is None else w[0])

    fns = dict(STEP_FUNCTIONS)
    fns["sdpa"] = attend
    fns["general_attention"] = general
    fns["general_attention_matrix"] = lambda words, w_q, w_k, w_v, scale=None: self_attention_with(
        attend, words, w_q, w_k, w_v, scale=scale)
    fns["self_attention"] = lambda x, w_q, w_k, w_v, **kw: self_attention_with(attend, x, w_q, w_k, w_v, **kw)
    fns["multi_head_attention"] = lambda x, w_q, w_k, w_v, w_o=None, **kw: multi_head_with(
        attend, x, w_q, w_k, w_v, w_o, **kw)
    return fns


def attention_fixtures(fixtures: list[Fixture]) -> list[Fixture]:
    """The fixtures whose computation involves attention (the ones another target can be checked on)."""
    return [f for f in fixtures if any(s["fn"] in ATTENTION_STEPS for s in f.steps)]


def fixture_case(fx: Fixture) -> Case:
    att_steps = [st for st in fx.steps if st["fn"] in ATTENTION_STEPS]
    att_outputs = [n for st in att_steps for n in st["out"]]
    weight_names = [st["out"][1] for st in att_steps if len(st["out"]) > 1]   # attention steps return (out, weights)

    def heat_of(env: dict) -> dict:
        heat = {}
        for name in weight_names:
            exps = [e for e in fx.expected.get(name, []) if e["array"] is not None]
            if exps and env.get(name) is not None:
                heat[name] = (_weights_2d(exps[0]["array"]), _weights_2d(env[name]))
        return heat

    def run(target: Target) -> Outcome:
        if target.is_reference:
            env = evaluate(fx)
            comps = [(f"{n} [{by}]", c) for n, by, c in verify_fixture(fx, env)]
            return summarise(comps, [], heat_of(env))
        if precision(target.precision).low:
            return Outcome(Status.NA, detail=f"computes in {target.precision}; this fixture's expectations are float64 "
                                             f"(the families judge it by its own precision's budget)")
        calls: list = []
        try:
            env = evaluate(fx, _target_functions(target, calls))
        except Unavailable as e:
            return Outcome(Status.SKIP, detail=str(e))
        except Exception as e:  # the target raised
            return error_outcome(e, sorted({c for q, k, v, m in calls for c in target.known(q, k, v, m)}))
        known = sorted({c for q, k, v, m in calls for c in target.known(q, k, v, m)})
        comps = []
        for name in att_outputs:
            if env.get(name) is None:
                continue                                       # the target returns no weights
            for exp in fx.expected.get(name, []):
                if exp["by"] == "shape":
                    continue
                comps.append((f"{name} [{exp['by']}]",
                              tol.compare(env[name], exp["array"], tolerance_of(exp["tolerance"], exp["array"]))))
        return summarise(comps, known, heat_of(env))

    return Case(f"fixture:{fx.id}", "fixtures", fx.source["part"], run)
