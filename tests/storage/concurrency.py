"""Running store operations from several threads at once, as the server's threads do."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence


def run_together(works: Sequence[Callable[[], None]], timeout: float = 60) -> None:
    """Run each of `works` on its own thread, released together by one barrier; AssertionError listing
    whatever any of them raised (a thread's exception would otherwise only be printed)."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(works))

    def run(work: Callable[[], None]) -> None:
        try:
            barrier.wait()
            work()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(work,)) for work in works]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), f"a thread was still running after {timeout}s"
    assert not errors, errors
