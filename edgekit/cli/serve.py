"""``edgekit serve``: run a bundle on a live source and publish results over HTTP, MQTT and files."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from edgekit.cli._api import Call, Expr
from edgekit.serve.config import BUNDLE, MQTT_PASSWORD_ENV, OPTIONS, TOKEN_ENV, Option

GROUPS = {
    "source": "source (TOML table [source])",
    "": "model and results (TOML top level)",
    "http": "HTTP server (TOML table [http])",
    "mqtt": "MQTT (TOML table [mqtt])",
    "jsonl": "JSON-lines file (TOML table [jsonl])",
}

EPILOG = f"""\
examples:
  edgekit serve model.edgekit --source 0                         USB camera, dashboard on http://127.0.0.1:8080/
  edgekit serve model.edgekit --source rtsp://cam.local/stream --mqtt mqtt://broker.local/factory
  edgekit serve model.edgekit --source video.mp4 --loop --realtime --jsonl results.jsonl
  edgekit serve model.edgekit --source door=rtsp://cam1/s --source yard=rtsp://cam2/s    two streams, batched
  edgekit serve --config /etc/edgekit/serve.toml                 options from a file; flags override it
  edgekit serve model.edgekit --source 0 --print-api             the Python call: edgekit.serve(bundle=..., source='0')

endpoints: /  /healthz  /readyz  /metrics  /v1/info  /v1/latest  POST /v1/predict  POST /v1/reload
           /v1/events (server-sent events)  /v1/stream.mjpg  (?stream=ID: one stream's)
           /v1/streams (GET, POST)  /v1/streams/ID (GET, PUT, DELETE)
MQTT topics: PREFIX/DEVICE_ID/STREAM_ID/result (one JSON message a result; STREAM_ID is cam0 for a
             single unnamed --source), PREFIX/DEVICE_ID/status (retained online/offline, with a last will)
signals: SIGTERM/SIGINT stop within 2 s (offline published, sinks flushed, exit 0); SIGHUP reloads the
         bundles and the --config file's [[streams]] (added, removed, changed; the others run on)
environment: {TOKEN_ENV} (the --token), {MQTT_PASSWORD_ENV} (the MQTT password if the URL has none)

config file: TOML; the key of each option is shown beside it, e.g.
  bundle = "/opt/models/resnet.edgekit"
  device_id = "cam-01"
  [source]
  uri = "/dev/video0"
  fps = 15
  [mqtt]
  url = "mqtt://broker.local/factory"
  qos = 1
  [[streams]]                     # more streams, each with its own id and overrides
  id = "door"
  source = "rtsp://cam1.local/s"
  fps = 10
  [streams.cascade]               # a detector's boxes classified by a second bundle
  bundle = "/opt/models/vehicle-type.edgekit"
"""


def _help(option: Option) -> str:
    section, _, name = option.key.rpartition(".")
    where = f"[{section}] {name}" if section else name
    shown = "off" if option.default is False else option.default
    if isinstance(shown, int) and option.flag.endswith(("-bytes", "-body")):
        shown = f"{shown // 1024**2}MiB"
    default = "" if option.default is None or option.default == () else f"; default {shown}"
    return f"{option.help} (TOML: {where}{default})"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="run a bundle on a camera or stream; publish over HTTP, MQTT, files",
        description=__doc__.split(":", 1)[1].strip(),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(BUNDLE.field, nargs="?", help=_help(BUNDLE))
    p.add_argument("--config", metavar="FILE", help="read options from a TOML file; flags given here override it")
    p.add_argument("--print-config", action="store_true", help="print the options in effect as JSON and exit")
    groups = {section: p.add_argument_group(title) for section, title in GROUPS.items()}
    for option in OPTIONS:
        group = groups[option.key.rpartition(".")[0]]
        if option.is_bool:
            group.add_argument(option.flag, action=argparse.BooleanOptionalAction, default=None, help=_help(option))
        elif option.flag == "--source":  # one stream a --source
            group.add_argument(option.flag, action="append", default=None, metavar=option.metavar, help=_help(option))
        else:
            group.add_argument(option.flag, default=None, metavar=option.metavar, help=_help(option))
    p.set_defaults(run=run, api=api_call)


OUTPUT_FLAGS = ("print_config",)  # shows the options in effect instead of serving: not part of the API call
_PASSWORD = re.compile(r"(://[^:/@]+):[^@/]*@")


def _values(args: argparse.Namespace) -> dict[str, Any]:
    """The options given (the --config file's, then the flags over them), checked: ``ServeConfig`` fields."""
    from edgekit.serve.config import load_toml, parse_flags

    file_values = load_toml(args.config) if args.config else {}
    flag_values = parse_flags(vars(args))
    if args.bundle:
        flag_values["bundle"] = args.bundle
    if args.config:
        flag_values["config_file"] = args.config  # SIGHUP reads its [[streams]] again
    values = {**file_values, **flag_values}
    return {"bundle": values.pop("bundle")} | values if "bundle" in values else values


def api_call(args: argparse.Namespace) -> Call:
    """``edgekit.serve(<the ServeConfig fields given>)``; a secret is written as where to read it from."""
    values, comments = _values(args), []
    if values.get("token"):
        values["token"] = Expr(f"os.environ[{TOKEN_ENV!r}]", ("import os",))
        comments.append(f"the token given is read from {TOKEN_ENV} here, not written out")
    if values.get("mqtt") and _PASSWORD.search(values["mqtt"]):
        values["mqtt"] = _PASSWORD.sub(r"\1:***@", values["mqtt"])
        comments.append(f"the password in mqtt is masked: put it back, or use {MQTT_PASSWORD_ENV} for MQTT")
    if values.get("source") and any(_PASSWORD.search(s) for s in values["source"]):
        values["source"] = tuple(_PASSWORD.sub(r"\1:***@", s) for s in values["source"])
        comments.append("the password in source is masked: put it back")
    if len(values.get("source") or ()) == 1:
        values["source"] = values["source"][0]  # one stream: edgekit.serve(source="0") reads better
    if values.get("streams"):
        values["streams"] = [t.to_dict() for t in values["streams"]]
    return Call("serve", (), values, comments=tuple(comments))


def run(args: argparse.Namespace) -> int:
    from edgekit.serve.config import build_config

    values = _values(args)
    if args.print_config:
        shown = dict(vars(build_config(file_values=values)))
        if shown["token"]:
            shown["token"] = "***"
        if shown["mqtt"]:
            shown["mqtt"] = _PASSWORD.sub(r"\1:***@", shown["mqtt"])
        if shown["source"]:
            sources = [_PASSWORD.sub(r"\1:***@", s) for s in shown["source"]]
            shown["source"] = sources[0] if len(sources) == 1 else sources
        shown["streams"] = [t.to_dict() for t in shown["streams"]]
        print(json.dumps(shown, indent=2))
        return 0
    return Call("serve", (), values).invoke()
