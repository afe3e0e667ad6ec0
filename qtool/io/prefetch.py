"""Reading ahead: items of an iterable produced in a background thread while the consumer works.

Data decoding (images, .npy files) and onnxruntime both release the GIL, so reading the next
batches overlaps running the current one.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator

_DONE = object()


class Prefetcher(Iterator):
    """Iterate in a background thread, `depth` items ahead; errors re-raised in the consumer.

    The thread starts at once, so reading overlaps whatever the caller does before its first
    item (building an onnxruntime session). `close()`, or dropping the iterator, stops it.
    """

    def __init__(self, iterable: Iterable, depth: int = 2):
        items: queue.Queue = queue.Queue(maxsize=depth)
        stop = threading.Event()
        self._items, self._stop = items, stop

        # The thread sees only the queue and the event, never self: an abandoned iterator is
        # then collected, and __del__ stops the thread.
        def put(entry) -> bool:
            """Queue an entry unless the consumer has gone (then a full queue would block forever)."""
            while not stop.is_set():
                try:
                    items.put(entry, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce():
            iterator = iter(())
            try:
                iterator = iter(iterable)
                for item in iterator:
                    if not put((True, item)):
                        return
                put((True, _DONE))
            except BaseException as exc:  # handed to the consumer, which re-raises it
                put((False, exc))
            finally:
                # A consumer that stopped early leaves a half-read source: close it here, in the
                # one thread that runs it, so its own clean-up (files, decoder threads) runs now.
                close = getattr(iterator, "close", None)
                if close is not None:
                    with contextlib.suppress(Exception):  # its clean-up must not mask anything
                        close()

        threading.Thread(target=produce, daemon=True, name="qtool-prefetch").start()

    def __next__(self):
        if self._stop.is_set():
            raise StopIteration
        ok, item = self._items.get()
        if not ok or item is _DONE:
            self.close()
            if not ok:
                raise item
            raise StopIteration
        return item

    def close(self) -> None:
        self._stop.set()

    def __del__(self):
        self.close()
