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
    assert config.bundle == "m.edgekit" and config.source == "0" and config.fps == 12.5
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


def test_help_documents_every_option():
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for option in OPTIONS:
        section, _, name = option.key.rpartition(".")
        assert option.flag in text and (f"[{section}] {name}" if section else f"TOML: {name}") in text, option.flag
    for word in ("--config", "/v1/stream.mjpg", "EDGEKIT_SERVE_TOKEN", "SIGHUP", "PREFIX/DEVICE_ID/result"):
        assert word in text


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
