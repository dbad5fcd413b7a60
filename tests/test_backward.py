"""The backward oracle (refimpl.backward, refimpl.backward_online), verified three independent ways:
(a) central finite differences of the float64 forward, (b) torch autograd in float64 on Hypothesis-drawn
cases over every feature (the torch forward and the band are written here, not taken from refimpl),
(c) a 50-digit mpmath oracle; plus the FlashAttention budget on float32 and the decided edge cases."""
import math
import tracemalloc

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import refimpl as ri
from refimpl import strategies as rst, tolerance as tol, tolerance_gradients as tg
from refimpl.backward import sdpa_backward
from refimpl.backward_online import sdpa_backward_online

NAMES = ("dq", "dk", "dv", "dbias")


def check(actual, expected, tolerance, what):
    cmp = tol.compare(actual, expected, tolerance)
    assert cmp.ok, f"{what}: {cmp.summary()}\nactual={np.asarray(actual)!r}\nexpected={np.asarray(expected)!r}"


def band_keep(n_q, n_k, is_causal, window, alignment):
    """Query i attends key j iff i+off-left <= j <= i+off+right (-1 unbounded; causal caps right at 0)."""
    off = 0 if alignment == "top-left" else n_k - n_q
    d = np.arange(n_k)[None, :] - (np.arange(n_q)[:, None] + off)
    left, right = window if window is not None else (-1, -1)
    if is_causal:
        right = 0 if right == -1 else min(right, 0)
    return ((left == -1) | (d >= -left)) & ((right == -1) | (d <= right))


def torch_sdpa(q, k, v, keep, additive, scale, softcap, group):
    """softmax(cap*tanh(s q k^T / cap) + additive, masked) v; fully masked rows give 0 (refimpl's rule)."""
    if group > 1:
        k, v = k.repeat_interleave(group, dim=-3), v.repeat_interleave(group, dim=-3)
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    z = (q @ k.transpose(-1, -2)) * s                        # (B..., Sq, D) x (B..., D, Sk) -> (B..., Sq, Sk)
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    if additive is not None:
        z = z + additive
    z = z.masked_fill(~keep, -math.inf)
    dead = torch.isneginf(z).all(dim=-1, keepdim=True)
    p = torch.softmax(z.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
    return p @ v                                             # (B..., Sq, Sk) x (B..., Sk, Dv) -> (B..., Sq, Dv)


@st.composite
def cases(draw, dtype=np.float64):
    """Every feature at once: broadcast batch, GQA, bool/float mask, bias, causal, window, alignment,
    softcap, scale. Returns (arrays, kwargs) with arrays = dict(q, k, v, d_out)."""
    gqa = draw(st.booleans())
    n_kv, group = draw(st.integers(1, 2)), (draw(st.integers(1, 3)) if gqa else 1)
    h_q = n_kv * group
    h_kv = n_kv if gqa else draw(st.sampled_from([1, h_q]))
    lead = draw(st.sampled_from([(), (2,)]))
    n_q, n_k, d, d_v = (draw(st.integers(1, n)) for n in (6, 6, 4, 3))
    arr = lambda shape: draw(rst.float_arrays(shape, dtype=dtype, magnitude=3.0))  # noqa: E731
    a = {"q": arr(lead + (h_q, n_q, d)), "k": arr((h_kv, n_k, d)), "v": arr((h_kv, n_k, d_v)),
         "d_out": arr(lead + (h_q, n_q, d_v))}
    kind = draw(st.sampled_from(["none", "bool", "float"]))
    mask = None
    if kind == "bool":
        mask = draw(hnp.arrays(np.bool_, (n_q, n_k)))
    elif kind == "float":
        mask = draw(hnp.arrays(dtype, (h_q, 1, n_k), elements=st.sampled_from([0.0, -1.5, -np.inf, 2.0])))
    bias = None if draw(st.booleans()) else arr(draw(st.sampled_from([(n_q, n_k), (n_k,), (h_q, 1, n_k)])))
    window = draw(st.none() | st.tuples(st.integers(-1, 2), st.integers(-1, 2)))
    kw = dict(mask=mask, bias=bias, is_causal=draw(st.booleans()), window=window,
              alignment=draw(st.sampled_from(["top-left", "bottom-right"])), enable_gqa=gqa,
              softcap=draw(st.sampled_from([None, 0.5, 4.0])), scale=draw(st.sampled_from([None, 0.3, 1.7])))
    return a, kw


def torch_grads(a, kw):
    """dq, dk, dv (and the float mask's or bias's gradient) by torch autograd in float64."""
    t = {n: torch.tensor(x, dtype=torch.float64, requires_grad=n != "d_out") for n, x in a.items()}
    n_q, n_k = a["q"].shape[-2], a["k"].shape[-2]
    keep = band_keep(n_q, n_k, kw["is_causal"], kw["window"], kw["alignment"])
    mask, bias = kw["mask"], kw["bias"]
    if mask is not None and mask.dtype == bool:
        keep = keep & mask
    float_mask = None if mask is None or mask.dtype == bool else torch.tensor(mask, requires_grad=bias is None)
    tb = None if bias is None else torch.tensor(bias, requires_grad=True)
    parts = [x for x in (float_mask, tb) if x is not None]
    additive = None if not parts else sum(parts[1:], parts[0])
    group = a["q"].shape[-3] // a["k"].shape[-3] if kw["enable_gqa"] else 1
    out = torch_sdpa(t["q"], t["k"], t["v"], torch.tensor(keep), additive, kw["scale"], kw["softcap"], group)
    wrt = [t["q"], t["k"], t["v"]] + ([tb if tb is not None else float_mask] if parts else [])
    return [g.numpy() for g in torch.autograd.grad(out, wrt, t["d_out"])]


def grad_tolerances(a, kw, dtype=np.float64):
    additive = [np.abs(x[np.isfinite(x)]).max(initial=0.0) for x in (kw["bias"], kw["mask"])
                if x is not None and x.dtype != bool]
    summed = kw["bias"] if kw["bias"] is not None else kw["mask"] if additive else None   # dbias's shape
    t = tg.gradient_for_sdpa(a["q"], a["k"], a["v"], a["d_out"], kw["scale"], dtype, softcap=kw["softcap"],
                             additive=np.array([sum(additive)]) if additive else None,
                             bias_shape=None if summed is None else summed.shape)
    return [t[n] for n in NAMES if n in t]


# --- (b) torch autograd, float64, every feature -------------------------------------------------

@given(cases(), st.integers(1, 4), st.integers(1, 4))
def test_plain_and_online_gradients_match_torch_autograd(case, bq, bk):
    a, kw = case
    expected = torch_grads(a, kw)
    tols = grad_tolerances(a, kw)
    for fn, extra in ((sdpa_backward, {}), (sdpa_backward_online, {"block_q": bq, "block_k": bk})):
        got = fn(a["q"], a["k"], a["v"], a["d_out"], **kw, **extra)
        assert len(got) == len(expected)
        for name, g, e, t in zip(NAMES, got, expected, tols):
            assert g.shape == e.shape and g.dtype == np.float64, (name, g.shape, e.shape, g.dtype)
            check(g, e, t, f"{fn.__name__} {name} vs torch autograd, {kw}")


@given(cases(dtype=np.float32), st.integers(1, 5), st.integers(1, 5))
def test_online_equals_plain_in_float32(case, bq, bk):
    a, kw = case
    plain = sdpa_backward(a["q"], a["k"], a["v"], a["d_out"], **kw)
    online = sdpa_backward_online(a["q"], a["k"], a["v"], a["d_out"], block_q=bq, block_k=bk, **kw)
    for name, g, e, t in zip(NAMES, online, plain, grad_tolerances(a, kw, np.float32)):
        assert g.dtype == np.float32
        check(g, e, t, f"online {name} (bq={bq}, bk={bk}) vs plain, float32")


# --- (a) central finite differences of the float64 forward ----------------------------------------

FD_FEATURES = [dict(), dict(is_causal=True, alignment="bottom-right"), dict(window=(1, 0), scale=0.7),
               dict(softcap=0.8), dict(enable_gqa=True), dict(bias=True, keep=True), dict(bias=True, is_causal=True)]


@pytest.mark.parametrize("n,feat", enumerate(FD_FEATURES), ids=lambda f: "-".join(f) if isinstance(f, dict) else "")
def test_gradients_match_central_finite_differences(n, feat):
    rng = np.random.default_rng(20 + n)
    heads = (2, 1) if feat.get("enable_gqa") else (1, 1)
    x = {"q": rng.standard_normal((heads[0], 3, 2)), "k": rng.standard_normal((heads[1], 4, 2)),
         "v": rng.standard_normal((heads[1], 4, 2))}
    if feat.get("bias"):
        x["bias"] = rng.standard_normal((3, 4))
    keep = np.array([[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 0, 1]], bool) if feat.get("keep") else None
    g_out = rng.standard_normal((heads[0], 3, 2))
    kw = {key: val for key, val in feat.items() if key not in ("bias", "keep")}

    def loss(y):
        m = y.get("bias")
        if m is not None and keep is not None:
            m = np.where(keep, m, -np.inf)
        return float(np.sum(g_out * ri.scaled_dot_product_attention(y["q"], y["k"], y["v"], mask=m, **kw)[0]))

    got = sdpa_backward(x["q"], x["k"], x["v"], g_out, mask=keep, bias=x.get("bias"), **kw)
    eps = np.finfo(np.float64).eps
    for name, analytic in zip(("q", "k", "v", "bias"), got):
        # Central differences: error = h^2/6 |f'''| (truncation) + ~eps |L| / h (rounding of the loss), so
        # h ~ cbrt(eps) * scale (6e-6 for inputs of size 1) balances the two at ~eps^(2/3) ~ 4e-11. The
        # truncation part is estimated from the data (Richardson: fd(2h) - fd(h) ~ 3 * truncation(h)),
        # the rounding part from the magnitude of the loss's terms, so the tolerance is not a guess.
        h = np.cbrt(eps) * max(1.0, float(np.abs(x[name]).max()))
        fd, fd2 = np.zeros_like(x[name]), np.zeros_like(x[name])
        for i in np.ndindex(*x[name].shape):
            for step, out in ((h, fd), (2 * h, fd2)):
                y = {key: a.copy() for key, a in x.items()}
                y[name][i] += step
                up = loss(y)
                y[name][i] -= 2 * step
                out[i] = (up - loss(y)) / (2 * step)
        # rounding of the loss: the forward bound's n_terms * eps per output, summed with weights |g_out|
        n_f = tol.sdpa_terms(x["q"], x["k"], x["v"], kw.get("scale"))[0]
        d_loss = n_f * eps * float(np.sum(np.abs(g_out))) * float(np.abs(x["v"]).max())
        budget = tol.Tolerance(2.0 * np.abs(fd2 - fd) + 2.0 * d_loss / h, 0.0, "central differences")
        check(analytic, fd, budget, f"d{name} vs finite differences {feat}")
        assert np.abs(analytic).max() > 0 or name == "bias"


# --- (c) a 50-digit oracle ------------------------------------------------------------------------

def mp_loss(q, k, v, g_out, keep, bias, scale, cap):
    """sum(g_out * softmax(cap*tanh(s q k^T/cap) + bias, masked) v) for one head, at mpmath's precision."""
    total = mpmath.mpf(0)
    for i in range(len(q)):
        z = []
        for j in range(len(k)):
            r = scale * mpmath.fsum(q[i][c] * k[j][c] for c in range(len(q[i])))
            z.append(None if not keep[i][j] else (cap * mpmath.tanh(r / cap) if cap else r) + bias[i][j])
        live = [x for x in z if x is not None]
        if not live:
            continue                                              # fully masked row: output 0
        m = max(live)
        w = [mpmath.e ** (x - m) if x is not None else mpmath.mpf(0) for x in z]
        den = mpmath.fsum(w)
        for c in range(len(v[0])):
            total += g_out[i][c] * mpmath.fsum(w[j] * v[j][c] for j in range(len(k))) / den
    return total


@pytest.mark.parametrize("seed", range(8))
def test_float64_and_float32_gradients_against_a_50_digit_oracle(seed):
    rng = np.random.default_rng(1000 + seed)
    n_q, n_k, d, d_v = 2 + seed % 2, 3 + seed % 2, 2, 2
    q, k, v, g = (rng.standard_normal(s) * 2 for s in ((n_q, d), (n_k, d), (n_k, d_v), (n_q, d_v)))
    bias = rng.standard_normal((n_q, n_k))
    keep = rng.random((n_q, n_k)) > 0.25
    keep[0] = seed % 3 != 0 and keep[0]                           # a fully masked row in some cases
    cap, scale = (None, 0.9) if seed % 2 else (1.5, None)
    s = 1 / math.sqrt(d) if scale is None else scale
    x = {"q": q, "k": k, "v": v, "bias": bias}
    with mpmath.workdps(50):
        h = mpmath.mpf(10) ** -20                                 # truncation ~h^2 = 1e-40, rounding ~1e-50/h = 1e-30
        oracle = {}
        for name, a in x.items():
            og = np.zeros_like(a)
            for i in np.ndindex(*a.shape):
                def f(t, name=name, i=i):
                    y = {n: [[mpmath.mpf(float(e)) for e in row] for row in b] for n, b in x.items()}
                    y[name][i[0]][i[1]] += t
                    return mp_loss(y["q"], y["k"], y["v"], g.tolist(), keep, y["bias"], mpmath.mpf(s),
                                   None if cap is None else mpmath.mpf(cap))
                og[i] = float((f(h) - f(-h)) / (2 * h))
            oracle[name] = og
    for dtype in (np.float64, np.float32):
        c = [a.astype(dtype) for a in (q, k, v, g, bias)]
        got = sdpa_backward(c[0], c[1], c[2], c[3], mask=keep, bias=c[4], scale=scale, softcap=cap)
        tols = tg.gradient_for_sdpa(q, k, v, g, scale, dtype, softcap=cap, additive=bias, bias_shape=bias.shape)
        for name, n, gr in zip(("q", "k", "v", "bias"), NAMES, got):
            # one side is exact: half of rule 3's two-evaluation bound would do; the full bound is kept
            check(gr, oracle[name], tols[n], f"{dtype.__name__} d{name} vs the 50-digit oracle")


# --- rule 4: FlashAttention's budget on float32 ------------------------------------------------------

@pytest.mark.parametrize("seed,causal", [(0, False), (1, True), (2, False), (3, True)])
def test_float32_online_and_torch_within_the_gradient_budget(seed, causal):
    rng = np.random.default_rng(seed)
    n = 64 + 32 * seed
    q, k, v, g = (rng.standard_normal((2, n, 32)) * (1 + seed % 2) for _ in range(4))
    oracle = sdpa_backward(q, k, v, g, is_causal=causal)
    f32 = [a.astype(np.float32) for a in (q, k, v, g)]
    naive = sdpa_backward(*f32, is_causal=causal)
    online = sdpa_backward_online(*f32, is_causal=causal, block_q=32, block_k=48)
    keep = torch.tensor(band_keep(n, n, causal, None, "top-left"))
    t = [torch.tensor(a, requires_grad=True) for a in f32[:3]]
    by_torch = [x.numpy() for x in torch.autograd.grad(torch_sdpa(*t, keep, None, None, None, 1), t,
                                                       torch.tensor(f32[3]))]
    terms = tg.sdpa_grad_terms(q, k, v, g)
    for i, name in enumerate(NAMES[:3]):
        for who, test in (("online", online[i]), ("torch", by_torch[i])):
            ok, err, allowed = tg.gradient_within_budget(test, naive[i], oracle[i], np.float32, terms[name][0])
            assert ok, f"{who} {name}: float32 error {err:.3g} > allowed {allowed:.3g}"
        assert float(np.abs(naive[i] - oracle[i]).max()) > 0        # the reference really rounds


# --- decided edge cases and errors ----------------------------------------------------------------

def test_fully_masked_rows_and_masked_keys_have_exactly_zero_gradients():
    rng = np.random.default_rng(5)
    q, k, v, g = (rng.standard_normal(s) for s in ((3, 2), (4, 2), (4, 3), (3, 3)))
    keep = np.array([[1, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 1]], bool)
    for fn in (sdpa_backward, sdpa_backward_online):
        dq, dk, dv = fn(q, k, v, g, mask=keep)
        assert np.all(dq[1] == 0) and np.all(dk[2] == 0) and np.all(dv[2] == 0)
        assert np.abs(dq[0]).max() > 0 and np.abs(dk[0]).max() > 0


def reduce_like(g, shape):
    """Sum a full-batch gradient over the axes that broadcasting added or stretched."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for i, n in enumerate(shape):
        if n == 1:
            g = g.sum(axis=i, keepdims=True)
    return g


def test_broadcast_inputs_and_bias_get_the_sum_over_their_copies():
    rng = np.random.default_rng(6)
    q, g = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((2, 3, 5, 2))
    k, v, bias = rng.standard_normal((3, 6, 4)), rng.standard_normal((1, 6, 2)), rng.standard_normal((6,))
    full = sdpa_backward(q, np.broadcast_to(k, (2, 3, 6, 4)).copy(), np.broadcast_to(v, (2, 3, 6, 2)).copy(), g,
                         bias=np.broadcast_to(bias, (2, 3, 5, 6)).copy())
    t = tg.gradient_for_sdpa(q, k, v, g, bias_shape=bias.shape)
    for fn in (sdpa_backward, sdpa_backward_online):
        got = fn(q, k, v, g, bias=bias)
        for name, a, b in zip(NAMES, got, full):
            check(a, reduce_like(b, a.shape), t[name], f"{fn.__name__} {name}")


def test_online_memory_stays_far_below_one_score_matrix():
    rng = np.random.default_rng(7)
    n, d = 2048, 16
    q, k, v, g = (rng.standard_normal((n, d)) for _ in range(4))
    tracemalloc.start()
    sdpa_backward_online(q, k, v, g, is_causal=True, block_q=128, block_k=256)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < n * n * 8 / 8, f"peak {peak / 2**20:.1f} MiB vs one score matrix {n * n * 8 / 2**20:.0f} MiB"


@given(rst.attention_inputs(magnitude=st.sampled_from([1e150, 1e300]), mask=st.sampled_from(["none", "causal"])),
       st.sampled_from([None, 2.0]))
def test_huge_scores_give_finite_gradients(c, cap):
    """q, k up to 1e300 (scores far beyond float64), values of size 1: finite, and the two variants
    agree under rule 3 (loose here: near-ties are decided by rounding; the next test is exact)."""
    v, g = np.tanh(c.v), np.ones(c.q.shape[:-1] + c.v.shape[-1:])
    plain = sdpa_backward(c.q, c.k, v, g, is_causal=c.is_causal, softcap=cap)
    online = sdpa_backward_online(c.q, c.k, v, g, is_causal=c.is_causal, softcap=cap, block_q=2, block_k=3)
    t = tg.gradient_for_sdpa(c.q, c.k, v, g, softcap=cap)
    for name, a, b in zip(NAMES, online, plain):
        assert np.isfinite(a).all() and np.isfinite(b).all()
        check(a, b, t[name], f"huge inputs {name}")


@pytest.mark.parametrize("fn", [sdpa_backward, lambda *a: sdpa_backward_online(*a, block_q=2, block_k=2)])
def test_scores_beyond_float64_give_one_hot_weights_and_their_exact_gradients(fn):
    """Query i meets one key at score 1e320/sqrt(3) and the others at 0: P is a permutation matrix, so
    dV = P^T dO exactly and dS = 0 up to the rounding of dP - rowsum(dO * O), times s*|K| = s*1e160."""
    m = 1e160
    q, k = np.eye(3) * m, np.eye(3)[[1, 2, 0]] * m               # query i's key is j with k_j = m e_i
    rng = np.random.default_rng(8)
    v, g = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    dq, dk, dv = fn(q, k, v, g)
    np.testing.assert_array_equal(dv, g[[1, 2, 0]])
    rounding = 4 * np.finfo(float).eps * 2 * np.linalg.norm(g, axis=1).max() * np.linalg.norm(v, axis=1).max()
    assert max(np.abs(dq).max(), np.abs(dk).max()) <= rounding * m / math.sqrt(3)


@pytest.mark.parametrize("call,match", [
    (lambda x: sdpa_backward(x, x, x, np.ones((3, 2))), r"d_out must have the output's shape \(4, 2\)"),
    (lambda x: sdpa_backward(x, x, x, np.ones((4, 2)), bias=np.ones(3)), r"bias .*broadcast"),
    (lambda x: sdpa_backward(x, x, x, np.ones((4, 2)), bias=np.full(4, np.nan)), r"bias must not contain NaN"),
    (lambda x: sdpa_backward(x, x, x, np.ones((4, 2)), mask=np.ones((4, 4), bool), bias=np.ones((3, 4))),
     r"bias and mask must broadcast together"),
    (lambda x: sdpa_backward_online(x, x, x, np.ones((4, 2)), block_k=0), r"block_k must be >= 1, got 0"),
    (lambda x: sdpa_backward_online(x, x, x, np.ones((4, 1))), r"d_out must have the output's shape"),
    (lambda x: sdpa_backward(x, x, x, np.ones((4, 2)), softcap=-1.0), r"softcap"),
])
def test_errors_name_the_argument(call, match):
    with pytest.raises(ri.RefimplError, match=match):
        call(np.ones((4, 2)))


def test_the_benchmark_quick_run_reports_time_ratios_and_peak_memory():
    from refimpl.bench_backward import backward_lines
    lines = backward_lines(quick=True)
    assert len(lines) == 3 and "failed" not in "".join(lines), lines
    assert "backward / forward = " in lines[0] and "torch's backward = " in lines[1] and "peak RSS" in lines[2]
