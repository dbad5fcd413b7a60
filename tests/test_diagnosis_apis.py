"""Diagnosis across the APIs: each broken torch-sdpa, flash-attn and flash-attn-varlen implementation of tests/zoo
(written independently of refimpl) is diagnosed as the model its catalogue names; the correct ones are never
diagnosed."""
import importlib.util
from pathlib import Path

import pytest

from refimpl.harness.cases import Status
from refimpl.harness.analysis.diagnosis import diagnose, localise
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.cases.families import select
from refimpl.harness.target_spec import Target

ZOO = Path(__file__).parent / "zoo"
STORE = CaseStore()
SPECS = {s.id: s for s in select(None, "quick", ("float64",))}


def _module(name):
    spec = importlib.util.spec_from_file_location(f"zoo_diag_{name}", ZOO / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# low-precision is left out here: a kernel rounding logits and probabilities to float16 and the model's
# float16 softmax are each ~1e-3 from the truth and as far from each other, so neither explains the other
# (the numpy zoo's low-precision kernel is diagnosed: tests/test_diagnosis.py)
APIS = (("torch_sdpa_impls", "torch-sdpa"), ("flash_impls", "flash-attn"), ("flash_varlen_impls", "flash-attn-varlen"))
ENTRIES = [(m, e) for m, api in APIS
           for e in _module(m).CATALOG if e["api"] == api and (e["correct"] or e["model"])
           and e["model"] != "low-precision"]


# the zoo's names for what refimpl models as one: packed positions in the ALiBi distance or the window's left
# edge are variants of causal-packed-index (bugs.py; the line names the variant)
SAME_MODEL = {"alibi-packed-index": "causal-packed-index", "window-packed-index": "causal-packed-index"}


@pytest.mark.parametrize("module,entry", ENTRIES, ids=[f"{m}:{e['name']}" for m, e in ENTRIES])
def test_broken_kernels_are_diagnosed_as_their_model_and_correct_ones_never(module, entry):
    t = Target(entry["name"], getattr(_module(module), entry["fn"]), api=entry["api"])
    dtype = "float32" if entry.get("dtype") == "float32" else "float64"      # a float32 kernel: --dtype float32
    specs = SPECS if dtype == "float64" else {s.id: s for s in select(None, "quick", ("float32",))}
    results = [run_one(t, s, STORE) for s in specs.values()]
    lines = diagnose(results, STORE, target=entry["name"], specs=specs)
    if entry["correct"]:
        assert lines == [] and localise(results) == "", lines
        return
    assert any(r.status == Status.FAIL for r in results), "the broken kernel must fail somewhere first"
    models = [line.split(": ", 1)[1].split(" — ")[0] for line in lines]
    assert SAME_MODEL.get(entry["model"], entry["model"]) in models, (entry["model"], lines)


def test_transposed_weights_are_diagnosed_and_right_ones_are_not():
    numpy_broken, numpy_impls = _module("numpy_broken"), _module("numpy_impls")
    for fn, want in ((numpy_broken.weights_transposed, True), (numpy_impls.with_weights, False)):
        results = [run_one(Target("w", fn), s, STORE) for s in SPECS.values()]
        lines = diagnose(results, STORE, target="w", specs=SPECS)
        assert any("weights-transposed" in line for line in lines) == want, lines


def test_a_kernel_that_ignores_alibi_is_named_alibi_dropped_not_a_mask_read_as_the_other_kind():
    # refimpl folds ALiBi into the float mask it computes with; flash-attn hands it as slopes, never as a mask, so
    # "the float mask's finite values dropped" or "the mask skipped" would be wrong names for ALiBi ignored
    flash = _module("flash_impls")

    def no_alibi(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                 alibi_slopes=None, deterministic=False, return_attn_probs=False):
        return flash.flash_plain(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, None,
                                 deterministic, return_attn_probs)
    specs = {s.id: s for s in select(["alibi", "sizes"], "quick", ("float64",))}
    results = [run_one(Target("no_alibi", no_alibi, api="flash-attn"), s, STORE) for s in specs.values()]
    assert any(r.status == Status.FAIL for r in results)
    names = [line.split(": ", 1)[1].split(" — ")[0] for line in diagnose(results, STORE, "no_alibi", specs)]
    assert names == ["alibi-dropped"], names
