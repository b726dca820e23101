"""MQTT against a real mosquitto broker: messages, retained status and last will, QoS, credentials, TLS,
and a broker killed and restarted under a running daemon."""

from __future__ import annotations

import signal
import subprocess

import pytest
from serve_support import LABELS, require_tool, run_cli, serve_bundle, start_daemon, video_file, wait_until  # noqa: F401
from services import Broker, Watcher, broker  # noqa: F401

RESULT_KEYS = {"device", "stream", "batch", "seq", "captured_at", "captured_unix", "inference_ms", "e2e_ms", "fps", "label", "score",
               "top_k", "model", "bundle"}  # fmt: skip


def _serve_args(bundle, video, *extra: str) -> list[str]:
    return [str(bundle), "--source", str(video), "--loop", "--realtime", "--device-id", "cam1", *extra]


@pytest.mark.slow
def test_results_status_and_qos(broker, start_daemon, serve_bundle, video_file):  # noqa: F811
    watcher = Watcher(broker, "factory/#")
    try:
        daemon = start_daemon(_serve_args(serve_bundle, video_file, "--mqtt", broker.url(), "--mqtt-qos", "1"))
        results = wait_until(lambda: len(watcher.results()) >= 5 and watcher.results(), timeout=20, what="5 results")
        assert all(set(r) == RESULT_KEYS and r["device"] == "cam1" and r["label"] in LABELS for r in results)
        assert [r["seq"] for r in results] == sorted(r["seq"] for r in results)
        assert watcher.qos_of_results() == {1}
        assert ("online", False) in watcher.statuses()
        late = Watcher(broker, "factory/cam1/status")  # joins later: gets the retained status
        wait_until(lambda: late.statuses() == [("online", True)], timeout=10, what="the retained 'online'")
        late.close()
        assert daemon.metric("edgekit_mqtt_connected") == 1
        code, seconds = daemon.stop(signal.SIGTERM)
        assert code == 0 and seconds < 2
        wait_until(lambda: ("offline", False) in watcher.statuses(), timeout=5, what="'offline' on stop")
        after = Watcher(broker, "factory/cam1/status")
        wait_until(lambda: after.statuses() == [("offline", True)], timeout=10, what="the retained 'offline'")
        after.close()
    finally:
        watcher.close()


@pytest.mark.slow
def test_last_will_when_the_daemon_dies_and_qos_0(broker, start_daemon, serve_bundle, video_file):  # noqa: F811
    watcher = Watcher(broker, "factory/#")
    try:
        daemon = start_daemon(_serve_args(serve_bundle, video_file, "--mqtt", broker.url(), "--mqtt-qos", "0"))
        wait_until(lambda: len(watcher.results()) >= 3, timeout=20, what="results")
        assert watcher.qos_of_results() == {0}
        daemon.kill()  # SIGKILL: no clean disconnect, so the broker publishes the last will
        wait_until(lambda: ("offline", False) in watcher.statuses(), timeout=10, what="the last will")
    finally:
        watcher.close()


@pytest.mark.slow
def test_broker_killed_and_restarted(broker, start_daemon, serve_bundle, video_file):  # noqa: F811
    watcher = Watcher(broker, "factory/cam1/cam0/result")
    try:
        daemon = start_daemon(_serve_args(serve_bundle, video_file, "--mqtt", broker.url(), "--mqtt-buffer", "10"))
        wait_until(lambda: watcher.results(), timeout=20, what="results before the outage")
        broker.kill()
        wait_until(lambda: daemon.metric("edgekit_mqtt_connected") == 0, timeout=10, what="the outage to be seen")
        seen = max(r["seq"] for r in watcher.results())
        inferred = daemon.metric("edgekit_frames_inferred_total")
        wait_until(lambda: daemon.metric('edgekit_publish_dropped_total{publisher="mqtt"}') > 0, timeout=10,
                   what="the bounded buffer to overflow")  # fmt: skip
        m = daemon.metrics()
        assert m["edgekit_mqtt_disconnects_total"] >= 1 and m["edgekit_mqtt_buffered"] == 10
        assert m["edgekit_frames_inferred_total"] > inferred  # inference never waited on the broker
        assert daemon.get_json("/healthz") == {"status": "ok"}
        broker.start()
        wait_until(lambda: max(r["seq"] for r in watcher.results()) > seen + 10, timeout=30,
                   what="publishing to resume after the broker came back")  # fmt: skip
        m = daemon.metrics()
        assert m["edgekit_mqtt_connected"] == 1 and m["edgekit_mqtt_buffered"] < 10
        assert daemon.proc.poll() is None and "Traceback" not in daemon.log
        assert "lost the broker" in daemon.log
    finally:
        watcher.close()


@pytest.mark.slow
def test_wrong_password_is_logged_and_survived(broker, start_daemon, serve_bundle, video_file):  # noqa: F811
    url = broker.url().replace("s3cret", "wrong")
    daemon = start_daemon(_serve_args(serve_bundle, video_file, "--mqtt", url))
    wait_until(lambda: "refused the connection" in daemon.log, timeout=15, what="the refusal to be logged")
    assert daemon.metric("edgekit_mqtt_connected") == 0
    # results still flow to the other publishers (the first may not be in yet: /v1/latest is 404 until it is)
    wait_until(lambda: daemon.request("GET", "/v1/latest")[0] == 200, timeout=15, what="a result")
    assert daemon.get_json("/v1/latest")["device"] == "cam1"
    assert "s3cret" not in daemon.log and "wrong" not in daemon.log  # no password in logs


@pytest.mark.slow
def test_password_from_the_environment(broker, start_daemon, serve_bundle, video_file):  # noqa: F811
    watcher = Watcher(broker, "factory/cam1/cam0/result")
    try:
        from services import MQTT_PASSWORD

        start_daemon(_serve_args(serve_bundle, video_file, "--mqtt", broker.url(password=False)),
                     env={"EDGEKIT_MQTT_PASSWORD": MQTT_PASSWORD})  # fmt: skip
        wait_until(lambda: watcher.results(), timeout=20, what="results with the password from the environment")
    finally:
        watcher.close()


def _make_tls(folder) -> dict:
    openssl = require_tool("openssl", "openssl")
    ca, ca_key, key, csr, cert = (folder / n for n in ("ca.pem", "ca.key", "server.key", "server.csr", "server.pem"))
    run = lambda *args: subprocess.run([openssl, *map(str, args)], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", ca_key,
        "-out", ca, "-days", "2", "-subj", "/CN=edgekit test CA")  # fmt: skip
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", csr,
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1")  # fmt: skip
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "2",
        "-copy_extensions", "copy")  # fmt: skip
    return {"ca": ca, "cert": cert, "key": key}


@pytest.mark.slow
def test_mqtts_with_a_ca_file(tmp_path, start_daemon, serve_bundle, video_file):  # noqa: F811
    tls = _make_tls(tmp_path)
    tls_broker = Broker(tmp_path, tls=tls).start()
    watcher = Watcher(tls_broker, "secure/#", tls_ca=tls["ca"])
    try:
        url = tls_broker.url("secure", scheme="mqtts")
        start_daemon(_serve_args(serve_bundle, video_file, "--mqtt", url, "--mqtt-ca", str(tls["ca"])))
        wait_until(lambda: watcher.results(), timeout=20, what="results over TLS")
    finally:
        watcher.close()
        tls_broker.kill()


@pytest.mark.slow
@pytest.mark.parametrize("url", ["http://broker", "mqtt://", "mqtt://host:99999/x"])
def test_bad_broker_urls_are_usage_errors(url, serve_bundle, video_file):  # noqa: F811
    result = run_cli("serve", str(serve_bundle), "--source", str(video_file), "--mqtt", url)
    assert result.returncode == 2 and "--mqtt" in result.stderr and "Traceback" not in result.stderr
