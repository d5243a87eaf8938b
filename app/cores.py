"""How many torch intra-op threads a model job runs on: every CPU when it is the only work, else one.

A job is one item for an encoder or the network, run by one of the engine's model threads
(`app.workers.ModelWorkers`) and owned by a request. `CoreBudget` decides a call's thread count as it
starts:

- alone (nothing running, and every queued job belongs to the requests of this call), and every job of
  its request can use the threads (`Owner.widen`): every CPU, exclusively. Calls that start meanwhile
  wait for it to finish rather than run beside a team that already fills the cores: two OpenMP teams on
  the same cores turn every barrier into a scheduler wait. The wait is bounded by one call.
- otherwise one thread, any number at once: the batchers and the audio workers share the cores, one
  clip per core, as a loaded service should (padded audio batches cost more per clip on CPU).

So a lone request runs its text and its audio one after the other, each on all the cores (what the
encoders' own batch-1 forwards at all cores cost), instead of side by side on one core each; under load
nothing changes.

Why the count is set at every job and not once per thread: torch's count is per thread once a thread
has run an op, but the first op re-reads the process-wide value whichever thread set it last. A model
thread that set 1 in its initializer ran its first forward on 2 after another thread (the benchmark's
naive baseline) had set 2; `use_threads` reads the count first, which pins it, then sets it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch

T = TypeVar("T")


@dataclass(eq=False)  # compared by identity
class Owner:
    """A request, as the budget sees it: its jobs are no company to each other."""

    # False: none of its jobs take every core. One of them cannot use more threads (an onnxruntime
    # session, a numpy extractor): side by side on one thread each beats one after the other.
    widen: bool = True


@dataclass(eq=False)  # compared by identity: two equal transcripts are two jobs
class Job(Generic[T]):
    """One item for a model thread, counted by the budget from the moment it is queued."""

    item: T
    owner: Owner | None = None  # None: a request of its own

    @property
    def request(self) -> object:
        return self if self.owner is None else self.owner


def use_threads(count: int) -> None:
    """Run this thread's torch ops on `count` intra-op threads from now on (per thread, not process)."""
    if torch.get_num_threads() != count:  # the read pins the thread's count before it is set
        torch.set_num_threads(count)


class CoreBudget:
    """The intra-op thread count of each job, from what else is queued or running (see module doc).

    `queue` and `forget` are called on the event loop, `lease` in the model threads; one lock, held
    only to update counts (a waiting lease releases it).
    """

    def __init__(self, cpus: int, *, shared: int = 1, adaptive: bool = True) -> None:
        """`cpus`: threads of a job alone; `shared`: of any other job; `adaptive` False: always `shared`."""
        self.cpus = max(1, cpus)
        self.shared = shared
        self.adaptive = adaptive and self.cpus > shared
        self._changed = threading.Condition()
        self._queued: set[Job[Any]] = set()  # submitted, not yet started
        self._running = 0  # leases held
        self._exclusive = False  # a lone job holds every CPU

    @property
    def alone(self) -> int:
        """Threads of a job that is the only work (what GET /model reports)."""
        return self.cpus if self.adaptive else self.shared

    def queue(self, job: Job[T]) -> Job[T]:
        with self._changed:
            self._queued.add(job)
        return job

    def forget(self, job: Job[T]) -> None:
        """The caller is done with `job` (answered, failed or gave up); a no-op once it has started."""
        with self._changed:
            self._queued.discard(job)

    def _idle_but(self, jobs: Collection[Job[T]]) -> bool:
        """No queued job of another request than those of `jobs` (lock held)."""
        if not self._queued:
            return True
        ours = {job.request for job in jobs}
        return all(job.request in ours for job in self._queued)

    @contextlib.contextmanager
    def lease(self, jobs: Collection[Job[T]], *, widen: bool = True) -> Iterator[int]:
        """Run `jobs` (one call) in this thread: waits while a lone job holds the cores, sets this
        thread's torch count and yields it. `widen` False: never more than `shared` (small jobs)."""
        with self._changed:
            while self._exclusive:
                self._changed.wait()
            self._queued.difference_update(jobs)
            widen = widen and all(job.owner is None or job.owner.widen for job in jobs)
            exclusive = widen and self.adaptive and self._running == 0 and self._idle_but(jobs)
            self._running += 1
            self._exclusive = exclusive
        try:
            threads = self.cpus if exclusive else self.shared
            use_threads(threads)
            yield threads
        finally:
            with self._changed:
                self._running -= 1
                if exclusive:
                    self._exclusive = False
                self._changed.notify_all()


__all__ = ["CoreBudget", "Job", "Owner", "use_threads"]
