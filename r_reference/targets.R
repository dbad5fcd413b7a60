# R code for R functions as refimpl targets (refimpl/harness/r_targets.py), sourced by the bridge into its
# private environment next to bridge.R (refimpl_preserving_rng comes from there).
#
# The protocol is the one of the CRAN package 'attention':
#   fn(Q, K, V, mask = NULL)  Q Sq x D, K Sk x D, V Sk x Dv numeric matrices; mask NULL or a 0/1 numeric
#   Sq x Sk matrix (1 = attend); returns the output matrix (Sq x Dv) or list(output, weights).

## refimpl_target_load: the function `fname` of the file `path` (sourced into its own environment, whose
## parent is the global one) or, when path is "", the exported function `fname` of the package `pkg`.
refimpl_target_load <- function(path, pkg, fname) {
  refimpl_preserving_rng(function() {
    if (nzchar(path)) {
      env <- new.env(parent = globalenv())
      sys.source(path, envir = env, keep.source = FALSE)
      if (!exists(fname, envir = env, inherits = FALSE))
        stop(sprintf("%s defines no object '%s' (it defines: %s)", path, fname,
                     paste(utils::head(ls(env), 20L), collapse = ", ")), call. = FALSE)
      fun <- get(fname, envir = env, inherits = FALSE)
    } else {
      if (!requireNamespace(pkg, quietly = TRUE))
        stop(sprintf("the R package '%s' is not installed (install.packages(\"%s\"))", pkg, pkg), call. = FALSE)
      if (!fname %in% getNamespaceExports(pkg))
        stop(sprintf("the R package '%s' exports no '%s'", pkg, fname), call. = FALSE)
      fun <- getExportedValue(pkg, fname)
    }
    if (!is.function(fun))
      stop(sprintf("'%s' is a %s, not a function", fname, class(fun)[1L]), call. = FALSE)
    fun
  })
}

## refimpl_target_batch: fun on n cases. Q (Sq x D x n), K (Sk x D x n), V (Sk x Dv x n), M (Sq x Sk x n
## or NULL): case j is the contiguous column-major block j of each array. Case j is called as
## fun(Q_j, K_j, V_j) without a mask and fun(Q_j, K_j, V_j, mask = M_j) with one.
## An error in case j is recorded (message and call) and the loop resumes at case j + 1; warnings are
## recorded with their case. Returns the same list as bridge.R's refimpl_batch (values, dims, err_case,
## err_msg, err_call, warn_case, warn_msg, console, version), so the bridge unpacks both alike.
refimpl_target_batch <- function(fun, n, Q, K, V, M = NULL) {
  refimpl_preserving_rng(function() {
    dq <- dim(Q)[1:2]; dk <- dim(K)[1:2]; dv <- dim(V)[1:2]
    iq <- seq_len(prod(dq)); ik <- seq_len(prod(dk)); iv <- seq_len(prod(dv))
    mq <- length(iq); mk <- length(ik); mv <- length(iv)
    bad_value <- function(r) {
      cls <- if (is.list(r)) paste0("list(", paste(vapply(r, function(x) class(x)[1L], ""), collapse = ", "), ")")
             else class(r)[1L]
      stop(sprintf("the function returned %s; the protocol expects a numeric matrix or list(output, weights)",
                   cls), call. = FALSE)
    }
    call_case <- if (is.null(M)) {
      function(j) { a <- Q[(j - 1L) * mq + iq]; dim(a) <- dq; b <- K[(j - 1L) * mk + ik]; dim(b) <- dk
                    c <- V[(j - 1L) * mv + iv]; dim(c) <- dv; fun(a, b, c) }
    } else {
      dm <- dim(M)[1:2]; im <- seq_len(prod(dm)); mm <- length(im)
      function(j) { a <- Q[(j - 1L) * mq + iq]; dim(a) <- dq; b <- K[(j - 1L) * mk + ik]; dim(b) <- dk
                    c <- V[(j - 1L) * mv + iv]; dim(c) <- dv; e <- M[(j - 1L) * mm + im]; dim(e) <- dm
                    fun(a, b, c, mask = e) }
    }
    keep <- function(r) {
      if (is.list(r) && !is.data.frame(r)) {
        if (length(r) > 2L) r <- r[1:2]
        if (length(r) == 0L || !is.numeric(r[[1L]]) || (length(r) == 2L && !is.numeric(r[[2L]]))) bad_value(r)
        r
      } else {
        if (!is.numeric(r)) bad_value(r)
        list(r)
      }
    }
    run <- refimpl_run_cases(n, call_case, keep)           # bridge.R: errors and warnings per case
    results <- run$results; errors <- run$errors
    ncomp <- max(0L, vapply(results, length, 1L))
    values <- vector("list", ncomp)
    dims <- vector("list", ncomp)
    for (c in seq_len(ncomp)) {
      comp <- lapply(results, function(r) if (length(r) >= c) r[[c]] else NULL)
      values[[c]] <- as.double(unlist(comp, use.names = FALSE))
      d <- matrix(0L, nrow = n, ncol = 4L)
      nd <- vapply(comp, function(x) if (is.null(x)) -1L else length(dim(x)), 1L)
      if (all(nd == 2L)) {                          # the common case: every result a matrix
        d[, 1L] <- 2L
        d[, 2:3] <- matrix(unlist(lapply(comp, dim), use.names = FALSE), ncol = 2L, byrow = TRUE)
        dims[[c]] <- d
        next
      }
      for (j in seq_len(n)) {
        x <- comp[[j]]
        if (is.null(x)) { d[j, 1L] <- -1L; next }
        s <- if (is.null(dim(x))) length(x) else dim(x)
        if (length(s) > 3L) s <- length(x)          # beyond 3-D: reported flat (the shape check fails it)
        d[j, 1L] <- length(s)
        d[j, 1L + seq_along(s)] <- as.integer(s)
      }
      dims[[c]] <- d
    }
    names(values) <- names(dims) <- sprintf("c%d", seq_len(ncomp))
    failed <- which(!is.na(errors))
    list(ncomp = ncomp, values = values, dims = dims,
         err_case = failed, err_msg = errors[failed], err_call = run$calls[failed],
         warn_case = run$warn_case, warn_msg = run$warn_msg, console = run$console, version = R.version.string)
  })
}
