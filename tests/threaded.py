"""Running a test's body on several Python threads at once."""

from __future__ import annotations

import threading


def run_on_threads(target, count: int) -> None:
    """Runs target(k) for k in range(count), each on its own Python thread, all at once, and
    raises an AssertionError listing what any of them raised once all have ended."""
    errors: list[BaseException] = []

    def guarded(k: int) -> None:
        try:
            target(k)
        except BaseException as exc:  # noqa: BLE001 - surfaced below, after every thread ends
            errors.append(exc)

    workers = [threading.Thread(target=guarded, args=(k,)) for k in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors, errors
