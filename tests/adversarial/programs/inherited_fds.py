"""Attack: look for descriptors leaked from the launcher (sockets to the fork server, log files, pipes).

Contained: besides 0, 1, 2 and the result channel 3, only the harness's own request pipe and /dev/null are open; a
leaked control socket would let the candidate spawn processes outside its sandbox.
"""

import os


def run(data, context):
    links = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            links[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass  # the descriptor of the listing itself
    extra = {fd: link for fd, link in links.items() if fd > 3}
    sockets = [link for link in extra.values() if link.startswith("socket:")]
    pipes = [link for link in extra.values() if link.startswith("pipe:")]
    files = [link for link in extra.values() if link.startswith("/") and link != "/dev/null"
             and not link.startswith(os.getcwd())]
    return {"answer": sorted(data), "report": {"sockets": len(sockets), "pipes": len(pipes), "files": len(files),
                                               "found": sorted(extra.values())}}
