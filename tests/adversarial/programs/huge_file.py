"""Attack: write a 100 MB file into the scratch dir. Contained: RLIMIT_FSIZE (EFBIG) at the problem's file size."""

import os


def run(data, context):
    chunk = b"y" * (1 << 20)
    efbig = 0
    with open("big.bin", "wb", buffering=0) as fh:
        for _ in range(100):
            try:
                fh.write(chunk)
            except OSError:
                efbig = 1
                break
    return {"answer": sorted(data), "report": {"size": os.path.getsize("big.bin"), "efbig": efbig}}
