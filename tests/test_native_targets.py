"""Kernels in C, C++ and Rust as targets (``--target c:lib.so:symbol``, the C ABI of refimpl_attention.h).

The kernels are tests/zoo/c (written on purpose, independently of the judge: two correct, seven broken with
one mistake each) and the templates ``refimpl native-template`` writes. They are built here with the system's
compilers into a temporary directory; without gcc these tests skip saying so (tools/setup.sh installs it)."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from refimpl.errors import UsageError
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.target_spec import load_target
from refimpl.harness.targets.isolation import isolator
from refimpl.harness.targets.native_kernels import NativeError, load_native

ZOO_C = Path(__file__).parent / "zoo" / "c"
STORE = CaseStore()
QUICK = select(None, "quick", ("float64", "float32"))
GCC = shutil.which("gcc")
needs_gcc = pytest.mark.skipif(GCC is None, reason="no gcc on PATH: native targets cannot be built here "
                                                   "(tools/setup.sh installs gcc and g++)")


def _build(out: Path, name: str, sources, compiler="gcc", extra=("-lm",)) -> Path:
    lib = out / name
    cmd = [compiler, "-O2", "-shared", "-fPIC", "-o", str(lib), *map(str, sources), *extra]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
    return lib


@pytest.fixture(scope="module")
def zoo_lib(tmp_path_factory):
    if GCC is None:
        pytest.skip("no gcc on PATH: native targets cannot be built here (tools/setup.sh installs gcc and g++)")
    return _build(tmp_path_factory.mktemp("c_zoo"), "libattn.so", sorted(ZOO_C.glob("*.c")))


def _results(spec: str, specs=QUICK, isolate=None):
    target = load_target(spec, isolate=isolate)
    try:
        return target, [run_one(target, s, STORE) for s in specs]
    finally:
        close = getattr(target.fn, "close", None)
        if close:
            close()


def _failed(results):
    return [r for r in results if Status(r.status).failed]


@needs_gcc
@pytest.mark.parametrize("symbol", ["attn", "attn_online"])
def test_a_correct_c_kernel_conforms_in_float64_and_float32(zoo_lib, symbol):
    target, results = _results(f"c:{zoo_lib}:{symbol}")
    assert target.api == "c-abi"                       # a c: target speaks the C ABI without --api
    judged = [r for r in results if r.status in (Status.PASS, Status.FAIL)]
    assert len(judged) > 100, f"only {len(judged)} of {len(results)} quick cases judged"
    assert not _failed(results), [(r.id, r.status, r.detail) for r in _failed(results)[:3]]


BROKEN = ["attn_mask_inverted", "attn_no_max", "attn_gqa_modulo", "attn_last_key_dropped",
          "attn_float_accum_reset"]


@needs_gcc
@pytest.mark.parametrize("symbol", BROKEN)
def test_a_c_kernel_with_one_mistake_is_caught(zoo_lib, symbol):
    _, results = _results(f"c:{zoo_lib}:{symbol}")
    failed = _failed(results)
    assert len(failed) >= 2, f"{symbol}: failed {len(failed)} of {len(results)}"
    assert all(r.status == Status.FAIL for r in failed), {r.status for r in failed}   # a wrong answer, no error


@needs_gcc
def test_a_kernels_error_code_is_that_cases_error_with_the_code(zoo_lib):
    _, results = _results(f"c:{zoo_lib}:attn_error_code")
    errors = [r for r in results if r.status == Status.ERROR]
    passed = [r for r in results if r.status == Status.PASS]
    assert errors and passed                           # 7 with a keep-mask, correct without one
    assert all("error code 7" in r.detail for r in errors), errors[0].detail


@needs_gcc
def test_a_segfault_in_c_is_that_cases_crash_in_the_worker_and_the_run_goes_on(zoo_lib):
    wide = [s for s in QUICK if s.D > 64][:2]
    narrow = [s for s in QUICK if s.D <= 64 and s.dtype == "float64"][:3]
    assert wide and narrow
    _, results = _results(f"c:{zoo_lib}:attn_segfault_on_wide", wide + narrow,
                          isolate=isolator(timeout=60, max_memory_mib=None, flag="--target"))
    assert [r.status for r in results[:len(wide)]] == [Status.CRASH] * len(wide), [r.detail for r in results]
    assert [r.status for r in results[len(wide):]] == [Status.PASS] * len(narrow), [r.detail for r in results]


@needs_gcc
def test_the_kernel_gets_copies_and_its_return_code_raises(zoo_lib):
    kernel = load_native(f"c:{zoo_lib}:attn_error_code")
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 3, 4)) for _ in range(3))
    before = q.copy()
    out, weights = kernel(q, k, v)
    assert out.shape == (1, 2, 3, 4) and weights is not None and np.array_equal(q, before)
    with pytest.raises(NativeError, match="error code 7"):
        kernel(q, k, v, keep=np.ones((3, 3), bool))
    with pytest.raises(TypeError, match="float64 or float32"):
        kernel(q.astype(np.float16), k, v)


@needs_gcc
def test_a_wrong_symbol_or_file_or_spec_is_a_usage_error_naming_it(zoo_lib, tmp_path):
    with pytest.raises(UsageError, match="exports no symbol 'nope'"):
        load_native(f"c:{zoo_lib}:nope")
    with pytest.raises(UsageError, match="no file"):
        load_native(f"c:{tmp_path}/missing.so:attn")
    with pytest.raises(UsageError, match="expected c:path/to/lib.so:symbol"):
        load_native("c:attn")
    junk = tmp_path / "junk.so"
    junk.write_text("not a library")
    with pytest.raises(UsageError, match="cannot load the shared library"):
        load_native(f"c:{junk}:attn")
    with pytest.raises(UsageError, match="called through --api c-abi, got --api torch-sdpa"):
        load_target(f"c:{zoo_lib}:attn", api="torch-sdpa")


def _template(lang, out: Path) -> str:
    p = subprocess.run([sys.executable, "-m", "refimpl", "native-template", "--lang", lang, "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "build:" in p.stdout and (out / "refimpl_attention.h").is_file()
    return p.stdout


@pytest.mark.parametrize("lang,compiler,src,extra", [
    ("c", "gcc", "attn.c", ("-lm",)), ("cpp", "g++", "attn.cpp", ()), ("rust", "rustc", "attn.rs", ())])
def test_each_template_builds_and_conforms(tmp_path, lang, compiler, src, extra):
    if shutil.which(compiler) is None:
        pytest.skip(f"no {compiler} on PATH: the {lang} template cannot be built here")
    _template(lang, tmp_path)
    if lang == "rust":
        subprocess.run(["rustc", "-O", "--crate-type", "cdylib", "-o", str(tmp_path / "libattn.so"),
                        str(tmp_path / src)], check=True, capture_output=True, timeout=300)
        lib = tmp_path / "libattn.so"
    else:
        lib = _build(tmp_path, "libattn.so", [tmp_path / src], compiler, extra)
    specs = QUICK[::3]
    _, results = _results(f"c:{lib}:attn", specs)
    assert not _failed(results), [(r.id, r.status, r.detail) for r in _failed(results)[:3]]
    assert sum(r.status == Status.PASS for r in results) > 30


def test_native_template_never_overwrites_and_refuses_a_missing_directory(tmp_path):
    _template("c", tmp_path)
    before = (tmp_path / "attn.c").read_text()
    p = subprocess.run([sys.executable, "-m", "refimpl", "native-template", "--lang", "c", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "already there; not overwritten" in p.stderr
    assert (tmp_path / "attn.c").read_text() == before
    p = subprocess.run([sys.executable, "-m", "refimpl", "native-template", "--lang", "c", "--out",
                        str(tmp_path / "nope")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "not a directory" in p.stderr
    p = subprocess.run([sys.executable, "-m", "refimpl", "native-template", "--lang", "go", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--lang" in p.stderr


@needs_gcc
def test_a_kernel_writing_its_inputs_writes_a_copy(tmp_path):
    src = tmp_path / "w.c"
    src.write_text('#include <stdint.h>\n#include <string.h>\n'
                   'int scribble(int bits, void *q, const void *k, const void *v, const unsigned char *keep,\n'
                   '             const int64_t s[7], double scale, void *out, void *w) {\n'
                   '  ((double *)q)[0] = 123.0; memset(out, 0, (size_t)(s[0]*s[1]*s[3]*s[6]) * 8); return 0; }\n')
    lib = _build(tmp_path, "libw.so", [src])
    kernel = load_native(f"c:{lib}:scribble")
    q = np.zeros((1, 1, 2, 2))
    kernel(q, q.copy(), q.copy())
    assert q[0, 0, 0, 0] == 0.0                          # the caller's array is not the kernel's
