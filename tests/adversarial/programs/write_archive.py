"""Attack: tamper with the archive (its files and directory). Contained: every attempt fails."""

import os


def run(data, context):
    archive = context["archive"]
    segment = os.path.join(archive, "segment-0.parquet")
    attempts = [
        lambda: open(segment, "ab").write(b"corrupt"),
        lambda: open(os.path.join(archive, "segment-9.parquet"), "wb").write(b"PAR1 forged"),
        lambda: os.unlink(segment),
        lambda: os.rename(segment, segment + ".x"),
        lambda: os.listdir(archive),
    ]
    succeeded = 0
    for attempt in attempts:
        try:
            attempt()
            succeeded += 1
        except OSError:
            pass
    return {"answer": sorted(data), "report": {"succeeded": succeeded}}
