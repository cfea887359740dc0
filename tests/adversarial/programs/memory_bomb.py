"""Attack: allocate and touch memory without bound. Contained by the memory rlimit: Status.MEMORY."""


def run(data, context):
    hoard = []
    while True:
        hoard.append(bytearray(64 * 1024 * 1024))  # zero-filled, so the pages are really touched
