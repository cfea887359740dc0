"""Creates empty files (and directories) in the scratch dir until the filesystem refuses or the sandbox kills it."""

import errno
import os


def run(limit: int = 200_000) -> dict:
    made, error = 0, ""
    try:
        while made < limit:
            directory = os.path.join(os.getcwd(), f"d{made // 1000}")
            if made % 1000 == 0:
                os.mkdir(directory)
            os.close(os.open(os.path.join(directory, f"f{made}"), os.O_CREAT | os.O_WRONLY, 0o600))
            made += 1
    except OSError as exc:
        error = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return {"files": made, "error": error}
