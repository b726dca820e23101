"""The daemon's options: one table that drives the flags, the TOML file and their validation.

Every option has a flag (``--mqtt-qos``) and a TOML key (``qos`` in ``[mqtt]``). Values come from the
defaults, then the ``--config`` file, then the flags; each is checked by the same parser, so an error
names the flag or the file and key it came from.
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


# -- value parsers: (raw value, where it came from) -> value, or UsageError naming `where`
def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{where}: expected a non-empty string, got {value!r}")
    return value.strip()


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

    return parse


def _choice(*choices: Any) -> Parser:
    def parse(value: Any, where: str) -> Any:
        for choice in choices:
            if str(value).lower() == str(choice):
                return choice
        raise UsageError(f"{where}: must be one of {', '.join(map(str, choices))}, got {value!r}")

    return parse


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2}
_UNITS |= {"g": 1000**3, "gb": 1000**3, "gib": 1024**3}


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


def _resolution(value: Any, where: str) -> tuple[int, int]:
    if isinstance(value, list) and len(value) == 2:
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


def _hosts(value: Any, where: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    names = tuple(str(item).strip().lower() for item in items if str(item).strip())
    for name in names:
        if not re.fullmatch(r"[a-z0-9._\-]+(:\d+)?|\[[0-9a-f:.]+\](:\d+)?", name):
            raise UsageError(f"{where}: {name!r} is not a host name (e.g. camera.local, 192.168.1.20, [fe80::1])")
    if not names:
        raise UsageError(f"{where}: expected host names, comma separated, got {value!r}")
    return names


def _source(value: Any, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # a camera index written as a number in TOML
    return _str(value, where)


def _device_id(value: Any, where: str) -> str:
    text = _str(value, where)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", text):
        raise UsageError(
            f"{where}: use 1-64 letters, digits, '.', '_' or '-' (it is an MQTT topic level), got {text!r}"
        )
    return text


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
    """One option: its flag, its TOML key (``section.name``), its parser, default and help."""

    flag: str
    key: str
    parse: Parser
    default: Any
    help: str
    metavar: str | None = None

    @property
    def field(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def is_bool(self) -> bool:
        return self.parse is _bool


KiB, MiB = 1024, 1024**2
OPTIONS: tuple[Option, ...] = (
    Option("--source", "source.uri", _source, None, "camera index (0), /dev/videoN, csi://N, a GStreamer pipeline "
           "(with '!'), rtsp://, http(s):// MJPEG URL, video file, image folder or pattern ('frames/*.jpg')", "URI"),
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
    Option("--top-k", "top_k", _number(int, 1, 1000), 3, "labels in each result", "K"),
    Option("--device", "device", _str, None, "run on another device of the bundle's backend (OpenVINO: CPU, GPU, "
           "NPU)", "NAME"),
    Option("--device-id", "device_id", _device_id, None, "this device's name in MQTT topics and results (default: "
           "the host name)", "ID"),
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
    Option("--allow-host", "http.allow_hosts", _hosts, None, "more Host names the daemon answers to, comma "
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """Everything ``edgekit serve`` runs with. Build it with ``build_config``."""

    bundle: str
    source: str
    resolution: tuple[int, int] | None = None
    fps: float | None = None
    rotate: int = 0
    loop: bool = False
    realtime: bool = False
    reconnect_delay: float = 0.5
    reconnect_max_delay: float = 30.0
    source_timeout: float = 10.0
    stall_timeout: float = 10.0
    rtsp_transport: str = "tcp"
    top_k: int = 3
    device: str | None = None
    device_id: str = dataclasses.field(default_factory=default_device_id)
    log_level: str = "info"
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    max_body: int = 8 * MiB
    stream_fps: float = 15.0
    stream_quality: int = 80
    allow_host: tuple[str, ...] = ()  # --allow-host, TOML [http] allow_hosts
    max_pixels: int = 50_000_000
    decode_budget: int = 256 * MiB
    decode_wait: float = 2.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 5.0
    max_connections: int = 200
    mqtt: str | None = None
    mqtt_qos: int = 1
    mqtt_buffer: int = 1000
    mqtt_buffer_bytes: int = 16 * MiB
    mqtt_keepalive: int = 30
    mqtt_client_id: str | None = None
    mqtt_ca: str | None = None
    mqtt_cert: str | None = None
    mqtt_key: str | None = None
    mqtt_insecure: bool = False
    jsonl: str | None = None
    jsonl_max_bytes: int = 10 * MiB
    jsonl_keep: int = 5


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
        raise UsageError(f"config file '{path}' cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML ({exc})") from None
    by_key = {o.key: o for o in OPTIONS}
    values: dict[str, Any] = {}
    for key, value in _flatten(data, path).items():
        section, _, name = key.rpartition(".")
        where = f"{path}: [{section}] {name}" if section else f"{path}: {key}"
        if key == BUNDLE_KEY:
            values["bundle"] = _str(value, where)
        elif key in by_key:
            values[by_key[key].field] = by_key[key].parse(value, where)
        else:
            allowed = sorted(k for k in [*by_key, BUNDLE_KEY] if k.rpartition(".")[0] == section)
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
    if not merged.get("bundle"):
        raise UsageError("no bundle given: pass BUNDLE, or set 'bundle' in the --config file")
    if not merged.get("source"):
        raise UsageError("no source given: pass --source (e.g. 0, rtsp://..., video.mp4), or set [source] uri")
    config = ServeConfig(**merged)
    check(config)
    return config


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(config: ServeConfig) -> None:
    """Checks that span options; each error names the options to change."""
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
