# Conformance of an R attention function, in R alone (no Python):
#
#   Rscript r_reference/conform.R DIR file.R fn
#
# DIR is a directory written by `refimpl export` (it has index.json) or refimpl's fixtures/ directory.
# fn follows the protocol of the CRAN package 'attention': fn(Q, K, V, mask = NULL) with numeric matrices
# Q (Sq x D), K (Sk x D), V (Sk x Dv), mask NULL or a 0/1 Sq x Sk matrix (1 = attend); it returns the output
# (Sq x Dv) or list(output, weights (Sq x Sk)).
#
# Isolation: file.R is sourced into its own environment, whose parent is the search path below the global
# environment (base, stats, utils, methods, ... and the packages file.R attaches), never this script's
# global environment. It is sourced in a forked child R process first, so that quit(), a crash, an error or
# a hang at its top level is a usage error (exit 2) rather than the end of this script, then here. The calls
# of fn for one case (its (b, h) slices; a fixture's sdpa step) run in a forked child R process
# (parallel::mcparallel; POSIX only: on Windows they run in this process, unisolated): quit() or a crash
# during a call is the case's `crash`, a call still running after REFIMPL_R_TIMEOUT seconds (default 60;
# polled, so up to half a second more) is killed with its process and is the case's `timeout`, and the run
# goes on with the next case. Only the values fn returned come back; they are checked and judged here, in
# the parent process, which fn cannot reach. What file.R and fn print goes to stderr (stdout is the
# verdicts'). State fn keeps in R memory does not outlive its case's child process.
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
# Prints one line per case (pass RATIO | FAIL detail | error message | crash | timeout), "N passed, N failed
# (N FAIL, N error[, N crash][, N timeout]), N n/a" and "RESULT: all targets conform" (exit 0) or
# "RESULT: NON-CONFORMANCE" (exit 1); usage errors exit 2. A value that is not a numeric matrix of the
# expected shape (or list(output, weights) of them) is an `error` naming what fn returned; a case file that
# cannot be read (invalid JSON, missing fields) is an `error` naming the file. Any other unexpected error
# still ends with the count and RESULT: NON-CONFORMANCE (exit 1).
# Comparisons are testthat expectations (expect_lte, expect_true; expect_equal on a fixture output's size).

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
TIMEOUT <- local({
  v <- Sys.getenv("REFIMPL_R_TIMEOUT")
  t <- if (nzchar(v)) suppressWarnings(as.numeric(v)) else 60
  if (is.na(t) || !is.finite(t) || t <= 0) usage(sprintf("REFIMPL_R_TIMEOUT=%s: expected a positive number of seconds", v))
  t
})
FORK <- .Platform$OS.type == "unix"
EPS <- c(float64 = 2^-53, float32 = 2^-24, float16 = 2^-11, bfloat16 = 2^-8)

# --- isolation ----------------------------------------------------------------------------------------
# f(beat) evaluated in a forked child R process whose stdout goes to stderr; f calls beat(i) as it starts its
# i-th call of fn. -> list(kind = "ok", value) | list(kind = "error", message) (f stopped) | list(kind =
# "crash", beat) (the child ended without a result: quit(), a crash, a signal) | list(kind = "timeout", beat)
# (no result and no new beat for `timeout` seconds: the child is killed). beat: the last call begun.
isolated <- function(f, timeout = TIMEOUT) {
  hb <- tempfile("conform-beat-", tmpdir = dirname(tempdir()))   # outside tempdir(): quit() deletes that one
  on.exit(unlink(hb))
  beat <- function(i) cat(i, file = hb)
  last <- function() {
    b <- suppressWarnings(tryCatch(as.integer(readLines(hb, n = 1L, warn = FALSE)), error = function(e) NA_integer_))
    if (length(b) == 1L) b else NA_integer_
  }
  run <- function() tryCatch(list(kind = "ok", value = f(beat)), error = function(e) list(kind = "error", message = conditionMessage(e)))
  if (!FORK) return(run())
  flush(stdout()); flush(stderr())         # nothing buffered for the child to write twice
  job <- parallel::mcparallel({ sink(stderr()); run() }, mc.set.seed = FALSE)
  now <- function() proc.time()[["elapsed"]]
  seen <- NA_integer_; deadline <- now() + timeout
  while (now() < deadline) {
    got <- suppressWarnings(parallel::mccollect(job, wait = FALSE, timeout = max(0.01, min(deadline - now(), 0.5))))
    if (!is.null(got)) {
      r <- got[[1L]]                       # NULL: the child ended without sending a result
      if (is.list(r) && (identical(r$kind, "ok") || identical(r$kind, "error"))) return(r)
      tempdir(check = TRUE)                # quit() in the child deleted the session's temporary directory
      return(list(kind = "crash", beat = last()))
    }
    b <- last()
    if (!identical(b, seen)) { seen <- b; deadline <- now() + timeout }   # a new call began: its own timeout
  }
  tools::pskill(job$pid, tools::SIGKILL)
  suppressWarnings(parallel::mccollect(job, wait = FALSE, timeout = 5))   # reap it
  list(kind = "timeout", beat = last())
}

# A failed call, as a condition: kind is the case's status (error, crash or timeout)
call_failure <- function(kind, msg) structure(class = c("conform_call", "error", "condition"),
                                              list(message = msg, call = NULL, kind = kind))
status_of <- function(e) if (inherits(e, "conform_call")) e$kind else "error"

# --- the function ---------------------------------------------------------------------------------------
# file.R's expressions evaluated one by one in env; after each, env's parent is again the search path below
# the global environment (library() in file.R puts a package there).
source_user <- function(path, env) {
  exprs <- parse(file = path, keep.source = FALSE)
  oop <- options(topLevelEnvironment = env); on.exit(options(oop))
  for (i in seq_along(exprs)) { eval(exprs[i], env); parent.env(env) <- parent.env(globalenv()) }
}
probe <- isolated(function(beat) { source_user(src, new.env(parent = parent.env(globalenv()))); TRUE })
if (probe$kind == "error") usage(sprintf("file.R %s: cannot be sourced: %s", src, probe$message))
if (probe$kind == "crash") usage(sprintf("file.R %s: R ended while sourcing it (quit() or a crash)", src))
if (probe$kind == "timeout") usage(sprintf("file.R %s: sourcing it took more than %g s (REFIMPL_R_TIMEOUT)", src, TIMEOUT))
fenv <- new.env(parent = parent.env(globalenv()))   # not globalenv(): fn sees none of this script's objects
local({
  sinks <- sink.number(); sink(stderr())   # what file.R prints goes to stderr
  on.exit(while (sink.number() > sinks) sink())
  ok <- tryCatch({ source_user(src, fenv); TRUE }, error = function(e) conditionMessage(e))
  if (!isTRUE(ok)) usage(sprintf("file.R %s: cannot be sourced: %s", src, ok))
})
if (!exists(fname, envir = fenv, inherits = FALSE) || !is.function(get(fname, envir = fenv)))
  usage(sprintf("fn %s: %s defines no function of that name", fname, src))
fun <- get(fname, envir = fenv)

# fn on each call list(Q, K, V, M) in turn, all in one child process (a case's slices), stopping at the first
# call that stops -> list(kind = "ok", values = one list(kind = "ok", value, warnings) or list(kind = "error",
# message, warnings) per call made) or list(kind = "crash" | "timeout" | "error", beat, message).
run_calls <- function(calls) {
  r <- isolated(function(beat) {
    plain <- function(x) {                 # e.g. a Matrix object -> a plain matrix (checked in the parent)
      if (!is.object(x) || is.data.frame(x)) return(x)
      m <- tryCatch(as.matrix(x), error = function(e) x)
      if (is.numeric(m) && !isS4(m)) unclass(m) else m
    }
    out <- list()
    for (i in seq_along(calls)) {
      beat(i)
      a <- calls[[i]]; warns <- character(); err <- NULL
      v <- withCallingHandlers(
        tryCatch(if (is.null(a$M)) fun(a$Q, a$K, a$V) else fun(a$Q, a$K, a$V, mask = a$M),
                 error = function(e) { err <<- conditionMessage(e); NULL }),
        warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") })
      if (!is.null(err)) { out[[i]] <- list(kind = "error", message = err, warnings = warns); break }
      out[[i]] <- list(kind = "ok", value = if (is.list(v) && !is.object(v)) lapply(v, plain) else plain(v), warnings = warns)
    }
    out
  })
  if (r$kind == "ok") return(list(kind = "ok", values = r$value))
  r$message <- switch(r$kind,
    crash = "R ended during the call without returning (quit() or a crash)",
    timeout = sprintf("the call ran for more than %g s and was killed (REFIMPL_R_TIMEOUT)", TIMEOUT),
    sprintf("the child process stopped: %s", r$message))
  r
}

# How a value fn returned is named in messages: "NULL", "a character vector of length 1 ("abc")",
# "a 32 x 8 double matrix", "list(character, double)", ...
what <- function(x) {
  if (is.null(x)) return("NULL")
  if (is.list(x) && !is.object(x))
    return(sprintf("list(%s)", paste(vapply(x, function(e) if (is.null(e)) "NULL" else class(e)[1L], ""), collapse = ", ")))
  if (is.object(x)) return(sprintf("an object of class %s", class(x)[1L]))
  val <- if (is.character(x) && length(x)) sprintf(" (%s)", encodeString(strtrim(x[[1L]], 40L), quote = '"')) else ""
  d <- dim(x)
  if (length(d) == 2L) sprintf("a %d x %d %s matrix%s", d[[1L]], d[[2L]], typeof(x), val)
  else if (length(d)) sprintf("a %s %s array%s", paste(d, collapse = " x "), typeof(x), val)
  else sprintf("a %s vector of length %d%s", typeof(x), length(x), val)
}

# One call's entry of run_calls()$values -> list(output = matrix (sq x dv), weights = matrix (sq x sk) or NULL,
# warnings), or stop() with a conform_call condition of kind "error" (fn stopped, or returned something else).
take_value <- function(r, sq, dv, sk) {
  if (!is.list(r) || !identical(r$kind, "ok")) stop(call_failure("error", if (is.list(r) && is.character(r$message)) r$message else "no result"))
  v <- r$value
  lst <- is.list(v) && !is.object(v)
  out <- if (!lst) v else if (length(v)) v[[1L]] else NULL
  w <- if (lst && length(v) > 1L) v[[2L]] else NULL
  expects <- sprintf("the protocol expects a numeric %d x %d (Sq x Dv) matrix or list(output, weights)", sq, dv)
  if (!is.numeric(out) || is.object(out) || length(dim(out)) > 2L)
    stop(call_failure("error", sprintf("the function returned %s; %s", what(v), expects)))
  out <- as.matrix(out)
  if (nrow(out) != sq || ncol(out) != dv)
    stop(call_failure("error", sprintf("the function returned %s as the output; %s", what(out), expects)))
  if (!is.null(w)) {
    if (!is.numeric(w) || is.object(w) || length(dim(w)) > 2L || NROW(w) != sq || NCOL(w) != sk)
      stop(call_failure("error", sprintf("the function returned %s as the weights; the protocol expects a numeric %d x %d (Sq x Sk) matrix",
                                         what(w), sq, sk)))
    w <- as.matrix(w)
  }
  list(output = out, weights = w, warnings = if (is.character(r$warnings)) r$warnings else character())
}

# One call of fn in its own child process (a fixture's step) -> as take_value, or stop() with a conform_call
call_fn <- function(Q, K, V, mask) {
  run <- run_calls(list(list(Q = Q, K = K, V = V, M = mask)))
  if (run$kind != "ok") stop(call_failure(run$kind, run$message))
  take_value(run$values[1L][[1L]], NROW(Q), NCOL(V), NROW(K))
}

# {dtype, shape, values} (nested row-major lists; "Inf", "-Inf", "NaN" strings) -> an R array in the same order
as_array <- function(a) {
  if (is.null(a)) return(NULL)
  shape <- as.integer(unlist(a$shape))
  vals <- unlist(a$values, use.names = FALSE)
  if (is.character(vals))   # non-finite strings: convert leaf by leaf (unlist would round the numbers)
    vals <- rapply(list(a$values), function(x) if (is.character(x)) as.numeric(x) else x, how = "unlist")
  if (identical(a$dtype, "bool")) vals <- as.logical(vals) else vals <- as.double(vals)
  if (length(shape) && length(vals) != prod(shape))
    stop(sprintf("an array of shape [%s] has %d values", paste(shape, collapse = ", "), length(vals)))
  if (length(shape) == 0L) return(vals)
  if (length(shape) == 1L) return(vals)
  aperm(array(vals, dim = rev(shape)), rev(seq_along(shape)))
}

worst_ratio <- function(got, want, atol) {
  d <- abs(got - want)
  d[is.nan(got) != is.nan(want)] <- Inf
  d[is.nan(got) & is.nan(want)] <- 0
  if (!length(d)) return(0)
  if (atol > 0) max(d / atol) else if (all(d == 0)) 0 else Inf
}

`%||%` <- function(a, b) if (is.null(a)) b else a

# A case file's array `name` (a list element of part), checked to have the shape dims
need_array <- function(part, name, label, dims) {
  a <- as_array(part[[name]])
  if (is.null(a)) stop(sprintf("%s is missing", label))
  if (!identical(as.integer(dim(a) %||% length(a)), as.integer(dims)))
    stop(sprintf("%s has shape [%s], the features say [%s]", label, paste(dim(a) %||% length(a), collapse = ", "),
                 paste(dims, collapse = ", ")))
  a
}

# One exported case -> list(status, detail)
check_exported <- function(path) {
  if (!file.exists(path)) stop("no such file")
  case <- jsonlite::fromJSON(path, simplifyVector = FALSE)
  if (!is.list(case)) stop("not a JSON object")
  f <- case$features; tl <- case$tolerance
  for (nm in c("B", "Hq", "Sq", "Sk", "D", "Dv"))
    if (!is.numeric(f[[nm]]) || length(f[[nm]]) != 1L || f[[nm]] < 1) stop(sprintf("features.%s is missing or not a positive number", nm))
  if (!is.numeric(tl$atol) || length(tl$atol) != 1L) stop("tolerance.atol is missing or not a number")
  q <- need_array(case$inputs, "q", "inputs.q", c(f$B, f$Hq, f$Sq, f$D))
  k <- need_array(case$inputs, "k", "inputs.k", c(f$B, f$Hq, f$Sk, f$D))
  v <- need_array(case$inputs, "v", "inputs.v", c(f$B, f$Hq, f$Sk, f$Dv))
  keep <- if (is.null(case$inputs$keep)) NULL else need_array(case$inputs, "keep", "inputs.keep", c(f$B, f$Hq, f$Sq, f$Sk))
  want <- need_array(case$expected, "output", "expected.output", c(f$B, f$Hq, f$Sq, f$Dv))
  dead <- need_array(case$expected, "dead_rows", "expected.dead_rows", c(f$B, f$Hq, f$Sq))
  absent <- if (is.null(case$expected$absent_rows)) NULL else   # a packed batch's padding rows: not judged
    need_array(case$expected, "absent_rows", "expected.absent_rows", c(f$B, f$Hq, f$Sq))
  want_w <- if (is.null(case$expected$weights)) NULL else need_array(case$expected, "weights", "expected.weights", c(f$B, f$Hq, f$Sq, f$Sk))
  if (!is.null(want_w) && (!is.numeric(tl$weights_atol) || length(tl$weights_atol) != 1L))
    stop("tolerance.weights_atol is missing or not a number")
  if (!is.null(f$scale)) q <- q * (f$scale * sqrt(f$D))
  slices <- list()
  for (b in seq_len(f$B)) for (h in seq_len(f$Hq))
    slices[[length(slices) + 1L]] <- list(
      b = b, h = h, Q = matrix(q[b, h, , ], f$Sq, f$D), K = matrix(k[b, h, , ], f$Sk, f$D), V = matrix(v[b, h, , ], f$Sk, f$Dv),
      M = if (is.null(keep)) NULL else matrix(as.double(keep[b, h, , ]), f$Sq, f$Sk))
  run <- run_calls(slices)                 # every slice in one child; judged here, slice by slice
  if (run$kind != "ok") {
    s <- slices[[if (is.na(run$beat %||% NA)) 1L else min(max(run$beat, 1L), length(slices))]]
    return(list(status = run$kind, detail = sprintf("slice (%d, %d): %s", s$b, s$h, run$message)))
  }
  worst <- 0; warns <- character()
  for (i in seq_along(slices)) {
    b <- slices[[i]]$b; h <- slices[[i]]$h; V <- slices[[i]]$V
    r <- tryCatch(take_value(run$values[i][[1L]], f$Sq, f$Dv, f$Sk), error = function(e) e)
    if (inherits(r, "error")) return(list(status = status_of(r), detail = sprintf("slice (%d, %d): %s", b, h, conditionMessage(r))))
    warns <- c(warns, r$warnings)
    out <- r$output
    gone <- if (is.null(absent)) rep(FALSE, f$Sq) else as.logical(absent[b, h, ])
    none <- as.logical(dead[b, h, ]) & !gone
    live <- !as.logical(dead[b, h, ]) & !gone
    W <- matrix(want[b, h, , ], f$Sq, f$Dv)
    ratio <- worst_ratio(out[live, , drop = FALSE], W[live, , drop = FALSE], tl$atol)
    testthat::expect_lte(ratio, 1, label = sprintf("worst |output - expected| / atol (%.3g) in slice (%d, %d)", tl$atol, b, h))
    if (any(none)) {
      rows <- out[none, , drop = FALSE]
      mean_v <- matrix(colMeans(V), sum(none), f$Dv, byrow = TRUE)
      ok <- all(rows == 0) || all(is.nan(rows)) ||
        (all(is.finite(rows)) && all(abs(rows - mean_v) <= 1e-2 * abs(mean_v) + 1e-3 * (1 + max(abs(mean_v)))))
      testthat::expect_true(ok, label = sprintf("rows with no key in slice (%d, %d) are zeros, NaN or mean(V) -", b, h))
    }
    if (!is.null(r$weights) && !is.null(want_w)) {
      Ww <- matrix(want_w[b, h, , ], f$Sq, f$Sk)
      testthat::expect_lte(worst_ratio(r$weights[live, , drop = FALSE], Ww[live, , drop = FALSE], tl$weights_atol), 1,
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
      o <- r$output; w <- r$weights
      if (one) list(as.vector(o), if (is.null(w)) NULL else as.vector(w)) else list(o, w)
    },
    NULL)
}

check_fixture <- function(path) {
  fx <- jsonlite::fromJSON(path, simplifyVector = FALSE)
  if (!is.list(fx) || !identical(fx$schema, "refimpl-fixture/1")) return(NULL)
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
    if (inherits(r, "error")) return(list(status = status_of(r), detail = sprintf("%s: %s", st$fn, conditionMessage(r))))
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
        testthat::expect_equal(length(got), length(want), label = sprintf("size of %s", outs[j]))
        atol <- fixture_tolerance(e$tolerance, want)
        d <- abs(as.vector(got) - as.vector(want))
        ratio <- max(ifelse(d == 0, 0, d / atol))
        testthat::expect_lte(ratio, 1, label = sprintf("worst |%s - %s| / tolerance (%s)", outs[j], e$by, e$tolerance$rule))
        worst <- max(worst, ratio); n <- n + 1L
      }
    }
  }
  if (n == 0L) return(NULL)
  list(status = "pass", detail = sprintf("%.2g (%d arrays)", worst, n))
}

# --- the run ------------------------------------------------------------------------------------------
# One case's verdict: a failed expectation is FAIL; any other error (a case file that cannot be read, a
# missing field) is an error naming the file.
verdict <- function(f, file) tryCatch(f(),
  expectation_failure = function(e) list(status = "FAIL", detail = gsub("\n", " ", conditionMessage(e))),
  error = function(e) list(status = "error", detail = sprintf("case file %s: %s", file, gsub("[[:space:]]+", " ", conditionMessage(e)))))

# The verdicts are a local variable of main(), in this (the parent) process: fn runs in forked children, so
# nothing it does (results <<- list(), assign(..., globalenv())) reaches them; file.R's top level, sourced
# here, sees an environment whose parent is not this script's global environment.
main <- function() {
  results <- list()
  add <- function(id, r) results[[id]] <<- r
  ok <- tryCatch({
    if (file.exists(file.path(dir, "index.json"))) {
      index <- tryCatch(jsonlite::fromJSON(file.path(dir, "index.json"), simplifyVector = FALSE), error = function(e) e)
      if (inherits(index, "error") || !is.list(index) || !is.list(index$cases))
        add("index.json", list(status = "error", detail = sprintf("case file index.json: %s", if (inherits(index, "error"))
          gsub("[[:space:]]+", " ", conditionMessage(index)) else "no list of cases")))
      else for (i in seq_along(index$cases)) {
        row <- index$cases[[i]]
        id <- if (is.character(row$id) && length(row$id) == 1L) row$id else sprintf("index.json case %d", i)
        add(id, if (!is.character(row$file) || length(row$file) != 1L)
                  list(status = "error", detail = sprintf("case file index.json: case %d names no file", i))
                else if (!is.null(row$r_protocol)) list(status = "n/a", detail = row$r_protocol)
                else verdict(function() check_exported(file.path(dir, row$file)), row$file))
      }
    } else {
      for (p in sort(list.files(dir, pattern = "\\.json$", recursive = TRUE))) {
        r <- verdict(function() check_fixture(file.path(dir, p)), p)
        if (!is.null(r)) add(sub("\\.json$", "", p), r)
      }
    }
    TRUE
  }, error = function(e) conditionMessage(e))
  if (!isTRUE(ok))
    add("conform.R", list(status = "error", detail = sprintf("unexpected error, the run stopped here: %s", gsub("\n", " ", ok))))
  results
}

report <- function(results) {
  counts <- c(pass = 0L, FAIL = 0L, error = 0L, crash = 0L, timeout = 0L, "n/a" = 0L)
  for (id in names(results)) {
    r <- results[[id]]
    counts[[r$status]] <- counts[[r$status]] + 1L
    w <- if (length(r$warnings)) sprintf("  [R warnings: %s]", paste(r$warnings, collapse = " | ")) else ""
    cat(sprintf("%-34s %-5s %s%s\n", id, r$status, substr(r$detail, 1L, 300L), w))
  }
  failed <- counts[["FAIL"]] + counts[["error"]] + counts[["crash"]] + counts[["timeout"]]
  more <- paste0(if (counts[["crash"]]) sprintf(", %d crash", counts[["crash"]]) else "",
                 if (counts[["timeout"]]) sprintf(", %d timeout", counts[["timeout"]]) else "")
  cat(sprintf("%d passed, %d failed (%d FAIL, %d error%s), %d n/a: %s on %s\n", counts[["pass"]], failed,
              counts[["FAIL"]], counts[["error"]], more, counts[["n/a"]], fname, dir))
  failed == 0L && counts[["pass"]] > 0L
}

conform <- tryCatch(report(main()), error = function(e) {
  cat(sprintf("conform.R: unexpected error: %s\n", conditionMessage(e))); FALSE })
if (isTRUE(conform)) {
  cat("RESULT: all targets conform\n"); quit(status = 0L)
} else {
  cat("RESULT: NON-CONFORMANCE\n"); quit(status = 1L)
}
