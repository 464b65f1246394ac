"""Running readers and a writer on one structure from Python threads, for the lock tests.

``readers_and_writer(read, write)`` calls ``read`` in a loop on ``readers`` threads while one
thread runs ``write`` once; it returns once the writer is done and the readers have stopped, and
fails the calling test if a thread is still running after ``timeout`` seconds (a deadlock, or a
writer kept out for ever) or if any thread raised. The threads are daemons, so a regression fails
the test instead of hanging the run.
"""

from __future__ import annotations

import threading
from typing import Callable


def readers_and_writer(read: Callable[[], None], write: Callable[[], None], readers: int = 2,
                       timeout: float = 60.0) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                read()
        except BaseException as e:  # noqa: BLE001 - reported by the calling thread
            errors.append(e)

    def writer() -> None:
        try:
            write()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    reading = [threading.Thread(target=reader, daemon=True) for _ in range(readers)]
    writing = threading.Thread(target=writer, daemon=True)
    for t in (*reading, writing):
        t.start()
    writing.join(timeout=timeout)
    stop.set()
    for t in reading:
        t.join(timeout=timeout)
    assert not writing.is_alive() and not any(t.is_alive() for t in reading), "a thread never finished"
    assert errors == []
