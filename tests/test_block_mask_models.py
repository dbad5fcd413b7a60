"""A bug model that walks a block mask's tiles (``Variant.tiled``: partial-blocks-unmasked, padded-tail's and
mask-transposed's tile forms) needs the BLOCK_SIZE the block mask reached the target in. Only --api flex-attention
hands one; for any other API the model is not tried (a kernel cannot have used a tile size it was never given: with
flex's per-case size a tile model matched by coincidence, e.g. every tile partial on small cases, the same output as
the mask skipped)."""
from dataclasses import replace

import numpy as np

from refimpl import bugs
from refimpl.harness.analysis.diagnosis import variant_kwargs
from refimpl.harness.apis import Returned, call, get, names
from refimpl.harness.apis.flex_attention import block_size
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore

STORE = CaseStore()
SPEC = next(s for s in select(["bool-mask"], "quick", ("float64",)))
TILED = [(m, v) for m, model in bugs.MODELS.items() for v in model.variants if v.tiled]


def test_every_tile_model_is_not_tried_without_a_block_mask_and_is_given_the_block_size_with_one():
    assert {m for m, _ in TILED} >= {"partial-blocks-unmasked", "padded-tail"}
    data = STORE.get(SPEC)
    for m, v in TILED:
        assert variant_kwargs(v, data) is None, (m, v.label)
        kw = variant_kwargs(v, replace(data, block=16))
        assert kw is not None and kw["block"] == 16, (m, v.label)


def test_only_flex_attention_says_which_block_size_it_handed():
    data = STORE.get(SPEC)
    sizes = {name: get(name).block_size(data) for name in names(user=False)}
    assert sizes.pop("flex-attention") == block_size(SPEC) in (16, 128)
    assert set(sizes.values()) == {None}, sizes


def test_a_call_records_the_block_size_the_target_got():
    data = STORE.get(SPEC)
    got = call(lambda q, k, v, mask=None, scale=None: np.zeros(q.shape[:-1] + v.shape[-1:]), get("refimpl"), data)
    assert isinstance(got, Returned) and got.block is None
