"""Self-checks of the attention zoo (tests/zoo), independent of refimpl.

The oracle is `reference` below: O = P v with P = exp(S - logsumexp(S)) computed with np.logaddexp in float64
(a different route from the zoo's max subtraction). Correct forward implementations must agree with it (and
hence with each other) on every case in CASES; each broken one must disagree on a case designed for its bug and
agree on a benign case (proving the bug is its only fault). Backward ones are checked against central finite
differences of the reference. R ones run through Rscript (run_cases.R) and hostile ones in child processes only
(test_zoo_hostile.py).
"""
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ZOO = Path(__file__).parent


def _load(rel):
    spec = importlib.util.spec_from_file_location("zoo_selfcheck_" + rel.replace("/", "_"), ZOO / f"{rel}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


IMPLS, BROKEN, BACKWARD, R_CAT = (_load(n) for n in ("numpy_impls", "numpy_broken", "numpy_backward",
                                                     "r/r_catalog"))
MODELS = {None, "scale", "mask-polarity", "additive-mask-sign", "causal-alignment", "window-bounds",
          "softmax-axis", "weights-transposed", "no-max-subtraction", "finite-mask-fill", "low-precision",
          "gqa-grouping", "softcap", "alibi-sign", "denominator-epsilon", "blocked-tail", "online-rescale",
          "bwd-delta-term", "bwd-scale-dq", "bwd-scale-dk", "bwd-ds-transposed", "bwd-gqa-sum", "bwd-masked-nan"}


def reference(q, k, v, mask=None, scale=None, convention="zeros"):
    """(O, P) in float64; a fully masked row follows `convention` ("zeros", "nan" or "uniform")."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = np.einsum("...id,...jd->...ij", q, k) * scale               # (..., Sq, Sk)
    keep = np.ones(s.shape, bool) if mask is None else np.asarray(mask, bool)
    s, keep = np.broadcast_arrays(s, keep)
    s = np.where(keep, s, -np.inf)
    dead = ~keep.any(axis=-1, keepdims=True)
    lse = np.logaddexp.reduce(s, axis=-1, keepdims=True)
    p = np.exp(s - np.where(dead, 0.0, lse))
    p = np.where(dead, {"zeros": 0.0, "nan": np.nan, "uniform": 1.0 / s.shape[-1]}[convention], p)
    return np.einsum("...ij,...jd->...id", p, v), p


def make_case(seed, Sq=3, Sk=5, D=4, Dv=3, qb=(), kb=None, mask=None, mag=1.0, scale=None, dtype=np.float64):
    """A case dict; mask: None, "random" (may have fully masked rows), "dead" (row 0 fully masked, rest random
    but live), "causal" (bottom-right aligned, broadcast over the batch), or a bool array."""
    rng = np.random.default_rng(seed)
    kb = qb if kb is None else kb
    c = {"q": rng.standard_normal(qb + (Sq, D)) * mag, "k": rng.standard_normal(kb + (Sk, D)) * mag,
         "v": rng.standard_normal(kb + (Sk, Dv)), "scale": scale}
    c = {n: (a.astype(dtype) if isinstance(a, np.ndarray) else a) for n, a in c.items()}
    if isinstance(mask, str) and mask == "causal":
        mask = np.arange(Sk)[None, :] <= np.arange(Sq)[:, None] + Sk - Sq
    elif isinstance(mask, str):
        m = rng.random(qb + (Sq, Sk)) < 0.6
        if mask == "dead":
            m[..., :, 0] = True
            m[..., 0, :] = False
        mask = m
    c["mask"] = mask
    return c


CASES = [
    make_case(1, Sq=1, Sk=1, D=1, Dv=1),
    make_case(2, qb=(2,), mask="random"),
    make_case(3, Sq=4, Sk=7, D=5, Dv=2, qb=(2, 3), mask="dead"),
    make_case(4, Sq=5, Sk=1, D=3, Dv=4, mask=np.array([[True], [False], [True], [True], [False]])),
    make_case(5, Sq=1, Sk=6, D=2, Dv=5, qb=(3,), mask="random"),
    make_case(6, Sq=6, Sk=100, D=8, Dv=8, qb=(2,), mask="causal"),
    make_case(7, Sq=9, Sk=3, D=4, Dv=2, mask="causal"),                    # rows 0..5 fully masked
    make_case(8, Sq=3, Sk=70, D=4, Dv=6, qb=(2, 1), kb=(3,), scale=0.3),   # broadcast batch dims
    make_case(9, Sq=4, Sk=130, D=4, Dv=3, mag=30.0, mask="dead"),          # scores in the thousands
    make_case(10, Sq=3, Sk=65, D=6, Dv=2, qb=(2,), mask="dead", dtype=np.float32),
]


def _tolerance(case, dtype):
    """rtol = atol: float64 rounding, or for float32 arithmetic an exponent error ~ |q k^T| * 2^-21 times |v|."""
    if dtype == "float64" and case["q"].dtype == np.float64:
        return 1e-10
    top = np.abs(np.einsum("...id,...jd->...ij", case["q"].astype(float), case["k"].astype(float))).max()
    return 6e-7 * (10.0 + top) * max(1.0, float(np.abs(case["v"]).max()))


QUIET = dict(all="ignore")
LOUD = dict(divide="warn", over="warn", invalid="warn", under="ignore")   # NumPy's defaults; underflow is benign


def _max_err(a, r):
    with np.errstate(all="ignore"):
        return np.nanmax(np.abs(np.asarray(a, float) - r), initial=0.0)


def mismatch(fn, case, convention, tol, quiet=False):
    """None when fn(case) equals the reference under `convention`, else a description of the first difference.
    quiet=False lets floating-point warnings through (pytest turns RuntimeWarning into an error)."""
    args = {n: (a.copy() if isinstance(a, np.ndarray) else a) for n, a in case.items()}
    try:
        with np.errstate(**(QUIET if quiet else LOUD)):
            got = fn(args["q"], args["k"], args["v"], mask=args["mask"], scale=args["scale"])
    except Exception as e:                                    # broken ones may fail by shape errors
        return f"raised {type(e).__name__}: {e}"
    for n in ("q", "k", "v"):
        if not np.array_equal(args[n], case[n]):
            return f"modified its input {n}"
    out, w = got if isinstance(got, tuple) else (got, None)
    ref_out, ref_w = reference(case["q"], case["k"], case["v"], case["mask"], case["scale"], convention)
    for name, a, r in (("output", out, ref_out), ("weights", w, ref_w)):
        if a is None:
            continue
        if a.shape != r.shape or a.dtype != case["q"].dtype:
            return f"{name} has shape {a.shape} dtype {a.dtype}, expected {r.shape} {case['q'].dtype}"
        if not np.allclose(a, r, rtol=tol, atol=tol, equal_nan=True):
            return f"{name} differs by up to {_max_err(a, r)} (NaN: {np.isnan(a).sum()} vs {np.isnan(r).sum()})"
    return None


@pytest.mark.parametrize("entry", IMPLS.CATALOG, ids=lambda e: e["fn"])
def test_correct_forward_matches_reference_on_every_case(entry):
    fn = getattr(IMPLS, entry["fn"])
    for i, case in enumerate(CASES):
        problem = mismatch(fn, case, entry["convention"], _tolerance(case, entry["dtype"]))
        assert problem is None, f"{entry['fn']} on CASES[{i}]: {problem}"


def test_correct_forwards_agree_with_each_other_on_live_rows():
    case = CASES[8]                                           # 130 keys (3 blocks of 64), large scores, a dead row
    outs = {e["fn"]: getattr(IMPLS, e["fn"])(case["q"], case["k"], case["v"], case["mask"]) for e in IMPLS.CATALOG}
    outs = {n: (o[0] if isinstance(o, tuple) else o)[1:] for n, o in outs.items()}   # row 0 is fully masked
    spread = max(np.abs(a - outs["plain"]).max() for n, a in outs.items() if n != "float32")
    assert spread < 1e-10
    assert np.abs(outs["float32"] - outs["plain"]).max() < 1e-2 * np.abs(outs["plain"]).max()


def _q_times(case, factor):
    return {**case, "q": case["q"] * factor}


ROWS_DEAD = make_case(21, Sq=3, Sk=4, D=3, Dv=3, qb=(2,), mask="dead")
ROWS_LIVE = make_case(21, Sq=3, Sk=4, D=3, Dv=3, qb=(2,), mask=np.ones((3, 4), bool))
RAMP_K = {**make_case(22, Sq=3, Sk=70, D=4, Dv=3), "q": np.ones((3, 4))}
RAMP_K["k"] = np.linspace(0.0, 3.0, 70)[:, None] * np.ones((1, 4))          # the row max sits in the last block
HUGE_NEG = make_case(23, Sq=3, Sk=6, D=4, Dv=3, mask=np.arange(6) < 4)
HUGE_NEG.update(q=np.full((3, 4), 1e5), k=-np.full((6, 4), 1e5) * (1 + np.arange(6)[:, None] / 10))
F32_NEG = {**HUGE_NEG, "q": np.full((3, 4), 100.0), "k": -np.full((6, 4), 100.0),      # S = -2e4, exact in
           "v": np.repeat([[1.0], [-1.0]], [4, 2], axis=0) * np.ones((1, 3))}          # float32; kept v = +1

# broken fn -> (case designed to expose its bug, benign case on which it must still be right)
DESIGN = {
    "scale_sqrt_sk": (make_case(31, Sk=9, D=4), make_case(31, Sk=4, D=4)),
    "scale_sqrt_dv": (make_case(32, D=4, Dv=9), make_case(32, D=4, Dv=4, mask="dead")),
    "scale_inv_d": (make_case(33, D=4), make_case(33, D=1)),
    "no_scale": (make_case(34, D=4, mask="random"), make_case(34, D=1, mask="random")),
    "mask_polarity": (make_case(35, mask="dead"), make_case(35)),
    "softmax_axis": (make_case(36), make_case(36, Sq=1, Sk=1)),
    "weights_transposed": (make_case(37, Sq=3, Sk=3), make_case(37, Sq=1, Sk=1)),
    "no_max_subtraction": (make_case(38, mag=30.0), make_case(38, mask="dead")),
    "finite_mask_fill": (HUGE_NEG, ROWS_LIVE),
    "finite_mask_fill_float32": (F32_NEG, ROWS_LIVE),
    "low_precision": (make_case(39, Sk=50), make_case(39, Sk=1)),
    "denominator_epsilon": (make_case(40, Sk=1), make_case(40, mask=np.zeros((3, 5), bool))),
    "blocked_tail": (make_case(41, Sk=100), make_case(41, Sk=128, mask="dead")),
    "online_rescale": (RAMP_K, make_case(42, Sk=32, mask="dead")),
    "masked_rows_42": (ROWS_DEAD, ROWS_LIVE),
    "masked_rows_mean_v": (ROWS_DEAD, ROWS_LIVE),
    "mutates_input": (make_case(43), None),
}


@pytest.mark.parametrize("entry", BROKEN.CATALOG, ids=lambda e: e["fn"])
def test_broken_forward_fails_its_designed_case_and_only_that(entry):
    fn = getattr(BROKEN, entry["fn"])
    designed, benign = DESIGN[entry["fn"]]
    precision = "float32" if entry["dtype"] == "float32" else "float64"   # float16 arithmetic is itself the bug
    for convention in ("zeros", "nan", "uniform"):             # wrong under every accepted convention
        assert mismatch(fn, designed, convention, _tolerance(designed, precision), True) is not None, convention
    if benign is not None:
        convention = entry["convention"] or "zeros"
        assert mismatch(fn, benign, convention, _tolerance(benign, precision), True) is None


def test_designed_cases_are_passed_by_a_correct_implementation():
    """The designed cases are well-posed: the reference survives them and the correct `plain` passes them."""
    for fn, (designed, _) in DESIGN.items():
        assert mismatch(IMPLS.plain, designed, "zeros", _tolerance(designed, "float64")) is None, fn
    assert np.all(np.isfinite(reference(**{n: HUGE_NEG[n] for n in ("q", "k", "v", "mask")})[0]))


# ------------------------------------------------------------------ backward -------------------------------------
def finite_difference_grads(q, k, v, d_out, mask, scale, h=1e-5):
    """Central differences of L = sum(reference_output * d_out) with respect to every entry of q, k and v."""
    args = [np.array(a, np.float64) for a in (q, k, v)]
    grads = []
    for a in args:
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            old = a[idx]
            a[idx] = old + h
            up = np.sum(reference(*args, mask, scale)[0] * d_out)
            a[idx] = old - h
            down = np.sum(reference(*args, mask, scale)[0] * d_out)
            a[idx] = old
            g[idx] = (up - down) / (2 * h)
        grads.append(g)
    return grads


def bwd_case(seed, Sq=3, Sk=5, D=3, Dv=2, qb=(2,), kb=None, mask="dead", scale=None, orthogonal=False):
    c = make_case(seed, Sq, Sk, D, Dv, qb, kb, mask, scale=scale)
    out = reference(c["q"], c["k"], c["v"], c["mask"], scale)[0]
    d_out = np.random.default_rng(seed + 100).standard_normal(out.shape)
    if orthogonal:                                            # rowsum(d_out * out) = 0: the delta term vanishes
        d_out -= out * np.sum(d_out * out, -1, keepdims=True) / np.maximum(np.sum(out * out, -1, keepdims=True),
                                                                           1e-300)
    c["d_out"] = d_out
    c["fd"] = finite_difference_grads(c["q"], c["k"], c["v"], d_out, c["mask"], scale)
    return c


BWD_CASES = {"masked": bwd_case(51), "shared_kv": bwd_case(52, Sk=37, D=2, kb=(), mask="causal", scale=0.7),
             "square": bwd_case(53, Sq=4, Sk=4, D=4, mask=None), "d1": bwd_case(54, D=1, mask=None),
             "no_delta": bwd_case(55, mask=None, orthogonal=True), "one": bwd_case(56, Sq=1, Sk=1, mask=None)}


def bwd_mismatch(fn, c, tol, quiet=False):
    try:
        with np.errstate(**(QUIET if quiet else LOUD)):
            got = fn(c["q"], c["k"], c["v"], c["d_out"], mask=c["mask"], scale=c["scale"])
    except Exception as e:
        return f"raised {type(e).__name__}: {e}"
    for name, g, fd in zip(("dq", "dk", "dv"), got, c["fd"]):
        if g.shape != fd.shape or not np.allclose(g, fd, rtol=tol, atol=tol):
            return f"{name}: shape {g.shape} vs {fd.shape}, max error {_max_err(g, fd)}, {np.isnan(g).sum()} NaN"
    return None


@pytest.mark.parametrize("entry", [e for e in BACKWARD.CATALOG if e["correct"]], ids=lambda e: e["fn"])
def test_correct_backward_matches_finite_differences(entry):
    tol = 2e-4 if entry["dtype"] == "float32" else 1e-7
    for name, c in BWD_CASES.items():
        assert bwd_mismatch(getattr(BACKWARD, entry["fn"]), c, tol) is None, name


BWD_DESIGN = {"grad_no_delta": ("masked", "no_delta"), "grad_dq_unscaled": ("masked", "d1"),
              "grad_dk_unscaled": ("square", "d1"), "grad_ds_transposed": ("square", "one"),
              "grad_masked_nan": ("masked", "square")}


@pytest.mark.parametrize("entry", [e for e in BACKWARD.CATALOG if not e["correct"]], ids=lambda e: e["fn"])
def test_broken_backward_fails_its_designed_case_and_only_that(entry):
    fn = getattr(BACKWARD, entry["fn"])
    designed, benign = BWD_DESIGN[entry["fn"]]
    assert bwd_mismatch(fn, BWD_CASES[designed], 1e-4, quiet=True) is not None
    assert bwd_mismatch(fn, BWD_CASES[benign], 1e-7, quiet=True) is None


def test_masked_nan_backward_gives_nan_and_ds_transposed_rejects_rectangles():
    c = BWD_CASES["masked"]
    with np.errstate(all="ignore"):
        dq = BACKWARD.grad_masked_nan(c["q"], c["k"], c["v"], c["d_out"], c["mask"])[0]
    assert np.isnan(dq[:, 0]).all() and not np.isnan(dq[:, 1:]).any()
    with pytest.raises(ValueError):
        BACKWARD.grad_ds_transposed(c["q"], c["k"], c["v"], c["d_out"], c["mask"])


# ------------------------------------------------------------------ R --------------------------------------------
R_CASES = {"masked": make_case(61, Sq=3, Sk=5, D=4, Dv=2, mask="dead"), "big_sq": make_case(62, Sq=6, Sk=3, D=2),
           "one_key": make_case(63, Sq=3, Sk=1, D=2, Dv=2), "one_query": make_case(64, Sq=1, Sk=4, D=3),
           "rect": make_case(65, Sq=2, Sk=7, D=4, Dv=3), "square": make_case(66, Sq=4, Sk=4, D=4, Dv=2)}
R_DESIGN = {"attn_wrong_scale": ("rect", "square"), "attn_mask_polarity": ("masked", "rect"),
            "attn_one_key_bug": ("one_key", "one_query"), "attn_errors": ("big_sq", "masked"),
            "attn_warns": ("masked", "rect")}


@pytest.fixture(scope="module")
def r_results(tmp_path_factory):
    """{(fn, case name): result dict} from one Rscript run over every R function and case."""
    if shutil.which("Rscript") is None:
        pytest.skip("Rscript is not on PATH")
    as_json = lambda m: None if m is None else {"nrow": m.shape[0], "ncol": m.shape[1],   # noqa: E731
                                                "data": np.asarray(m, float).ravel().tolist()}
    keys = [(e["fn"], n) for e in R_CAT.CATALOG for n in R_CASES]
    cases = [{"fn": fn, **{a.upper(): as_json(R_CASES[n][a]) for a in "qkv"}, "mask": as_json(R_CASES[n]["mask"])}
             for fn, n in keys]
    d = tmp_path_factory.mktemp("zoo_r")
    (d / "in.json").write_text(json.dumps(cases))
    run = subprocess.run(["Rscript", str(R_CAT.R_RUNNER), str(d / "in.json"), str(d / "out.json")],
                         capture_output=True, text=True, timeout=60)
    if run.returncode != 0 and "jsonlite" in run.stderr:
        pytest.skip(f"R package jsonlite unavailable: {run.stderr.strip()[-200:]}")
    assert run.returncode == 0, run.stderr
    return dict(zip(keys, json.loads((d / "out.json").read_text())))


def r_mismatch(res, case):
    if not res["ok"] or res["warnings"]:
        return f"error {res.get('error')!r}, warnings {res['warnings']}"
    ref_out, ref_w = reference(case["q"], case["k"], case["v"], case["mask"])
    for key, ref in (("output", ref_out), ("weights", ref_w)):
        if res.get(key) is not None:
            m = res[key]
            got = np.array([float(x) for x in m["data"]]).reshape(m["nrow"], m["ncol"])
            if got.shape != ref.shape or not np.allclose(got, ref, rtol=1e-12, atol=1e-12):
                return f"{key} differs: {got} vs {ref}"
    return None


@pytest.mark.parametrize("entry", R_CAT.CATALOG, ids=lambda e: e["fn"])
def test_r_implementations(entry, r_results):
    if entry["correct"]:
        for name, case in R_CASES.items():
            assert r_mismatch(r_results[entry["fn"], name], case) is None, name
        return
    designed, benign = R_DESIGN[entry["fn"]]
    assert r_mismatch(r_results[entry["fn"], designed], R_CASES[designed]) is not None
    assert r_mismatch(r_results[entry["fn"], benign], R_CASES[benign]) is None


# ------------------------------------------------------------------ catalogs -------------------------------------
def test_catalog_entries_are_complete_and_name_real_functions():
    hostile = _load("hostile")                                  # imported for its CATALOG only, never called here
    r_source = R_CAT.R_SOURCE.read_text()
    for mod in (IMPLS, BROKEN, BACKWARD, hostile, R_CAT):
        names = [e["name"] for e in mod.CATALOG]
        assert len(names) == len(set(names)), mod.__name__
        for e in mod.CATALOG:
            assert {"name", "api", "fn", "correct", "model", "convention", "dtype", "features", "note"} <= set(e)
            assert e["model"] in MODELS and (e["model"] is None or not e["correct"]), e
            assert not e["correct"] or e["convention"] in ("zeros", "nan", "uniform"), e
            if mod is R_CAT:
                assert f"\n{e['fn']} <- function(Q, K, V, mask = NULL)" in r_source, e["fn"]
            else:
                assert callable(getattr(mod, e["fn"])), e["fn"]
    assert all("hostile" in e and not e["correct"] for e in hostile.CATALOG)
