"""Score the diagnosis on tests/heldout (kernels written, from public bug reports, by a helper that never read
refimpl's bug models): run each through `refimpl check` as a user would and compare the diagnosis line with
the answer key below. The key was written from the held-out catalogue's own bug descriptions before the first
scoring run; it is not to be edited to fit a result.

    .venv/bin/python tools/score_heldout.py            # tests/heldout: one line per kernel and the score
    .venv/bin/python tools/score_heldout.py heldout2   # tests/heldout2 (written 2026-12-04; key KEY2, below)

named right: the diagnosis names a model in the kernel's accepted set; named wrong: it names another model
(counted against the score twice); unknown: `diagnosis ...: unknown`. A correct kernel must get no
diagnosis line; a broken kernel that passes is a verdict miss.
"""
import importlib.util
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HELD = ROOT / "tests" / "heldout"
ALIBI = {"alibi-sign"}
KEY = {   # held-out kernel -> the refimpl model names that name its bug (empty: refimpl has no model for it)
    "np_scale_sqrt_dv": {"scale"}, "np_scale_arg_ignored": {"scale"}, "np_mask_inverted": {"mask-polarity"},
    "np_mask_transposed_selfattn": set(), "np_fill_finite_uniform_rows": {"finite-mask-fill"},
    "np_softmax_in_float32": {"float32 arithmetic"}, "np_mask_after_softmax": set(),
    "np_softmax_over_queries": {"softmax-axis"}, "np_online_no_rescale": {"online-rescale"},
    "np_tiled_masked_block_nan": set(),
    "sdpa_causal_bottom_right": {"causal-alignment"}, "sdpa_gqa_tiled_heads": {"gqa-grouping"},
    "sdpa_bool_mask_added": set(), "sdpa_scale_applied_twice": {"scale"}, "sdpa_headdim_hardcoded_64": {"scale"},
    "sdpa_merge_heads_reshape": set(), "sdpa_mask_repeat_batch_major": set(),
    "sdpa_bf16_qk_product": {"low-precision"}, "sdpa_plain_softmax_nan": set(), "sdpa_divides_by_scale": {"scale"},
    "fa_causal_top_left": {"causal-alignment"}, "fa_window_left_exclusive": {"window-bounds"},
    "fa_window_right_ignored": {"window-bounds"}, "fa_window_no_kv_offset": {"causal-alignment", "window-bounds"},
    "fa_softcap_after_mask": {"softcap"}, "fa_softcap_unscaled_logits": {"softcap"},
    "fa_alibi_key_column": ALIBI, "fa_alibi_batch_slopes_row0": ALIBI, "fa_gqa_head_modulo": {"gqa-grouping"},
    "fa_online_finite_sentinel": {"finite-mask-fill"}, "fa_decode_window_dropped": {"window-bounds"},
    "fa_scale_model_dim": {"scale"},
    "bwd_no_delta": {"bwd-delta-term"}, "bwd_dk_unscaled": {"bwd-scale-dk"}, "bwd_delta_query_axis": set(),
    "bwd_recompute_without_mask": set(), "bwd_broadcast_grad_mean": {"bwd-gqa-sum"},
    "bwd_dp_value_dims_from_qk": set(), "bwd_plain_softmax_nan": {"bwd-masked-nan"},
}
# tests/heldout2 (a second helper, 2026-12-04, which read nothing of refimpl). Written from its README's bug
# descriptions before its first scoring run. Empty: refimpl has no model for the bug (unknown is the right answer).
KEY2 = {
    "finite_fill_attention": {"finite-mask-fill"},       # only fully masked rows differ: uniform is a convention
    "online_unguarded_max_attention": set(), "online_inverted_rescale_attention": {"online-rescale"},
    "flattened_heads_attention": set(), "value_dim_scale_attention": {"scale"},
    "bool_mask_as_bias_attention": set(), "half_rowsum_attention": {"low-precision"},
    "split_kv_log2_lse_attention": set(), "padded_tail_block_attention": {"padding-unmasked"},
    "sdpa_mha_bool_convention": {"mask-polarity"}, "sdpa_causal_lower_right": {"causal-alignment"},
    "sdpa_gqa_tile": {"gqa-grouping"}, "sdpa_gqa_5d_mask": set(), "sdpa_float_mask_as_bool": set(),
    "sdpa_double_scale": {"scale"}, "sdpa_bf16_scores": {"low-precision"}, "sdpa_causal_excludes_diagonal": set(),
    "flash_causal_top_left": {"causal-alignment"}, "flash_symmetric_window": {"window-bounds"},
    "flash_window_exclusive_left": {"window-bounds"}, "flash_softcap_unscaled": {"softcap"},
    "flash_softcap_after_mask": {"softcap"}, "flash_alibi_key_position": {"alibi-sign"},
    "flash_alibi_query_frame": {"alibi-sign", "causal-alignment"}, "flash_gqa_div_kv_heads": {"gqa-grouping"},
    "flash_tiled_causal_nblock": {"causal-alignment", "blocked-tail"},
    "flash_tiled_unbounded_left": {"window-bounds"}, "flash_heads_reshape": set(),
}
# a kernel whose only difference is one refimpl accepts as a convention (a row with no key giving the mean of V)
CONVENTION2 = {"finite_fill_attention"}
SETS = {"heldout": (KEY, (), ("numpy_fwd", "torch_sdpa_fwd", "flash_fwd", "numpy_bwd")),
        "heldout2": (KEY2, CONVENTION2, ("numpy_fwd", "torch_sdpa_fwd", "flash_fwd"))}
FORWARD_FOR_BACKWARD = f"{HELD / 'numpy_fwd.py'}:np_eager_reference"


def catalog(folder: Path, modules):
    for name in modules:
        spec = importlib.util.spec_from_file_location(f"{folder.name}_{name}", folder / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for entry in mod.CATALOG:
            yield name, entry


def run(folder, name, entry):
    fn = f"{folder / (name + '.py')}:{entry['fn']}"
    base = [sys.executable, "-m", "refimpl", "check", "--suite", "quick", "--random", "0", "--quiet",
            "--dtype", entry["dtype"]]
    if entry["api"] == "numpy-backward":
        args = base + ["--target", FORWARD_FOR_BACKWARD, "--backward", fn]
    else:
        args = base + ["--target", fn, "--api", entry["api"]]
    p = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=ROOT)
    diag = [line for line in p.stdout.splitlines() if line.startswith("diagnosis ")]
    loc = [line for line in p.stdout.splitlines() if line.startswith("localisation ")]
    return p.returncode, diag, loc, p.stderr[-300:]


def named(line: str) -> str:
    text = line.split(": ", 1)[1]
    return text.split(" — ", 1)[0].strip()


def main(argv=None) -> int:
    which = (argv if argv is not None else sys.argv[1:]) or ["heldout"]
    key, conventions, modules = SETS[which[0]]
    folder = ROOT / "tests" / which[0]
    entries = list(catalog(folder, modules))
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda ne: run(folder, *ne), entries))
    score = {"right": 0, "wrong": 0, "unknown": 0, "verdict miss": 0, "correct ok": 0, "correct flagged": 0,
             "convention accepted": 0}
    rows = []
    for (name, e), (rc, diag, loc, err) in zip(entries, outs):
        names = sorted({named(d) for d in diag})
        if e["correct"]:
            kind = "correct ok" if rc == 0 and not diag else "correct flagged"
        elif rc == 0:
            kind = "convention accepted" if e["fn"] in conventions else "verdict miss"
        elif not names or names == ["unknown"]:
            kind = "unknown"
        elif set(names) - {"unknown"} <= key[e["fn"]]:
            kind = "right"
        else:
            kind = "wrong"
        score[kind] += 1
        honest = kind == "unknown" and not key[e["fn"]]
        rows.append(f"{kind + (' (no model)' if honest else ''):15} {e['api']:15} {e['fn']:30} exit {rc}  "
                    f"bug {e['bug']}  said {names or '-'}"
                    + (f"  [{'; '.join(loc)[:160]}]" if loc else "") + (f"  stderr {err!r}" if rc == 2 else ""))
    print("\n".join(rows))
    broken = sum(1 for _, e in entries if not e["correct"] and e["fn"] not in conventions)
    no_model = sum(1 for _, e in entries if not e["correct"] and e["fn"] not in conventions and not key[e["fn"]])
    print(f"\n{broken} broken, {len(entries) - broken} correct kernels; "
          + ", ".join(f"{k} {v}" for k, v in score.items()) + f"; {no_model} of the broken have no refimpl model")
    print(f"score: (right - 2 x wrong) / broken = ({score['right']} - 2 x {score['wrong']}) / {broken} = "
          f"{(score['right'] - 2 * score['wrong']) / broken:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
