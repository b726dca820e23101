"""The MQTT publisher (paho-mqtt): results as JSON, a retained online/offline status with a last will.

Topics: ``<prefix>/<device-id>/result`` (one JSON message a result) and ``<prefix>/<device-id>/status``
(retained ``online``; the broker publishes the retained will ``offline`` if the daemon dies, and the
daemon publishes it itself when it stops). While the broker is unreachable, results wait in a bounded
buffer (the oldest are dropped beyond ``--mqtt-buffer`` results or ``--mqtt-buffer-bytes`` bytes, counted) and are sent when it comes back;
paho's network thread reconnects with backoff.
"""

from __future__ import annotations

import collections
import logging
import os
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from edgekit.errors import UsageError, require
from edgekit.serve.config import MQTT_PASSWORD_ENV
from edgekit.serve.metrics import Metrics
from edgekit.serve.publishers import Publisher

log = logging.getLogger("edgekit.serve")


@dataclass(frozen=True)
class BrokerURL:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    prefix: str

    def display(self) -> str:
        """The URL without its password, for logs."""
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}/{self.prefix}"


def parse_url(url: str) -> BrokerURL:
    """mqtt://[user[:pass]@]host[:port][/topic/prefix] (mqtts:// for TLS) -> BrokerURL."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise UsageError(f"--mqtt: expected mqtt://[user[:pass]@]host[:port][/prefix] or mqtts://..., got {url!r}")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError as exc:
        raise UsageError(f"--mqtt: the port in {url!r} is not a number from 1 to 65535") from exc
    prefix = parts.path.strip("/") or "edgekit"
    if any(c in prefix for c in "+#") or "//" in prefix:
        raise UsageError(f"--mqtt: topic prefix '{prefix}' may not contain '+', '#' or empty levels")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if username and password is None:
        password = os.environ.get(MQTT_PASSWORD_ENV)
    return BrokerURL(parts.hostname, port, parts.scheme == "mqtts", username, password, prefix)


class MqttPublisher(Publisher):
    name = "mqtt"
    queue_size = 256

    def __init__(self, url: str, *, device_id: str, metrics: Metrics, qos: int = 1, buffer: int = 1000,
                 buffer_bytes: int = 16 * 1024 * 1024, keepalive: int = 30, client_id: str | None = None, ca: str | None = None,
                 cert: str | None = None, key: str | None = None, insecure: bool = False) -> None:  # fmt: skip
        mqtt = require("paho.mqtt.client", extra="serve", purpose="publishing to MQTT")
        self.broker = parse_url(url)
        self.metrics = metrics
        self.qos = qos
        base = f"{self.broker.prefix}/{device_id}"
        self.base, self.status_topic = base, f"{base}/status"
        self.result_topic = f"{base}/+/result"  # one topic a stream: PREFIX/DEVICE/STREAM/result
        self._buffer: collections.deque[tuple[str, bytes]] = collections.deque()
        self._buffer_size = buffer
        self._buffer_bytes_limit = buffer_bytes
        self._buffer_bytes = 0
        self._connected = threading.Event()
        self._mqtt = mqtt
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"edgekit-{device_id}")
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        if self.broker.username:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            client.tls_set(ca_certs=ca, certfile=cert, keyfile=key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
            client.tls_insecure_set(insecure)
        client.max_queued_messages_set(buffer)
        client.reconnect_delay_set(min_delay=1, max_delay=8)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self.client = client
        client.connect_async(self.broker.host, self.broker.port, keepalive=keepalive)
        client.loop_start()
        log.info("MQTT: publishing to %s as %s", self.broker.display(), self.result_topic)

    # -- paho's network thread
    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            log.warning("MQTT: broker %s refused the connection: %s", self.broker.display(), reason_code)
            return
        client.publish(self.status_topic, "online", qos=1, retain=True)
        self._connected.set()
        self.metrics.mqtt_connected.set(1)
        log.info("MQTT: connected to %s", self.broker.display())

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        self.metrics.mqtt_connected.set(0)
        if was:
            self.metrics.mqtt_disconnects.inc()
            log.warning("MQTT: lost the broker %s (%s); buffering up to %d results and reconnecting",
                        self.broker.display(), reason_code, self._buffer_size)  # fmt: skip

    # -- the publisher's thread
    def _keep(self, item: tuple[str, bytes]) -> None:
        self._buffer.append(item)
        self._buffer_bytes += len(item[1])
        while len(self._buffer) > 1 and (
            len(self._buffer) > self._buffer_size or self._buffer_bytes > self._buffer_bytes_limit
        ):
            self._buffer_bytes -= len(self._buffer.popleft()[1])
            self.metrics.publish_dropped.inc(publisher=self.name)

    def _send(self, item: tuple[str, bytes]) -> bool:
        info = self.client.publish(item[0], item[1], qos=self.qos)
        return info.rc == self._mqtt.MQTT_ERR_SUCCESS

    def _flush(self) -> None:
        while self._buffer and self._connected.is_set():
            if not self._send(self._buffer[0]):
                return
            self._buffer_bytes -= len(self._buffer.popleft()[1])

    def topic(self, result: Any) -> str:
        return f"{self.base}/{getattr(result, 'stream', 'cam0')}/result"

    def deliver(self, result: Any) -> bool:
        """Send a result now (True), or buffer it until the broker is back (False)."""
        payload = (self.topic(result), result.json.encode())
        try:
            self._flush()
            if self._buffer or not self._connected.is_set():
                self._keep(payload)
                return False
            if not self._send(payload):
                self._keep(payload)
                raise ConnectionError(f"publish to {self.broker.display()} failed; result buffered")
            return True
        finally:
            self.metrics.mqtt_buffered.set(len(self._buffer))

    def idle(self) -> None:
        self._flush()
        self.metrics.mqtt_buffered.set(len(self._buffer))

    def close(self, timeout: float = 0.6) -> None:
        """Publish the retained ``offline`` status, wait briefly for it, and disconnect."""
        try:
            if self._connected.is_set():
                self._flush()
                info = self.client.publish(self.status_topic, "offline", qos=1, retain=True)
                info.wait_for_publish(timeout)
            self.client.disconnect()
        except (RuntimeError, ValueError) as exc:  # the broker went away while we stopped
            log.warning("MQTT: could not publish 'offline' on stop: %s", exc)
        finally:
            self.client.loop_stop()
