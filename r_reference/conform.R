# Conformance of an R attention function, in R alone (no Python):
#
#   Rscript r_reference/conform.R DIR file.R fn
#
# DIR is a directory written by `refimpl export` (it has index.json) or refimpl's fixtures/ directory.
# fn follows the protocol of the CRAN package 'attention': fn(Q, K, V, mask = NULL) with numeric matrices
# Q (Sq x D), K (Sk x D), V (Sk x Dv), mask NULL or a 0/1 Sq x Sk matrix (1 = attend); it returns the output
# (Sq x Dv) or list(output, weights). The file is sourced into its own environment.
#
# Exported cases: each (b, h) slice is one call; a case with an explicit scale s hands fn Q * s * sqrt(D)
# (the protocol has no scale). The output's rows that have a key must lie within the case's tolerance$atol
# of the expected float64 output (weights within tolerance$weights_atol, when fn returns them); a row with
# no key may be zeros, NaN or the mean of V's rows. Cases an R function cannot express (r_protocol not null:
# additive masks, softcap, ALiBi, GQA) are n/a.
# Fixtures: the steps matmul, transpose, row and multiply are computed here; sdpa and general_attention call
# fn; each of their outputs is compared with every expectation that has values, under its rule (exact,
# printed: half a unit of the last printed digit, forward: 4 * eps(dtype) * n_terms * magnitude).
#
# Prints one line per case (pass RATIO | FAIL detail | error message), "N passed, N failed" and
# "RESULT: all targets conform" (exit 0) or "RESULT: NON-CONFORMANCE" (exit 1); usage errors exit 2.
# Comparisons are testthat expectations (expect_lte, expect_true, expect_equal on shapes).

suppressPackageStartupMessages({ library(jsonlite); library(testthat) })

usage <- function(msg) {
  cat(sprintf("conform.R: %s\nusage: Rscript conform.R DIR file.R fn\n", msg), file = stderr())
  quit(status = 2L)
}
args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 3L) usage(sprintf("expected 3 arguments (DIR file.R fn), got %d", length(args)))
dir <- args[[1L]]; src <- args[[2L]]; fname <- args[[3L]]
if (!dir.exists(dir)) usage(sprintf("DIR %s: no such directory", dir))
if (!file.exists(src)) usage(sprintf("file.R %s: no such file", src))
fenv <- new.env(parent = globalenv())
sys.source(src, envir = fenv)
if (!exists(fname, envir = fenv, inherits = FALSE) || !is.function(get(fname, envir = fenv)))
  usage(sprintf("fn %s: %s defines no function of that name", fname, src))
fun <- get(fname, envir = fenv)
EPS <- c(float64 = 2^-53, float32 = 2^-24, float16 = 2^-11, bfloat16 = 2^-8)

# {dtype, shape, values} (nested row-major lists; "Inf", "-Inf", "NaN" strings) -> an R array in the same order
as_array <- function(a) {
  if (is.null(a)) return(NULL)
  shape <- as.integer(unlist(a$shape))
  vals <- unlist(a$values, use.names = FALSE)
  if (is.character(vals))   # non-finite strings: convert leaf by leaf (unlist would round the numbers)
    vals <- rapply(list(a$values), function(x) if (is.character(x)) as.numeric(x) else x, how = "unlist")
  if (identical(a$dtype, "bool")) vals <- as.logical(vals) else vals <- as.double(vals)
  if (length(shape) == 0L) return(vals)
  if (length(shape) == 1L) return(vals)
  aperm(array(vals, dim = rev(shape)), rev(seq_along(shape)))
}

# Call fn; the result as list(output = matrix, weights = matrix or NULL, warnings = character)
call_fn <- function(Q, K, V, mask) {
  warns <- character()
  r <- withCallingHandlers(if (is.null(mask)) fun(Q, K, V) else fun(Q, K, V, mask = mask),
                           warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") })
  if (is.list(r)) list(output = r[[1L]], weights = if (length(r) > 1L) r[[2L]] else NULL, warnings = warns)
  else list(output = r, weights = NULL, warnings = warns)
}

worst_ratio <- function(got, want, atol) {
  d <- abs(got - want)
  d[is.nan(got) != is.nan(want)] <- Inf
  d[is.nan(got) & is.nan(want)] <- 0
  if (!length(d)) return(0)
  if (atol > 0) max(d / atol) else if (all(d == 0)) 0 else Inf
}

# One exported case -> list(status, detail)
check_exported <- function(path) {
  case <- fromJSON(path, simplifyVector = FALSE)
  q <- as_array(case$inputs$q); k <- as_array(case$inputs$k); v <- as_array(case$inputs$v)
  keep <- as_array(case$inputs$keep)
  want <- as_array(case$expected$output); dead <- as_array(case$expected$dead_rows)
  want_w <- as_array(case$expected$weights)
  f <- case$features; tl <- case$tolerance
  if (!is.null(f$scale)) q <- q * (f$scale * sqrt(f$D))
  worst <- 0; warns <- character()
  for (b in seq_len(f$B)) for (h in seq_len(f$Hq)) {
    Q <- matrix(q[b, h, , ], f$Sq, f$D); K <- matrix(k[b, h, , ], f$Sk, f$D); V <- matrix(v[b, h, , ], f$Sk, f$Dv)
    M <- if (is.null(keep)) NULL else matrix(as.double(keep[b, h, , ]), f$Sq, f$Sk)
    r <- tryCatch(call_fn(Q, K, V, M), error = function(e) e)
    if (inherits(r, "error")) return(list(status = "error", detail = sprintf("slice (%d, %d): %s", b, h, conditionMessage(r))))
    warns <- c(warns, r$warnings)
    out <- as.matrix(r$output)
    expect_equal(dim(out), c(f$Sq, f$Dv), label = sprintf("output shape of slice (%d, %d)", b, h))
    live <- !dead[b, h, ]
    W <- matrix(want[b, h, , ], f$Sq, f$Dv)
    ratio <- worst_ratio(out[live, , drop = FALSE], W[live, , drop = FALSE], tl$atol)
    expect_lte(ratio, 1, label = sprintf("worst |output - expected| / atol (%.3g) in slice (%d, %d)", tl$atol, b, h))
    if (any(!live)) {
      rows <- out[!live, , drop = FALSE]
      mean_v <- matrix(colMeans(V), sum(!live), f$Dv, byrow = TRUE)
      ok <- all(rows == 0) || all(is.nan(rows)) ||
        (all(is.finite(rows)) && all(abs(rows - mean_v) <= 1e-2 * abs(mean_v) + 1e-3 * (1 + max(abs(mean_v)))))
      expect_true(ok, label = sprintf("rows with no key in slice (%d, %d) are zeros, NaN or mean(V) -", b, h))
    }
    if (!is.null(r$weights) && !is.null(want_w)) {
      w <- as.matrix(r$weights)
      expect_equal(dim(w), c(f$Sq, f$Sk), label = sprintf("weights shape of slice (%d, %d)", b, h))
      Ww <- matrix(want_w[b, h, , ], f$Sq, f$Sk)
      expect_lte(worst_ratio(w[live, , drop = FALSE], Ww[live, , drop = FALSE], tl$weights_atol), 1,
                 label = sprintf("worst |weights - expected| / weights_atol in slice (%d, %d)", b, h))
    }
    worst <- max(worst, ratio)
  }
  list(status = "pass", detail = sprintf("%.2g", worst),
       warnings = unique(warns))
}

# --- fixtures ---------------------------------------------------------------------------------------
fixture_tolerance <- function(t, want) {
  if (t$rule == "exact") return(0 * want)
  if (t$rule == "forward") return(0 * want + 4 * EPS[[t$dtype]] * t$n_terms * t$magnitude)
  dec <- if (is.null(t$decimals)) 0 * want else 0 * want + t$decimals
  if (!is.null(t$significant)) dec <- pmax(dec, t$significant - 1 - floor(log10(ifelse(want == 0, 1, abs(want)))))
  0.5 * 10^(-dec)
}

as_vec_or_mat <- function(x) if (!is.null(dim(x)) && length(dim(x)) == 2L) x else as.vector(x)

run_step <- function(st, vals) {
  a <- lapply(st$args, function(nm) vals[[nm]])
  kw <- st$kwargs
  switch(st$fn,
    matmul = { r <- a$a %*% a$b; if (is.null(dim(a$a)) || is.null(dim(a$b))) as.vector(r) else r },
    transpose = if (is.null(dim(a$a))) a$a else t(a$a),
    row = as.vector(a$a[kw$index + 1L, ]),
    multiply = a$a * kw$factor,
    sdpa = , general_attention = {
      one <- st$fn == "general_attention"
      Q <- if (one) matrix(a$query, 1L) else a$q
      K <- if (one) a$keys else a$k; V <- if (one) a$values else a$v
      if (!is.null(kw$scale)) Q <- Q * (kw$scale * sqrt(ncol(Q)))
      r <- call_fn(Q, K, V, NULL)
      o <- as.matrix(r$output); w <- if (is.null(r$weights)) NULL else as.matrix(r$weights)
      if (one) list(as.vector(o), if (is.null(w)) NULL else as.vector(w)) else list(o, w)
    },
    NULL)
}

check_fixture <- function(path) {
  fx <- fromJSON(path, simplifyVector = FALSE)
  if (!identical(fx$schema, "refimpl-fixture/1")) return(NULL)
  if (!any(vapply(fx$steps, function(s) s$fn %in% c("sdpa", "general_attention"), TRUE))) return(NULL)
  vals <- lapply(fx$inputs, function(a) as_vec_or_mat(as_array(a)))
  for (nm in names(fx$expected)) if (is.null(vals[[nm]])) {
    e <- Filter(function(e) !is.null(e$value), fx$expected[[nm]])
    if (length(e)) vals[[nm]] <- as_vec_or_mat(as_array(e[[1L]]$value))
  }
  worst <- 0; n <- 0L
  for (st in fx$steps) {
    target <- st$fn %in% c("sdpa", "general_attention")
    if (!all(unlist(st$args) %in% names(vals))) next
    r <- if (target) tryCatch(run_step(st, vals), error = function(e) e) else run_step(st, vals)
    if (inherits(r, "error")) return(list(status = "error", detail = sprintf("%s: %s", st$fn, conditionMessage(r))))
    if (is.null(r)) next
    outs <- unlist(st$out)
    if (!target) { vals[[outs[1L]]] <- r; next }
    for (j in seq_along(outs)) {
      got <- r[[j]]
      if (is.null(got)) next
      vals[[outs[j]]] <- got
      for (e in fx$expected[[outs[j]]]) {
        if (is.null(e$value) || e$by == "shape") next
        want <- as_vec_or_mat(as_array(e$value))
        expect_equal(length(got), length(want), label = sprintf("size of %s", outs[j]))
        atol <- fixture_tolerance(e$tolerance, want)
        d <- abs(as.vector(got) - as.vector(want))
        ratio <- max(ifelse(d == 0, 0, d / atol))
        expect_lte(ratio, 1, label = sprintf("worst |%s - %s| / tolerance (%s)", outs[j], e$by, e$tolerance$rule))
        worst <- max(worst, ratio); n <- n + 1L
      }
    }
  }
  if (n == 0L) return(NULL)
  list(status = "pass", detail = sprintf("%.2g (%d arrays)", worst, n))
}

# --- the run ------------------------------------------------------------------------------------------
verdict <- function(f) tryCatch(f(), expectation_failure = function(e)
  list(status = "FAIL", detail = gsub("\n", " ", conditionMessage(e))))

results <- list()
if (file.exists(file.path(dir, "index.json"))) {
  index <- fromJSON(file.path(dir, "index.json"), simplifyVector = FALSE)
  for (row in index$cases) {
    results[[row$id]] <- if (!is.null(row$r_protocol)) list(status = "n/a", detail = row$r_protocol)
                         else verdict(function() check_exported(file.path(dir, row$file)))
  }
} else {
  for (p in sort(list.files(dir, pattern = "\\.json$", recursive = TRUE))) {
    r <- verdict(function() check_fixture(file.path(dir, p)))
    if (!is.null(r)) results[[sub("\\.json$", "", p)]] <- r
  }
}
counts <- c(pass = 0L, FAIL = 0L, error = 0L, "n/a" = 0L)
for (id in names(results)) {
  r <- results[[id]]
  counts[[r$status]] <- counts[[r$status]] + 1L
  w <- if (length(r$warnings)) sprintf("  [R warnings: %s]", paste(r$warnings, collapse = " | ")) else ""
  cat(sprintf("%-34s %-5s %s%s\n", id, r$status, substr(r$detail, 1L, 300L), w))
}
failed <- counts[["FAIL"]] + counts[["error"]]
cat(sprintf("%d passed, %d failed (%d FAIL, %d error), %d n/a: %s on %s\n", counts[["pass"]], failed,
            counts[["FAIL"]], counts[["error"]], counts[["n/a"]], fname, dir))
if (failed == 0L && counts[["pass"]] > 0L) {
  cat("RESULT: all targets conform\n"); quit(status = 0L)
} else {
  cat("RESULT: NON-CONFORMANCE\n"); quit(status = 1L)
}
