"""--dropout P: a target's output replayed from the dropout pattern it returns (flash-attn's and flash-attn-varlen's
S_dmask), and the pattern's keep rate tested against 1 - p (binomial, rejected at p < 1e-6); or, for the refimpl
protocol, replayed from the keep-mask refimpl draws and gives it (dropout_mask=KEEP); flash-attn-kvcache has none."""
import importlib.util
from dataclasses import replace
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
from refimpl.harness.apis import Returned, get as get_api
from refimpl.harness.apis.base import dropout_draw
from refimpl.harness.analysis.diagnosis import diagnose
from refimpl.harness.verdicts.dropout_judge import Z_REJECT, judge_dropout, keep_rate, replayed

SUPPORT = Path(__file__).parent / "support" / "dropout_kernels.py"
GIVEN = Path(__file__).parent / "support" / "given_dropout_kernels.py"
KVCACHE = Path(__file__).parent / "support" / "kvcache_kernels.py"
STORE = CaseStore()
SPECS = [s for s in select(None, "quick", ("float64", "float32")) if not s.long]


def _kernels(path=SUPPORT, name="dropout_kernels_t"):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


K = _kernels()
G = _kernels(GIVEN, "given_dropout_kernels_t")
# flash-attn-varlen: every packed (varlen) case and every 3rd dense one (the loop over sequences is slower)
VARLEN = [s for i, s in enumerate(SPECS) if s.family == "varlen" or i % 3 == 0]


def _run(fn, p=0.1, specs=SPECS, api="flash-attn"):
    return [run_one(Target(fn.__name__, fn, api=api, dropout=p), s, STORE) for s in specs]


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


@pytest.mark.parametrize("rate", [0.1, 0.25, 0.5])
def test_dropout_active_at_p_zero_is_diagnosed_with_the_rate_it_used(rate):
    name = f"always_{rate}"
    kernel = K._make(f"always:{rate}")
    results = [run_one(Target(name, kernel, api="flash-attn"), s, STORE) for s in SPECS if s.dtype == "float64"]
    lines = diagnose(results, STORE, target=name)
    assert len(lines) == 1 and lines[0].startswith(f"diagnosis {name}: dropout-active-at-zero — "), lines
    assert f"scaled by {1 / (1 - rate):.4g} (1/(1 - p) for p = {rate:.3g})" in lines[0], lines[0]
    dropped = float(lines[0].rsplit("(", 1)[1].rstrip("%)")) / 100
    assert abs(dropped - rate) < 0.05, lines[0]


def test_a_right_kernel_and_other_mistakes_are_not_called_dropout_at_zero():
    from refimpl.harness.analysis.fitting_dropout import dropout_at_zero_line
    for fn in (K.dropout_right, K.dropout_no_rescale):                 # right at p = 0: nothing fails
        results = [run_one(Target("t", fn, api="flash-attn"), s, STORE) for s in SPECS[:40]]
        assert not diagnose(results, STORE, target="t")
    data = [(d, d.expected * 1.05) for d in (STORE.get(s) for s in SPECS[:40]) if d.weights is not None]
    assert dropout_at_zero_line("t", data) == []                       # a uniform 1.05: every c_j = 1.05, none 0


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


def test_a_right_varlen_dropout_kernel_conforms_and_its_padding_is_not_judged():
    specs = VARLEN + [s for s in select(["varlen"], "quick", ("float16", "bfloat16"))]
    results = _run(K.varlen_right, 0.2, specs, api="flash-attn-varlen")
    judged = [r for r in results if r.status in (Status.PASS, Status.FAIL)]
    assert len(judged) > 60 and sum(r.id.startswith("varlen/") for r in judged) >= 24
    assert not [r for r in results if Status(r.status).failed], \
        [(r.id, r.detail) for r in results if Status(r.status).failed][:3]


@pytest.mark.parametrize("name", ["varlen_no_rescale", "varlen_scaled_by_p", "varlen_before_softmax"])
def test_each_varlen_dropout_mistake_is_caught(name):
    results = _run(getattr(K, name), 0.1, VARLEN, api="flash-attn-varlen")
    failed = [r for r in results if r.status == Status.FAIL]
    assert len(failed) >= 0.8 * len([r for r in results if r.status != Status.NA]), len(failed)
    assert any(r.id.startswith("varlen/") for r in failed)
    assert all("output with dropout p=0.1" in r.detail and "the target's own pattern" in r.detail for r in failed)


def test_the_varlen_pattern_is_each_sequences_block_of_s_dmask():
    """flash-attn's mha_varlen_fwd: S_dmask (B, Hq, round128(max_seqlen_q), round128(max_seqlen_k)), sequence b's
    query i and key j at [b, h, i, j]; the dense form's padding stays False (no weight there to judge)."""
    api = get_api("flash-attn-varlen")
    spec = next(s for s in SPECS if s.family == "varlen" and len({lq for lq, _ in s.seqlens}) > 1)
    data = STORE.get(spec)
    dm = np.random.default_rng(5).normal(size=(spec.B, spec.Hq, 128 + spec.Sq, 128 + spec.Sk))
    _, _, keep = api.unpack_dropout((None, None, dm), data)
    assert keep.shape == (spec.B, spec.Hq, spec.Sq, spec.Sk)
    for b, (lq, lk) in enumerate(spec.seqlens):
        assert np.array_equal(keep[b, :, :lq, :lk], dm[b, :, :lq, :lk] >= 0)
        assert not keep[b, :, lq:].any() and not keep[b, :, :, lk:].any()
    with pytest.raises(TypeError, match="S_dmask has shape"):
        api.unpack_dropout((None, None, dm[:, :, :1]), data)


def test_dropout_is_refused_for_the_kvcache_api_before_any_case_runs():
    def no_worker(*a):
        raise AssertionError("a worker was started")
    with pytest.raises(UsageError, match="--api flash-attn-kvcache has no dropout: flash_attn_with_kvcache takes "
                                         "no dropout_p.*refimpl \\(given its keep-mask\\), flash-attn \\(returns"):
        load_target(f"{KVCACHE}:attn", api="flash-attn-kvcache", dropout=0.1, isolate=no_worker)


def test_a_right_given_mask_kernel_conforms_in_every_precision():
    specs = [s for s in select(None, "quick", ("float64", "float32", "float16", "bfloat16")) if not s.long]
    results = _run(G.given_right, 0.2, specs, api="refimpl")
    judged = [r for r in results if r.status in (Status.PASS, Status.FAIL)]
    assert len(judged) > 300
    assert not [r for r in results if Status(r.status).failed], \
        [(r.id, r.detail) for r in results if Status(r.status).failed][:3]
    assert all(r.got is None or r.got.dropout_given for r in judged)


@pytest.mark.parametrize("name", ["given_ignores_mask", "given_scaled_by_1_minus_p", "given_before_softmax"])
def test_each_given_mask_mistake_is_caught(name):
    results = _run(getattr(G, name), 0.1, SPECS, api="refimpl")
    failed = [r for r in results if r.status == Status.FAIL]
    assert len(failed) >= 0.5 * len([r for r in results if r.status != Status.NA]), len(failed)
    assert all("replayed from the keep-mask it was given" in r.detail for r in failed), failed[0].detail


def test_the_given_mask_is_refimpls_seeded_draw_in_full_and_has_no_keep_rate_test():
    seen = []

    def spy(q, k, v, mask=None, scale=None, dropout_p=0.0, dropout_mask=None):
        seen.append((dropout_p, dropout_mask))
        bshd = len(seen) == 2                                    # the second call is --layout BSHD's
        q, k, v = (np.swapaxes(a, 1, 2) if bshd else a for a in (q, k, v))
        out = G.given_right(q, k, v, mask, scale, dropout_p, dropout_mask)
        return np.swapaxes(out, 1, 2) if bshd else out
    spec = next(s for s in SPECS if s.family == "bool-mask" and s.B > 1)
    for layout in ("SD", "BSHD"):
        r = run_one(Target("s", spy, api="refimpl", layout=layout, dropout=0.3), spec, STORE)
        assert r.status == Status.PASS, r.detail
    (p1, m1), (p2, m2) = seen
    assert p1 == p2 == 0.3 and m1.dtype == bool and m1.shape == (spec.B, spec.Hq, spec.Sq, spec.Sk)
    assert np.array_equal(m1, m2) and np.array_equal(m1, dropout_draw(spec, 0.3))       # seeded by the case
    data = STORE.get(spec)
    assert not np.array_equal(m1, dropout_draw(replace(spec, index=spec.index + 1), 0.3))    # another case's
    assert abs(keep_rate(data, m1, 0.3)[2]) < Z_REJECT                                   # refimpl's draw is fair
    biased = np.random.default_rng(1).random(m1.shape) >= 0.6                             # kept 40%, not 70%
    got = Returned(replayed(data, biased, 0.3), None, "float64", [], dropout_keep=biased, dropout_p=0.3)
    assert any("dropout pattern: kept" in x for x in judge_dropout(data, got, 1.0)[1])   # a returned pattern: tested
    got.dropout_given = True
    assert judge_dropout(data, got, 1.0)[1] == []                                        # a given one: not tested


# --- kernels written from FlashAttention's documentation and cited reports by a helper that never read refimpl ---
ZOO = Path(__file__).parent / "zoo" / "dropout_impls.py"
Z = _kernels(ZOO, "zoo_dropout_impls") if ZOO.exists() else None
VARLEN_SPECS = [s for s in select(["varlen"], "quick", ("float64",))]


# what one case's keep-rate test cannot see (each case is judged alone, a few thousand weights at most)
BEYOND_ONE_CASE = {"fa_uint8_keep_threshold": "an 8-bit keep threshold drops 1/256 where p asks 0.002: a rate off by "
                                              "0.002 needs ~1e5 weights at once; one case has a few thousand"}


@pytest.mark.skipif(Z is None, reason="tests/zoo/dropout_impls.py is not in this checkout")
@pytest.mark.parametrize("entry", getattr(Z, "CATALOG", []), ids=[e["name"] for e in getattr(Z, "CATALOG", [])])
def test_zoo_dropout_kernels_correct_conform_and_broken_are_caught(entry):
    """Each correct kernel conforms at p = 0.1, 0.3 and 0.002 (replayed from its own pattern, or refimpl's given
    one); each broken one fails at one of them (a keep test drawn through 8-bit thresholds shows only at tiny p)."""
    if entry["name"] in BEYOND_ONE_CASE:
        pytest.skip(BEYOND_ONE_CASE[entry["name"]])
    import torch
    torch.manual_seed(0)                                  # the zoo's kernels draw from torch's generator
    np.random.seed(0)
    fn = getattr(Z, entry["fn"])
    specs = (VARLEN_SPECS if entry["api"] == "flash-attn-varlen" else SPECS[::2])
    specs = [s for s in specs if not s.alibi_per_batch]   # the zoo's kernels take ALiBi slopes (Hq,) only
    failed = [(r.id, p, r.detail) for p in (0.1, 0.3, 0.002) for r in _run(fn, p, specs, entry["api"])
              if Status(r.status).failed]
    if entry["correct"]:
        assert not failed, failed[:3]
    else:
        assert failed, f"{entry['name']} passed every case"


def test_the_keep_rate_test_is_exact_where_few_drops_are_expected():
    """One drop among six weights at p = 0.002 happens 1.2% of the time (1 - 0.998**6): not rejected, though the
    normal approximation's z is -9; 100 drops among 10,000 at p = 0.002 (20 expected) are."""
    from math import comb
    from refimpl.harness.verdicts.dropout_judge import binomial_two_sided
    assert binomial_two_sided(1, 6, 0.002) == pytest.approx(2 * (1 - 0.998 ** 6), rel=1e-9)
    exact = 2 * sum(comb(40, j) * 0.3 ** j * 0.7 ** (40 - j) for j in range(0, 6))      # lower tail, small n
    assert binomial_two_sided(5, 40, 0.3) == pytest.approx(exact, rel=1e-9)
    assert binomial_two_sided(100, 10_000, 0.002) < 1e-6 < binomial_two_sided(30, 10_000, 0.002)
    assert binomial_two_sided(0, 6, 0.002) == 1.0


ZERO = _kernels(Path(__file__).parent / "zoo" / "dropout_zero_impls.py", "dropout_zero_impls_t")


@pytest.mark.parametrize("entry", ZERO.CATALOG, ids=lambda e: e["name"])
def test_the_zoos_kernels_dropping_at_p_zero_are_caught_and_named_with_their_rate(entry):
    """tests/zoo/dropout_zero_impls.py (a helper's, from public reports, written without reading refimpl)."""
    name = entry["name"]
    fn = entry["fn"] if callable(entry["fn"]) else getattr(ZERO, entry["fn"])
    results = [run_one(Target(name, fn, api="flash-attn"), s, STORE)
               for s in SPECS if s.dtype == "float64"]
    failed = [r for r in results if Status(r.status).failed]
    lines = diagnose(results, STORE, target=name)
    if entry["correct"]:
        assert not failed and not lines, (failed[:2], lines)
        return
    assert len(failed) > 20
    assert len(lines) == 1 and lines[0].startswith(f"diagnosis {name}: dropout-active-at-zero — "), lines
    rate = entry["rate"]
    assert f"(1/(1 - p) for p = {rate:.3g})" in lines[0], lines[0]
