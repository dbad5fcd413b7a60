"""Diagnosis with dropout (--dropout P): each broken kernel of tests/zoo/dropout_impls.py (written from public reports
by a helper that never read refimpl) is named by the model of refimpl/bugs_dropout.py its mistake is, or `unknown`
where no model says what it did; correct kernels get no line. Kernels built from each variant name it."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from refimpl.bugs_dropout import MODELS
from refimpl.harness.analysis.diagnosis import diagnose
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.target_spec import Target

ZOO = Path(__file__).parent / "zoo" / "dropout_impls.py"
STORE = CaseStore()
# (the zoo's kernels take ALiBi slopes (Hq,) only: flash_attn_func's (B, Hq) form is left out here)
SPECS = [s for s in select(None, "quick", ("float64",)) if not s.long and not s.alibi_per_batch][::3]
VARLEN = select(["varlen"], "quick", ("float64",))
# the zoo's bug (its author's name) -> the model that names it; None: no model says what it did (unknown is right)
NAMED = {"no-rescale": "dropout-scale", "scale-by-p": "dropout-scale", "keep-prob-swapped": "dropout-rate-swapped",
         "smask-redrawn": None, "smask-sign": "dropout-inverted", "smask-packed-layout": None,
         "dropout-on-output": None, "dropout-before-softmax": "dropout-renormalised",
         "dropout-ignored": "dropout-ignored", "mask-polarity": "dropout-inverted", "scale-inv-p": "dropout-scale",
         "rowsum-after-dropout": "dropout-renormalised"}
UNSEEN_BY_ONE_CASE = {"keep-rate-uint8"}          # passes every case (tests/test_dropout.py says why)


def _zoo():
    spec = importlib.util.spec_from_file_location("zoo_dropout_diag", ZOO)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


Z = _zoo()


def _names(fn, api, specs, p):
    t = Target("t", fn, api=api, dropout=p)
    results = [run_one(t, s, STORE) for s in specs]
    lines = diagnose(results, STORE, target="t", specs={s.id: s for s in specs})
    return results, [line.split(": ", 1)[1].split(" — ")[0] for line in lines]


@pytest.mark.parametrize("entry", [e for e in Z.CATALOG if e["bug"] not in UNSEEN_BY_ONE_CASE],
                         ids=[e["name"] for e in Z.CATALOG if e["bug"] not in UNSEEN_BY_ONE_CASE])
def test_each_dropout_zoo_kernel_is_named_by_its_model_or_unknown(entry):
    import torch
    torch.manual_seed(0)
    results, names = _names(getattr(Z, entry["fn"]), entry["api"],
                            VARLEN if entry["api"] == "flash-attn-varlen" else SPECS, 0.3)
    if entry["correct"]:
        assert names == [] and not [r for r in results if Status(r.status).failed], names
        return
    assert any(Status(r.status).failed for r in results)
    want = NAMED[entry["bug"]]
    assert names == [want or "unknown"], (entry["bug"], names)


def _given(variant):
    """A kernel of the refimpl protocol that makes one variant's mistake with the keep-mask it is given."""
    def fn(q, k, v, mask=None, scale=None, dropout_p=0.0, dropout_mask=None):
        s = (q @ np.swapaxes(k, -1, -2)) * (1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
        if mask is not None:
            s = np.where(mask, s, -np.inf) if mask.dtype == bool else s + mask
        m = np.max(s, axis=-1, keepdims=True)
        e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
        total = e.sum(axis=-1, keepdims=True)
        w = e / np.where(total > 0, total, 1.0)
        if dropout_mask is None or dropout_p == 0.0:
            return w @ v
        return variant.fn(w, v, np.broadcast_to(dropout_mask, w.shape), dropout_p)     # (MHA cases: v per head)
    return fn


@pytest.mark.parametrize("model,label", [(m.name, v.label) for m in MODELS.values() for v in m.variants
                                         if m.name != "dropout-rate-swapped"])
def test_a_kernel_built_from_each_variant_is_named_by_its_model_and_variant(model, label):
    variant = next(v for v in MODELS[model].variants if v.label == label)
    specs = [s for s in SPECS if s.Hq == s.Hkv][:12]
    t = Target("t", _given(variant), api="refimpl", dropout=0.3)
    results = [run_one(t, s, STORE) for s in specs]
    assert any(r.status == Status.FAIL for r in results)
    lines = diagnose(results, STORE, target="t", specs={s.id: s for s in specs})
    assert len(lines) == 1 and lines[0].startswith(f"diagnosis t: {model} — "), lines
    assert len(MODELS[model].variants) == 1 or lines[0].endswith(f"({label})"), lines
