"""Small hand-made cases for the diagnosis's rule tests: a spec of its own index (the store keeps cases by id) and
the judge's verdict on an output computed in the test."""
import itertools

import numpy as np

from refimpl.harness.apis import Returned
from refimpl.harness.cases.features import CaseSpec
from refimpl.harness.rows.family_cases import CaseStore
from refimpl.harness.verdicts.judge import CaseResult, judge

STORE = CaseStore()
_INDEX = itertools.count()


def rule_spec(**kw) -> CaseSpec:
    """A small case of its own (its own index: the store keeps cases by id)."""
    sizes = dict(Sq=3, Sk=5, D=4, Dv=3)
    sizes.update(kw)
    return CaseSpec("rules", next(_INDEX), **sizes)


def rule_returned(data, out, weights=None, dtype="float64") -> CaseResult:
    """The judge's verdict on ``out`` (and ``weights``) for ``data``."""
    return judge(data, Returned(np.asarray(out, np.float64), weights, dtype, []), dtype, cache={})
