# Hostile R attention functions for r_reference/conform.R (tests/test_conform_r_hostile.py): each one
# attacks the checker rather than computing attention wrongly. Same protocol as attention_impls.R:
# fn(Q, K, V, mask = NULL) -> output (Sq x Dv) or list(output, weights); otherwise they are correct.
#
#   fn                    attack
#   hostile_quit_third    quit(status = 0) on the 3rd call of the run
#   hostile_clobber       results <<- list() on every call (the checker's table of verdicts, when the function
#                         could reach it) and ignores the mask
#   ignore_mask           hostile_clobber without the assignment (a plain mask bug), to compare verdicts with
#   hostile_hang_second   an infinite loop on the 2nd call of the run
#   hostile_character     returns a character string
#   hostile_null          returns NULL
#   hostile_wrong_shape   returns the output with one column too many (Sq x (Dv + 1))
#   hostile_list_char     returns list("output", weights): no numeric first element
#
# The call counter of hostile_quit_third and hostile_hang_second is a file, REFIMPL_HOSTILE_COUNTER (a path),
# so that "the n-th call" means the n-th call of the run however the checker isolates its calls (state kept
# in R memory does not outlive a forked child).

hostile_attention <- function(Q, K, V, mask = NULL) {
  S <- (Q %*% t(K)) / sqrt(ncol(K))
  if (!is.null(mask)) S[mask == 0] <- -Inf
  W <- matrix(0, nrow(S), ncol(S))
  for (i in seq_len(nrow(S))) {
    top <- max(S[i, ])
    if (top > -Inf) { e <- exp(S[i, ] - top); W[i, ] <- e / sum(e) }
  }
  list(W %*% V, W)
}

hostile_count <- function() {
  path <- Sys.getenv("REFIMPL_HOSTILE_COUNTER")
  if (!nzchar(path)) stop("set REFIMPL_HOSTILE_COUNTER to a file path (the call counter)")
  n <- if (file.exists(path)) as.integer(readLines(path, warn = FALSE)[1L]) + 1L else 1L
  writeLines(as.character(n), path)
  n
}

hostile_quit_third <- function(Q, K, V, mask = NULL) {
  if (hostile_count() == 3L) quit(save = "no", status = 0)
  hostile_attention(Q, K, V, mask)[[1L]]
}

hostile_clobber <- function(Q, K, V, mask = NULL) {
  results <<- list()
  hostile_attention(Q, K, V, NULL)[[1L]]             # the mask is ignored
}

ignore_mask <- function(Q, K, V, mask = NULL) hostile_attention(Q, K, V, NULL)[[1L]]

hostile_hang_second <- function(Q, K, V, mask = NULL) {
  if (hostile_count() == 2L) repeat {}
  hostile_attention(Q, K, V, mask)[[1L]]
}

hostile_character <- function(Q, K, V, mask = NULL) "attention output"

hostile_null <- function(Q, K, V, mask = NULL) NULL

hostile_wrong_shape <- function(Q, K, V, mask = NULL) cbind(hostile_attention(Q, K, V, mask)[[1L]], 0)

hostile_list_char <- function(Q, K, V, mask = NULL) list("output", hostile_attention(Q, K, V, mask)[[2L]])
