"""Golden fixtures: every one loads, hashes, and is reproduced by refimpl; published numbers above all."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from refimpl import fixtures as fx_mod
from refimpl.fixtures import verify_fixture
from refimpl.sources import politi_tds, raschka_2023

ROOT = fx_mod.fixtures_dir()
FILES = sorted(ROOT.glob("*/*.json"))
IDS = [p.relative_to(ROOT).with_suffix("").as_posix() for p in FILES]


def test_there_are_fixtures_for_all_five_sources():
    assert {i.split("/")[0] for i in IDS} >= {"r-attention", "cristina-mlm", "codefinity", "politi-tds", "raschka-2023"}


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_fixture_loads_and_its_hash_matches(path):
    fx = fx_mod.load(path, verify_hash=False)
    assert fx.hash_ok, f"{path}: hash does not match the content (edited by hand? run 'refimpl regen --check')"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_fixture_values_reproduced_by_refimpl(path):
    fx = fx_mod.load(path, verify_hash=False)
    bad = [f"{path}: {name} [{by}]: {c.summary()}" for name, by, c in verify_fixture(fx) if not c.ok]
    assert not bad, "\n".join(bad)


def test_every_published_number_is_in_a_fixture_and_reproduced():
    n = 0
    for p in FILES:
        fx = fx_mod.load(p)
        for name, by, c in verify_fixture(fx):
            if by == "published":
                assert c.ok, f"{p}: published {name}: {c.summary()}"
        n += sum(e["array"].size for exps in fx.expected.values() for e in exps if e["by"] == "published")
    assert n >= 250, f"only {n} published numbers in fixtures"


def test_provenance_says_which_sources_published_no_values():
    for p in FILES:
        fx = fx_mod.load(p)
        has_published = any(e["by"] in ("published", "shape") for exps in fx.expected.values() for e in exps)
        if fx.source_id in ("codefinity", "politi-tds", "bahdanau-luong"):
            assert not fx.source["published_values"] and not has_published, p
            assert "no" in fx.source["note"].lower() and "publish" in fx.source["note"].lower(), p
        else:
            assert fx.source["published_values"] and has_published, p


def test_politi_fixture_has_the_shapes_the_text_states():
    fx = fx_mod.load(ROOT / "politi-tds/multi-head.json")
    assert fx.inputs["sentence_embed"].shape == (5, 16)
    assert fx.inputs["w_query"].shape == (4, 16, 4)
    out = fx_mod.evaluate(fx)
    assert out["weights"].shape == (4, 5, 5) and out["output"].shape == (5, 16)
    assert np.array_equal(politi_tds.parameters()["w_query"], fx.inputs["w_query"]), "recipe regenerates w_query"


def test_raschka_tokenisation_matches_the_published_vocabulary():
    dc, ids = raschka_2023.tokenize()
    assert dc == {"Life": 0, "dessert": 1, "eat": 2, "first": 3, "is": 4, "short": 5}
    fx = fx_mod.load(ROOT / "raschka-2023/self-attention.json")
    assert ids.tolist() == fx.inputs["sentence_int"].tolist() == [0, 4, 5, 2, 1, 3]


def test_nothing_is_loaded_with_pickle_or_eval():
    src = "".join(Path(m.__file__).read_text() for m in (fx_mod.schema, fx_mod.steps))
    assert "pickle" not in src.replace("never with pickle", "").replace("with pickle or eval", "")
    assert "eval(" not in src.replace("evaluate(", "")


@pytest.mark.skipif(os.environ.get("REFIMPL_INNER_RUN") == "1", reason="this is the inner run of the test below")
def test_changing_one_value_fails_the_suite_naming_file_and_value(tmp_path):
    root = tmp_path / "fixtures"
    shutil.copytree(ROOT, root)
    target = root / "cristina-mlm" / "general-attention.json"
    obj = json.loads(target.read_text())
    obj["expected"]["attention"][0]["value"]["values"][1][2] = 0.51      # published 0.5
    target.write_text(json.dumps(obj))
    env = dict(os.environ, REFIMPL_FIXTURES=str(root), REFIMPL_INNER_RUN="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                        str(Path(__file__)), "-k", "reproduced_by_refimpl and cristina"],
                       env=env, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert r.returncode != 0, r.stdout
    assert "cristina-mlm/general-attention.json" in r.stdout
    assert "attention [published]" in r.stdout and "(1, 2)" in r.stdout, r.stdout[-2000:]
