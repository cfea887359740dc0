"""The next candidate: looks for what leave_tmp_files.py left behind. Must find nothing."""

import os


def run(data, context):
    marker = context["leak_marker"]
    found = sum(os.path.exists(os.path.join(d, marker)) for d in ("/tmp", "/var/tmp", "/dev/shm"))
    return {"answer": sorted(data), "report": {"leaked": found}}
