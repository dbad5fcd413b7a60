"""The probe before a run: a target that cannot work as configured gets ONE message with the fix (exit 2);
broken-but-callable targets are left to the run's verdicts; the causal convention is measured; --traceback."""
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from refimpl.cli import main
from refimpl.errors import UsageError
from refimpl.harness.cases import TargetDied
from refimpl.harness.targets.isolation import IsolatedFunction
from refimpl.harness.targets.probe import PROBE_SPEC, causal_convention, probe
from refimpl.harness.target_spec import Target, load_target

ROOT = Path(__file__).parent
ZOO = ROOT / "zoo"
HOSTILE = ZOO / "hostile.py"


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(f"probe_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


DEMO = _module(ROOT / "support" / "demo_targets.py")
SDPA = _module(ZOO / "torch_sdpa_impls.py")
FLASH = _module(ZOO / "flash_impls.py")
NUMPY = _module(ZOO / "numpy_impls.py")


def _attention(q, k, v, mask=None, scale=None):
    """Written here: softmax(q k^T s) v over the last two axes, NumPy, bool keep-mask."""
    s = (q @ np.swapaxes(k, -1, -2)) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True) @ v


def test_wrong_return_type_gets_one_message_before_the_run_and_exit_2(capsys):
    code = main(["check", "--target", f"{HOSTILE}:returns_list", "--only", f"{HOSTILE}:returns_list", "--random", "0",
                 "--family", "sizes", "--suite", "quick", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""                       # refused before the run: no matrix
    assert err.count("\n") == 1 and "returned a list" in err and "expected an array" in err, err


@pytest.mark.parametrize("name,says", [("returns_dict", r"returned a dict with keys \['output', 'weights'\]"),
                                       ("returns_none", r"returned None.*`return` missing"),
                                       ("returns_string", r"returned a str.*printed form")])
def test_each_wrong_return_type_is_named(name, says):
    fn = IsolatedFunction(f"{HOSTILE}:{name}", timeout=20)        # the zoo's hostile targets run in a worker
    try:
        with pytest.raises(UsageError, match=says):
            probe(Target(name, fn))
    finally:
        fn.close()


def test_bshd_target_run_as_bhsd_is_told_to_use_layout_bshd():
    with pytest.raises(UsageError, match=r"run it with --api refimpl --layout BSHD$") as e:
        probe(Target("bshd", DEMO.bshd, layout="BHSD"))
    assert "raised" in str(e.value) and "(1, 2, 3, 4)" in str(e.value)
    assert probe(Target("bshd", DEMO.bshd, layout="BSHD")) == {"causal": "n/a"}


def test_output_returned_as_bshd_for_a_bhsd_case_is_refused_with_the_transpose():
    def bshd_out(q, k, v, mask=None, scale=None):
        return np.swapaxes(_attention(q, k, v, mask, scale), 1, 2)          # (B, Sq, H, Dv)
    with pytest.raises(UsageError, match=r"returned output \(1, 3, 2, 6\) = \(B, Sq, H, Dv\).*transpose\(1, 2\)"):
        probe(Target("bshd_out", bshd_out, layout="BHSD"))


def test_torch_only_target_is_told_to_use_torch_tensors():
    torch = pytest.importorskip("torch")

    def torch_only(q, k, v, mask=None, scale=None):
        s = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(q.shape[-1])   # numpy's transpose takes no (-2, -1)
        return torch.softmax(s, dim=-1) @ v
    with pytest.raises(UsageError, match=r"--torch-tensors$"):
        probe(Target("t", torch_only))
    assert probe(Target("t", torch_only, torch=True)) == {"causal": "n/a"}


def test_a_numpy_kernel_under_a_torch_api_is_told_the_api_hands_tensors_and_a_buggy_torch_one_is_not():
    torch = pytest.importorskip("torch")

    def numpy_flash(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                    alibi_slopes=None, deterministic=False, return_attn_probs=False):
        out = np.zeros(q.shape[:3] + v.shape[3:], dtype=q.dtype)        # a torch dtype here: NumPy cannot read it
        qh, kh, vh = (np.swapaxes(a, 1, 2) for a in (q, k, v))         # (B, H, S, D)
        out[:] = np.swapaxes(_attention(qh, kh, vh, None, softmax_scale), 1, 2)
        return out
    with pytest.raises(UsageError, match=r"raised TypeError.*--api flash-attn hands torch tensors.*x.numpy\(\)"):
        probe(Target("np_flash", numpy_flash, api="flash-attn"))

    def torch_flash_bug(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                        softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
        s = torch.einsum("bqhd,bkhd->bhqk", q, k) * softmax_scale      # TypeError: a torch kernel's own bug
        return torch.einsum("bhqk,bkhd->bqhd", torch.softmax(s, -1), v)
    assert probe(Target("torch_bug", torch_flash_bug, api="flash-attn")) == {"causal": "n/a"}     # left to the run


def test_misdeclared_apis_are_refused_with_the_right_api(capsys):
    code = main(["check", "--target", f"{ZOO / 'torch_sdpa_impls.py'}:sdpa_plain", "--api", "refimpl", "--quiet"])
    assert code == 2 and "--api torch-sdpa" in capsys.readouterr().err
    with pytest.raises(UsageError, match="--api flash-attn"):
        load_target(f"{ZOO / 'flash_impls.py'}:flash_plain", api="torch-sdpa")

    def wrapped(*args, **kwargs):                        # hides its signature: only a call can tell
        return SDPA.sdpa_plain(*args, **kwargs)
    with pytest.raises(UsageError, match=r"TypeError.*run it with --api torch-sdpa$"):
        probe(Target("wrapped", wrapped, api="refimpl"))


def test_broken_or_refusing_targets_are_left_to_the_run():
    assert probe(Target("wrong_scale", DEMO.wrong_scale)) == {"causal": "n/a"}

    def square_only(q, k, v, mask=None, scale=None):
        if q.shape[-2] != k.shape[-2]:
            raise ValueError("square only")
        return _attention(q, k, v, mask, scale)
    assert probe(Target("square_only", square_only)) == {"causal": "n/a"}

    def dies(*args, **kwargs):
        raise TargetDied("crash", "killed by signal 11")
    assert probe(Target("dies", dies)) == {"causal": "n/a"}


@pytest.mark.parametrize("module,fn,api,want", [
    ("SDPA", "sdpa_plain", "torch-sdpa", "top-left"),
    ("SDPA", "sdpa_causal_bottom_right", "torch-sdpa", "bottom-right"),
    ("FLASH", "flash_plain", "flash-attn", "bottom-right"),
    ("FLASH", "flash_causal_top_left", "flash-attn", "top-left"),
    ("NUMPY", "plain", "refimpl", "n/a")])
def test_causal_convention_is_measured(module, fn, api, want):
    pytest.importorskip("torch")
    t = Target(fn, getattr(globals()[module], fn), api=api)
    assert probe(t) == {"causal": want}
    assert PROBE_SPEC.Sq < PROBE_SPEC.Sk                  # no query loses every key in either alignment


def test_refimpl_itself_is_top_left_and_other_when_neither_matches():
    from refimpl.harness.target_spec import builtin_targets
    assert causal_convention(builtin_targets()["refimpl"]()) == "top-left"

    def ignores_causal(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                       enable_gqa=False):
        return SDPA.sdpa_plain(query, key, value, attn_mask=attn_mask, scale=scale)
    assert causal_convention(Target("x", ignores_causal, api="torch-sdpa")) == "other"


def test_traceback_shows_the_targets_own_frames_isolated_and_in_process(capsys):
    base = ["check", "--target", f"{HOSTILE}:raises_value_error", "--only", f"{HOSTILE}:raises_value_error",
            "--family", "sizes", "--suite", "quick", "--dtype", "float64", "--random", "0", "--quiet"]
    for extra in ([], ["--no-isolation"]):
        assert main(base + ["--traceback"] + extra) == 1
        out = capsys.readouterr().out
        tb = out[out.index("traceback "):]
        assert "(the target's own):" in tb and 'hostile.py", line' in tb and "in raises_value_error" in tb
        assert "ValueError: raises_value_error: needs Sq == Sk" in tb
        assert "refimpl/harness" not in tb.split("\n(")[0].split("RESULT")[0], tb[:2000]
