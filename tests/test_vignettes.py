"""Both vignettes of the R package, run for real in embedded R, against the Python recomputation.

Every variable the vignette creates is compared: the inputs and integer intermediates exactly
(W_Q, W_K, W_V must be identical: rrng reproduces R's RNG), the rest under the forward bound.
"""
import numpy as np
import pytest

from refimpl import tolerance as tol
from refimpl.sources import vignettes as src
from refimpl.testing import assert_conforms, assert_exact

pytestmark = pytest.mark.r

EXACT_VARS = {"word_1", "word_2", "word_3", "word_4", "words", "W_Q", "W_K", "W_V", "Q", "K", "V",
              "scores", "maxs", "i"}


def _check_all(run, py):
    assert set(run.vars) == set(py), f"R created {sorted(run.vars)}, Python {sorted(py)}"
    for name, r_value in run.vars.items():
        if name in EXACT_VARS:
            assert_exact(py[name], r_value, f"{run.name}: {name}")
        else:
            assert_conforms(py[name], r_value, tol.forward(np.float64, 16, 10), f"{run.name}: {name}")


@pytest.fixture(scope="module")
def simple(rb):
    return rb.run_vignette("simple_attention")


@pytest.fixture(scope="module")
def complete(rb):
    return rb.run_vignette("complete_attention")


def test_simple_vignette_every_variable(simple):
    _check_all(simple, src.simple_vignette())


def test_complete_vignette_every_variable(complete):
    _check_all(complete, src.complete_vignette())


def test_vignettes_record_the_package_version(simple, complete):
    assert simple.version == complete.version and simple.version.count(".") >= 1
    assert simple.path.endswith("simple_attention.R")


def test_weight_matrices_come_from_set_seed_0(simple):
    w = src.vignette_weights()
    for name in ("W_Q", "W_K", "W_V"):
        assert_exact(w[name], simple.vars[name], name)


def test_simple_vignette_equals_refimpl_with_scale_one_half(simple):
    py = src.simple_vignette_refimpl()
    assert_conforms(py["weights"], simple.vars["weights"], tol.forward(np.float64, 16, 1), "weights")
    assert_conforms(py["attention"], simple.vars["attention"], tol.forward(np.float64, 16, 10), "attention")


def test_complete_vignette_equals_refimpl_default_sdpa(complete):
    py = src.complete_vignette_refimpl()
    assert_conforms(py["weights"], complete.vars["weights"], tol.forward(np.float64, 16, 1), "weights")
    assert_conforms(py["attention"], complete.vars["attention"], tol.forward(np.float64, 16, 10), "attention")


def test_user_globals_do_not_leak_into_the_vignette(rb):
    rb.apply("function() assign('scores', 'user value', envir = globalenv())")
    try:
        run = rb.run_vignette("complete_attention")
        assert_exact(src.complete_vignette()["scores"], run.vars["scores"], "scores")
        assert str(np.asarray(rb.apply("function() get('scores', envir = globalenv())"))[0]) == "user value"
    finally:
        rb.apply("function() rm('scores', envir = globalenv())")
