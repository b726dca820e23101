"""Measurement: accuracy evaluation, latency timing, the machine description and the on-device bench.

This layer sits below compile (``edgekit.pipeline``, ``edgekit.budgeting``) and report, which
both use it, and above the runtime and backends it measures. ``bench`` and ``machine`` run on
the device and import no torch, onnx or NNCF.
"""
