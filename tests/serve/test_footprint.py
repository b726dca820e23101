"""The daemon imports no build-time code (torch, onnx, nncf, frontends, quantize, pipeline), and the CLI's
help does not import the HTTP, MQTT or vision stack."""

from __future__ import annotations

import json
import subprocess
import sys

from serve_support import serve_bundle  # noqa: F401

FORBIDDEN = ("torch", "onnx", "nncf", "edgekit.frontends", "edgekit.quantize", "edgekit.pipeline")

PROBE = """
import json, sys
{body}
loaded = sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in {forbidden!r}))
print(json.dumps({{"forbidden": loaded, "heavy": sorted(m for m in ("starlette", "uvicorn", "paho", "cv2")
                                                    if m in sys.modules)}}))
"""


def _probe(body: str) -> dict:
    code = PROBE.format(body=body, forbidden=FORBIDDEN)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_serving_a_bundle_imports_no_build_time_code(serve_bundle):  # noqa: F811
    found = _probe(f"""
import numpy as np
import edgekit.serve.daemon, edgekit.serve.http, edgekit.serve.mqtt, edgekit.serve.sinks, edgekit.cli.serve
from edgekit.serve.engine import Engine
from edgekit.serve.http import build_app
engine = Engine({str(serve_bundle)!r})
engine.run(np.zeros((48, 64, 3), np.uint8))
import paho.mqtt.client
""")
    assert found["forbidden"] == []


def test_cli_help_stays_light():
    found = _probe("from edgekit.cli import build_parser\nbuild_parser()\nimport edgekit.serve")
    assert found["forbidden"] == [] and found["heavy"] == []
