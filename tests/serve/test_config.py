"""Options: flags, the TOML file (errors name the key), their merge, and `edgekit serve --help`."""

from __future__ import annotations

import json

import pytest
from serve_support import run_cli

from edgekit.errors import UsageError
from edgekit.serve.config import OPTIONS, build_config, load_toml, parse_flags


def _toml(tmp_path, text: str):
    path = tmp_path / "serve.toml"
    path.write_text(text)
    return path


def test_toml_file_and_flags_merge(tmp_path):
    path = _toml(
        tmp_path,
        """
bundle = "m.edgekit"
device_id = "cam-01"
top_k = 5
[source]
uri = 0
fps = 12.5
resolution = [640, 480]
loop = true
[http]
port = 9000
max_body = "2MiB"
[mqtt]
url = "mqtt://broker.local/factory"
qos = 2
[jsonl]
path = "out.jsonl"
max_bytes = 65536
""",
    )
    config = build_config(file_values=load_toml(path), flag_values=parse_flags({"port": "9100", "loop": False}))
    assert config.bundle == "m.edgekit" and config.source == ("0",) and config.fps == 12.5
    assert config.resolution == (640, 480) and config.loop is False and config.port == 9100  # flags win
    assert config.max_body == 2 * 1024 * 1024 and config.mqtt_qos == 2 and config.jsonl_max_bytes == 65536
    assert config.top_k == 5 and config.device_id == "cam-01" and config.host == "127.0.0.1"


@pytest.mark.parametrize("text,words", [
    ("[mqtt]\nqos = 3", "[mqtt] qos: must be one of 0, 1, 2"),
    ("[source]\nfps = -1", "[source] fps: must be at least"),
    ("[source]\nresolution = \"big\"", "[source] resolution: expected WIDTHxHEIGHT"),
    ("[http]\nport = \"eighty\"", "[http] port: expected an integer"),
    ("[http]\nmax_body = \"3 parsecs\"", "[http] max_body: expected a size"),
    ("[mqtt]\nqqos = 1", "unknown key 'mqtt.qqos'; allowed in [mqtt]: mqtt.buffer"),
    ("colour = 1", "unknown key 'colour'; allowed in the top level: bundle, device, device_id"),
    ("source = \"0\"", "'source' must be a table ([source])"),
    ("device_id = \"a/b\"", "device_id: use 1-64 letters"),
    ("[source]\nloop = \"yes\"", "[source] loop: expected true or false"),
    ("[source\nuri=1", "not valid TOML"),
])  # fmt: skip
def test_toml_errors_name_the_key(tmp_path, text, words):
    path = _toml(tmp_path, text)
    with pytest.raises(UsageError) as info:
        load_toml(path)
    assert str(path) in str(info.value) and words in str(info.value)


@pytest.mark.parametrize("flags,words", [
    ({"mqtt_qos": "5"}, "--mqtt-qos: must be one of"),
    ({"rotate": "45"}, "--rotate: must be one of 0, 90, 180, 270"),
    ({"port": "70000"}, "--port: must be between 0 and 65535"),
])  # fmt: skip
def test_flag_errors_name_the_flag(flags, words):
    with pytest.raises(UsageError, match=words):
        parse_flags(flags)


@pytest.mark.parametrize("values,words", [
    ({"source": "0"}, "no bundle given"),
    ({"bundle": "m"}, "no source given"),
    ({"bundle": "m", "source": "0", "host": "0.0.0.0"}, "pass --token"),
    ({"bundle": "m", "source": "0", "mqtt_ca": "ca.pem", "mqtt": "mqtt://h/p"}, "need an mqtts:// broker URL"),
    ({"bundle": "m", "source": "0", "reconnect_delay": 5.0, "reconnect_max_delay": 1.0}, "--reconnect-max-delay"),
])  # fmt: skip
def test_checks_across_options(values, words, monkeypatch):
    monkeypatch.delenv("EDGEKIT_SERVE_TOKEN", raising=False)
    with pytest.raises(UsageError, match=words):
        build_config(flag_values=values)


@pytest.mark.slow
def test_help_documents_every_option():
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for option in OPTIONS:
        section, _, name = option.key.rpartition(".")
        assert option.flag in text and (f"[{section}] {name}" if section else f"TOML: {name}") in text, option.flag
    for word in ("--config", "/v1/stream.mjpg", "EDGEKIT_SERVE_TOKEN", "SIGHUP", "PREFIX/DEVICE_ID/STREAM_ID/result"):
        assert word in text


@pytest.mark.slow
def test_print_config_and_cli_errors(tmp_path):
    path = _toml(tmp_path, 'bundle = "m.edgekit"\n[source]\nuri = "rtsp://cam/s"\n[http]\ntoken = "secret-0123456789ab"\n'
                           '[mqtt]\nurl = "mqtt://u:pw@h/p"\n')  # fmt: skip
    result = run_cli("serve", "--config", str(path), "--top-k", "2", "--print-config")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["source"] == "rtsp://cam/s" and shown["top_k"] == 2 and shown["token"] == "***"
    assert shown["mqtt"] == "mqtt://u:***@h/p"
    bad = run_cli("serve", "--config", str(_toml(tmp_path, "[mqtt]\nqos = 9")))
    assert bad.returncode == 2 and bad.stderr.startswith("edgekit: error:") and "[mqtt] qos" in bad.stderr


def test_readme_option_tables_list_every_option():
    """The README keeps the one copy of the option tables beside --help: every option has its row."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(): line for line in readme.splitlines() if line.startswith("| `--")}
    for option in OPTIONS:
        row = next((r for flag, r in rows.items() if flag.split()[0].strip("`") == option.flag), None)
        assert row is not None, f"README has no row for {option.flag}"
        section, _, name = option.key.rpartition(".")
        key = f"`[{section}] {name}`" if section else f"`{name}`"
        assert key in row, f"README row of {option.flag} does not name its TOML key {key}"


# -- each option declared once: ServeConfig and CaptureOptions come from OPTIONS and check themselves
def test_serve_config_fields_are_the_options():
    """One field per option (plus the bundle), in order, with the option's default and its parser's type."""
    import dataclasses

    from edgekit.serve.config import NO_FLAG, ServeConfig

    fields = dataclasses.fields(ServeConfig)
    assert [f.name for f in fields] == [*(o.field for o in NO_FLAG), *(o.field for o in OPTIONS)]
    for item, option in zip(fields, (*NO_FLAG, *OPTIONS), strict=True):
        assert item.metadata["option"] is option and item.default == option.default and item.kw_only
        assert item.type == option.type, option.flag
    assert dataclasses.is_dataclass(ServeConfig) and ServeConfig.__module__ == "edgekit.serve.config"
    config = ServeConfig(bundle="m", source="0")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.top_k = 5  # type: ignore[misc]
    defaults = {o.field: o.default for o in OPTIONS if o.factory is None and not o.required and o.field != "source"}
    assert {name: getattr(config, name) for name in defaults} == defaults and config.source == ("0",)
    assert config.device_id and config.device_id == OPTIONS[[o.field for o in OPTIONS].index("device_id")].factory()


def test_every_default_passes_its_parser_and_parsers_take_their_own_output():
    """Defaults are not re-parsed on construction, so each must be what its parser would return; and values
    already parsed (from a flag or the TOML file) are parsed again by ServeConfig: each parser is idempotent."""
    import typing

    samples = {"--resolution": ["640x480", [640, 480], (640, 480)], "--allow-host": ["A.local,b:80", ["x"], ("y",)],
               "--max-body": ["2MiB", 4096], "--fps": ["12.5", 3], "--rotate": ["90", 180], "--source": [0, "rtsp://c"],
               "--log-level": ["INFO"], "--mqtt-qos": ["2"], "--loop": [True]}  # fmt: skip
    for option in OPTIONS:
        if option.default not in (None, ()):
            parsed = option.parse(option.default, option.flag)
            assert parsed == option.default and type(parsed) is type(option.default), option.flag
        for raw in samples.get(option.flag, []):
            once = option.parse(raw, option.flag)
            kind = typing.get_origin(option.parse.returns) or option.parse.returns  # tuple[int, int] -> tuple
            assert option.parse(once, option.flag) == once and isinstance(once, kind), option.flag


def test_serve_config_built_in_code_takes_typed_values():
    from edgekit.serve.config import ServeConfig

    config = ServeConfig(bundle=" m.edgekit ", source=0, resolution=(640, 480), allow_host=["Cam.Local"], fps=15,
                         max_body="2MiB", log_level="DEBUG", rotate=90, top_k=None)  # fmt: skip
    assert config.bundle == "m.edgekit" and config.source == ("0",) and config.resolution == (640, 480)
    assert config.allow_host == ("cam.local",) and config.fps == 15.0 and isinstance(config.fps, float)
    assert config.max_body == 2 * 1024**2 and config.log_level == "debug" and config.rotate == 90
    assert config.top_k == 3  # None is "not given": the default


@pytest.mark.parametrize("values,words", [
    ({"top_k": 0}, r"ServeConfig top_k \(--top-k\): must be between 1 and 1000, got 0"),
    ({"resolution": (9000, 10)}, r"ServeConfig resolution \(--resolution\): 9000x10 is too large"),
    ({"rotate": 45}, r"ServeConfig rotate \(--rotate\): must be one of 0, 90, 180, 270"),
    ({"port": "eighty"}, r"ServeConfig port \(--port\): expected an integer"),
    ({"max_body": 10}, r"ServeConfig max_body \(--max-body\): must be at least 1 KiB"),
    ({"allow_host": ("bad host",)}, r"ServeConfig allow_host \(--allow-host\): 'bad host' is not a host name"),
    ({"loop": "yes"}, r"ServeConfig loop \(--loop\): expected true or false"),
    ({"source": None}, "no source given"),
    ({"bundle": ""}, "no bundle given"),
    ({"host": "0.0.0.0"}, "pass --token"),
    ({"token": "short"}, "use at least 16"),
    ({"reconnect_delay": 5, "reconnect_max_delay": 1}, "--reconnect-max-delay must be at least --reconnect-delay"),
])  # fmt: skip
def test_serve_config_built_in_code_is_checked(values, words):
    """The same parsers and cross-option checks as build_config, with the error naming the field."""
    import dataclasses

    from edgekit.serve.config import ServeConfig

    with pytest.raises(UsageError, match=words):
        ServeConfig(**{"bundle": "m", "source": "0", **values})
    with pytest.raises(UsageError, match=words):  # a changed copy is checked too
        dataclasses.replace(ServeConfig(bundle="m", source="0"), **values)


def test_daemon_refuses_an_unchecked_config_before_opening_anything(tmp_path):
    """Daemon(config) checks the config again before it loads the bundle or binds the port: here the bundle does
    not exist, so any error but the config's own would mean the daemon had started on it."""
    from edgekit.serve.config import ServeConfig
    from edgekit.serve.daemon import Daemon

    missing = str(tmp_path / "missing.edgekit")
    with pytest.raises(UsageError, match="--top-k"):
        Daemon(ServeConfig(bundle=missing, source="0", top_k=0))
    with pytest.raises(UsageError, match="pass --token"):
        Daemon(ServeConfig(bundle=missing, source="0", host="192.168.1.20"))
    config = ServeConfig(bundle=missing, source="0")
    for name, value, words in (("top_k", 0, "--top-k"), ("host", "0.0.0.0", "pass --token")):
        tampered = ServeConfig(bundle=missing, source="0")
        object.__setattr__(tampered, name, value)  # past the frozen dataclass: Daemon still checks
        with pytest.raises(UsageError, match=words):
            Daemon(tampered)
    with pytest.raises(TypeError, match="expected a ServeConfig"):
        Daemon(vars(config))  # type: ignore[arg-type]
    with pytest.raises(UsageError) as info:  # a sound config gets as far as the bundle
        Daemon(config)
    assert "missing.edgekit" in str(info.value)


def test_capture_options_come_from_the_config():
    import dataclasses

    from edgekit.serve.capture import CaptureOptions
    from edgekit.serve.config import ServeConfig

    for item in dataclasses.fields(CaptureOptions):
        assert item.default == item.metadata["option"].default, item.name  # no defaults of its own
    config = ServeConfig(bundle="m", source="0", resolution=(320, 240), fps=5, rotate=180, loop=True, realtime=True,
                         reconnect_delay=0.2, reconnect_max_delay=2, source_timeout=3, rtsp_transport="UDP")  # fmt: skip
    options = CaptureOptions.from_config(config)
    assert options == CaptureOptions(resolution=(320, 240), fps=5.0, rotate=180, loop=True, realtime=True,
                                     reconnect_delay=0.2, reconnect_max_delay=2.0, timeout=3.0, rtsp_transport="udp")  # fmt: skip
    assert CaptureOptions.from_config(ServeConfig(bundle="m", source="0")) == CaptureOptions()
    with pytest.raises(UsageError, match=r"CaptureOptions timeout \(--source-timeout\): must be at least 0.1"):
        CaptureOptions(timeout=0)
