"""Suspension: a task process that waits too long is checkpointed (and gone) or parked alive; a
checkpointed attempt claimed again is restored.

Checkpointed: dumped with CRIU into the checkpoint store, the run WAITING and its slot free.
Parked (where CRIU cannot run, or the dump failed): kept alive outside the slots, the run WAITING
but not checkpointed; it is unparked in place once its waitpoints complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid

from outlast._channel import RESUME_SIGNAL
from outlast._framing import write_frame
from outlast.wire import CheckpointMode, Hello, Resolved, Resumed, Suspend, SuspendRequest

from ..checkpoint.checkpointer import Checkpointer, CheckpointSupport, DumpedImage
from .attempts import Attempts, Execution
from .backend import WorkerBackend
from .cgroups import CgroupError, TaskCgroup
from .limits import carried, measure
from .pool import ProcessPool
from .processes import PidProcess, ProcessExited, TaskProcess

log = logging.getLogger("outlast.supervisor")
SUSPEND_ACK_SECONDS = 10.0
RESUME_ACK_SECONDS = 30.0


class RestoreFailed(Exception):
    """A checkpointed run could not be brought back; it starts a fresh attempt."""


class CheckpointLost(Exception):
    """A process was dumped but its image neither stored nor restored; the run starts a fresh attempt."""


@dataclasses.dataclass(eq=False)
class Suspension:
    """Takes waiting processes out of their slots (checkpointed or parked) and brings them back."""

    checkpoints: CheckpointSupport
    backend: WorkerBackend
    pool: ProcessPool
    attempts: Attempts

    def checkpoint_after(self, process: TaskProcess, task_id: str) -> float:
        """How long a wait of `task_id` stays in memory before the process is suspended."""
        known = process.tasks or self.pool.manifests.get(process.version, [])  # a restored process said no hello
        manifest = next((t for t in known if t.id == task_id), None)
        if manifest is not None and manifest.checkpoint_after is not None:
            return manifest.checkpoint_after
        return self.pool.settings.checkpoint_after

    def _request(self, execution: Execution, mode: CheckpointMode, **fields: object) -> SuspendRequest:
        context = execution.context
        return SuspendRequest(node_id=self.backend.node_id, run_id=context.run_id, attempt=context.attempt,
                              mode=mode, waiting=sorted(execution.waiting),
                              duration_ms=int(execution.active_seconds() * 1000), **fields)

    async def suspend(self, execution: Execution, process: TaskProcess) -> bool:
        """Checkpoint the waiting process and let its slot go; True once it is gone. Where it cannot be
        checkpointed it is parked alive instead (False: the attempt goes on in memory, maybe in a
        process restored from its image: see `execution.process`). CheckpointLost: dumped, and neither
        stored nor restored."""
        checkpointer = self.checkpoints.checkpointer
        if self.checkpoints.problem or checkpointer is None or not process.namespaced:
            await self.park(execution, self.checkpoints.problem or "the task process cannot be checkpointed")
            return False
        if space := await asyncio.to_thread(checkpointer.space_problem):
            await self.park(execution, f"not enough disk space for its checkpoint: {space}")
            return False
        began = time.perf_counter()
        # The process is told to get ready only once a criu turn is free: until then it stays connected
        # (so it notices a supervisor that dies) and may still get its results and go on.
        async with self.checkpoints.criu_turn(dump=True):
            if not (execution.waiting or execution.draining) or process.result is None or process.result.done() \
                    or not process.alive:  # (a draining node checkpoints running processes too)
                return False
            image = await self._dump(execution, process, checkpointer)
        if image is None:
            return False
        context = execution.context
        # From here the process is gone and lives only in `image`: committed once it is in the store.
        key = f"{context.run_id}/{context.attempt}-{uuid.uuid4().hex[:12]}"
        used = carried(measure(execution.usage_start, self.pool.limits.usage(process.pid)), execution.used_before)
        request = self._request(execution, CheckpointMode.CRIU, image_key=key, detail={
            "process_id": process.process_id, "version": process.version, **used})
        try:
            await asyncio.to_thread(checkpointer.mark_pending, image, {"request": request.model_dump(mode="json")})
            stored = await asyncio.to_thread(checkpointer.store_image, image, key, process.version)
        except Exception as exc:
            self.checkpoints.store_failed(exc)
            log.warning("checkpoint of %s could not be stored: %s", context.run_id, exc)
            return await self._restore_dumped(execution, process, image, f"its checkpoint could not be stored: {exc}")
        self.checkpoints.store_worked()
        request.detail.update(stored, suspend_ms=round((time.perf_counter() - began) * 1000, 1))
        try:
            await self.backend.suspend(request)
        except Exception as exc:  # canceled meanwhile, or the runtime is away: nobody will restore that image
            log.warning("run %s was checkpointed but not suspended (%s)", context.run_id, exc)
            await asyncio.to_thread(checkpointer.delete, key)
            return await self._restore_dumped(execution, process, image,
                                              f"could not hand its checkpoint to the runtime: {exc}")
        checkpointer.discard(image)
        return True

    async def _dump(self, execution: Execution, process: TaskProcess, checkpointer: Checkpointer,
                    ) -> DumpedImage | None:
        """Have the process get ready and dump it; None if it did not (then it is parked alive)."""
        process.suspended = asyncio.get_running_loop().create_future()
        try:
            write_frame(process.writer, Suspend())
            await asyncio.wait_for(asyncio.shield(process.suspended), SUSPEND_ACK_SECONDS)
        except (TimeoutError, ConnectionError) as exc:
            process.suspended = None
            await self.park(execution, f"the task process did not get ready for its checkpoint: {exc!r}")
            return None
        process.checkpointed = True  # criu ends it: its exit is expected now
        try:
            return await asyncio.to_thread(checkpointer.dump, process.pid)
        except Exception as exc:
            process.checkpointed = False
            log.warning("checkpoint of %s failed: %s", execution.context.run_id, exc)
            await self._reconnect(process)  # criu leaves a process it could not dump running
            await self.park(execution, f"its checkpoint failed: {exc}")
            return None

    async def finish_interrupted(self) -> int:
        """Commit the dumps a supervisor that died left in scratch (store, then suspend the run); what
        cannot be committed is dropped, and its run gets a fresh attempt. Returns how many were committed."""
        checkpointer = self.checkpoints.checkpointer
        if checkpointer is None:
            return 0
        committed = 0
        for image, pending in await asyncio.to_thread(checkpointer.interrupted):
            request = SuspendRequest.model_validate(pending["request"])
            try:
                version = str(request.detail.get("version") or "") or None
                request.detail.update(await asyncio.to_thread(checkpointer.store_image, image, request.image_key,
                                                              version))
                await self.backend.suspend(request)
                committed += 1
                log.info("run %s: committed the checkpoint its previous supervisor left", request.run_id)
            except Exception as exc:
                log.warning("run %s: the checkpoint its previous supervisor left could not be committed (%s); "
                            "it gets a fresh attempt", request.run_id, exc)
                await asyncio.to_thread(checkpointer.delete, request.image_key or "")
            finally:
                checkpointer.discard(image)
        return committed

    async def _restore_dumped(self, execution: Execution, dumped: TaskProcess, image: DumpedImage,
                              reason: str) -> bool:
        """The dump of `dumped` was not committed: restore it from scratch at once and park it alive
        (False). If that fails too the attempt is lost: CheckpointLost, and the run gets a fresh attempt."""
        checkpointer = self.checkpoints.checkpointer
        assert checkpointer is not None
        try:
            cgroup = self._cgroup_for(execution)
            try:
                async with self.checkpoints.criu_turn():
                    pid = await asyncio.to_thread(checkpointer.restore_dumped, image, dumped.process_id,
                                                  self.pool.socket_path, cgroup.criu_roots() if cgroup else None)
            except BaseException:
                self._drop(cgroup)
                raise
            process = self._adopt(execution, pid, dumped.process_id, dumped.version, cgroup)
            process.hello, process.origin = dumped.hello, dumped.origin
            resumed = await self._reconnected(process)
        except Exception as exc:
            log.warning("run %s could not be restored from its dump either: %s", execution.context.run_id, exc)
            raise CheckpointLost(f"{reason}; restoring it from its dump failed too: {exc}") from None
        finally:
            checkpointer.discard(image)
        execution.process = process
        execution.waiting = set(resumed.waiting)  # results that came meanwhile arrive with the next heartbeat
        await self.park(execution, reason)
        return False

    async def _reconnect(self, process: TaskProcess) -> None:
        """Wake a process that closed its connection for a checkpoint that did not happen."""
        process.suspended = None
        checkpointer = self.checkpoints.checkpointer
        if not process.alive or checkpointer is None:
            return
        process.resumed = asyncio.get_running_loop().create_future()
        checkpointer.write_resume_file(process.process_id, self.pool.socket_path)
        with contextlib.suppress(RestoreFailed):  # killed: its attempt ends as crashed
            await self._reconnected(process)

    async def park(self, execution: Execution, reason: str) -> None:
        """Keep the waiting process alive outside the slots; the run is WAITING but not checkpointed."""
        if not execution.waiting:
            return  # what it waited for came meanwhile: it goes on in its slot
        try:
            await self.backend.suspend(self._request(execution, CheckpointMode.KEPT_ALIVE, detail={"reason": reason}))
        except Exception as exc:
            log.warning("run %s could not be parked (%s); it waits in its slot", execution.context.run_id, exc)
            return
        execution.parked_since = time.monotonic()
        self.attempts.slot_freed.set()
        if not execution.waiting:  # handed in while the runtime was told: nobody would unpark it later
            await self.unpark(execution)

    async def unpark(self, execution: Execution) -> None:
        """Its waitpoints completed while it was parked: back into a slot, with their results."""
        context = execution.context
        try:
            await self.backend.resume(context.run_id, context.attempt)
        except Exception as exc:
            log.warning("run %s could not resume in memory: %s", context.run_id, exc)
            return
        execution.parked_seconds += time.monotonic() - (execution.parked_since or time.monotonic())
        execution.parked_since = None
        results, execution.held_results = execution.held_results, []
        if execution.process is not None:
            execution.process.send(Resolved(results=results))
        execution.changed.set()

    async def restore(self, execution: Execution) -> TaskProcess:
        """Bring a checkpointed attempt back: fetch and restore its image, reconnect, hand in the results."""
        resume = execution.assignment.resume
        assert resume is not None
        if resume.mode is not CheckpointMode.CRIU or not resume.image_key:
            raise RestoreFailed(f"nothing to restore ({resume.mode} checkpoint on another node)")
        checkpointer = self.checkpoints.checkpointer
        if checkpointer is None:
            raise RestoreFailed(f"this node cannot restore checkpoints: {self.checkpoints.problem}")
        process_id = str(resume.detail.get("process_id", ""))
        execution.used_before = {k: int(v) for k, v in resume.detail.items()  # before its checkpoint
                                 if k in ("cpu_ms", "peak_memory_bytes") and isinstance(v, int)}
        try:
            cgroup = self._cgroup_for(execution)
        except CgroupError as exc:
            raise RestoreFailed(f"no cgroup to restore its checkpoint into: {exc}") from None
        try:
            async with self.checkpoints.criu_turn():
                pid = await asyncio.to_thread(checkpointer.restore, resume.image_key, process_id,
                                              self.pool.socket_path, cgroup.criu_roots() if cgroup else None)
        except Exception as exc:
            self._drop(cgroup)
            await asyncio.to_thread(checkpointer.delete, resume.image_key)
            raise RestoreFailed(f"could not restore its checkpoint: {exc}") from None
        process = self._adopt(execution, pid, process_id, str(resume.detail.get("version", "")), cgroup)
        try:
            signalled = time.perf_counter()
            resumed = await self._reconnected(process)
            log.info("run %s: reconnected %.1f ms after its restore", execution.context.run_id,
                     (time.perf_counter() - signalled) * 1000)
            # It runs again only now: fetching and restoring its image was frozen time, which counts
            # against nothing (max_duration counts `execution_ms`, carried, and the time from here).
            execution.started = time.monotonic()
        finally:
            self.pool.background.start(asyncio.to_thread(checkpointer.delete, resume.image_key))
        execution.checkpoint_after = self.checkpoint_after(process, execution.context.task)
        results = [r for r in resume.results if r.id in resumed.waiting]
        execution.waiting = set(resumed.waiting) - {r.id for r in results}
        if execution.waiting:  # still waiting for some (asked for after the checkpoint): poll, then suspend again
            execution.suspend_at = time.monotonic() + execution.checkpoint_after
        if results:
            process.send(Resolved(results=results))
        return process

    def _cgroup_for(self, execution: Execution) -> TaskCgroup | None:
        """A cgroup with the limits of the attempt's machine preset, for criu to restore its process into."""
        assert execution.machine is not None  # an unknown preset is never started
        return self.pool.limits.sized(execution.machine)

    def _drop(self, cgroup: TaskCgroup | None) -> None:
        if cgroup is not None:
            self.pool.background.start(asyncio.to_thread(cgroup.remove))

    def _adopt(self, execution: Execution, pid: int, process_id: str, version: str,
               cgroup: TaskCgroup | None) -> TaskProcess:
        """Track a process criu just restored (frozen until it is told to resume, in `cgroup`) as the attempt's."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[Hello] = loop.create_future()
        process = TaskProcess(process_id=process_id, version=version, popen=PidProcess(pid), ready=ready,
                              namespaced=True)
        ready.set_result(Hello(process_id=process_id, pid=pid))
        process.resumed, process.result, process.execution = loop.create_future(), loop.create_future(), execution
        self.pool.limits.adopt(pid, cgroup, execution.machine)
        execution.usage_start = self.pool.limits.usage(pid)  # this incarnation's use is measured from here
        self.pool.track(process)
        return process

    async def _reconnected(self, process: TaskProcess) -> Resumed:
        """Let a restored process go on; what it says once it connected again (RestoreFailed if it does not)."""
        assert process.resumed is not None
        try:
            process.popen.send_signal(RESUME_SIGNAL)
            return await asyncio.wait_for(asyncio.shield(process.resumed), RESUME_ACK_SECONDS)
        except (TimeoutError, ProcessExited, ProcessLookupError) as exc:
            process.kill()
            raise RestoreFailed(f"the restored process did not reconnect: {exc!r}") from None
        finally:
            process.resumed = None
