"""An R function gets the causal band and window folded into its keep-mask (the refimpl protocol), never as flags:
what a family row's batched R call returns says so (``RReturned.band_flags`` False where the case has a band), so
the diagnosis does not try a model of flag handling on it (a flag an R function never saw). No R needed: the R
bridge's batched result is a stand-in."""
from types import SimpleNamespace

import numpy as np
import pytest

from refimpl.harness.targets.r_targets import RFunction, RReturned


def _spec(**kw):
    return SimpleNamespace(**dict(dict(B=1, Hq=1, Sq=2, Sk=3, D=2, Dv=2, is_causal=False, window=None), **kw))


@pytest.mark.parametrize("band, flags", [(dict(), True), (dict(is_causal=True), False), (dict(window=(1, 0)), False)])
def test_an_r_functions_result_says_the_band_came_in_its_mask(band, flags):
    fn = object.__new__(RFunction)
    res = SimpleNamespace(warnings={}, errors=[None], calls=["attn(Q, K, V)"], components=[np.ones((1, 2, 2))])
    got = fn._case(_spec(**band), res, range(0, 1))
    assert isinstance(got, RReturned) and got.band_flags is flags


@pytest.mark.parametrize("flags", [True, False])
def test_the_band_flag_survives_the_trip_back_from_the_r_worker(flags):
    # R targets run in a worker by default: what it sends back of a batched case must keep the field (a run
    # with isolation otherwise tried flag models on an R function that ignores its mask, and named one)
    from refimpl.harness.targets import isolation as iso
    sent = RReturned(np.ones((1, 1, 2, 2)), None, warnings=["w"], band_flags=flags)
    back = iso._case_back(iso._plain_case(sent))
    assert isinstance(back, RReturned) and back.band_flags is flags and back.warnings == ["w"]
