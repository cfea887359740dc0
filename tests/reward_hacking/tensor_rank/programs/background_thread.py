"""Attack (needs the lint switched off): start a thread at import that keeps computing between and during the
searches, and make each search wait for it (sleeping, so the search itself "uses no CPU").

Contained: CPU windows are contiguous and count the whole tree, threads included: the background work is charged
to the targets, and shows in ``time_fraction``.
"""

import threading
import time


def _work():
    count = 0
    while True:
        count += 1


threading.Thread(target=_work, daemon=True).start()


def search(tensor, shape, rank, seconds, rng, xp):
    while True:  # "waiting for the thread's answer"
        time.sleep(1.0)
