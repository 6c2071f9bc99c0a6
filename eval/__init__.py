"""Fidelity, long-context benchmarks, runners and efficiency reports."""
