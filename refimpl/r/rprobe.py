"""The probe of R in a subprocess: is there an R, does it start, is the package ``attention`` installed and
working, is ``knitr`` there — asked of ``Rscript`` from the R_HOME embedded R would use, with a short
timeout, *before* anything embeds R (a broken R_HOME aborts an embedding process; a corrupt package
would flood the console with one error per case). Never raises; never starts R in this process.

:func:`probe` is the cached answer as an :class:`Availability` (``refimpl env`` uses it alone);
:func:`refimpl.r.bridge.availability` embeds R only after it said yes.

The R_HOME decided: ``$R_HOME`` when set and not empty (what rpy2 embeds), otherwise what ``R RHOME``
prints (the ``R`` on PATH, as rpy2 finds it).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Availability", "probe", "probe_r", "PROBE_TIMEOUT_S", "INSTALL_HINT", "R_HIDE_ENV"]

PROBE_TIMEOUT_S = 30.0     # R with the package loads in ~0.5 s; far above, it hangs
R_HIDE_ENV = "REFIMPL_NO_R"
INSTALL_HINT = "run Rscript -e 'install.packages(\"attention\")' (or 'make setup')"

# One line "key=value" per fact. The package is loaded and called, not only found: a damaged installation
# (e.g. a corrupt lazy-load database) passes requireNamespace and fails on the first call.
_PROBE_CODE = r"""
one <- function(x) if (length(x) == 0L || is.na(x[1L])) "NA" else gsub("[\r\n]+", " ", as.character(x[1L]))
ver <- function(p) tryCatch(format(utils::packageVersion(p)), error = function(e) NA_character_)
out <- list(r = paste(R.version$major, R.version$minor, sep = "."),
            blas = tryCatch(unname(extSoftVersion()["BLAS"]), error = function(e) NA_character_),
            knitr = if (suppressWarnings(requireNamespace("knitr", quietly = TRUE))) ver("knitr") else NA_character_,
            attention_path = find.package("attention", quiet = TRUE), attention = NA_character_,
            attention_error = NA_character_)
if (length(out$attention_path)) {
  out$attention_error <- suppressWarnings(tryCatch({
    x <- matrix(c(1, 2, 3, 4), 2L)
    for (f in c("SoftMax", "RowMax", "ComputeWeights", "attention")) getExportedValue("attention", f)
    r <- unlist(attention::attention(x, x, x))
    if (!is.numeric(r) || length(r) == 0L || !all(is.finite(r)))
      stop("attention::attention() on a 2 x 2 example returned no finite numbers")
    NA_character_
  }, error = function(e) conditionMessage(e)))
  if (is.na(out$attention_error)) out$attention <- ver("attention")
}
for (k in names(out)) cat(k, "=", one(out[[k]]), "\n", sep = "")
"""


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str                      # empty when ok; otherwise what is missing, where, and what to do
    r_version: str | None = None
    rpy2_version: str | None = None
    attention_version: str | None = None
    knitr_version: str | None = None
    r_blas: str | None = None

    def describe(self) -> str:
        if not self.ok:
            return f"R unavailable: {self.reason}"
        return (f"R {self.r_version}, attention {self.attention_version}, rpy2 {self.rpy2_version}, "
                f"knitr {self.knitr_version or 'missing'}")


_probed: Availability | None = None
_lock = threading.Lock()         # one probe at a time: a second caller waits for the first's answer


def probe_in_background() -> None:
    """Start :func:`probe` in a thread (its ``Rscript`` runs while the check loads targets and runs the families);
    the first :func:`probe` after it waits for its answer instead of starting another."""
    if _probed is None:
        threading.Thread(target=probe, name="refimpl-r-probe", daemon=True).start()


def probe(refresh: bool = False, timeout: float = PROBE_TIMEOUT_S) -> Availability:
    """The cached :func:`probe_r` (``REFIMPL_NO_R=1`` hides R); never raises, never embeds R. ``ok``: R starts
    and ``attention`` loads and computes. rpy2 is reported (its installed version), not required."""
    with _lock:
        return _probe(refresh, timeout)


def _probe(refresh: bool, timeout: float) -> Availability:
    global _probed
    if _probed is not None and not refresh:
        return _probed
    try:
        from importlib.metadata import PackageNotFoundError, version
        rpy2_version = version("rpy2")
    except PackageNotFoundError:
        rpy2_version = None
    if os.environ.get(R_HIDE_ENV, "") not in ("", "0"):
        _probed = Availability(False, f"R is hidden from this process by {R_HIDE_ENV}=1", rpy2_version=rpy2_version)
    else:
        _probed = probe_r(timeout, rpy2_version)
    return _probed


def _r_home(timeout: float) -> tuple[str | None, str]:
    """(R_HOME, "") or (None, why not)."""
    env = os.environ.get("R_HOME", "")
    if env:
        return env, ""
    r = shutil.which("R")
    if r is None:
        return None, "R was not found (no 'R' on PATH and R_HOME unset); install R (Debian: r-base-core) or set R_HOME"
    try:
        p = subprocess.run([r, "RHOME"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"'{r} RHOME' failed: {e}"
    home = p.stdout.strip().splitlines()[-1:] if p.returncode == 0 else []
    if not home:
        return None, f"'{r} RHOME' failed (exit {p.returncode}): {_tail(p.stderr)}"
    return home[0], ""


def _tail(text: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[:400] or "(no output)"


def probe_r(timeout: float = PROBE_TIMEOUT_S, rpy2_version: str | None = None) -> Availability:
    """Run the probe (uncached); see the module docstring."""
    home, why = _r_home(timeout)
    if home is None:
        return Availability(False, why, rpy2_version=rpy2_version)
    rscript = Path(home) / "bin" / "Rscript"
    origin = f"R_HOME={home}" if os.environ.get("R_HOME") else f"R's home {home} (from 'R RHOME')"
    if not os.access(rscript, os.X_OK):
        return Availability(False, f"{origin} is not an R installation (no executable {rscript}); "
                                   f"unset R_HOME or point it at R ('R RHOME' prints it)", rpy2_version=rpy2_version)
    try:
        p = subprocess.run([str(rscript), "-e", _PROBE_CODE], capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Availability(False, f"{origin}: {rscript} did not answer within {timeout:g} s (R hangs at start-up?)",
                            rpy2_version=rpy2_version)
    except OSError as e:
        return Availability(False, f"{origin}: {rscript} cannot be run: {e}", rpy2_version=rpy2_version)
    facts = dict(ln.split("=", 1) for ln in p.stdout.splitlines() if "=" in ln)
    if p.returncode != 0 or "r" not in facts:
        return Availability(False, f"{origin}: R does not start ({rscript} exit {p.returncode}): {_tail(p.stderr)}",
                            rpy2_version=rpy2_version)
    get = lambda k: None if facts.get(k, "NA") == "NA" else facts[k]   # noqa: E731
    seen = dict(r_version=get("r"), rpy2_version=rpy2_version, knitr_version=get("knitr"), r_blas=get("blas"))
    if get("attention_path") is None:
        return Availability(False, f"the R package 'attention' is not installed; {INSTALL_HINT}", **seen)
    if get("attention_error") is not None:
        return Availability(False, f"the R package 'attention' installed at {facts['attention_path']} is broken: "
                                   f"{facts['attention_error']}; reinstall it ({INSTALL_HINT})", **seen)
    return Availability(True, "", attention_version=get("attention"), **seen)
