"""Worker threads that run submitted calls and hand back Jobs to wait on (what
concurrent.futures does, without its import of logging: ~10 ms of every build's start)."""
import queue
import threading


class Job:
    """One submitted call: result() waits for it and returns its value or raises its error."""
    __slots__ = ("_done", "_value", "_error")

    def __init__(self):
        self._done = threading.Event()
        self._value = self._error = None

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self) -> None:
        """Wait for the call to end, however it ended."""
        self._done.wait()

    def result(self):
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


class Pool:
    """`workers` daemon threads taking calls in submission order."""

    def __init__(self, workers: int, name: str):
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._n = workers
        for i in range(workers):
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True).start()

    def submit(self, fn, *args, **kw) -> Job:
        job = Job()
        self._q.put((job, fn, args, kw))
        return job

    def close(self) -> None:
        """The workers end once the calls submitted so far are done."""
        for _ in range(self._n):
            self._q.put(None)

    def _work(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            job, fn, args, kw = item
            try:
                job._value = fn(*args, **kw)
            except BaseException as e:  # noqa: BLE001 - handed to whoever waits on the job
                job._error = e
            finally:
                job._done.set()
            del item, job, fn, args, kw  # the call's arguments (layer chunks) go now
