#!/usr/bin/env python3
"""One MQTT over WebSocket session through snigate with paho-mqtt (transport "websockets"), the
way a dashboard or mobile SDK opens it: wss:// with the test CA and a client certificate.

Waits for the CONNACK, subscribes to --topic, publishes to it and waits for the message to come
back through the broker. Prints one JSON object: the CONNACK code and whether the round trip
worked. Every wait is bounded by --timeout.

Test helper only: it connects to 127.0.0.1 whatever --sni says, so the SNI can be any name.
"""

import argparse
import json
import socket
import ssl
import sys
import threading
import time
import warnings

import paho.mqtt.client as mqtt

warnings.filterwarnings("ignore", category=DeprecationWarning)

_original_create_connection = socket.create_connection


def _loopback_only(address, *args, **kwargs):
    # paho connects to the host it also sends as SNI; the tests' names do not resolve.
    return _original_create_connection(("127.0.0.1", address[1]), *args, **kwargs)


socket.create_connection = _loopback_only


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sni", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--path", default="/mqtt")
    parser.add_argument("--client-id", default="")
    parser.add_argument("--topic", default="snigate/ws")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION1,
        client_id=args.client_id,
        protocol=mqtt.MQTTv311,
        transport="websockets",
        reconnect_on_failure=False,
    )
    client.ws_set_options(path=args.path)
    client.tls_set(ca_certs=args.ca, certfile=args.cert, keyfile=args.key, tls_version=ssl.PROTOCOL_TLS_CLIENT)

    result = {"connack": None, "round_trip": False}
    connacked = threading.Event()
    received = threading.Event()

    def on_connect(_client, _userdata, _flags, code, _properties=None):
        result["connack"] = code if isinstance(code, int) else code.value
        connacked.set()

    def on_message(_client, _userdata, message):
        if message.payload == b"ping over websocket":
            received.set()

    client.on_connect = on_connect
    client.on_message = on_message

    deadline = time.monotonic() + args.timeout
    try:
        client.connect(args.sni, args.port, keepalive=30)
    except (OSError, ssl.SSLError) as error:
        result["error"] = f"{type(error).__name__}: {error}"
        print(json.dumps(result))
        return 0
    client.loop_start()
    connacked.wait(max(0.0, deadline - time.monotonic()))
    if result["connack"] == 0:
        client.subscribe(args.topic, qos=1)
        time.sleep(0.2)
        client.publish(args.topic, b"ping over websocket", qos=1)
        result["round_trip"] = received.wait(max(0.0, deadline - time.monotonic()))
        client.disconnect()
    client.loop_stop()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
