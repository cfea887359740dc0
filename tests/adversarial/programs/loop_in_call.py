"""Attack: spin forever inside the call (and in a child process). Contained: TIMEOUT, whole tree killed."""

import os


def run(data, context):
    if os.fork() == 0:
        while True:
            pass
    while True:
        pass
