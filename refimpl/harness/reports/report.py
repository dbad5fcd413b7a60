"""Reports of a check run: table (terminal), markdown, json, junit (the HTML page is :mod:`.html`).

Every format carries, per target: the diagnosis lines (``CheckRun.diagnoses``), the localisation
(``CheckRun.localisations``), the reproduction scripts (``CheckRun.repros``) and, for every target, the
conventions line

    conventions TARGET: masked-rows=zeros|nan|uniform|mean-v|other|mix(..)|n/a, causal=top-left|bottom-right|other|n/a,
                        returns=output|output+weights|n/a[, lse-dead=+inf|-inf|mix(..)]

(:func:`conventions`: masked-rows from the family rows' ``Outcome.conventions`` — one value when every row
that saw fully masked rows agrees, ``mix(zeros:40,nan:3)`` (cases per policy) when they do not, ``n/a`` when no
case had such a row;
causal as measured by :mod:`.probe`; returns ``output+weights`` when any family case returned weights;
lse-dead, with ``--lse``, what the log-sum-exp of a row with no key was).

The JSON shape (``refimpl-check/1``)::

    {"schema": "refimpl-check/1", "ok": bool, "result": str, "seconds": float,
     "environment": {"python", "numpy", "blas", "r", "rpy2", "attention", "torch", "platform"},
     "targets": [name, ...], "unavailable": {name: reason},
     "divergences": {id: title},
     "per_target": {name: {"diagnosis": [line, ...], "localisation": str, "repros": [path, ...],
                           "explored": [line, ...], "conventions": {"masked-rows", "causal", "returns"},
                           "conventions_line": str, "judged": bool}},
     "cases": [{"id", "group", "description",
                "results": {target: {"status", "max_ratio", "max_abs", "detail", "divergences",
                                     "cases": [{"id", "status", "ratio", "detail", "features", "traceback"}]}}}]}

``status`` is one of the statuses in ``JSON_SCHEMA["statuses"]``; ``max_ratio`` and ``ratio`` are the worst
|error| / tolerance (null when not finite). ``cases`` lists a family row's cases (empty for other rows):
``features`` names the boolean case features that are true (the localisation's vocabulary), ``traceback``
is the target's own traceback when it raised and ``--traceback`` was given, else "". ``result`` is the RESULT
line's text; ``judged`` says whether the target's cells decide ``ok`` (a built-in column whose runtime died in
some cases of the whole matrix is reported, not judged; in a user's check only the targets named decide).
"""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections import Counter

from .environment import describe, environment
from ...r import bridge
from ..cases import CheckRun, Status
from ..columns import divergence_titles

__all__ = ["render", "FORMATS", "JSON_SCHEMA", "cell_text", "conventions", "conventions_line", "result_word",
           "target_lines"]

FORMATS = ("table", "json", "junit", "markdown")

JSON_SCHEMA = {  # the documented shape, checked by tests/test_check.py and tests/test_reports.py
    "top": {"schema": str, "ok": bool, "result": str, "seconds": float, "environment": dict, "targets": list,
            "unavailable": dict, "divergences": dict, "per_target": dict, "cases": list},
    "case": {"id": str, "group": str, "description": str, "results": dict},
    "result": {"status": str, "max_ratio": (float, type(None)), "max_abs": (float, type(None)), "detail": str,
               "divergences": list, "cases": list},
    "family_case": {"id": str, "status": str, "ratio": (float, type(None)), "detail": str, "features": list,
                    "traceback": str},
    "per_target": {"diagnosis": list, "localisation": str, "repros": list, "explored": list, "conventions": dict,
                   "conventions_line": str, "judged": bool},
    "conventions": ("masked-rows", "causal", "returns"),
    "statuses": tuple(s.value for s in Status),
}
MAX_TRACEBACKS = 3          # distinct target tracebacks shown per target with --traceback


def _fmt_ratio(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "inf"
    return f"{x:.2g}"


def cell_text(o) -> str:
    if o.status == "pass":
        return f"pass {_fmt_ratio(o.max_ratio)}"
    if o.status == "FAIL":
        return f"FAIL {_fmt_ratio(o.max_ratio)}x"
    if o.status == "known":
        return "known " + ",".join(o.divergences)
    if o.status == "skip":
        return "skip"
    return o.status


def _num(x):
    return None if x is None or not math.isfinite(x) else float(x)


def conventions(run: CheckRun, target: str) -> dict:
    """``{"masked-rows", "causal", "returns"}`` of ``target`` aggregated over its cells (module doc)."""
    cells = [run.results[(c.id, target)] for c in run.cases if (c.id, target) in run.results]
    convs = [getattr(o, "conventions", None) or {} for o in cells]
    causal = Counter(cv["causal"] for cv in convs if cv.get("causal"))
    returns = {cv["returns"] for cv in convs if cv.get("returns")}
    out = {"masked-rows": _policy(convs, "masked-rows") or "n/a",
           "causal": causal.most_common(1)[0][0] if causal else "n/a",
           "returns": "output+weights" if "output+weights" in returns else ("output" if returns else "n/a")}
    lse = _policy(convs, "lse-dead")
    if lse:                                         # --lse: the log-sum-exp of rows with no key
        out["lse-dead"] = lse
    return out


def _policy(convs: list[dict], key: str) -> str | None:
    """One value when every case that showed ``key`` agrees; ``mix(zeros:40,nan:3)`` (most cases first) when
    they do not: a target whose fully masked rows are not one policy says so; None when no case showed it."""
    counts: Counter = Counter()
    for cv in convs:
        if cv.get(f"{key}-counts"):
            counts.update(cv[f"{key}-counts"])
        elif cv.get(key):                           # a cell that reports its value only (one case, or a column)
            counts[cv[key]] += 1
    if not counts:
        return None
    if len(counts) == 1:
        return next(iter(counts))
    return "mix(" + ",".join(f"{v}:{n}" for v, n in sorted(counts.items(), key=lambda x: (-x[1], x[0]))) + ")"


def conventions_line(target: str, conv: dict) -> str:
    return (f"conventions {target}: masked-rows={conv['masked-rows']}, causal={conv['causal']}, "
            f"returns={conv['returns']}" + (f", lse-dead={conv['lse-dead']}" if "lse-dead" in conv else ""))


def _family_results(run: CheckRun, target: str) -> list:
    """Every family case result (harness.judge.CaseResult) of ``target``, in row order."""
    return [r for c in run.cases for o in [run.results.get((c.id, target))] if o is not None
            for r in (getattr(o, "cases", None) or [])]


def _tracebacks(run: CheckRun, target: str) -> list[tuple[str, str]]:
    """``[(case id, traceback)]``: the first case of each distinct traceback (same frames, any message), at most
    MAX_TRACEBACKS."""
    seen: dict[str, tuple[str, str]] = {}      # the frames (the message aside) -> (case id, traceback)
    for r in _family_results(run, target):
        tb = getattr(r, "traceback", "")
        frames = tb.rstrip("\n").rsplit("\n", 1)[0]
        if tb and frames not in seen:
            seen[frames] = (r.id, tb)
    return list(seen.values())[:MAX_TRACEBACKS]


def target_lines(run: CheckRun, target: str) -> list[str]:
    """The per-target lines of every text report: diagnosis, localisation, repros (the first 3, then how many
    more), the --explore lines, and the conventions line."""
    lines = list(run.diagnoses.get(target, []))
    if run.localisations.get(target):
        lines.append(f"localisation {target}: {run.localisations[target]}")
    paths = [str(p) for p in run.repros.get(target, [])]
    lines += [f"repro {target}: python {p}" for p in paths[:3]]
    if len(paths) > 3:
        lines.append(f"repro {target}: +{len(paths) - 3} more in {paths[0].rsplit('/', 1)[0]}")
    lines += run.explored.get(target, [])
    lines.append(conventions_line(target, conventions(run, target)))
    return lines


def _as_dict(run: CheckRun, env: dict, traceback: bool = False) -> dict:
    def family_case(r) -> dict:
        feats = getattr(r, "features", None) or {}
        return {"id": r.id, "status": Status(r.status).value, "ratio": _num(r.ratio), "detail": r.detail,
                "features": [n for n, x in feats.items() if x is True],
                "traceback": getattr(r, "traceback", "") if traceback else ""}

    per_target = {}
    for t in run.targets:
        conv = conventions(run, t)
        per_target[t] = {"diagnosis": list(run.diagnoses.get(t, [])), "localisation": run.localisations.get(t, ""),
                         "repros": [str(p) for p in run.repros.get(t, [])],
                         "explored": list(run.explored.get(t, [])), "conventions": conv,
                         "conventions_line": conventions_line(t, conv), "judged": _judged(run, t)}
    return {
        "schema": "refimpl-check/1", "ok": run.ok, "result": result_word(run), "seconds": round(run.seconds, 3),
        "environment": env,
        "targets": run.targets, "unavailable": run.unavailable, "divergences": divergence_titles(),
        "per_target": per_target,
        "cases": [{"id": c.id, "group": c.group, "description": c.description,
                   "results": {t: {"status": Status(o.status).value, "max_ratio": _num(o.max_ratio),
                                   "max_abs": _num(o.max_abs), "detail": o.detail, "divergences": o.divergences,
                                   "cases": [family_case(r) for r in (o.cases or [])]}
                               for t in run.targets for o in [run.results[(c.id, t)]]}} for c in run.cases],
    }


def _judged(run: CheckRun, target: str) -> bool:
    """Whether ``target``'s cells decide the run's verdict."""
    return (target in run.judged) if run.judged is not None else not run.excused(target)


def _details(run: CheckRun) -> list[str]:
    details = []
    for c in run.cases:
        for t in run.targets:
            o = run.results[(c.id, t)]
            if Status(o.status).failed or (o.status == "skip" and t not in run.unavailable):
                details.append(f"{c.id} x {t}: {o.status}: {o.detail}")
            elif o.status == "known":
                details.append(f"{c.id} x {t}: known: {o.detail[:160]}")
    return details


def _table(run: CheckRun, env: dict, markdown: bool, traceback: bool = False) -> str:
    lines = []
    envs = describe(env)
    head = ["case"] + run.targets
    rows = [[c.id] + [cell_text(run.results[(c.id, t)]) for t in run.targets] for c in run.cases]
    item = "- " if markdown else "  "
    bullet = "- " if markdown else ""
    if markdown:
        lines.append("# refimpl check\n")
        lines.append(f"**{result_word(run)}**. Environment: {envs}\n")
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        lines.append(f"refimpl check — {envs}")
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
        lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)))
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(x.ljust(w) for x, w in zip(r, widths)) for r in rows]
    lines.append("")
    lines.append("Cells: pass <worst error as a fraction of its tolerance>; FAIL <that fraction>x; "
                 "known <catalogued divergence>; skip (reason below).")
    for name, reason in run.unavailable.items():
        lines.append(f"{bullet}target {name}: unavailable — {reason}")
    if env.get("attention") not in ("unavailable", bridge.EXPECTED_ATTENTION_VERSION):
        lines.append(f"note: the divergence catalogue was measured on attention {bridge.EXPECTED_ATTENTION_VERSION}; "
                     f"installed {env['attention']}: 'known' labels may be stale "
                     f"(tests/test_divergences.py re-measures)")
    details = _details(run)
    if details:
        lines.append("\n## Details\n" if markdown else "Details:")
        lines += [item + d for d in details]
    if markdown:
        lines.append("\n## Targets\n")
    n_tracebacks = 0
    for t in run.targets:
        lines += [bullet + x for x in target_lines(run, t)]
        tbs = _tracebacks(run, t)
        n_tracebacks += len(tbs)
        for cid, tb in tbs if traceback else []:
            lines.append(f"{bullet}traceback {t} {cid} (the target's own):")
            body = tb.rstrip("\n").splitlines()
            lines += (["```"] + body + ["```"]) if markdown else ["    " + x for x in body]
    if n_tracebacks and not traceback:
        lines.append("(--traceback shows the target's own traceback of the cases that raised)")
    used = sorted({d for o in run.results.values() for d in o.divergences})
    for d in used:
        lines.append(f"{item}{d}: {divergence_titles().get(d, '?')} (docs/divergences.md)")
    if markdown:
        lines.append("")
    n = len(run.results)
    counts = {s.value: sum(1 for o in run.results.values() if o.status == s) for s in Status}
    lines.append(f"{len(run.cases)} cases x {len(run.targets)} targets = {n} cells: " +
                 ", ".join(f"{v} {k}" for k, v in counts.items() if v) + f" ({run.seconds:.1f} s)")
    if run.interrupted:
        lines.append("interrupted (Ctrl-C): the cells above are the ones that finished")
    lines.append("RESULT: " + result_word(run))
    return "\n".join(lines) + "\n"


def result_word(run: CheckRun) -> str:
    if run.interrupted:
        return "INTERRUPTED"
    if run.nothing_checked:
        return "NOTHING CHECKED"
    if run.not_run and not run.failing():        # no failure in what ran, but not all of it ran: no verdict
        return (f"INCOMPLETE: the run's deadline passed before {run.not_run} cases were called; nothing failed "
                f"in the cases that ran (raise --deadline, or select fewer cases)")
    if run.judged is None:
        if not run.ok:
            return "NON-CONFORMANCE"
        died = [t for t in run.targets if run.excused(t) and any(o.failed for (_, n), o in run.results.items()
                                                                 if n == t)]
        return "all targets conform" + (f" (the runtime of {', '.join(died)} died in some cases, which are "
                                        f"reported, not judged)" if died else "")
    if run.ok:                                    # a user's check: the verdict speaks of the targets they named
        return f"{', '.join(run.judged)} conform{'s' if len(run.judged) == 1 else ''}"
    bad = [f"{t} (unavailable)" if t in run.unavailable else t for t in run.failing()]
    return f"NON-CONFORMANCE: {', '.join(bad)} do{'es' if len(bad) == 1 else ''} not conform"


def _testcase(suite, classname: str, name: str, status: str, detail: str, analysis: str, tb: str = "",
              judged: bool = True) -> None:
    """One <testcase>: FAIL -> <failure>, error/crash/timeout/oom and ``not run`` (no verdict) -> <error>, skips
    -> <skipped>; the text of a failure or error carries the target's diagnosis and localisation (``analysis``)
    and its traceback. A target whose cells are not ``judged`` (a built-in column whose runtime died in some
    cases) has its failed cases <skipped>, saying so: the run's verdict does not count them."""
    tc = ET.SubElement(suite, "testcase", classname=classname, name=name)
    text = "\n".join(x for x in (detail, analysis, tb) if x)
    if not judged and (Status(status).failed or status == "not run"):
        ET.SubElement(tc, "skipped", message=f"{status} (reported, not judged): {detail}"[:500])
    elif status == "not run":
        ET.SubElement(tc, "error", message=f"no verdict: {detail}"[:500], type=status).text = text
    elif status == "FAIL":
        ET.SubElement(tc, "failure", message=detail[:500], type="FAIL").text = text
    elif Status(status).failed:
        ET.SubElement(tc, "error", message=detail[:500], type=status).text = text
    elif status in ("skip", "reference", "n/a", "unsupported"):
        ET.SubElement(tc, "skipped", message=f"{status}: {detail}"[:500])
    elif status == "known":
        ET.SubElement(tc, "system-out").text = detail


def _junit(run: CheckRun) -> str:
    """One testsuite per target; one testcase per row, except family rows: one per case (``family/case``)."""
    suites = ET.Element("testsuites", name="refimpl check", time=f"{run.seconds:.3f}")
    for t in run.targets:
        where = [f"localisation {t}: {run.localisations[t]}"] if run.localisations.get(t) else []
        analysis = "\n".join(list(run.diagnoses.get(t, [])) + where)
        s = ET.SubElement(suites, "testsuite", name=f"refimpl.{t}")
        judged = _judged(run, t)
        for c in run.cases:
            o = run.results[(c.id, t)]
            if o.cases:
                for r in o.cases:
                    _testcase(s, f"refimpl.{t}.{r.id.split('/')[0]}", r.id, Status(r.status).value, r.detail,
                              analysis, getattr(r, "traceback", ""), judged)
            else:
                _testcase(s, f"refimpl.{t}.{c.group}", c.id, Status(o.status).value, o.detail, analysis,
                          judged=judged)
        cases = s.findall("testcase")
        s.set("tests", str(len(cases)))
        for attr, tag in (("failures", "failure"), ("errors", "error"), ("skipped", "skipped")):
            s.set(attr, str(sum(tc.find(tag) is not None for tc in cases)))
        ET.SubElement(s, "system-out").text = "\n".join(target_lines(run, t))
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def render(run: CheckRun, fmt: str, env: dict | None = None, *, traceback: bool = False) -> str:
    """The report in ``fmt`` (FORMATS); ``traceback`` shows the targets' own tracebacks (table, markdown, json)."""
    env = env or environment()
    if fmt == "json":
        return json.dumps(_as_dict(run, env, traceback), indent=1) + "\n"
    if fmt == "junit":
        return _junit(run)
    return _table(run, env, markdown=(fmt == "markdown"), traceback=traceback)
