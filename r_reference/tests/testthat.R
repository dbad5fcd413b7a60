# R-side leg of CI: testthat (3rd edition) reads the same fixtures/ JSON as Python and checks the R
# package 'attention' directly; no Python is involved.
#   Rscript r_reference/tests/testthat.R        (from the repository root)
# REFIMPL_FIXTURES overrides the fixtures directory.
library(testthat)
local_edition(3)
args <- commandArgs(trailingOnly = FALSE)
here <- dirname(normalizePath(sub("^--file=", "", args[grep("^--file=", args)])))
res <- test_dir(file.path(here, "testthat"), reporter = "summary", stop_on_failure = FALSE)
df <- as.data.frame(res)
failed <- sum(df$failed) + sum(df$error)
cat(sprintf("R side: %d passed, %d failed, %d skipped\n", sum(df$nb) - sum(df$failed) - sum(df$skipped),
            failed, sum(df$skipped)))
quit(status = if (failed > 0) 1L else 0L)
