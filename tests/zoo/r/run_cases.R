# Runs zoo R functions on cases read from JSON and writes the results as JSON (used by test_zoo_selfcheck.py).
#   Rscript run_cases.R cases.json results.json
# cases.json: [{"fn": "attn_correct", "Q": M, "K": M, "V": M, "mask": M or null}, ...] where a matrix M is
#   {"nrow": n, "ncol": m, "data": [row-major values]}.
# results.json: one object per case: {"ok": true, "output": M, "weights": M or null, "warnings": [...]} or
#   {"ok": false, "error": "message", "warnings": [...]}; non-finite numbers are written as strings ("NaN", "Inf").
suppressPackageStartupMessages(library(jsonlite))
args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 2) stop("usage: Rscript run_cases.R cases.json results.json")
script_dir <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE)[1])))
source(file.path(script_dir, "attention_impls.R"))

as_mat <- function(m) if (is.null(m)) NULL else matrix(as.numeric(m$data), m$nrow, m$ncol, byrow = TRUE)
from_mat <- function(x) {
  x <- as.matrix(x)
  list(nrow = nrow(x), ncol = ncol(x), data = I(as.vector(t(x))))
}

run_one <- function(case) {
  warns <- character(0)
  res <- tryCatch(withCallingHandlers({
    value <- get(case$fn)(as_mat(case$Q), as_mat(case$K), as_mat(case$V), mask = as_mat(case$mask))
    if (is.list(value)) list(ok = TRUE, output = from_mat(value[[1]]), weights = from_mat(value[[2]]))
    else list(ok = TRUE, output = from_mat(value), weights = NULL)
  }, warning = function(w) {
    warns <<- c(warns, conditionMessage(w))
    invokeRestart("muffleWarning")
  }), error = function(e) list(ok = FALSE, error = conditionMessage(e)))
  res$warnings <- I(warns)
  res
}

cases <- fromJSON(args[1], simplifyVector = FALSE)
results <- lapply(cases, run_one)
writeLines(toJSON(results, auto_unbox = TRUE, null = "null", na = "string", digits = I(17)), args[2])
