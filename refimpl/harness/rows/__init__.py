"""Rows: cases made runnable (families, fixtures, R, gradients) and the runner."""
