"""Attack: flood stdout (200 MB). Contained: RLIMIT_FSIZE stops the log file, the trusted side reads a bounded tail."""

import os


def run(data, context):
    chunk = b"x" * (1 << 20)
    written, efbig = 0, 0
    for _ in range(200):
        try:
            written += os.write(1, chunk)
        except OSError:
            efbig = 1
            break
    return {"answer": sorted(data), "report": {"written": written, "efbig": efbig}}
