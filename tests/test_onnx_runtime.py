"""ONNX Runtime target: ONNX Attention-23 on ORT's CPU kernel against refimpl's float64 oracle.

Needs node and tools/ort/node_modules (``make setup``); skipped with the reason otherwise, or failed
when REFIMPL_REQUIRE_ORT=1. Each catalogued divergence (O1..O3) has a test asserting ORT still does it.
"""
import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import refimpl
from refimpl import tolerance
from refimpl.harness.runtimes import onnx_runtime as ortm
from refimpl.harness.columns.onnxruntime_column import DIVERGENCES as ORT_DIVERGENCES
from refimpl.harness.runtimes.onnx_runtime import (OrtCase, OrtCaseError, OrtProcessError, OrtRunError,
                                                   OrtSession, availability)

ROOT = Path(__file__).resolve().parents[1]
AVAILABLE, REASON = availability()
REQUIRED = os.environ.get("REFIMPL_REQUIRE_ORT", "") not in ("", "0")
needs_ort = pytest.mark.skipif(not AVAILABLE and not REQUIRED, reason=REASON)


@pytest.fixture(scope="module")
def sess():
    with OrtSession(timeout=60.0) as s:
        yield s


def arrays(rng, b, hq, hkv, sq, sk, d, dv, dtype=np.float32):
    """q (B, Hq, Sq, D), k (B, Hkv, Sk, D), v (B, Hkv, Sk, Dv) standard normal."""
    return [rng.standard_normal(s).astype(dtype) for s in ((b, hq, sq, d), (b, hkv, sk, d), (b, hkv, sk, dv))]


def oracle(c: OrtCase) -> np.ndarray:
    """refimpl in float64 on exactly what ORT receives (float masks in q's dtype, float32 attributes)."""
    m = c.attn_mask
    if m is not None and m.dtype != bool:
        m = m.astype(c.q.dtype).astype(np.float64)
    f32 = (lambda x: None if x is None else float(np.float32(x)))
    out, _ = refimpl.scaled_dot_product_attention(
        *(a.astype(np.float64) for a in (c.q, c.k, c.v)), mask=m, scale=f32(c.scale), is_causal=c.is_causal,
        alignment=c.alignment, softcap=f32(c.softcap), enable_gqa=c.q.shape[1] != c.k.shape[1])
    return out


def tol(c: OrtCase) -> tolerance.Tolerance:
    """Rule 3 (forward bound) in the case's dtype; an additive mask enters the softmax input like the scores."""
    n, mag = tolerance.sdpa_terms(c.q, c.k, c.v, c.scale)
    if c.attn_mask is not None and c.attn_mask.dtype != bool:
        finite = np.abs(c.attn_mask[np.isfinite(c.attn_mask)])
        n += 2.0 * float(finite.max()) if finite.size else 0.0
    return tolerance.forward(c.q.dtype, n, mag)


def check(c: OrtCase, out) -> None:
    assert not isinstance(out, Exception), out
    assert out.dtype == c.q.dtype and out.shape == c.q.shape[:3] + c.v.shape[3:]
    cmp = tolerance.compare(out, oracle(c), tol(c))
    assert cmp.ok, cmp.summary()


def feature_cases():
    rng = np.random.default_rng(20240517)
    q, k, v = arrays(rng, 2, 4, 2, 5, 7, 8, 3)              # GQA (2 query heads per kv head), Sq < Sk, Dv != D
    q2, k2, v2 = arrays(rng, 1, 3, 3, 7, 4, 16, 16)          # Sq > Sk
    h = arrays(rng, 2, 2, 1, 6, 9, 16, 8, np.float16)        # MQA in float16
    bool_m = lambda *s: rng.random(s) > 0.3                  # noqa: E731
    float_m = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {
        "plain": OrtCase(q, k, v),
        "scale": OrtCase(q, k, v, scale=0.37),
        "causal top-left Sq<Sk": OrtCase(q, k, v, is_causal=True),
        "causal top-left Sq>Sk": OrtCase(q2, k2, v2, is_causal=True),
        "causal bottom-right Sq<Sk": OrtCase(q, k, v, is_causal=True, alignment="bottom-right"),
        "causal bottom-right Sq=1": OrtCase(q[:, :, :1], k, v, is_causal=True, alignment="bottom-right"),
        "bool mask (Sk,)": OrtCase(q, k, v, attn_mask=bool_m(7)),
        "bool mask (Sq, Sk)": OrtCase(q, k, v, attn_mask=bool_m(5, 7)),
        "bool mask (Hq, Sq, Sk)": OrtCase(q, k, v, attn_mask=bool_m(4, 5, 7)),
        "bool mask (B, 1, 1, Sk)": OrtCase(q, k, v, attn_mask=bool_m(2, 1, 1, 7)),
        "float mask (B, Hq, Sq, Sk)": OrtCase(q, k, v, attn_mask=float_m(2, 4, 5, 7)),
        "float mask with -inf": OrtCase(q, k, v, attn_mask=np.where(bool_m(5, 7), 0, -np.inf).astype(np.float32)),
        "causal + bool mask": OrtCase(q, k, v, is_causal=True, attn_mask=bool_m(1, 4, 5, 7)),
        "causal + float mask": OrtCase(q2, k2, v2, is_causal=True, attn_mask=float_m(7, 4)),
        "bottom-right + bool mask": OrtCase(q, k, v, is_causal=True, alignment="bottom-right", attn_mask=bool_m(5, 7)),
        "softcap": OrtCase(q * 4, k * 4, v, softcap=2.0),
        "softcap + float mask": OrtCase(q * 4, k * 4, v, softcap=1.5, attn_mask=3 * float_m(5, 7)),
        "softcap + bool mask": OrtCase(q * 4, k * 4, v, softcap=1.5, attn_mask=bool_m(5, 7)),
        "float16": OrtCase(*h),
        "float16 causal + float mask": OrtCase(*h, is_causal=True, attn_mask=float_m(6, 9)),
        "float16 softcap + scale": OrtCase(*h, softcap=1.0, scale=0.5),
    }


FEATURES = feature_cases()


@needs_ort
def test_every_feature_matches_refimpl_in_one_run(sess):
    cases = list(FEATURES.values())
    for name, c, out in zip(FEATURES, cases, sess.run(cases)):
        try:
            check(c, out)
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None


@needs_ort
def test_the_comparison_can_fail():
    """The same case under the other causal alignment, scale or softcap is caught by check()."""
    c = FEATURES["causal top-left Sq<Sk"]
    with OrtSession() as s:
        out_tl, out_br, out_cap = s.run([c, OrtCase(c.q, c.k, c.v, is_causal=True, alignment="bottom-right"),
                                         OrtCase(c.q * 4, c.k * 4, c.v, is_causal=True, softcap=1.0)])
    with pytest.raises(AssertionError, match="of tolerance"):
        check(OrtCase(c.q, c.k, c.v, is_causal=True, alignment="bottom-right"), out_tl)
    with pytest.raises(AssertionError, match="of tolerance"):
        check(c, out_br)
    with pytest.raises(AssertionError, match="of tolerance"):
        check(OrtCase(c.q * 4, c.k * 4, c.v, is_causal=True), out_cap)


@st.composite
def ort_cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    hkv, group = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    b, sq, sk = draw(st.integers(1, 2)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    d, dv = draw(st.integers(1, 16)), draw(st.integers(1, 8))
    q, k, v = arrays(rng, b, hkv * group, hkv, sq, sk, d, dv, draw(st.sampled_from([np.float32, np.float16])))
    shape = draw(st.sampled_from([(sk,), (sq, sk), (1, sq, sk), (b, 1, sq, sk), (b, hkv * group, sq, sk)]))
    mask = draw(st.sampled_from([None, "bool", "float"]))
    m = None if mask is None else (rng.random(shape) > 0.3 if mask == "bool" else rng.standard_normal(shape))
    causal = draw(st.booleans())
    align = draw(st.sampled_from(["top-left", "bottom-right"] if sk >= sq else ["top-left"]))
    return OrtCase(q, k, v, attn_mask=m, is_causal=causal, alignment=align,
                   scale=draw(st.sampled_from([None, 0.25, 1.5])), softcap=draw(st.sampled_from([None, 0.5, 3.0])))


@needs_ort
@given(ort_cases())
def test_random_cases_match_refimpl(sess, c):
    check(c, sess.run([c])[0])


# --- catalogued divergences: each test asserts ORT still does what the catalogue says ----------------

def dead_row_case(mask_row, dtype=np.float32):
    rng = np.random.default_rng(7)
    q, k, v = arrays(rng, 1, 1, 1, 3, 4, 4, 2, dtype)
    m = np.zeros((3, 4), np.float32) if np.asarray(mask_row).dtype != bool else np.ones((3, 4), bool)
    m[1] = mask_row
    return OrtCase(q, k, v, attn_mask=m)


@needs_ort
@pytest.mark.parametrize("row, dtype", [(np.zeros(4, bool), np.float32), (np.zeros(4, bool), np.float16),
                                        (np.full(4, -np.inf, np.float32), np.float32)])
def test_O1_fully_masked_row_gives_zeros_as_refimpl_where_the_onnx_reference_gives_nan(sess, row, dtype):
    c = dead_row_case(row, dtype)
    out = sess.run([c])[0]
    assert np.array_equal(out[0, 0, 1], np.zeros(2)), out[0, 0, 1]       # ORT: exact zeros, no NaN
    assert np.array_equal(oracle(c)[0, 0, 1], np.zeros(2))               # refimpl: zeros too
    live = np.delete(np.arange(3), 1)
    assert tolerance.compare(out[:, :, live], oracle(c)[:, :, live], tol(c)).ok
    assert "O1" in ORT_DIVERGENCES


@needs_ort
@pytest.mark.parametrize("shape, what", [((1, 7), "q_sequence_length"), ((2, 1, 1, 7), "q_sequence_length"),
                                         ((5, 1), "total_sequence_length")])
def test_O2_ort_refuses_masks_broadcast_along_the_last_two_axes(sess, shape, what):
    q, k, v = FEATURES["plain"].q, FEATURES["plain"].k, FEATURES["plain"].v
    m = np.ones(shape, bool)
    raw, broadcast = sess.run([OrtCase(q, k, v, attn_mask=m, broadcast_mask=False), OrtCase(q, k, v, attn_mask=m)])
    assert isinstance(raw, OrtRunError) and what in str(raw), raw
    check(OrtCase(q, k, v, attn_mask=m), broadcast)                  # the same mask, expanded by OrtCase: fine
    assert "O2" in ORT_DIVERGENCES


@needs_ort
def test_O3_float32_lowest_in_a_float_mask_counts_as_masked(sess):
    low, high = (dead_row_case(np.full(4, x, np.float32)) for x in (np.finfo(np.float32).min, -1e30))
    out_low, out_high = sess.run([low, high])
    mean_v = low.v[0, 0].astype(np.float64).mean(axis=0)                 # (Dv,): a constant row shift
    assert np.array_equal(out_low[0, 0, 1], np.zeros(2)), out_low[0, 0, 1]
    assert np.allclose(oracle(low)[0, 0, 1], mean_v)                     # refimpl: uniform weights
    assert np.allclose(out_high[0, 0, 1], mean_v, atol=1e-6)             # ORT too, one step above its sentinel
    assert "O3" in ORT_DIVERGENCES


# --- availability, errors, expressibility ------------------------------------------------------------

@needs_ort
def test_available_here_with_the_pinned_version():
    pinned = json.loads((ROOT / "tools" / "ort" / "package.json").read_text())["dependencies"]["onnxruntime-node"]
    assert AVAILABLE, REASON
    assert REASON.startswith(f"onnxruntime-node {pinned}, node v"), REASON


@pytest.mark.parametrize("env, says", [({"REFIMPL_ORT_DIR": "{tmp}"}, "onnxruntime-node is not installed in"),
                                       ({"REFIMPL_NODE": "{tmp}/no-node"}, "node is not on PATH")])
def test_availability_says_what_is_missing(monkeypatch, tmp_path, env, says):
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    ok, reason = availability.__wrapped__()
    assert not ok and says in reason, reason


@needs_ort
def test_bad_cases_get_their_own_error_and_the_others_still_run(sess):
    good = FEATURES["plain"]
    q, k, v = good.q, good.k, good.v
    bad = {
        "with Hq a multiple of Hkv": OrtCase(q[:, :3], k, v),
        "must all be float32 or all float16": OrtCase(q, k.astype(np.float64), v),
        "must broadcast to (B, Hq, Sq, Sk)": OrtCase(q, k, v, attn_mask=np.ones((3, 7), bool)),
        "needs Sk >= Sq": OrtCase(q, k[:, :, :4], v[:, :, :4], is_causal=True, alignment="bottom-right"),
        "scale must be a positive finite float": OrtCase(q, k, v, scale=0.0),
        "softcap must be a positive finite float": OrtCase(q, k, v, softcap=float("nan")),
        "must be 4-D (B, H, S, D)": OrtCase(q[0], k[0], v[0]),
    }
    results = sess.run([good, *bad.values(), good])
    check(good, results[0])
    check(good, results[-1])
    for (says, _), r in zip(bad.items(), results[1:-1]):
        assert isinstance(r, OrtCaseError) and says in str(r), (says, r)


def test_one_worker_serves_a_whole_run_and_models_are_sent_once():
    cases = [FEATURES["plain"]] * 20 + [FEATURES["causal + bool mask"]] * 20
    with OrtSession() as s:
        pid = (s.start(), s._proc.pid)[1]
        outs = s.run(cases)
        assert s._proc.pid == pid and len(s._sent) == 2
    for c, out in zip(cases, outs):
        check(c, out)


@needs_ort
def test_a_crashed_worker_fails_only_its_case_and_a_fresh_one_runs_the_rest(monkeypatch):
    real = ortm._frame
    poison = lambda header, payloads=(): (struct.pack("<I", 5) + b"{bad}" if header.get("id") == 1  # noqa: E731
                                          else real(header, payloads))
    monkeypatch.setattr(ortm, "_frame", poison)
    cases = [FEATURES["plain"], FEATURES["scale"], FEATURES["softcap"], FEATURES["float16"]]
    with OrtSession() as s:
        outs = s.run(cases)
    assert isinstance(outs[1], OrtProcessError) and "worker exited" in str(outs[1]), outs[1]
    for i in (0, 2, 3):
        check(cases[i], outs[i])


@needs_ort
def test_a_silent_worker_times_out_and_the_session_recovers(monkeypatch):
    real = ortm._frame

    def starve(header, payloads=()):                      # announce 1000 model bytes more than are sent
        if header.get("id") == 1:
            header = dict(header, model_nbytes=header["model_nbytes"] + 1000)
        return real(header, payloads)
    monkeypatch.setattr(ortm, "_frame", starve)
    with OrtSession(timeout=1.0) as s:
        t0 = time.monotonic()
        first = s.run([FEATURES["plain"], FEATURES["scale"]])
        assert time.monotonic() - t0 < 10
        assert isinstance(first[1], OrtProcessError) and "no answer within 1 s" in str(first[1]), first[1]
        check(FEATURES["plain"], first[0])
        again = s.run([FEATURES["softcap"]])
    check(FEATURES["softcap"], again[0])


@needs_ort
def test_throughput_of_small_cases():
    """~1,500-case suites must cost the ORT column <= 30 s; 300 cases get a 6 s budget (measured: ~0.2 s)."""
    rng = np.random.default_rng(3)
    cases = []
    for i in range(300):
        b, h, sq, sk, d = (int(x) for x in rng.integers((1, 1, 1, 1, 8), (3, 5, 65, 65, 65)))
        q, k, v = arrays(rng, b, h, h, sq, sk, d, d)
        mask = rng.random((sq, sk)) > 0.2 if i % 3 == 2 else None
        cases.append(OrtCase(q, k, v, is_causal=i % 3 == 1, attn_mask=mask))
    with OrtSession() as s:
        s.start()
        t0 = time.monotonic()
        outs = s.run(cases)
        elapsed = time.monotonic() - t0
    assert not [o for o in outs if isinstance(o, Exception)]
    assert elapsed < 6.0, f"{len(cases)} cases took {elapsed:.2f} s"
