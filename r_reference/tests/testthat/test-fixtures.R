# The R package checked directly on refimpl's fixtures.

# Evaluate a fixture's steps in R with the package's functions where they apply.
# Returns a list of named values, or a character reason when a step has no R counterpart.
evaluate_in_r <- function(fx) {
  env <- lapply(fx$inputs, fixture_array)
  for (st in fx$steps) {
    a <- lapply(st$args, function(n) env[[n]])
    kw <- st$kwargs
    out <- switch(st$fn,
      matmul = if (length(dim(a$a)) > 2 || length(dim(a$b)) > 2) return("3-D matmul") else
        list(as.matrix(a$a) %*% (if (is.null(dim(a$b))) matrix(a$b, ncol = 1) else a$b)),
      transpose = if (length(dim(a$a)) > 2) return("3-D transpose") else list(t(a$a)),
      row = list(if (is.null(dim(a$a))) a$a[kw$index + 1] else a$a[kw$index + 1, ]),
      multiply = list(a$a * kw$factor),
      rowmax = list(attention::RowMax(a$a)),
      softmax = list(if (is.null(dim(a$x))) attention::SoftMax(a$x) else t(apply(a$x, 1, attention::SoftMax))),
      sdpa = {
        q <- a$q
        if (!is.null(kw$scale)) q <- q * kw$scale * sqrt(ncol(a$k))   # the package divides by sqrt(ncol(K))
        attention::attention(q, a$k, a$v)
      },
      general_attention = {
        q <- matrix(a$query, nrow = 1)
        if (!is.null(kw$scale)) q <- q * kw$scale * sqrt(ncol(a$keys))
        r <- attention::attention(q, a$keys, a$values)
        list(as.numeric(r[[1]]), as.numeric(r[[2]]))
      },
      general_attention_matrix = attention::attention(a$words %*% a$w_q, a$words %*% a$w_k, a$words %*% a$w_v),
      self_attention = attention::attention(a$x %*% a$w_q, a$x %*% a$w_k, a$x %*% a$w_v),
      return(paste("no R counterpart for step", st$fn)))
    outs <- unlist(st$out)
    for (i in seq_along(outs)) env[[outs[i]]] <- out[[i]]
  }
  env
}

fixtures <- read_fixtures()

test_that("there are fixtures to read", {
  expect_gte(length(fixtures), 11)
})

test_that("the vignettes' weight matrices regenerate with set.seed(0) in R", {
  fx <- Filter(function(f) f$id == "r-attention/simple-vignette", fixtures)[[1]]
  set.seed(0)
  for (w in c("W_Q", "W_K", "W_V")) {
    expect_identical(matrix(floor(runif(9, min = 0, max = 3)), nrow = 3, ncol = 3), fixture_array(fx$inputs[[w]]))
  }
})

test_that("the package's documented examples reproduce the published numbers", {
  ids <- c("r-attention/softmax-example", "r-attention/rowmax-example", "r-attention/computeweights-example")
  for (fx in Filter(function(f) f$id %in% ids, fixtures)) {
    value <- switch(fx$id,
      "r-attention/softmax-example" = attention::SoftMax(fixture_array(fx$inputs$V)),
      "r-attention/rowmax-example" = attention::RowMax(fixture_array(fx$inputs$M)),
      "r-attention/computeweights-example" = attention::ComputeWeights(fixture_array(fx$inputs$scores)))
    name <- names(fx$expected)[1]
    for (e in fx$expected[[name]])
      expect_within(value, fixture_array(e$value), e$tolerance, paste(basename(fx$file), name, e$by))
  }
})

test_that("the package reproduces every attention output of every fixture it can express", {
  checked <- 0
  for (fx in fixtures) {
    env <- evaluate_in_r(fx)
    if (is.character(env)) next
    for (name in names(fx$expected)) {
      for (e in fx$expected[[name]]) {
        if (identical(e$by, "shape") || is.null(env[[name]])) next
        expect_within(env[[name]], fixture_array(e$value), e$tolerance,
                      sprintf("%s: %s [%s]", fx$file, name, e$by))
        checked <- checked + 1
      }
    }
  }
  expect_gte(checked, 30)
})

test_that("the simple vignette, run in R, gives the fixture's values (ComputeWeights, D1)", {
  fx <- Filter(function(f) f$id == "r-attention/simple-vignette", fixtures)[[1]]
  words <- fixture_array(fx$inputs$words)
  Q <- words %*% fixture_array(fx$inputs$W_Q)
  K <- words %*% fixture_array(fx$inputs$W_K)
  V <- words %*% fixture_array(fx$inputs$W_V)
  weights <- attention::ComputeWeights(Q %*% t(K))
  for (e in fx$expected$weights) expect_within(weights, fixture_array(e$value), e$tolerance, paste("weights", e$by))
  for (e in fx$expected$attention) expect_within(weights %*% V, fixture_array(e$value), e$tolerance, paste("attention", e$by))
})
