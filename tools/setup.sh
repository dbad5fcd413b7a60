#!/usr/bin/env bash
# Idempotent setup of a bare Debian 12 machine for refimpl, from the project's own files:
#   1. Debian packages (R, NumPy with OpenBLAS, rpy2, Hypothesis, pytest, torch, gcc/g++ for native targets, ...)
#   2. the CRAN package 'attention' through R's configured repository
#   3. .venv (system site packages) with refimpl installed editable, without network
#   4. onnxruntime-node (pinned in tools/ort/package-lock.json) into tools/ort/node_modules, for the
#      onnx-runtime target; skipped with a note where npm is missing (that target then says why)
# Every step says what it runs; a second run checks and skips in well under 5 s.
# REFIMPL_SKIP_APT=1 skips step 1 (for machines where you manage packages yourself).
set -uo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  r-base-core r-cran-knitr r-cran-jsonlite r-cran-testthat
  python3-numpy python3-rpy2 python3-hypothesis python3-pytest python3-pytest-xdist
  python3-mpmath python3-venv python3-pip python3-threadpoolctl python3-matplotlib python3-torch python3-yaml
  libopenblas0-pthread python3-onnx python3-flake8 python3-mypy gcc g++
)

say()  { printf '[setup] %s\n' "$*"; }
fail() { printf '[setup] FAILED at step "%s".\n[setup] What to do: %s\n' "$1" "$2" >&2; exit 1; }

# --- 1. Debian packages ---------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  say "apt: all ${#APT_PACKAGES[@]} Debian packages present"
elif [ "${REFIMPL_SKIP_APT:-0}" = 1 ]; then
  say "apt: REFIMPL_SKIP_APT=1, not installing: ${missing[*]}"
else
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  say "apt: installing ${missing[*]}"
  say "run: $SUDO apt-get update && $SUDO apt-get install -y ${missing[*]}"
  $SUDO apt-get update -q >/dev/null || fail "apt-get update" "check that Debian's package repositories are reachable, then run 'make setup' again"
  # progress: one line per package downloaded, unpacked and set up (the whole log stays in /tmp/refimpl-apt.log)
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q -o Dpkg::Progress-Fancy=0 "${missing[@]}" 2>&1 \
    | tee /tmp/refimpl-apt.log \
    | grep --line-buffered -E '^(Get:[0-9]+|Unpacking|Setting up) ' \
    | sed -u -E 's/^Get:[0-9]+ [^ ]+ [^ ]+ [^ ]+ ([^ ]+) .*/[setup]   downloaded \1/; s/^Unpacking ([^ ]+).*/[setup]   unpacked \1/; s/^Setting up ([^ ]+).*/[setup]   set up \1/'
  [ "${PIPESTATUS[0]}" -eq 0 ] \
    || fail "apt-get install ${missing[*]}" "read /tmp/refimpl-apt.log; install those packages by hand, then run 'make setup' again"
fi

# --- 2. R package 'attention' from CRAN ------------------------------------------------
command -v Rscript >/dev/null || fail "find Rscript" "install R (Debian: r-base-core), then run 'make setup' again"
if Rscript --vanilla -e 'quit(status = !requireNamespace("attention", quietly = TRUE))' >/dev/null 2>&1; then
  say "R: package 'attention' $(Rscript --vanilla -e 'cat(format(packageVersion("attention")))') present"
else
  say "run: Rscript -e 'install.packages(\"attention\")'   (R's configured repository)"
  Rscript -e 'options(warn = 1); install.packages("attention"); if (!requireNamespace("attention", quietly = TRUE)) quit(status = 1)' >/tmp/refimpl-cran.log 2>&1 \
    || fail "install.packages(\"attention\")" "read /tmp/refimpl-cran.log; check options('repos') in R, then run 'make setup' again"
  say "R: installed 'attention' $(Rscript --vanilla -e 'cat(format(packageVersion("attention")))')"
fi

# --- 3. venv with refimpl installed editable --------------------------------------------
if [ ! -x .venv/bin/python ]; then
  say "run: /usr/bin/python3 -m venv --system-site-packages .venv"
  /usr/bin/python3 -m venv --system-site-packages .venv || fail "create .venv" "install python3-venv, remove .venv, run 'make setup' again"
fi
if .venv/bin/python -c 'import refimpl, sys; sys.exit(0 if refimpl.__file__.startswith(sys.argv[1]) else 1)' "$PWD/refimpl" 2>/dev/null \
   && [ -x .venv/bin/refimpl ]; then
  say "venv: refimpl installed editable in .venv"
else
  say "run: .venv/bin/pip install --no-build-isolation --no-deps -e ."
  .venv/bin/pip install -q --no-build-isolation --no-deps -e . >/tmp/refimpl-pip.log 2>&1 \
    || fail "pip install -e ." "read /tmp/refimpl-pip.log (setuptools comes from Debian's python3-setuptools)"
  say "venv: refimpl installed editable"
fi

# --- 4. ONNX Runtime for the onnx-runtime target (npm, project-local) ------------------------
# --ignore-scripts: the package's install script downloads GPU extras; the CPU library ships inside it.
ORT_VERSION=$(sed -n 's/.*"onnxruntime-node": *"\([^"]*\)".*/\1/p' tools/ort/package.json)
ORT_PKG=tools/ort/node_modules/onnxruntime-node/package.json
if [ -f "$ORT_PKG" ] && grep -q "\"version\": \"$ORT_VERSION\"" "$ORT_PKG"; then
  say "ort: onnxruntime-node $ORT_VERSION present in tools/ort"
else
  if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    if [ "${REFIMPL_SKIP_APT:-0}" = 1 ]; then
      say "ort: node/npm not found and REFIMPL_SKIP_APT=1: the onnxruntime column will be skipped"
    else
      SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
      say "run: $SUDO apt-get install -y nodejs npm   (Node for the onnxruntime column)"
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q nodejs npm >/tmp/refimpl-node.log 2>&1 \
        || fail "apt-get install nodejs npm" "read /tmp/refimpl-node.log; install Node.js and npm, then run 'make setup' again"
    fi
  fi
fi
if [ -f "$ORT_PKG" ] && grep -q "\"version\": \"$ORT_VERSION\"" "$ORT_PKG"; then
  :
elif command -v npm >/dev/null; then
  say "run: (cd tools/ort && npm ci --ignore-scripts --no-audit --no-fund)"
  (cd tools/ort && npm ci --ignore-scripts --no-audit --no-fund) >/tmp/refimpl-npm.log 2>&1 \
    || fail "npm ci in tools/ort" "read /tmp/refimpl-npm.log; check that the npm registry is reachable, then run 'make setup' again"
  say "ort: installed onnxruntime-node $ORT_VERSION into tools/ort/node_modules"
fi
