"""Verdicts: one per case (bounds, budgets, conventions), forward and gradient."""
