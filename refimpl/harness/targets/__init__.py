"""Targets: the Target record, loading, the worker process and its wire, the probe, R targets."""
