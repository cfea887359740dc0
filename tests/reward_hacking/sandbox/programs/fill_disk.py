"""Fills the scratch dir with bytes until the filesystem refuses or the sandbox kills it: in files of 32 MB (under the
per-file limit), then (``hidden=True``) in files it unlinks while it keeps writing to them."""

import errno
import os

CHUNK = b"\xa5" * (1 << 20)
FILE_MB = 32


def _fill(directory: str, limit_mb: int, hidden: bool) -> tuple[int, str]:
    written, index, error, keep = 0, 0, "", []
    try:
        while written < limit_mb:
            path = os.path.join(directory, f"fill-{index}")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            if hidden:
                os.unlink(path)  # the data stays on the filesystem as long as the descriptor is open
                keep.append(fd)
            for _ in range(FILE_MB):
                os.write(fd, CHUNK)
                written += 1
                if written >= limit_mb:
                    break
            if not hidden:
                os.close(fd)
            index += 1
    except OSError as exc:
        error = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return written, error


def run(limit_mb: int = 512, hidden: bool = False) -> dict:
    written, error = _fill(os.getcwd(), limit_mb, hidden)
    return {"written_mb": written, "error": error}
