"""celery-batches' task class with the delivery guarantee of the tasks that write answers.

`Batches` buffers messages and hands a list of them to one call of the task (`flush_every`
messages, or whatever came within `flush_interval` seconds). With `acks_late` it acknowledges the
buffered messages once that call returns, but if the pool process running it dies (killed, out of
memory) it never calls back: the messages would stay unacknowledged, neither done nor sent to
another worker, until this worker restarts. `ReliableBatches.flush` adds what Celery's
`reject_on_worker_lost` does for a single task: the messages of a batch whose process was lost go
back to the queue at once, for this worker's next process or another worker.

Batches form while the model is busy: with every pool process holding a batch, the flush timer
leaves new messages in the buffer, and the next batch takes them all (up to `flush_every` a
pass) as soon as a process is free. Without that, the timer would send a batch of one or two
every few milliseconds to a pool that is still working through the previous ones. The other way
round, a message that arrives while a process is free is scored at once (`Strategy`): waiting
`flush_interval` for company would only delay a lone drawing. The timer remains the backstop.

A batch can only fill if the worker is handed more messages than a batch holds (each stays
unacknowledged until its batch is answered), so the task raises its worker's prefetch count to
twice `flush_every` as the worker starts consuming (`Strategy`), whatever
CELERY_WORKER_PREFETCH_MULTIPLIER says (1, for the long batch-job chunks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

from celery import Celery
from celery.worker.consumer import Consumer
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

log = logging.getLogger(__name__)


class ReliableBatches(Batches):
    abstract = True

    def Strategy(self, task: Batches, app: Celery, consumer: Consumer) -> Callable:  # noqa: N802
        # Called as the consumer starts, just before it sets the broker's prefetch count.
        # (Celery's Consumer sets initial_prefetch_count in __init__; its stubs do not declare it.)
        wanted = max(getattr(consumer, "initial_prefetch_count", 0), 2 * self.flush_every)
        setattr(consumer, "initial_prefetch_count", wanted)  # noqa: B010
        buffer_message = super().Strategy(task, app, consumer)

        def handle_message(*args: Any, **kwargs: Any) -> None:
            buffer_message(*args, **kwargs)
            # Score what is buffered now rather than at the next tick of the flush timer (a lone
            # drawing would wait for nothing); `_do_flush` leaves it buffered while every pool
            # process is busy, so batches still gather then.
            self._do_flush()

        return handle_message

    _in_flight = 0

    def _do_flush(self) -> None:
        if self._in_flight >= self._pool.num_processes:
            return  # every process is scoring a batch: let this one grow meanwhile
        super()._do_flush()

    def _finished(self) -> None:
        self._in_flight -= 1
        if not self._buffer.empty():
            self._do_flush()

    def flush(self, requests: Collection[Request]) -> Any:
        requests = list(requests)
        for start in range(0, len(requests), self.flush_every):
            self._in_flight += 1
            self._flush_one(requests[start : start + self.flush_every])

    def _flush_one(self, requests: list[Request]) -> Any:
        late = [request for request in requests if request.task.acks_late]
        early = [request for request in requests if not request.task.acks_late]

        def on_accepted(pid: int, time_accepted: float) -> None:
            for request in early:
                request.acknowledge()

        def on_return(result: object) -> None:
            for request in late:
                request.acknowledge()
            self._finished()

        def on_lost(exc_info: object) -> None:
            # As Celery does for one task: requeued with reject_on_worker_lost, else acknowledged.
            log.error("a batch of %d was lost with its process (%s)", len(late), exc_info)
            for request in late:
                if request.task.reject_on_worker_lost:
                    request.reject(requeue=True)
                else:
                    request.acknowledge()
            self._finished()

        return self._pool.apply_async(
            apply_batches_task,
            (self, ([SimpleRequest.from_request(r) for r in requests],), 0, None),
            accept_callback=on_accepted,
            callback=on_return,
            error_callback=on_lost,
        )
