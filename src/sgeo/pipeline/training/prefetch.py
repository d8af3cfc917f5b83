"""Receiving the DataLoader's batches on a background thread, ahead of the step."""

from __future__ import annotations

import queue
import threading


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


class Prefetcher:
    """Iterates `iterable` on a background thread, up to `depth` items ahead, in order.

    Receiving a batch from DataLoader workers (unpickling, opening shared-memory tensors) costs the
    receiving thread a few ms; done here, it overlaps the step (torch releases the GIL) instead of adding
    to it. Errors are raised by `__next__`; `close` stops the thread.
    """

    def __init__(self, iterable, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        iterator = iter(iterable)  # here, not on the thread: DataLoader forks its workers in iter()
        self._thread = threading.Thread(target=self._run, args=(iterator,), name="sgeo-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, iterator) -> None:
        try:
            for item in iterator:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as error:  # handed to the consumer
            self._put(_Raised(error))

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self):
        item = self._queue.get()
        if item is _END:
            self._queue.put(_END)
            raise StopIteration
        if isinstance(item, _Raised):
            raise item.error
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
