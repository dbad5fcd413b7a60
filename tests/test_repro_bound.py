"""A reproduction script allows exactly the error the judge allows: both read
:func:`refimpl.harness.verdicts.judge.bounds`, so a script fails exactly when its case FAILs in the matrix, in every
dtype (the scripts once re-derived the low-precision bound without the judge's conditioning cap and passed cases the
matrix failed, by up to 17.5x)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from refimpl.harness.cases import Status
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.cases.families import select
from refimpl.harness.verdicts.judge import bounds
from refimpl.harness.analysis.repro import _script
from refimpl.harness.target_spec import Target

STORE = CaseStore()
MODULE = '''import numpy as np
from refimpl import scaled_dot_product_attention

DELTA, WHERE = {delta!r}, {where!r}


def attn(q, k, v, mask=None, scale=None):
    out = scaled_dot_product_attention(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64),
                                       mask=mask, scale=scale)[0]
    out[WHERE] += DELTA                     # one element off by DELTA
    return out.astype(q.dtype)
'''


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _specs(dtype):
    specs = [s for s in select(["sizes", "bool-mask", "extreme-logits"], "quick", (dtype,))
             if s.B * s.Hq * s.Sq * s.Sk <= 20_000]
    return specs[:4] + [s for s in specs if s.family == "extreme-logits"][:2]


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_a_script_fails_exactly_when_the_matrix_fails_its_case(dtype, tmp_path, capsys):
    agreed = {"pass": 0, "FAIL": 0}
    for spec in _specs(dtype):
        data = STORE.get(spec)
        live = np.argwhere(~data.dead)
        if not len(live):
            continue
        allowed = float(bounds(data).output.atol)
        where = tuple(int(i) for i in live[0]) + (0,)
        for factor in (0.5, 0.97, 1.03, 3.0):
            path = tmp_path / f"m_{spec.family.replace('-', '_')}_{spec.index}_{int(factor * 100)}.py"
            path.write_text(MODULE.format(delta=factor * allowed, where=where))
            target = Target(f"{path}:attn", _load(path, path.stem).attn)
            verdict = run_one(target, spec, STORE)
            assert verdict.status in (Status.PASS, Status.FAIL), (spec.id, verdict.detail)
            script = tmp_path / f"{path.stem}_repro.py"
            script.write_text(_script(target, data))
            code = _load(script, script.stem).main()
            said = capsys.readouterr().out
            assert (code == 1) == (verdict.status == Status.FAIL), (spec.id, factor, verdict.detail, said)
            agreed["FAIL" if code else "pass"] += 1
    assert agreed["pass"] >= 4 and agreed["FAIL"] >= 8, agreed       # both verdicts were exercised


ZOO = Path(__file__).parent / "zoo"
PAIRS = [("torch-sdpa", "torch_sdpa_impls", "sdpa_plain", "sdpa_gqa_modulo"),
         ("flash-attn", "flash_impls", "flash_plain", "flash_gqa_modulo"),
         ("jax", "jax_impls", "jax_plain", "jax_gqa_modulo"),
         ("hf", "hf_impls", "hf_eager", "hf_gqa_tile")]


@pytest.mark.parametrize("api,module,good,bad", PAIRS, ids=[p[0] for p in PAIRS])
def test_every_apis_scripts_agree_with_the_matrix(api, module, good, bad, tmp_path, capsys):
    """The script calls the target as the API does (its argument names, layout, what it returns): a correct
    kernel's scripts pass and a broken one's fail exactly where the matrix says so."""
    path = ZOO / f"{module}.py"
    mod = _load(path, f"zoo_{module}")
    from refimpl.harness.apis import expressible
    specs = [s for s in select(["gqa"], "quick", ("float32",))
             if s.B * s.Hq * s.Sq * s.Sk <= 20_000 and expressible(api, s) is None][:3]
    assert specs
    seen = set()
    for name in (good, bad):
        target = Target(f"{path}:{name}", getattr(mod, name), api=api)
        for spec in specs:
            verdict = run_one(target, spec, STORE)
            script = tmp_path / f"{api.replace('-', '_')}_{name}_{spec.index}.py"
            script.write_text(_script(target, STORE.get(spec)))
            code = _load(script, script.stem).main()
            said = capsys.readouterr().out
            assert (code == 1) == (verdict.status == Status.FAIL), (name, spec.id, verdict.detail, said)
            seen.add((name, verdict.status))
    assert (good, Status.PASS) in seen and (bad, Status.FAIL) in seen, seen
