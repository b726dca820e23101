"""Evaluation, benchmarking and reports."""
