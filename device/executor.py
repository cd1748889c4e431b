"""The life of a valid task on this device: claim in the journal, accept, wait for a slot, run
its handler, report the outcome; plus cancellation and the interrupted tasks of a dead process.

Limits: at most `max_concurrency` handlers at once; one account's tasks run one at a time, in
arrival order (the per-account lock is taken before a slot, so a waiting task holds no slot).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from device.handlers.base import TaskContext, TaskFailure
from device.intake import TaskRequest
from device.journal import ClaimStatus, Journal, TaskState
from device.reporter import Reporter, task_error
from schemas.common import utcnow
from schemas.events import EventKind
from schemas.status import DeviceFacts

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 10.0  # seconds handlers get to stop when the daemon shuts down


class Executor:
    """Runs the tasks of one daemon process on its event loop and reports their events."""

    def __init__(
        self,
        *,
        journal: Journal,
        reporter: Reporter,
        device_id: str,
        data_dir: Path,
        facts: DeviceFacts,
        max_concurrency: int,
    ) -> None:
        self._journal = journal
        self._reporter = reporter
        self._device_id = device_id
        self._data_dir = data_dir
        self._facts = facts
        self._slots = asyncio.Semaphore(max_concurrency)
        self._account_locks: dict[str, asyncio.Lock] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._user_canceled: set[str] = set()

    def fail_interrupted(self) -> int:
        """Finish as `failed`/`interrupted` every task a previous process left unfinished; the
        events are published (or queued until connected). Returns how many there were."""
        entries = self._journal.unfinished()
        for entry in entries:
            if entry.state == TaskState.STARTED:
                message = "the device restarted while this task ran; it was not run again"
            else:
                message = "the device restarted before this task started; it did not run"
            self._reporter.finish(entry.task_id, EventKind.FAILED, error=task_error("interrupted", message))
            log.info("task %s (%s) finished: failed (interrupted)", entry.task_id, entry.type)
        return len(entries)

    def submit(self, request: TaskRequest) -> None:
        """Handle a valid task delivery (called on the event loop)."""
        task_id, task_type = request.task_id, request.envelope.type
        claim = self._journal.claim(task_id, task_type, request.envelope.account)
        if claim.status == ClaimStatus.FINAL:
            assert claim.final_event is not None
            self._reporter.replay(claim.final_event, request.summary)
            log.info(
                "task %s (%s) already finished: replayed its %s outcome", task_id, task_type, claim.final_event.event
            )
            return
        if claim.status == ClaimStatus.IN_PROGRESS:
            log.info("task %s (%s) delivered again while %s: ignored", task_id, task_type, claim.state)
            return
        self._reporter.emit(task_id, EventKind.ACCEPTED, task=request.summary)
        log.info("task %s (%s) accepted", task_id, task_type)
        if self._expired(request):
            return
        task = asyncio.get_running_loop().create_task(self._run(request), name=f"task {task_id}")
        self._tasks[task_id] = task
        task.add_done_callback(lambda done: self._on_done(request, done))

    def cancel(self, target_id: str) -> None:
        """Stop a waiting or running task; an id never seen is recorded as canceled so that it
        never runs; a finished task is left alone."""
        task = self._tasks.get(target_id)
        if task is not None:
            self._user_canceled.add(target_id)
            task.cancel()
            log.info("task %s: cancel requested", target_id)
            return
        entry = self._journal.get(target_id)
        if entry is None:
            self._reporter.finish(
                target_id, EventKind.CANCELED, publish=False, message="canceled before it reached the device"
            )
            log.info("task %s: canceled before it arrived", target_id)
        else:
            log.info("task %s: cancel ignored, the task is %s", target_id, entry.state)

    async def shutdown(self) -> None:
        """Stop every task; each is reported failed/interrupted. Handlers that ignore
        cancellation get SHUTDOWN_GRACE seconds."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE)
            await asyncio.sleep(0)  # let the done callbacks report

    # --- internals --------------------------------------------------------------------------

    def _expired(self, request: TaskRequest) -> bool:
        expires_at = request.envelope.expires_at
        if expires_at is None or expires_at > utcnow():
            return False
        self._finish(request, EventKind.EXPIRED, message=f"not started before it expired at {expires_at.isoformat()}")
        return True

    async def _run(self, request: TaskRequest) -> None:
        async with AsyncExitStack() as stack:
            account = request.envelope.account
            if account is not None:
                await stack.enter_async_context(self._account_locks.setdefault(account, asyncio.Lock()))
            await stack.enter_async_context(self._slots)
            if self._expired(request):
                return
            self._journal.mark_started(request.task_id)
            self._reporter.emit(request.task_id, EventKind.STARTED)
            await self._execute(request)

    async def _execute(self, request: TaskRequest) -> None:
        """Run the handler and report its outcome (a cancellation is reported by `_on_done`)."""
        task_id, timeout = request.task_id, request.envelope.timeout

        async def report(percent: int | None, message: str | None) -> None:
            progress = None if percent is None else max(0, min(100, int(percent)))
            self._reporter.emit(task_id, EventKind.PROGRESS, progress=progress, message=message)

        ctx = TaskContext(
            task_id=task_id,
            device_id=self._device_id,
            account=request.envelope.account,
            data_dir=self._data_dir,
            facts=self._facts,
            _report=report,
        )
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                result = await request.handler.run(ctx, request.params)
        except TaskFailure as failure:
            self._finish(request, EventKind.FAILED, error=task_error(failure.code, failure.message))
        except Exception as exc:
            if isinstance(exc, TimeoutError) and deadline.expired():
                self._finish(
                    request, EventKind.TIMED_OUT, message=f"the handler ran longer than its timeout of {timeout} s"
                )
                return
            log.warning("task %s (%s): handler raised %s", task_id, request.envelope.type, type(exc).__name__)
            log.debug("task %s: handler traceback", task_id, exc_info=True)
            self._finish(request, EventKind.FAILED, error=task_error("handler_error", f"{type(exc).__name__}: {exc}"))
        else:
            if isinstance(result, dict):
                self._finish(request, EventKind.SUCCEEDED, result=result)
            else:
                message = f"the handler returned {type(result).__name__}, not a dict"
                self._finish(request, EventKind.FAILED, error=task_error("handler_error", message))

    def _finish(self, request: TaskRequest, kind: EventKind, **fields: Any) -> None:
        task_id = request.task_id
        try:
            event = self._reporter.finish(task_id, kind, **fields)
        except ValueError as exc:  # e.g. a result that is not JSON-serialisable
            message = f"the handler's result could not be reported: {type(exc).__name__}"
            event = self._reporter.finish(task_id, EventKind.FAILED, error=task_error("handler_error", message))
        detail = f" ({event.error.code})" if event.error else ""
        log.info("task %s (%s) finished: %s%s", task_id, request.envelope.type, event.event, detail)

    def _on_done(self, request: TaskRequest, task: asyncio.Task[None]) -> None:
        """Report a task that ended without a final event: cancelled (by a `cancel` message or by
        shutdown, possibly before its coroutine ever ran) or broken by an internal error."""
        task_id = request.task_id
        self._tasks.pop(task_id, None)
        user_canceled = task_id in self._user_canceled
        self._user_canceled.discard(task_id)
        entry = self._journal.get(task_id)
        if entry is None or entry.state == TaskState.FINAL:
            return
        if not task.cancelled():
            exc = task.exception()
            log.error("task %s (%s): internal error", task_id, request.envelope.type, exc_info=exc)
            message = f"the device failed to run this task: {type(exc).__name__}"
            self._finish(request, EventKind.FAILED, error=task_error("internal_error", message))
        elif user_canceled:
            self._finish(request, EventKind.CANCELED, message="canceled by request")
        elif entry.state == TaskState.STARTED:
            self._finish(
                request, EventKind.FAILED, error=task_error("interrupted", "the device shut down while this task ran")
            )
        else:
            message = "the device shut down before this task started; it did not run"
            self._finish(request, EventKind.FAILED, error=task_error("interrupted", message))
