# R code sourced by refimpl/rbridge.py into a private environment (never the global one).
# It evaluates the CRAN package 'attention' as installed; it holds no copy of the package or its
# vignettes (the vignette code is read from the installed package at run time).
#
# Every entry point:
#   * saves and restores the global RNG state (.Random.seed), so R code that calls set.seed()
#     leaves the user's stream as it was;
#   * captures warnings (withCallingHandlers) and console output (capture.output) and returns them;
#   * returns errors as data (message and call) instead of throwing, per case in a batch.

## refimpl_preserving_rng: run f() and put .Random.seed back as it was (or absent, if it was).
refimpl_preserving_rng <- function(f) {
  had <- exists(".Random.seed", envir = globalenv(), inherits = FALSE)
  if (had) saved <- get(".Random.seed", envir = globalenv(), inherits = FALSE)
  on.exit({
    if (had) assign(".Random.seed", saved, envir = globalenv())
    else if (exists(".Random.seed", envir = globalenv(), inherits = FALSE))
      rm(".Random.seed", envir = globalenv())
  })
  f()
}

## refimpl_versions: what is installed.
refimpl_versions <- function() {
  has <- function(p) requireNamespace(p, quietly = TRUE)
  list(r = paste(R.version$major, R.version$minor, sep = "."),
       r_string = R.version.string,
       attention = if (has("attention")) format(utils::packageVersion("attention")) else NA_character_,
       knitr = if (has("knitr")) format(utils::packageVersion("knitr")) else NA_character_,
       blas = if (!is.null(extSoftVersion()["BLAS"])) unname(extSoftVersion()["BLAS"]) else NA_character_)
}

## refimpl_run_cases: r <- call_case(j) for j in 1..n, stored as keep(r) (a list of result components; keep
## may stop(): that case's error). An error in case j is recorded (message and call) and the loop resumes at
## case j + 1, so the other cases' results are kept; warnings are recorded with their case; what R prints is
## captured. Returns list(results, errors, calls, warn_case, warn_msg, console). Shared by refimpl_batch
## (the package's functions) and targets.R's refimpl_target_batch (R functions as targets).
refimpl_run_cases <- function(n, call_case, keep) {
  results <- vector("list", n)
  errors <- rep(NA_character_, n)
  calls <- rep(NA_character_, n)
  warn_case <- integer()
  warn_msg <- character()
  i <- 0L
  # The loop lives in a closure, so R's JIT byte-compiles it (a loop inside tryCatch's promise would be
  # interpreted); `i` tracks the case being evaluated for the handlers.
  run_from <- function(start) {
    for (j in start:n) {
      i <<- j
      results[[j]] <<- keep(call_case(j))
    }
    n + 1L
  }
  start <- 1L
  console <- utils::capture.output(
    withCallingHandlers(
      while (start <= n) {
        start <- tryCatch(run_from(start), error = function(e) {
          errors[i] <<- conditionMessage(e)
          cl <- conditionCall(e)
          calls[i] <<- if (is.null(cl)) NA_character_ else paste(deparse(cl, nlines = 3L), collapse = " ")
          i + 1L
        })
      },
      warning = function(w) {
        warn_case[length(warn_case) + 1L] <<- i
        warn_msg[length(warn_msg) + 1L] <<- conditionMessage(w)
        invokeRestart("muffleWarning")
      }))
  list(results = results, errors = errors, calls = calls, warn_case = warn_case, warn_msg = warn_msg,
       console = console)
}

## refimpl_batch: evaluate attention::<fname> on n cases.
##   ...: one array per argument, the case index on the last axis; passed positionally in the order of
##        argnames (which must be a prefix of the function's formals)
## Returns list(values = list of numeric vectors (one per result component, all cases concatenated),
##              dims = list of integer matrices (n x 4: ndim, d1, d2, d3; ndim -1 = component missing),
##              err_case (integer: the failing cases), err_msg, err_call (their messages and calls),
##              warn_case, warn_msg, console, version).
refimpl_batch <- function(fname, n, argnames, ...) {
  stacked <- list(...)
  refimpl_preserving_rng(function() {
    fun <- getExportedValue("attention", fname)
    # case j of argument k: a contiguous column-major block of the stacked array. The slices are
    # written out per arity (no helper call per argument: this loop is the bridge's hot path).
    ms <- vapply(stacked, function(a) as.integer(prod(utils::head(dim(a), -1L))), 1L)
    ds <- lapply(stacked, function(a) { d <- utils::head(dim(a), -1L); if (length(d) > 1L) d else NULL })
    s1 <- stacked[1L][[1L]]; s2 <- stacked[2L][[1L]]; s3 <- stacked[3L][[1L]]; s4 <- stacked[4L][[1L]]
    ms <- c(ms, 0L, 0L, 0L, 0L)[1:4]
    m1 <- ms[1L]; m2 <- ms[2L]; m3 <- ms[3L]; m4 <- ms[4L]
    i1 <- seq_len(m1); i2 <- seq_len(m2); i3 <- seq_len(m3); i4 <- seq_len(m4)
    d1 <- ds[1L][[1L]]; d2 <- ds[2L][[1L]]; d3 <- ds[3L][[1L]]; d4 <- ds[4L][[1L]]
    call_case <- switch(length(stacked) + 1L,
      function(j) fun(),
      function(j) { a <- s1[(j - 1L) * m1 + i1]; dim(a) <- d1; fun(a) },
      function(j) { a <- s1[(j - 1L) * m1 + i1]; dim(a) <- d1; b <- s2[(j - 1L) * m2 + i2]; dim(b) <- d2
                    fun(a, b) },
      function(j) { a <- s1[(j - 1L) * m1 + i1]; dim(a) <- d1; b <- s2[(j - 1L) * m2 + i2]; dim(b) <- d2
                    c <- s3[(j - 1L) * m3 + i3]; dim(c) <- d3; fun(a, b, c) },
      function(j) { a <- s1[(j - 1L) * m1 + i1]; dim(a) <- d1; b <- s2[(j - 1L) * m2 + i2]; dim(b) <- d2
                    c <- s3[(j - 1L) * m3 + i3]; dim(c) <- d3; e <- s4[(j - 1L) * m4 + i4]; dim(e) <- d4
                    fun(a, b, c, e) })
    if (is.null(call_case)) stop("refimpl_batch takes at most 4 arguments per case")
    run <- refimpl_run_cases(n, call_case, function(r) if (is.list(r)) r else if (is.null(r)) list() else list(r))
    results <- run$results; errors <- run$errors
    ncomp <- max(0L, vapply(results, length, 1L))
    values <- vector("list", ncomp)
    dims <- vector("list", ncomp)
    for (c in seq_len(ncomp)) {
      comp <- if (all(lengths(results) >= c)) lapply(results, `[[`, c)
              else lapply(results, function(r) if (length(r) >= c) r[[c]] else NULL)
      values[[c]] <- as.double(unlist(comp, use.names = FALSE))
      shp <- lapply(comp, function(x) if (is.null(dim(x))) length(x) else dim(x))
      nd <- lengths(shp)
      nd[vapply(comp, is.null, TRUE)] <- -1L
      d <- matrix(0L, nrow = n, ncol = 4L)
      d[, 1L] <- nd
      if (all(nd == nd[1L]) && nd[1L] >= 1L && nd[1L] <= 3L) {   # common case: one rank, no closures
        d[, 1L + seq_len(nd[1L])] <- matrix(as.integer(unlist(shp)), nrow = n, byrow = TRUE)
      } else {
        for (a in 1:3) d[, a + 1L] <- vapply(shp, function(s) if (length(s) >= a) as.integer(s[a]) else 0L, 1L)
      }
      dims[[c]] <- d
    }
    names(values) <- names(dims) <- sprintf("c%d", seq_len(ncomp))
    failed <- which(!is.na(errors))
    list(ncomp = ncomp, values = values, dims = dims,
         err_case = failed, err_msg = errors[failed], err_call = run$calls[failed],
         warn_case = run$warn_case, warn_msg = run$warn_msg, console = run$console,
         version = format(utils::packageVersion("attention")))
  })
}

## refimpl_run_vignette: run the installed vignette code <name>.R in a fresh environment whose parent
## is parent.env(globalenv()) (user globals do not leak in) and return every variable it created.
## The code is run as installed, setup chunk included: knitr::opts_chunk$set needs the knitr package
## (Debian r-cran-knitr; CRAN 'knitr'), which refimpl's setup installs.
refimpl_run_vignette <- function(name) {
  refimpl_preserving_rng(function() {
    path <- system.file("doc", paste0(name, ".R"), package = "attention")
    if (!nzchar(path))
      stop(sprintf("the installed package attention %s has no vignette code doc/%s.R",
                   format(utils::packageVersion("attention")), name))
    suppressPackageStartupMessages(library(attention))  # attach first, so the vignette's env sees it
    exprs <- parse(path, keep.source = FALSE)
    env <- new.env(parent = parent.env(globalenv()))
    warns <- character()
    console <- utils::capture.output(
      withCallingHandlers(for (e in exprs) eval(e, env),
                          warning = function(w) {
                            warns[length(warns) + 1L] <<- conditionMessage(w)
                            invokeRestart("muffleWarning")
                          }))
    vars <- mget(ls(env, all.names = TRUE), envir = env)
    vars <- lapply(vars, function(x) if (is.numeric(x)) { storage.mode(x) <- "double"; x } else x)
    list(vars = vars, console = console, warnings = warns, path = path,
         version = format(utils::packageVersion("attention")))
  })
}

## refimpl_runif_batch: R's own set.seed + runif for a batch of (seed, n, min, max).
refimpl_runif_batch <- function(seeds, ns, mins, maxs) {
  refimpl_preserving_rng(function() {
    as.double(unlist(lapply(seq_along(seeds), function(j) {
      set.seed(seeds[j]); runif(ns[j], min = mins[j], max = maxs[j])
    })))
  })
}

## refimpl_sample_batch: R's own set.seed + sample.int for a batch of (seed, n, size, replace).
refimpl_sample_batch <- function(seeds, ns, sizes, replace) {
  refimpl_preserving_rng(function() {
    as.double(unlist(lapply(seq_along(seeds), function(j) {
      set.seed(seeds[j]); sample.int(ns[j], sizes[j], replace = replace[j])
    })))
  })
}
