#!/usr/bin/env python3
"""Asks a containerd's CRI plugin for its verbose status, like `crictl info`.

Usage: cri-status.py SOCKET

Calls runtime.v1.RuntimeService/Status with verbose = true over the unix
socket and prints one JSON object on stdout:

  {"info": {KEY: <parsed JSON value>, ...}, "runtime_handlers": [NAME, ...]}

`info.config` is the CRI plugin's configuration as containerd parsed it
(with `containerd.runtimes`); `runtime_handlers` is only filled by
containerd 2.x. Needs python3-grpcio; the two messages are small enough to
encode and decode by hand, so no generated protobuf code is needed.
"""

import json
import sys

import grpc


def varint(buf, i):
    """Decodes the varint at buf[i:]; returns (value, next index)."""
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def fields(buf):
    """Yields (field number, wire type, value) of a protobuf message."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 2:
            n, i = varint(buf, i)
            value, i = buf[i : i + n], i + n
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire} (field {number})")
        yield number, wire, value


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    channel = grpc.insecure_channel(f"unix://{sys.argv[1]}")
    status = channel.unary_unary(
        "/runtime.v1.RuntimeService/Status",
        request_serializer=None,
        response_deserializer=None,
    )
    # StatusRequest { bool verbose = 1; }
    reply = status(b"\x08\x01", timeout=10)
    info, handlers = {}, []
    for number, wire, value in fields(reply):
        if number == 2 and wire == 2:  # map<string, string> info
            entry = {n: v for n, w, v in fields(value) if w == 2}
            key = entry.get(1, b"").decode()
            raw = entry.get(2, b"").decode()
            try:
                info[key] = json.loads(raw)
            except ValueError:
                info[key] = raw
        elif number == 3 and wire == 2:  # repeated RuntimeHandler { string name = 1; }
            names = [v.decode() for n, w, v in fields(value) if n == 1 and w == 2]
            handlers.append(names[0] if names else "")
    json.dump({"info": info, "runtime_handlers": handlers}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
