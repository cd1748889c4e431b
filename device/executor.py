"""The life of a valid task on this device: claim in the journal, accept, wait for a slot, run
its handler, report the outcome; plus cancellation and the interrupted tasks of a dead process.

Limits: at most `max_concurrency` handlers at once; one account's tasks run one at a time, in
arrival order (the per-account lock is taken before a slot, so a waiting task holds no slot).

A task interrupted by a crash or shutdown is reported `failed`/`interrupted` with `retryable`
set only when running it again cannot repeat a side effect: it never started, or its type is
marked `safe_to_retry`. The controller re-runs only those
(docs/architecture.md#promise-6-crashes-are-reported-not-repeated).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from device.handlers.base import BrowserEnvironment, TaskContext, TaskFailure, TaskHandedOver
from device.handlers.registry import HandlerRegistry
from device.intake import TaskRequest
from device.journal import ClaimStatus, Journal, JournalEntry, RunRef, TaskState
from device.reporter import Reporter, task_error
from device.slots import Slots
from schemas.common import utcnow
from schemas.errors import WireErrorCode
from schemas.events import EventKind, TaskError
from schemas.json_shape import unusable_json
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
        registry: HandlerRegistry,
        browser: Callable[[], BrowserEnvironment | None] | None = None,
    ) -> None:
        """`browser` builds the browser environment when a task first asks for it."""
        self._journal = journal
        self._browser = browser
        self._registry = registry
        self._reporter = reporter
        self._device_id = device_id
        self._data_dir = data_dir
        self._facts = facts
        self._slots = Slots(max_concurrency)
        self._account_locks: dict[str, asyncio.Lock] = {}
        self._tasks: dict[str, tuple[int, asyncio.Task[None]]] = {}  # task id → (attempt, its asyncio task)
        self._user_canceled: set[str] = set()
        self._inputs: dict[str, asyncio.Queue[tuple[str, str]]] = {}  # task id → (name, value) sent to it
        self._handed_over: set[str] = set()  # task ids a later process finishes (TaskHandedOver)
        self._draining = False  # an update is coming: nothing new starts

    async def set_concurrency(self, limit: int) -> None:
        """Change how many tasks run at once, from the next one that starts."""
        await self._slots.resize(limit)

    @property
    def active(self) -> int:
        """Tasks accepted by this process and not finished yet."""
        return len(self._tasks)

    def attempt_of(self, task_id: str) -> int:
        """The attempt of a task this process runs (1 when it runs none by that id)."""
        running = self._tasks.get(task_id)
        return running[0] if running else 1

    def fail_interrupted(self, skip: frozenset[str] = frozenset()) -> int:
        """Finish as `failed`/`interrupted` every task a previous process left unfinished, but the
        runs keyed in `skip` (an update's, reported by `device.update`); the events are published
        (or queued until connected). Returns how many there were."""
        entries = [entry for entry in self._journal.unfinished() if entry.run.key not in skip]
        for entry in entries:
            started = entry.state == TaskState.STARTED
            when = "while this task ran" if started else "before this task started"
            self._reporter.finish(entry.run, EventKind.FAILED, error=self._interrupted(entry, started, f"the device restarted {when}"))
            log.info("task %s (%s) finished: failed (interrupted)", entry.run.task_id, entry.type)
        return len(entries)

    def _interrupted(self, entry: JournalEntry, started: bool, cause: str) -> TaskError:
        """The error of a run cut short; retryable when running it again repeats no side effect."""
        handler = self._registry.get(entry.type or "")
        safe = not started or (handler is not None and handler.safe_to_retry)
        if not started:
            verdict = "it did not run"
        elif safe:
            verdict = "its type is safe to run again"
        else:
            verdict = "it may have had an effect, so it is not run again"
        return task_error(WireErrorCode.INTERRUPTED, f"{cause}; {verdict}", retryable=safe)

    def submit(self, request: TaskRequest) -> None:
        """Handle a valid task delivery (called on the event loop)."""
        task_id, task_type, run = request.task_id, request.envelope.type, request.run
        claim = self._journal.claim(run.key, task_type, request.envelope.account)
        if claim.status == ClaimStatus.FINAL:
            assert claim.final_event is not None
            self._reporter.replay(claim.final_event, request.summary)
            log.info(
                "task %s (%s) already finished: replayed its %s outcome", task_id, task_type, claim.final_event.event
            )
            return
        if claim.status == ClaimStatus.IN_PROGRESS:
            self._report_progress(request, claim.state)
            return
        self._reporter.emit(run, EventKind.ACCEPTED, task=request.summary)
        log.info("task %s (%s) accepted%s", task_id, task_type, f" (attempt {run.attempt})" if run.attempt > 1 else "")
        if self._expired(request):
            return
        task = asyncio.get_running_loop().create_task(self._run(request), name=f"task {run.key}")
        self._tasks[task_id] = (run.attempt, task)
        task.add_done_callback(lambda done: self._on_done(request, done))

    def _report_progress(self, request: TaskRequest, state: TaskState) -> None:
        """Answer a repeated delivery of a task still in progress with its latest event again
        (same seq: the controller stores it once), so a lost `accepted` or `started` reaches
        the controller; the handler is never started a second time."""
        latest = self._reporter.latest(request.run)
        if latest is not None:
            self._reporter.publish(latest.model_copy(update={"replay": True}))
        else:  # claimed but nothing published yet by this process: say where it stands
            kind = EventKind.STARTED if state == TaskState.STARTED else EventKind.ACCEPTED
            self._reporter.emit(request.run, kind, task=request.summary, replay=True)
        log.info("task %s (%s) delivered again while %s: reported where it stands", request.task_id,
                 request.envelope.type, state)

    def cancel(self, target_id: str, attempt: int | None = None) -> None:
        """Stop a waiting or running task (only its attempt `attempt`, when given); a run never
        seen is recorded as canceled so that it never runs; a finished one is left alone."""
        running = self._tasks.get(target_id)
        if running is not None and attempt in (None, running[0]):
            self._user_canceled.add(target_id)
            running[1].cancel()
            log.info("task %s: cancel requested", target_id)
            return
        run = RunRef(target_id, attempt or 1)
        entry = self._journal.get(run.key)
        if entry is None:
            self._reporter.finish(run, EventKind.CANCELED, publish=False, message="canceled before it reached the device")
            log.info("task %s: canceled before it arrived", run.key)
        else:
            log.info("task %s: cancel ignored, the task is %s", run.key, entry.state)

    def provide_input(self, target_id: str, name: str, value: str) -> None:
        """Hand a value (a verification code) to a running task; dropped for any other task."""
        if target_id not in self._tasks:
            log.info("task %s: input %r dropped, the task is not running here", target_id, name)
            return
        self._inputs.setdefault(target_id, asyncio.Queue()).put_nowait((name, value))
        log.info("task %s: input %r received", target_id, name)

    async def _wait_input(self, task_id: str, name: str, timeout: float) -> str:
        queue = self._inputs.setdefault(task_id, asyncio.Queue())
        try:
            async with asyncio.timeout(timeout):
                while True:
                    got, value = await queue.get()
                    if got == name:
                        return value
                    log.info("task %s: input %r ignored, waiting for %r", task_id, got, name)
        except TimeoutError:
            raise TaskFailure(WireErrorCode.INPUT_TIMEOUT, f"no {name!r} was sent within {timeout:g} s") from None

    async def drain(self, keep: str, timeout: float) -> None:
        """Before an update: nothing new starts (a task that would is held until `shutdown` hands
        it back, reported interrupted and retryable, so the controller sends it again, to the new
        version), and running tasks get `timeout` seconds to finish; those still running then
        are stopped like at shutdown. `keep` (the update task itself) is left alone."""
        self._draining = True
        running: list[asyncio.Task[None]] = []
        for task_id, (attempt, task) in list(self._tasks.items()):
            entry = self._journal.get(RunRef(task_id, attempt).key)
            if task_id != keep and entry is not None and entry.state == TaskState.STARTED:
                running.append(task)
        if running:
            log.info("waiting up to %g s for %d running task(s) before the update", timeout, len(running))
            _done, pending = await asyncio.wait(running, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=SHUTDOWN_GRACE)
        await asyncio.sleep(0)  # let the done callbacks report

    async def shutdown(self) -> None:
        """Stop every task; each is reported failed/interrupted. Handlers that ignore
        cancellation get SHUTDOWN_GRACE seconds."""
        tasks = [task for _attempt, task in self._tasks.values()]
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
            if self._draining:  # an update is coming: held until shutdown hands it back
                await asyncio.Event().wait()
            self._journal.mark_started(request.run.key)
            self._reporter.emit(request.run, EventKind.STARTED)
            await self._execute(request)

    async def _execute(self, request: TaskRequest) -> None:
        """Run the handler and report its outcome (a cancellation is reported by `_on_done`)."""
        task_id, timeout = request.task_id, request.envelope.timeout

        async def report(percent: int | None, message: str | None, details: dict[str, Any] | None) -> None:
            progress = None if percent is None else max(0, min(100, int(percent)))
            self._reporter.emit(request.run, EventKind.PROGRESS, progress=progress, message=message, details=details)

        async def wait_input(name: str, input_timeout: float) -> str:
            return await self._wait_input(task_id, name, input_timeout)

        ctx = TaskContext(
            task_id=task_id,
            device_id=self._device_id,
            account=request.envelope.account,
            data_dir=self._data_dir,
            facts=self._facts,
            _report=report,
            _input=wait_input,
            _browser=self._browser,
        )
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                result = await request.handler.run(ctx, request.params)
        except TaskFailure as failure:
            self._finish(request, EventKind.FAILED, error=task_error(failure.code, failure.message), result=failure.details)
        except TaskHandedOver:
            self._handed_over.add(task_id)
            log.info("task %s (%s): handed over to the next daemon process", task_id, request.envelope.type)
        except Exception as exc:
            if isinstance(exc, TimeoutError) and deadline.expired():
                self._finish(
                    request, EventKind.TIMED_OUT, message=f"the handler ran longer than its timeout of {timeout} s"
                )
                return
            log.warning("task %s (%s): handler raised %s", task_id, request.envelope.type, type(exc).__name__)
            log.debug("task %s: handler traceback", task_id, exc_info=True)
            self._finish(request, EventKind.FAILED, error=task_error(WireErrorCode.HANDLER_ERROR, f"{type(exc).__name__}: {exc}"))
        else:
            if isinstance(result, dict):
                self._finish(request, EventKind.SUCCEEDED, result=result)
            else:
                message = f"the handler returned {type(result).__name__}, not a dict"
                self._finish(request, EventKind.FAILED, error=task_error(WireErrorCode.HANDLER_ERROR, message))

    def _finish(self, request: TaskRequest, kind: EventKind, **fields: Any) -> None:
        run = request.run
        unusable = unusable_json(fields.get("result") or {}, "the handler's result")
        if unusable is not None:  # the controller could not read it back: fail instead of sending it
            kind, fields = EventKind.FAILED, {"error": task_error(WireErrorCode.HANDLER_ERROR, unusable)}
        try:
            event = self._reporter.finish(run, kind, **fields)
        except ValueError as exc:  # e.g. a result that is not JSON-serialisable
            message = f"the handler's result could not be reported: {type(exc).__name__}"
            event = self._reporter.finish(run, EventKind.FAILED, error=task_error(WireErrorCode.HANDLER_ERROR, message))
        detail = f" ({event.error.code})" if event.error else ""
        log.info("task %s (%s) finished: %s%s", run.key, request.envelope.type, event.event, detail)

    def _on_done(self, request: TaskRequest, task: asyncio.Task[None]) -> None:
        """Report a task that ended without a final event: cancelled (by a `cancel` message or by
        shutdown, possibly before its coroutine ever ran) or broken by an internal error."""
        task_id = request.task_id
        current = self._tasks.get(task_id)
        if current is not None and current[1] is task:
            del self._tasks[task_id]
            self._inputs.pop(task_id, None)
        user_canceled = task_id in self._user_canceled
        self._user_canceled.discard(task_id)
        if task_id in self._handed_over:
            return
        entry = self._journal.get(request.run.key)
        if entry is None or entry.state == TaskState.FINAL:
            return
        if not task.cancelled():
            exc = task.exception()
            log.error("task %s (%s): internal error", task_id, request.envelope.type, exc_info=exc)
            message = f"the device failed to run this task: {type(exc).__name__}"
            self._finish(request, EventKind.FAILED, error=task_error(WireErrorCode.INTERNAL_ERROR, message))
        elif user_canceled:
            self._finish(request, EventKind.CANCELED, message="canceled by request")
        else:
            started = entry.state == TaskState.STARTED
            stopped = "stopped for an update" if self._draining else "shut down"
            cause = f"the device {stopped} " + ("while this task ran" if started else "before this task started")
            self._finish(request, EventKind.FAILED, error=self._interrupted(entry, started, cause))
