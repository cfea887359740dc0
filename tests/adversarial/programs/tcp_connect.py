"""Attack: connect to a TCP listener on 127.0.0.1 (the test's) and send data. Contained: no network at all."""

import socket


def run(data, context):
    connected = 0
    try:
        with socket.create_connection(("127.0.0.1", context["tcp_port"]), timeout=1) as conn:
            conn.sendall(b"stolen data")
            connected = 1
    except OSError:
        pass
    return {"answer": sorted(data), "report": {"connected": connected}}
