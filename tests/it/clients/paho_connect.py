#!/usr/bin/env python3
"""One MQTT session through snigate with paho-mqtt, the way a device would open it — or, with
--transport websockets, the way a dashboard or mobile SDK does (wss:// on --path).

Connects (TLS with SNI when --sni is given), waits for the CONNACK, and when it accepts the client,
subscribes to a topic, publishes to it and waits for the message to come back through the broker.
Prints one JSON object: the CONNACK code as paho reports it (the 3.x return code; the MQTT 5
reason code), and whether the round trip worked. Every wait is bounded by --timeout.

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

# The VERSION1 callbacks are deprecated, but only they hand over the raw 3.x return code.
warnings.filterwarnings("ignore", category=DeprecationWarning)

_original_create_connection = socket.create_connection


def _loopback_only(address, *args, **kwargs):
    # paho connects to the host it also sends as SNI; the tests' names do not resolve.
    return _original_create_connection(("127.0.0.1", address[1]), *args, **kwargs)


socket.create_connection = _loopback_only


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", choices=["3.1.1", "5"], required=True)
    parser.add_argument("--client-id", default="")
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--keepalive", type=int, default=60)
    parser.add_argument("--sni", help="TLS server name; plain TCP without it")
    parser.add_argument("--ca")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--topic", default="snigate/paho")
    parser.add_argument("--transport", choices=["tcp", "websockets"], default="tcp")
    parser.add_argument("--path", default="/mqtt", help="the WebSocket path (--transport websockets)")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()

    protocol = mqtt.MQTTv311 if args.version == "3.1.1" else mqtt.MQTTv5
    # VERSION1 callbacks hand over the raw 3.x return code; VERSION2 would map it to an MQTT 5 reason.
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION1,
        client_id=args.client_id,
        protocol=protocol,
        transport=args.transport,
        reconnect_on_failure=False,
    )
    if args.transport == "websockets":
        client.ws_set_options(path=args.path)
    if args.username is not None:
        client.username_pw_set(args.username, args.password)
    if args.sni:
        client.tls_set(ca_certs=args.ca, certfile=args.cert, keyfile=args.key, tls_version=ssl.PROTOCOL_TLS_CLIENT)

    result = {"connack": None, "reason": None, "round_trip": False, "closed": False}
    connacked = threading.Event()
    received = threading.Event()
    closed = threading.Event()

    def on_connect(_client, _userdata, _flags, code, _properties=None):
        result["connack"] = code if isinstance(code, int) else code.value
        result["reason"] = str(code) if not isinstance(code, int) else mqtt.connack_string(code)
        connacked.set()

    def on_message(_client, _userdata, message):
        if message.payload == b"ping through snigate":
            received.set()

    def on_disconnect(*_args):
        closed.set()

    client.on_connect = on_connect
    client.on_message = on_message
    client.on_disconnect = on_disconnect

    deadline = time.monotonic() + args.timeout
    try:
        client.connect("127.0.0.1" if not args.sni else args.sni, args.port, keepalive=args.keepalive)
    except (OSError, ssl.SSLError) as error:
        result["error"] = f"{type(error).__name__}: {error}"
        print(json.dumps(result))
        return 0
    client.loop_start()
    connacked.wait(max(0.0, deadline - time.monotonic()))
    if result["connack"] == 0:
        client.subscribe(args.topic, qos=1)
        time.sleep(0.2)
        client.publish(args.topic, b"ping through snigate", qos=1)
        result["round_trip"] = received.wait(max(0.0, deadline - time.monotonic()))
        client.disconnect()
    # A refused client: the server closes after the CONNACK.
    result["closed"] = closed.wait(max(0.0, min(3.0, deadline - time.monotonic())))
    client.loop_stop()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
