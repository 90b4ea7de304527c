#!/usr/bin/env python3
"""Captures the CONNECT packets a real client (paho-mqtt 2.x) sends, for the parser's tests.

Run once from this folder: `pip install paho-mqtt && python3 capture.py`. A listener on
127.0.0.1 accepts one connection per capture, reads exactly one MQTT packet (fixed header and
remaining length), writes it to NAME.bin and closes without answering.
"""
import socket
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def read_packet(conn):
    data = b""
    def need(n):
        nonlocal data
        while len(data) < n:
            chunk = conn.recv(4096)
            if not chunk:
                raise EOFError("closed after %d bytes" % len(data))
            data += chunk
    need(2)
    remaining, multiplier, at = 0, 1, 1
    while True:
        need(at + 1)
        byte = data[at]
        remaining += (byte & 0x7F) * multiplier
        multiplier *= 128
        at += 1
        if byte & 0x80 == 0:
            break
    need(at + remaining)
    return data[: at + remaining]


def capture(name, make_client, connect):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    result = {}

    def serve():
        conn, _ = listener.accept()
        result["packet"] = read_packet(conn)
        conn.close()

    server = threading.Thread(target=serve)
    server.start()
    client = make_client()
    connect(client, port)
    for _ in range(20):
        client.loop(timeout=0.05)
        if "packet" in result:
            break
    server.join(timeout=5)
    listener.close()
    with open(name + ".bin", "wb") as out:
        out.write(result["packet"])
    print(name, len(result["packet"]), "bytes")


def v311():
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-v311-device", protocol=mqtt.MQTTv311)
    client.username_pw_set("alice", "s3cret-password")
    client.will_set("devices/paho-v311-device/status", b"offline", qos=1, retain=True)
    return client


def v5():
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-v5-device", protocol=mqtt.MQTTv5)
    client.username_pw_set("bob", "an0ther-password")
    will = Properties(PacketTypes.WILLMESSAGE)
    will.WillDelayInterval = 30
    client.will_set("devices/paho-v5-device/status", b"gone", qos=2, retain=False, properties=will)
    return client


def v5_props(client, port):
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 20
    props.UserProperty = ("site", "lab-7")
    client.connect("127.0.0.1", port, keepalive=45, clean_start=True, properties=props)


def v31():
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-v31", protocol=mqtt.MQTTv31)


def v311_bare():
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv311)


capture("paho-v311-user-will", v311, lambda c, p: c.connect("127.0.0.1", p, keepalive=30))
capture("paho-v5-user-will-props", v5, v5_props)
capture("paho-v31", v31, lambda c, p: c.connect("127.0.0.1", p, keepalive=60))
capture("paho-v311-empty-id", v311_bare, lambda c, p: c.connect("127.0.0.1", p, keepalive=0))
