"""Hand-made cases for the adapter tests (tests/test_adapter_*.py): a mask, ALiBi, GQA or a softcap meeting a causal
band or a window, in both alignments — combinations the suites do not hold — and the cases an API is tried on."""
from refimpl.harness import apis
from refimpl.harness.cases.families import select
from refimpl.harness.cases.features import CaseSpec

# a mask meeting a band: the start every API's list shares
BAND_MEETS_MASK = [dict(mask="bool", is_causal=True),
                   dict(mask="bool", is_causal=True, alignment="bottom-right", window=(2, -1)),
                   dict(mask="padding", window=(1, 3)),
                   dict(mask="additive", is_causal=True)]


def combos(family: str, sizes: dict, rows: list[dict]) -> list[CaseSpec]:
    """One CaseSpec per row of fields, on top of ``sizes`` (Sq, Sk, D, Dv, B, Hq, Hkv), indexed in order."""
    return [CaseSpec(family=family, index=i, **{**sizes, **row}) for i, row in enumerate(rows)]


def cases_for(api, extra: list[CaseSpec]) -> list[CaseSpec]:
    """The quick suite's float64 cases ``api`` can express, then ``extra``."""
    return [s for s in select(None, "quick", ("float64",)) if apis.expressible(api, s) is None] + extra
