# Attention implementations in R with the protocol of the CRAN package 'attention' (attention(Q, K, V, mask)):
#
#   fn(Q, K, V, mask = NULL)
#     Q  numeric matrix Sq x D,  K  Sk x D,  V  Sk x Dv
#     mask  NULL or a 0/1 numeric matrix Sq x Sk (1 = attend; a logical matrix works too)
#   returns the output matrix O (Sq x Dv), or list(output, weights) like attention::attention.
#   O = softmax over the keys of (Q K^T / sqrt(D), masked entries -Inf) %*% V;
#   max-subtracted; a fully masked query row gives a zero output row and zero weights.
#
# Written independently of refimpl. Broken functions contain exactly one mistake, marked "BUG:".
# CATALOG (the same entries, as Python dicts, are in r_catalog.py next to this file):
#   fn                 correct  model          returns  note
#   attn_correct       TRUE     -              output   scale 1/sqrt(D), max subtraction, dead row -> 0
#   attn_correct_list  TRUE     -              list     as attn_correct, returns list(output, weights)
#   attn_wrong_scale   FALSE    scale          output   scale 1/sqrt(Sk) (nrow(K) instead of ncol(K))
#   attn_mask_polarity FALSE    mask-polarity  output   mask == 1 treated as masked out
#   attn_one_key_bug   FALSE    -              output   t(apply(...)) collapses to a vector when Sk == 1:
#                                                       "non-conformable arguments" when Sk == 1 and Sq > 1
#   attn_errors        FALSE    -              output   stop() when Sq > 4
#   attn_warns         FALSE    -              output   correct, but warning() whenever a mask is given

# Row softmax of one score vector; all -Inf (nothing to attend) gives zeros.
zoo_softmax_row <- function(s) {
  top <- max(s)
  if (top == -Inf) return(rep(0, length(s)))
  e <- exp(s - top)
  e / sum(e)
}

# Weights P (Sq x Sk) of scaled, masked scores; a helper shared by the correct parts of every function.
zoo_weights <- function(Q, K, mask, scale) {
  stopifnot(is.matrix(Q), is.matrix(K), ncol(Q) == ncol(K))
  scores <- (Q %*% t(K)) * scale                 # (Sq x D) %*% (D x Sk) -> Sq x Sk
  if (!is.null(mask)) {
    if (!all(dim(mask) == dim(scores)))
      stop(sprintf("mask must be %d x %d (Sq x Sk), got %s", nrow(scores), ncol(scores),
                   paste(dim(mask), collapse = " x ")))
    scores[mask == 0] <- -Inf
  }
  W <- matrix(0, nrow(scores), ncol(scores))
  for (i in seq_len(nrow(scores))) W[i, ] <- zoo_softmax_row(scores[i, ])
  W
}

attn_correct <- function(Q, K, V, mask = NULL) {
  W <- zoo_weights(Q, K, mask, 1 / sqrt(ncol(K)))
  W %*% V                                          # (Sq x Sk) %*% (Sk x Dv) -> Sq x Dv
}

attn_correct_list <- function(Q, K, V, mask = NULL) {
  W <- zoo_weights(Q, K, mask, 1 / sqrt(ncol(K)))
  list(W %*% V, W)
}

attn_wrong_scale <- function(Q, K, V, mask = NULL) {
  W <- zoo_weights(Q, K, mask, 1 / sqrt(nrow(K)))  # BUG: nrow(K) is Sk; the key size D is ncol(K)
  W %*% V
}

attn_mask_polarity <- function(Q, K, V, mask = NULL) {
  if (!is.null(mask)) mask <- 1 - mask            # BUG: flips the mask (1 taken as "masked out")
  W <- zoo_weights(Q, K, mask, 1 / sqrt(ncol(K)))
  W %*% V
}

attn_one_key_bug <- function(Q, K, V, mask = NULL) {
  scores <- (Q %*% t(K)) / sqrt(ncol(K))          # Sq x Sk
  if (!is.null(mask)) scores[mask == 0] <- -Inf
  # BUG: apply() returns one column per row (hence the t()), but when Sk == 1 each result is a scalar and
  # apply() simplifies to a plain vector; t() then gives 1 x Sq instead of Sq x 1.
  W <- t(apply(scores, 1, zoo_softmax_row))
  W %*% V
}

attn_errors <- function(Q, K, V, mask = NULL) {
  if (nrow(Q) > 4)                                # BUG: an arbitrary size limit
    stop(sprintf("attn_errors: at most 4 queries are supported, got Sq = %d", nrow(Q)))
  attn_correct(Q, K, V, mask)
}

attn_warns <- function(Q, K, V, mask = NULL) {
  if (!is.null(mask))                             # BUG: a spurious warning on a supported input
    warning("attn_warns: masks are experimental")
  attn_correct(Q, K, V, mask)
}
