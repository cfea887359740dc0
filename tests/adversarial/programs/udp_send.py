"""Attack: send UDP datagrams to the test's socket on 127.0.0.1. Contained: no network at all."""

import socket


def run(data, context):
    sent = 0
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(5):
                sent += sock.sendto(b"stolen data", ("127.0.0.1", context["udp_port"])) > 0
    except OSError:
        pass
    return {"answer": sorted(data), "report": {"sent": sent}}
