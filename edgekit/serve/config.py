"""The daemon's options: one table that drives the flags, the TOML file, ``ServeConfig`` and their validation.

Every option is declared once, in ``OPTIONS``: its flag (``--mqtt-qos``), TOML key (``qos`` in ``[mqtt]``),
parser (which is its validation and says its type), default and help. The CLI's flags, the TOML loader and
the fields of ``ServeConfig`` are all made from that table. Values come from the defaults, then the
``--config`` file, then the flags; each is checked by the same parser, so an error names the flag or the
file and key it came from. A ``ServeConfig`` built in code runs the same parsers and the checks that span
options when it is constructed, so no unchecked configuration reaches the daemon.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.errors import UsageError

TOKEN_ENV = "EDGEKIT_SERVE_TOKEN"
MIN_TOKEN_LENGTH = 16
MQTT_PASSWORD_ENV = "EDGEKIT_MQTT_PASSWORD"
Parser = Callable[[Any, str], Any]


def _returns(kind: Any) -> Callable[[Parser], Parser]:
    """Tag a parser with the type it returns: the type of the ``ServeConfig`` field it fills."""

    def tag(parse: Parser) -> Parser:
        parse.returns = kind  # type: ignore[attr-defined]
        return parse

    return tag


# -- value parsers: (raw value, where it came from) -> value, or UsageError naming `where`
@_returns(str)
def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{where}: expected a non-empty string, got {value!r}")
    return value.strip()


@_returns(bool)
def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise UsageError(f"{where}: expected true or false, got {value!r}")


def _number(kind: type, lo: float, hi: float | None = None) -> Parser:
    def parse(value: Any, where: str) -> Any:
        try:
            if isinstance(value, bool) or (kind is int and isinstance(value, float)):
                raise ValueError
            number = kind(value)
        except (TypeError, ValueError):
            raise UsageError(
                f"{where}: expected {'an integer' if kind is int else 'a number'}, got {value!r}"
            ) from None
        if number < lo or (hi is not None and number > hi):
            bound = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            raise UsageError(f"{where}: must be {bound}, got {number}")
        return number

    parse.returns = kind  # type: ignore[attr-defined]
    return parse


def _choice(*choices: Any) -> Parser:
    def parse(value: Any, where: str) -> Any:
        for choice in choices:
            if str(value).lower() == str(choice):
                return choice
        raise UsageError(f"{where}: must be one of {', '.join(map(str, choices))}, got {value!r}")

    parse.returns = type(choices[0])  # type: ignore[attr-defined]
    return parse


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2}
_UNITS |= {"g": 1000**3, "gb": 1000**3, "gib": 1024**3}


@_returns(int)
def _bytes(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number, unit = value, ""
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
        if not match or match.group(2).lower() not in _UNITS:
            raise UsageError(f"{where}: expected a size such as 8MiB, 500kB or 1048576, got {value!r}")
        number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * _UNITS[unit])
    if size < 1024:
        raise UsageError(f"{where}: must be at least 1 KiB, got {value!r}")
    return size


MAX_RESOLUTION_SIDE = 8192  # an 8192x8192 BGR frame is 192 MiB; a larger side is refused


@_returns(tuple[int, int])
def _resolution(value: Any, where: str) -> tuple[int, int]:
    if isinstance(value, (list, tuple)) and len(value) == 2:  # TOML [640, 480], or (640, 480) in code
        value = f"{value[0]}x{value[1]}"
    match = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", str(value))
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise UsageError(f"{where}: expected WIDTHxHEIGHT such as 640x480, got {value!r}")
    width, height = int(match.group(1)), int(match.group(2))
    if width > MAX_RESOLUTION_SIDE or height > MAX_RESOLUTION_SIDE:
        raise UsageError(
            f"{where}: {width}x{height} is too large: each side must be 1 to {MAX_RESOLUTION_SIDE} "
            f"(a {MAX_RESOLUTION_SIDE}x{MAX_RESOLUTION_SIDE} frame is 192 MiB), e.g. 1920x1080"
        )
    return width, height


@_returns(tuple[str, ...])
def _hosts(value: Any, where: str) -> tuple[str, ...]:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    names = tuple(str(item).strip().lower() for item in items if str(item).strip())
    for name in names:
        if not re.fullmatch(r"[a-z0-9._\-]+(:\d+)?|\[[0-9a-f:.]+\](:\d+)?", name):
            raise UsageError(f"{where}: {name!r} is not a host name (e.g. camera.local, 192.168.1.20, [fe80::1])")
    if not names:
        raise UsageError(f"{where}: expected host names, comma separated, got {value!r}")
    return names


@_returns(str)
def _source(value: Any, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # a camera index written as a number in TOML
    return _str(value, where)


STREAM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_STREAMS = 64  # the most --max-streams allows: each stream is a capture thread and a decoder


@_returns(tuple[str, ...])
def _sources(value: Any, where: str) -> tuple[str, ...]:
    """One source or several (repeated --source, or a TOML list), each ``URI`` or ``ID=URI``."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise UsageError(f"{where}: expected at least one source, got an empty list")
    if len(items) > MAX_STREAMS:
        raise UsageError(f"{where}: {len(items)} sources; at most {MAX_STREAMS} streams run in one daemon")
    return tuple(_source(item, where) for item in items)


def split_stream_id(text: str) -> tuple[str | None, str]:
    """``cam1=rtsp://...`` -> ("cam1", "rtsp://..."); a URI without an ``ID=`` prefix -> (None, URI).

    Only a prefix that is a whole stream id (letters, digits, '.', '_', '-') before the first '=' counts, so a
    URL with '=' in its query (``rtsp://h/?a=b``: the prefix has ':'), a GStreamer pipeline (``videotestsrc
    pattern=ball ! ...``: the prefix has a space) and a camera index stay URIs. A file whose name has a '='
    is written with a folder: ``./a=b.mp4``."""
    head, sep, rest = text.partition("=")
    if sep and rest.strip() and STREAM_ID.fullmatch(head):
        return head, rest.strip()
    return None, text


def stream_id(value: Any, where: str) -> str:
    text = _str(value, where)
    if not STREAM_ID.fullmatch(text):
        raise UsageError(
            f"{where}: stream id {text!r}: use 1-64 letters, digits, '.', '_' or '-' (it is an MQTT topic level)"
        )
    return text


@_returns(int)
def _queue(value: Any, where: str) -> int:
    """ "latest" (1: keep only the newest frame) or the length of a bounded queue, 1 to 64."""
    if isinstance(value, str) and value.strip().lower() == "latest":
        return 1
    try:
        if isinstance(value, bool) or isinstance(value, float):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: expected 'latest' or a queue length 1 to 64, got {value!r}") from None
    if not 1 <= number <= 64:
        raise UsageError(f"{where}: a queue length must be 1 to 64 ('latest' is 1), got {number}")
    return number


@dataclasses.dataclass(frozen=True)
class Cascade:
    """A second bundle run on the crops of a detector's boxes (``[streams.cascade]``)."""

    bundle: str
    labels: tuple[str, ...] = ()  # only boxes of these detector labels (empty: every box)
    min_score: float = 0.0  # only boxes scoring at least this
    max_boxes: int = 16  # the highest-scoring boxes of a frame, at most
    top_k: int = 1


@dataclasses.dataclass(frozen=True)
class StreamTable:
    """One ``[[streams]]`` table of the config file (or one stream added through the HTTP API): its source
    and what it overrides of the daemon's source options. ``None``: the daemon's value."""

    source: str
    id: str | None = None
    bundle: str | None = None
    fps: float | None = None
    resolution: tuple[int, int] | None = None
    rotate: int | None = None
    loop: bool | None = None
    realtime: bool | None = None
    queue: int | None = None
    cascade: Cascade | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _cascade(value: Any, where: str) -> Cascade:
    if not isinstance(value, dict):
        raise UsageError(f"{where}: expected a table with bundle (and labels, min_score, max_boxes, top_k)")
    known = {f.name for f in dataclasses.fields(Cascade)}
    for key in value:
        if key not in known:
            raise UsageError(f"{where}: unknown key '{key}'; allowed: {', '.join(sorted(known))}")
    if "bundle" not in value:
        raise UsageError(f'{where}: a cascade needs bundle = "classifier.edgekit"')
    labels = value.get("labels", ())
    if isinstance(labels, str) or not isinstance(labels, (list, tuple)) or len(labels) > 1000:
        raise UsageError(f"{where}.labels: expected a list of the detector's labels, got {labels!r}")
    return Cascade(
        bundle=_str(value["bundle"], f"{where}.bundle"),
        labels=tuple(_str(v, f"{where}.labels") for v in labels),
        min_score=_number(float, 0.0, 1.0)(value.get("min_score", 0.0), f"{where}.min_score"),
        max_boxes=_number(int, 1, 100)(value.get("max_boxes", 16), f"{where}.max_boxes"),
        top_k=_number(int, 1, 100)(value.get("top_k", 1), f"{where}.top_k"),
    )


def stream_table(value: Any, where: str) -> StreamTable:
    """One stream's table (TOML [[streams]] or a JSON body of POST /v1/streams), every key checked."""
    if isinstance(value, StreamTable):
        return value
    if not isinstance(value, dict):
        raise UsageError(f"{where}: expected a table with source (and id, bundle, fps, ...), got {value!r}")
    parsers: dict[str, Parser] = {
        "id": stream_id, "source": _source, "bundle": _str, "fps": BY_FIELD["fps"].parse,
        "resolution": _resolution, "rotate": BY_FIELD["rotate"].parse, "loop": _bool, "realtime": _bool,
        "queue": _queue, "cascade": _cascade,
    }  # fmt: skip
    fields = {}
    for key, raw in value.items():
        if key not in parsers:
            raise UsageError(f"{where}: unknown key '{key}'; allowed: {', '.join(parsers)}")
        fields[key] = parsers[key](raw, f"{where} {key}")
    if "source" not in fields:
        raise UsageError(f'{where}: a stream needs source = "rtsp://..." (or a file, folder, camera)')
    return StreamTable(**fields)


@_returns(tuple[StreamTable, ...])
def _streams(value: Any, where: str) -> tuple[StreamTable, ...]:
    if isinstance(value, dict) or not isinstance(value, (list, tuple)):
        raise UsageError(f"{where}: expected [[streams]] tables (an array of tables), got {type(value).__name__}")
    if len(value) > MAX_STREAMS:
        raise UsageError(f"{where}: {len(value)} streams; at most {MAX_STREAMS} run in one daemon")
    return tuple(stream_table(item, f"{where} #{i + 1}") for i, item in enumerate(value))


@_returns(str)
def _device_id(value: Any, where: str) -> str:
    text = _str(value, where)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", text):
        raise UsageError(
            f"{where}: use 1-64 letters, digits, '.', '_' or '-' (it is an MQTT topic level), got {text!r}"
        )
    return text


@_returns(str)
def _mqtt_url(value: Any, where: str) -> str:
    text = _str(value, where)
    if not re.match(r"mqtts?://[^/]", text):
        raise UsageError(
            f"{where}: expected mqtt://[user[:pass]@]host[:port][/topic-prefix] or mqtts://..., got {text!r}"
        )
    return text


def default_device_id() -> str:
    """The host name, made safe for an MQTT topic level."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:64].strip("-.") or "edgekit"


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: its flag, its TOML key (``section.name``), its parser, default and help.

    The parser is the option's validation and names its type (``parse.returns``). ``None`` stands for "not
    given": the default applies, or ``factory()`` when the default is computed at run time, or the error
    ``required`` when the option must be given.
    """

    flag: str
    key: str
    parse: Parser
    default: Any
    help: str
    metavar: str | None = None
    required: str = ""  # the error when it is not given; empty: optional
    factory: Callable[[], Any] | None = None  # the default when it is computed at run time

    @property
    def field(self) -> str:
        """Its name in ``ServeConfig`` and in ``parse_flags``' dict: the flag without dashes."""
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def is_bool(self) -> bool:
        return self.parse is _bool

    @property
    def type(self) -> Any:
        """The type of its ``ServeConfig`` field: what the parser returns, or None when not given."""
        kind = self.parse.returns  # type: ignore[attr-defined]
        optional = self.default is None and self.factory is None and not self.required
        return kind | None if optional else kind

    def settle(self, value: Any, where: str) -> Any:
        """A value given in code, checked and typed like a flag's (None or "" is "not given")."""
        if value is None or (isinstance(value, str) and value == ""):
            if self.required:
                raise UsageError(self.required)
            return self.factory() if self.factory is not None else self.default
        if type(value) is type(self.default) and value == self.default:
            return value  # the default as declared (every default passes its parser: a test checks it)
        return self.parse(value, where)


KiB, MiB = 1024, 1024**2
OPTIONS: tuple[Option, ...] = (
    Option("--source", "source.uri", _sources, None, "camera index (0), /dev/videoN, csi://N, a GStreamer pipeline "
           "(with '!'), rtsp://, http(s):// MJPEG URL, video file, image folder or pattern ('frames/*.jpg'); "
           "repeat it for several streams, each named ID=URI (default cam0, cam1, ...)", "[ID=]URI"),
    Option("--resolution", "source.resolution", _resolution, None, "capture size WIDTHxHEIGHT, each side 1 to "
           f"{MAX_RESOLUTION_SIDE}: asked of cameras, frames of other sources are resized to it", "WxH"),
    Option("--fps", "source.fps", _number(float, 0.01), None, "frame-rate cap: a live source's extra frames are "
           "skipped, a file or folder is read no faster", "N"),
    Option("--rotate", "source.rotate", _choice(0, 90, 180, 270), 0, "rotate frames clockwise by 0, 90, 180 or 270 "
           "degrees", "DEG"),
    Option("--loop", "source.loop", _bool, False, "start a video file or image folder again at its end (without it "
           "the end counts as a lost source and is reopened after the reconnect delay)"),
    Option("--realtime", "source.realtime", _bool, False, "treat a video file or image folder like a camera: "
           "play it at its own frame rate (a folder at --fps) and keep only the latest frame, instead of reading "
           "it at the model's pace with every frame inferred"),
    Option("--reconnect-delay", "source.reconnect_delay", _number(float, 0.01), 0.5, "first wait before reopening "
           "a lost source, in seconds; doubles at each failure", "S"),
    Option("--reconnect-max-delay", "source.reconnect_max_delay", _number(float, 0.01), 30.0, "longest wait "
           "between reconnect attempts, in seconds", "S"),
    Option("--source-timeout", "source.timeout", _number(float, 0.1), 10.0, "open and read timeout of network "
           "sources (RTSP, HTTP), in seconds", "S"),
    Option("--stall-timeout", "source.stall_timeout", _number(float, 0.5, 3600), 10.0, "/readyz reports not ready "
           "when the source delivered no frame for this many seconds (a file read at the model's pace is not "
           "stalled while it waits for the model; with --fps, at least two frame intervals)", "S"),
    Option("--rtsp-transport", "source.rtsp_transport", _choice("tcp", "udp"), "tcp", "RTSP transport", "{tcp,udp}"),
    Option("--scaled-decode", "source.scaled_decode", _bool, True, "decode JPEG and MJPEG frames at 1/2, 1/4 "
           "or 1/8 of their size when the classifier's input still fits (libjpeg's DCT scaling); off: full size"),
    Option("--queue", "source.queue", _queue, 1, "frames a stream keeps for inference: 'latest' (1, the newest "
           "replaces an untaken one: no latency build-up) or a bounded queue of N (the oldest is dropped)", "latest|N"),
    Option("--max-batch", "max_batch", _number(int, 1, 64), None, "frames of different streams on one bundle run "
           "in one inference call, at most this many (one a stream per call; default: the batch the bundle's "
           "compile measured fastest on this device, else 8)", "N"),
    Option("--max-wait-ms", "max_wait_ms", _number(float, 0.0, 1000.0), 5.0, "longest wait after a batch's first "
           "frame for the other connected streams' frames, in milliseconds (0: never wait)", "MS"),
    Option("--max-streams", "max_streams", _number(int, 1, MAX_STREAMS), 16, "streams one daemon runs at most "
           "(flags, config file and HTTP API together)", "N"),
    Option("--top-k", "top_k", _number(int, 1, 1000), 3, "labels in each result", "K"),
    Option("--device", "device", _str, None, "run on another device of the bundle's backend (OpenVINO: CPU, GPU, "
           "NPU)", "NAME"),
    Option("--device-id", "device_id", _device_id, None, "this device's name in MQTT topics and results (default: "
           "the host name)", "ID", factory=default_device_id),
    Option("--log-level", "log_level", _choice("debug", "info", "warning", "error"), "info", "log verbosity",
           "{debug,info,warning,error}"),
    Option("--host", "http.host", _str, "127.0.0.1", "HTTP bind address; any address but loopback needs --token",
           "ADDR"),
    Option("--port", "http.port", _number(int, 0, 65535), 8080, "HTTP port (0: any free port, logged at start)",
           "PORT"),
    Option("--token", "http.token", _str, None, f"bearer token required on every endpoint but /healthz (or set "
           f"{TOKEN_ENV}; browsers may pass ?access_token=)", "TOKEN"),
    Option("--max-body", "http.max_body", _bytes, 8 * MiB, "largest image POST /v1/predict accepts", "SIZE"),
    Option("--stream-fps", "http.stream_fps", _number(float, 0.1, 120), 15.0, "frame-rate cap of "
           "/v1/stream.mjpg", "N"),
    Option("--stream-quality", "http.stream_quality", _number(int, 10, 100), 80, "JPEG quality of "
           "/v1/stream.mjpg", "Q"),
    Option("--api-file-root", "http.api_file_root", _str, None, "streams added through the HTTP API may read "
           "video files and image folders under this folder only (without it: cameras and network URLs only)",
           "DIR"),
    Option("--allow-host", "http.allow_hosts", _hosts, (), "more Host names the daemon answers to, comma "
           "separated (on loopback only 127.0.0.1, localhost and [::1] are accepted: DNS rebinding)", "NAMES"),
    Option("--max-pixels", "http.max_pixels", _number(int, 1, 500_000_000), 50_000_000, "largest image "
           "(width x height) POST /v1/predict decodes; larger ones are 413", "N"),
    Option("--decode-budget", "http.decode_budget", _bytes, 256 * MiB, "decoded image bytes in flight at once "
           "(estimated from each image's header); a predict that does not fit waits, then gets 503", "SIZE"),
    Option("--decode-wait", "http.decode_wait", _number(float, 0.0, 60), 2.0, "longest wait for room in the "
           "decode budget before a 503 with Retry-After, in seconds", "S"),
    Option("--header-timeout", "http.header_timeout", _number(float, 0.1, 3600), 10.0, "close a connection "
           "whose request headers are not complete this many seconds after it opened or its last answer", "S"),
    Option("--body-timeout", "http.body_timeout", _number(float, 0.1, 3600), 30.0, "answer 408 and close the "
           "connection when a request body has not fully arrived this many seconds after its headers", "S"),
    Option("--idle-timeout", "http.idle_timeout", _number(float, 0.1, 3600), 5.0, "close a keep-alive "
           "connection idle this many seconds", "S"),
    Option("--max-connections", "http.max_connections", _number(int, 4, 100_000), 200, "open connections "
           "at most (kept under the file-descriptor limit); at the limit the longest-idle one is closed", "N"),
    Option("--mqtt", "mqtt.url", _mqtt_url, None, "MQTT broker and topic prefix: mqtt://[user[:pass]@]host[:port]"
           f"[/prefix] or mqtts://... (password may come from {MQTT_PASSWORD_ENV})", "URL"),
    Option("--mqtt-qos", "mqtt.qos", _choice(0, 1, 2), 1, "QoS of result messages", "{0,1,2}"),
    Option("--mqtt-buffer", "mqtt.buffer", _number(int, 1, 1_000_000), 1000, "results kept while the broker is "
           "unreachable; the oldest are dropped beyond it", "N"),
    Option("--mqtt-buffer-bytes", "mqtt.buffer_bytes", _bytes, 16 * MiB, "bytes of results kept while the "
           "broker is unreachable (with --mqtt-buffer, whichever is reached first); the oldest are dropped beyond "
           "it", "SIZE"),
    Option("--mqtt-keepalive", "mqtt.keepalive", _number(int, 5, 3600), 30, "MQTT keep-alive, in seconds", "S"),
    Option("--mqtt-client-id", "mqtt.client_id", _str, None, "MQTT client id (default: edgekit-DEVICE_ID)", "ID"),
    Option("--mqtt-ca", "mqtt.ca", _str, None, "mqtts: CA certificate file (default: the system's)", "FILE"),
    Option("--mqtt-cert", "mqtt.cert", _str, None, "mqtts: client certificate file", "FILE"),
    Option("--mqtt-key", "mqtt.key", _str, None, "mqtts: client private key file", "FILE"),
    Option("--mqtt-insecure", "mqtt.insecure", _bool, False, "mqtts: do not check the broker's host name"),
    Option("--jsonl", "jsonl.path", _str, None, "also append each result as one JSON line to this file", "FILE"),
    Option("--jsonl-max-bytes", "jsonl.max_bytes", _bytes, 10 * MiB, "rotate the JSON-lines file at this size",
           "SIZE"),
    Option("--jsonl-keep", "jsonl.keep", _number(int, 1, 1000), 5, "rotated JSON-lines files kept (FILE.1 ...)",
           "N"),
)  # fmt: skip
BUNDLE_KEY = "bundle"
SECTIONS = {"source", "http", "mqtt", "jsonl"}


BUNDLE = Option("bundle", BUNDLE_KEY, _str, None, "bundle folder or packed file",
                required="no bundle given: pass BUNDLE, or set 'bundle' in the --config file")  # fmt: skip
# Fields without a flag: the [[streams]] tables of the config file, and the file itself (SIGHUP reads it again).
STREAMS = Option("streams", "streams", _streams, (), "[[streams]] tables: id, source, bundle, fps, resolution, "
                 "rotate, loop, realtime, queue, cascade")  # fmt: skip
CONFIG_FILE = Option("config_file", "config_file", _str, None, "the --config file, read again on SIGHUP")
NO_FLAG = (BUNDLE, STREAMS, CONFIG_FILE)


def settle_fields(instance: Any, owner: str) -> None:
    """Check and type every field of a frozen dataclass made with ``option_field`` (or ``ServeConfig``'s)."""
    for item in dataclasses.fields(instance):
        option = item.metadata.get("option")
        if option is None:
            continue
        named = f" ({option.flag})" if option.flag.startswith("--") else ""
        value = getattr(instance, item.name)
        settled = option.settle(value, f"{owner} {item.name}{named}")
        if settled is not value:
            object.__setattr__(instance, item.name, settled)


def option_field(name: str) -> Any:
    """A dataclass field that takes its default, type check and parser from the option ``name``."""
    option = BY_FIELD[name]
    return dataclasses.field(default=option.default, metadata={"option": option})  # None: factory() on init


def _post_init(self: Any) -> None:
    settle_fields(self, "ServeConfig")
    check(self)


BY_FIELD: dict[str, Option] = {option.field: option for option in (*NO_FLAG, *OPTIONS)}
# Everything `edgekit serve` runs with: one field per option (and the bundle), made from OPTIONS so the
# defaults and types cannot drift from the flags. Constructing one checks every value and the checks that
# span options (UsageError naming the field); build_config makes one from the file, the flags and the env.
ServeConfig = dataclasses.make_dataclass(
    "ServeConfig",
    [(option.field, option.type, option_field(option.field)) for option in (*NO_FLAG, *OPTIONS)],
    namespace={"__post_init__": _post_init},
    frozen=True,
    kw_only=True,
)
ServeConfig.__module__ = __name__
ServeConfig.__doc__ = (
    "Everything ``edgekit serve`` runs with; one field per entry of ``OPTIONS`` (plus ``bundle``). Build it with "
    "``build_config`` (file, flags, environment) or directly: either way every value is checked on construction."
)


def validated(config: Any) -> Any:
    """``config`` checked again, as it was when constructed (a Daemon calls this before it opens anything)."""
    if not isinstance(config, ServeConfig):
        raise TypeError(f"expected a ServeConfig (edgekit.serve.build_config makes one), got {type(config).__name__}")
    return dataclasses.replace(config)


def _flatten(data: dict[str, Any], path: Path) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise UsageError(f"{path}: '{key}' must be a table ([{key}]), got {value!r}")
            flat |= {f"{key}.{k}": v for k, v in value.items()}
        else:
            flat[key] = value
    return flat


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a config file into {field: value}, checking every key and value."""
    from edgekit import _toml as tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"config file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file '{path}' cannot be read ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML ({exc})") from exc
    by_key = {o.key: o for o in OPTIONS}
    values: dict[str, Any] = {}
    for key, value in _flatten(data, path).items():
        section, _, name = key.rpartition(".")
        where = f"{path}: [{section}] {name}" if section else f"{path}: {key}"
        if key == BUNDLE_KEY:
            values[BUNDLE.field] = BUNDLE.parse(value, where)
        elif key == STREAMS.key:
            values[STREAMS.field] = STREAMS.parse(value, f"{path}: [[streams]]")
        elif key in by_key:
            values[by_key[key].field] = by_key[key].parse(value, where)
        else:
            allowed = sorted(k for k in [*by_key, BUNDLE_KEY, STREAMS.key] if k.rpartition(".")[0] == section)
            scope = f"[{section}]" if section else "the top level"
            raise UsageError(f"{path}: unknown key '{key}'; allowed in {scope}: {', '.join(allowed)}")
    return values


def parse_flags(raw: dict[str, Any]) -> dict[str, Any]:
    """Flag values as typed text (None when not given) -> {field: value}, checked."""
    values = {}
    for option in OPTIONS:
        value = raw.get(option.field)
        if value is not None:
            values[option.field] = option.parse(value, option.flag)
    return values


def build_config(
    *, file_values: dict[str, Any] | None = None, flag_values: dict[str, Any] | None = None
) -> ServeConfig:
    """Defaults < config file < flags, then the checks that span options."""
    merged = {**(file_values or {}), **(flag_values or {})}
    if not merged.get("token") and os.environ.get(TOKEN_ENV):
        merged["token"] = _str(os.environ[TOKEN_ENV], TOKEN_ENV)
    return ServeConfig(**merged)  # it checks the bundle and source are given, each value, then `check`


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(config: ServeConfig) -> None:
    """Checks that span options; each error names the options to change. ``ServeConfig`` runs it when built."""
    if not config.source and not config.streams:
        raise UsageError("no source given: pass --source (e.g. 0, rtsp://..., video.mp4), or set [source] uri or "
                         "[[streams]] tables in the --config file")  # fmt: skip
    count = len(config.source or ()) + len(config.streams)
    if count > config.max_streams:
        raise UsageError(f"{count} streams given, more than --max-streams {config.max_streams}: raise --max-streams "
                         f"(at most {MAX_STREAMS}) or give fewer sources")  # fmt: skip
    if config.token is not None and len(config.token) < MIN_TOKEN_LENGTH:
        raise UsageError(
            f"the token (--token, {TOKEN_ENV} or [http] token) has {len(config.token)} characters; use at least "
            f"{MIN_TOKEN_LENGTH}, e.g. one made by `openssl rand -hex 16`"
        )
    if not is_loopback(config.host) and not config.token:
        raise UsageError(
            f"binding {config.host} exposes the daemon beyond this machine: pass --token (or set {TOKEN_ENV}), "
            "or bind 127.0.0.1"
        )
    if config.reconnect_max_delay < config.reconnect_delay:
        raise UsageError("--reconnect-max-delay must be at least --reconnect-delay")
    if config.mqtt:
        from edgekit.serve.mqtt import parse_url

        parse_url(config.mqtt)
    tls = (config.mqtt_ca, config.mqtt_cert, config.mqtt_key)
    if any(tls) or config.mqtt_insecure:
        if not (config.mqtt or "").startswith("mqtts://"):
            raise UsageError("--mqtt-ca/--mqtt-cert/--mqtt-key/--mqtt-insecure need an mqtts:// broker URL (--mqtt)")
    if bool(config.mqtt_cert) != bool(config.mqtt_key):
        raise UsageError("--mqtt-cert and --mqtt-key go together: pass both, or neither")
    for flag, value in (
        ("--mqtt-ca", config.mqtt_ca),
        ("--mqtt-cert", config.mqtt_cert),
        ("--mqtt-key", config.mqtt_key),
    ):
        if value and not Path(value).is_file():
            raise UsageError(f"{flag}: file '{value}' does not exist")
    if config.jsonl and not Path(config.jsonl).expanduser().resolve().parent.is_dir():
        raise UsageError(f"--jsonl: the folder of '{config.jsonl}' does not exist")
