"""Source ``r-attention``: the fixtures of the R package 'attention' (CRAN 0.4.0, Bastiaan Quast) — its two
vignettes and the documented examples of SoftMax, RowMax and ComputeWeights. The Python recomputations
are in :mod:`refimpl.sources.vignettes`; the expected values come from R through the bridge.
"""
from __future__ import annotations

from ._build import BuildContext, expect, forward_rule, make, qkv_score_steps, sdpa_rule, step
from .vignettes import WORDS, rowmax_example_input, simple_vignette, softmax_example_input

SOURCE = "r-attention"
META = {
    "title": "R package 'attention' 0.4.0 (CRAN, 2023-11-10): vignettes 'Simple Self-Attention from Scratch' "
             "and 'Complete Self-Attention from Scratch', and the documented examples of SoftMax, RowMax, "
             "ComputeWeights",
    "author": "Bastiaan Quast",
    "urls": ["https://cran.r-project.org/package=attention",
             "https://cran.r-project.org/web/packages/attention/vignettes/simple_attention.html",
             "https://cran.r-project.org/web/packages/attention/vignettes/complete_attention.html",
             "https://github.com/bquast/attention"],
}
R_PRINTED = {"rule": "printed", "significant": 7, "who": "R print (7 significant digits)"}
EXACT = {"rule": "exact"}
W_RECIPE = {"kind": "r-set-seed", "seed": 0, "generator": "refimpl.rrng (R's Mersenne-Twister, bit for bit)",
            "text": "set.seed(0); W_Q = matrix(floor(runif(9, min=0, max=3)), nrow=3, ncol=3); "
                    "W_K and W_V likewise, consecutively (R fills column by column); "
                    "words = rbind(c(1,0,0), c(0,1,0), c(1,1,0), c(0,0,1)) explicit"}


def _r_note(version: str) -> str:
    return f"R attention {version} through refimpl.rbridge (embedded R, float64)"


def build(ctx: BuildContext) -> list[dict]:
    rb, version = ctx.r()
    pub = ctx.published(SOURCE) or {}
    fns = pub.get("functions", {})
    P = pub.get("published", {})
    out = []

    # SoftMax's and RowMax's documented examples
    for fn, arg, value, rcode, rule, note in (
            ("SoftMax", "V", softmax_example_input(), "V = floor(runif(9, min=-3, max=3))",
             forward_rule(11, 1.0), "The example prints SoftMax(V); refimpl.softmax of a vector is the same function."),
            ("RowMax", "M", rowmax_example_input(), "M = matrix(floor(runif(9, min=0, max=3)), nrow=3, ncol=3)",
             EXACT, "RowMax returns a column matrix (n, 1) (divergence D12); refimpl's rowmax keeps dims.")):
        fid = f"{SOURCE}/{fn.lower()}-example"
        r = rb.call(fn, value).unwrap()[0]
        published = ctx.published_value(fid, fn, fns.get(fn, {}).get("published"))
        out.append(make(fid, META, f"documented example of {fn} (?{fn})", True, note,
                        {"kind": "r-set-seed", "seed": 0, "generator": "refimpl.rrng", "text": f"set.seed(0); {rcode}"},
                        {arg: value},
                        [step("softmax", {"x": arg}, [fn]) if fn == "SoftMax" else step("rowmax", {"a": arg}, [fn])],
                        {fn: [expect("published", published, R_PRINTED if fn == "SoftMax" else EXACT,
                                     "" if fn == "SoftMax" else "integers printed exactly"),
                              expect("r", r, rule, _r_note(version))]}))

    # ComputeWeights' documented example (the vignette's scores)
    fid = f"{SOURCE}/computeweights-example"
    scores = simple_vignette()["scores"]
    r = rb.call("ComputeWeights", scores).unwrap()[0]
    out.append(make(fid, META, "documented example of ComputeWeights (the simple vignette's scores)", True,
                    "ComputeWeights divides by sqrt(nrow(scores)) = 2, not sqrt(d_k) (divergence D1): the "
                    "steps make that scale explicit.",
                    {"kind": "explicit", "text": "scores as printed by the simple vignette (integers)"},
                    {"scores": scores},
                    [step("multiply", {"a": "scores"}, ["scaled"], factor=0.5),
                     step("softmax", {"x": "scaled"}, ["weights"])],
                    {"weights": [expect("published",
                                        ctx.published_value(fid, "weights",
                                                            fns.get("ComputeWeights", {}).get("published")),
                                        R_PRINTED),
                                 expect("r", r, forward_rule(8, 1.0), _r_note(version))]}))

    # the two vignettes
    for name, scale, runs in (("simple", 0.5, "simple_attention"), ("complete", None, "complete_attention")):
        fid = f"{SOURCE}/{name}-vignette"
        run = rb.run_vignette(runs)
        v = run.vars
        steps = qkv_score_steps("words", "W_Q", "W_K", "W_V")
        if name == "complete":
            steps.append(step("rowmax", {"a": "scores"}, ["maxs"]))
        steps.append(step("sdpa", {"q": "Q", "k": "K", "v": "V"}, ["attention", "weights"],
                          **({"scale": scale} if scale else {})))
        exp = {n: [expect("r", v[n], EXACT, _r_note(version) + "; integers")]
               for n in ("W_Q", "W_K", "W_V", "Q", "K", "V")}
        exp["scores"] = [expect("published", ctx.published_value(fid, "scores", P.get("scores")), R_PRINTED),
                         expect("r", v["scores"], EXACT, _r_note(version))]
        if name == "complete":
            exp["maxs"] = [expect("published", ctx.published_value(fid, "maxs", P.get("complete_maxs")).reshape(4, 1),
                                  R_PRINTED, "printed by print(maxs) as a 4x1 matrix"),
                           expect("r", v["maxs"], EXACT, _r_note(version))]
        Q, K, V = v["Q"], v["K"], v["V"]
        exp["weights"] = [expect("published", ctx.published_value(fid, "weights", P.get(f"{name}_weights")),
                                 R_PRINTED),
                          expect("r", v["weights"], sdpa_rule(Q, K, V, scale, weights=True), _r_note(version))]
        exp["attention"] = [expect("published", ctx.published_value(fid, "attention", P.get(f"{name}_attention")),
                                   R_PRINTED),
                            expect("r", v["attention"], sdpa_rule(Q, K, V, scale), _r_note(version))]
        note = ("The simple vignette computes weights with ComputeWeights, which divides by sqrt(nrow(scores)) = "
                "sqrt(4) (divergence D1); the steps reproduce it with scale=0.5." if name == "simple" else
                "The complete vignette divides by sqrt(ncol(K)) = sqrt(3): refimpl's default sdpa.")
        title = "Simple" if name == "simple" else "Complete"
        out.append(make(fid, META, f"vignette '{title} Self-Attention from Scratch' (doc/{runs}.R): every variable",
                        True, note, W_RECIPE, {"words": WORDS, **{w: v[w] for w in ("W_Q", "W_K", "W_V")}}, steps, exp))
    return out
