# Helpers: read refimpl fixtures (schema refimpl-fixture/1) and apply the same tolerance model
# (refimpl/tolerance.py) in R.

find_fixtures_dir <- function() {
  env <- Sys.getenv("REFIMPL_FIXTURES")
  if (nzchar(env)) return(env)
  d <- getwd()
  for (i in 1:6) {
    if (dir.exists(file.path(d, "fixtures")) && dir.exists(file.path(d, "r_reference"))) return(file.path(d, "fixtures"))
    d <- dirname(d)
  }
  stop("cannot find fixtures/ (set REFIMPL_FIXTURES)")
}

## fixture_array: a {dtype, shape, values} object as an R array with the same indexing as NumPy's.
fixture_array <- function(a) {
  s <- as.integer(unlist(a$shape))
  v <- as.numeric(unlist(a$values))
  if (length(s) == 0L) return(v)
  if (length(s) == 1L) return(v)
  aperm(array(v, dim = rev(s)), rev(seq_along(s)))
}

read_fixtures <- function() {
  files <- sort(Sys.glob(file.path(find_fixtures_dir(), "*", "*.json")))
  lapply(files, function(f) { fx <- jsonlite::fromJSON(f, simplifyVector = FALSE); fx$file <- f; fx })
}

K_FORWARD <- 4
unit_roundoff <- function(dtype) if (identical(dtype, "float32")) 2^-24 else 2^-53

## tolerance: per-element bound for an expectation (rules: exact, printed, forward)
tolerance <- function(spec, expected) {
  rule <- spec$rule
  if (rule == "exact") return(rep(0, length(expected)))
  if (rule == "forward")
    return(rep(K_FORWARD * unit_roundoff(spec$dtype) * spec$n_terms * spec$magnitude, length(expected)))
  x <- as.numeric(expected)
  dec <- rep(if (is.null(spec$decimals)) 0 else spec$decimals, length(x))
  if (!is.null(spec$significant)) {
    mag <- floor(log10(abs(ifelse(x == 0, 1, x))))
    dec <- pmax(dec, spec$significant - 1 - mag)
  }
  txt <- format(x, digits = 15, scientific = FALSE, trim = TRUE, drop0trailing = TRUE)
  txt_dec <- ifelse(grepl(".", txt, fixed = TRUE), nchar(sub("^[^.]*\\.", "", txt)), 0L)
  0.5 * 10^(-pmax(dec, txt_dec))
}

expect_within <- function(actual, expected, spec, what) {
  a <- as.numeric(actual)
  e <- as.numeric(expected)
  expect_equal(length(a), length(e), label = paste(what, "length"))
  bound <- tolerance(spec, e)
  err <- abs(a - e)
  worst <- which.max(err - bound)
  expect(all(err <= bound),
         sprintf("%s: |actual - expected| = %.3g at element %d exceeds %.3g (%s); actual %.17g, expected %.17g",
                 what, err[worst], worst, bound[worst], spec$rule, a[worst], e[worst]))
}
