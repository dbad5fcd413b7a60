"""--dropout P: a target's output replayed from the dropout pattern it returns (flash-attn's S_dmask), and the
pattern's keep rate tested against 1 - p (binomial, rejected at p < 1e-6)."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from refimpl.errors import UsageError
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.target_spec import Target, load_target
from refimpl.harness.verdicts.dropout_judge import Z_REJECT, keep_rate

SUPPORT = Path(__file__).parent / "support" / "dropout_kernels.py"
STORE = CaseStore()
SPECS = [s for s in select(None, "quick", ("float64", "float32")) if not s.long]


def _kernels():
    spec = importlib.util.spec_from_file_location("dropout_kernels_t", SUPPORT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


K = _kernels()


def _run(fn, p=0.1, specs=SPECS):
    return [run_one(Target(fn.__name__, fn, api="flash-attn", dropout=p), s, STORE) for s in specs]


def test_a_right_dropout_kernel_conforms_in_every_precision():
    specs = [s for s in select(None, "quick", ("float64", "float32", "float16", "bfloat16")) if not s.long]
    results = _run(K.dropout_right, 0.2, specs)
    judged = [r for r in results if r.status in (Status.PASS, Status.FAIL)]
    assert len(judged) > 100
    assert not [r for r in results if Status(r.status).failed], \
        [(r.id, r.detail) for r in results if Status(r.status).failed][:3]


@pytest.mark.parametrize("name,words", [
    ("dropout_no_rescale", "output with dropout p=0.1"), ("dropout_scaled_by_p", "output with dropout p=0.1"),
    ("dropout_before_softmax", "output with dropout p=0.1"), ("dropout_half_rate", "dropout pattern: kept")])
def test_each_dropout_mistake_is_caught(name, words):
    results = _run(getattr(K, name))
    failed = [r for r in results if r.status == Status.FAIL]
    assert len(failed) >= 0.3 * len([r for r in results if r.status != Status.NA]), len(failed)
    assert any(words in r.detail for r in failed), failed[0].detail


def test_dropout_active_at_p_zero_fails_the_ordinary_run():
    results = [run_one(Target("a", K.dropout_always, api="flash-attn"), s, STORE) for s in SPECS]
    assert sum(r.status == Status.FAIL for r in results) > 20


def test_the_keep_rate_test_accepts_fair_patterns_and_rejects_biased_ones():
    data = next(STORE.get(s) for s in SPECS if s.B * s.Hq * s.Sq * s.Sk > 2000 and not s.dead_rows)
    rng = np.random.default_rng(3)
    zs = [keep_rate(data, rng.random(data.weights.shape) >= 0.3, 0.3)[2] for _ in range(200)]
    assert max(abs(z) for z in zs) < Z_REJECT                   # 200 fair draws: none rejected
    assert abs(np.mean(zs)) < 0.5 and 0.7 < np.std(zs) < 1.3    # z is standard normal under the null
    biased = keep_rate(data, rng.random(data.weights.shape) >= 0.2, 0.3)[2]
    assert biased > Z_REJECT


def test_dropout_is_refused_for_an_api_without_a_pattern_and_out_of_range():
    with pytest.raises(UsageError, match="--api torch-sdpa returns no dropout pattern"):
        load_target(f"{SUPPORT}:dropout_right", api="torch-sdpa", dropout=0.1)
    p = subprocess.run([sys.executable, "-m", "refimpl", "check", "--dropout", "1"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and "--dropout takes a probability 0 <= P < 1" in p.stderr
