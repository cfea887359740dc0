"""Attack: leave files in /tmp, /var/tmp and /dev/shm for the next candidate (or to fill the host's disk).

Contained: those directories are private, empty tmpfs mounts (or not writable at all); nothing survives the process.
"""

import os


def run(data, context):
    marker = context["leak_marker"]
    written = 0
    for directory in ("/tmp", "/var/tmp", "/dev/shm"):
        try:
            with open(os.path.join(directory, marker), "w") as fh:
                fh.write("left behind")
            written += 1
        except OSError:
            pass
    return {"answer": sorted(data), "report": {"written": written}}
