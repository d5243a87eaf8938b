"""The core budget: every core for a call that is the only work, one thread otherwise, never both at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
import torch

from app.cores import CoreBudget, Job, Owner, use_threads

_WAIT_S = 10.0  # generous bounds on events that must happen; nothing here is timed


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    """Fresh threads: what a lease sets is per thread, and stays with these ones."""
    with ThreadPoolExecutor(4) as executor:
        yield executor


@pytest.fixture(autouse=True)
def restore_torch_threads() -> Iterator[None]:
    """Setting a thread's count also moves the process default; put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def leased_threads(budget: CoreBudget, jobs: list[Job[Any]], **kwargs: Any) -> tuple[int, int]:
    """(what the lease yields, torch's count in the thread inside it)."""
    with budget.lease(jobs, **kwargs) as threads:
        return threads, torch.get_num_threads()


def hold(
    pool: ThreadPoolExecutor, budget: CoreBudget, jobs: list[Job[Any]], **kwargs: Any
) -> tuple[Future[int], threading.Event, Callable[[], None]]:
    """Lease `jobs` in a pool thread and keep the lease until released: (its threads, inside, release)."""
    inside, release = threading.Event(), threading.Event()

    def run() -> int:
        with budget.lease(jobs, **kwargs) as threads:
            inside.set()
            release.wait(_WAIT_S)
            return threads

    future = pool.submit(run)
    assert inside.wait(_WAIT_S)
    return future, inside, release.set


def test_a_lone_job_runs_on_every_cpu(pool: ThreadPoolExecutor) -> None:
    budget = CoreBudget(4)
    job = budget.queue(Job("hello"))
    assert pool.submit(leased_threads, budget, [job]).result() == (4, 4)


def test_a_job_with_another_request_queued_runs_on_one_thread(pool: ThreadPoolExecutor) -> None:
    budget = CoreBudget(4)
    first, _ = budget.queue(Job("a")), budget.queue(Job("b"))
    assert pool.submit(leased_threads, budget, [first]).result() == (1, 1)


def test_the_jobs_of_one_request_are_no_company(pool: ThreadPoolExecutor) -> None:
    """A lone request's text runs on every core although its audio is queued (it runs next)."""
    budget, request = CoreBudget(4), Owner()
    text, _audio = budget.queue(Job("hello", request)), budget.queue(Job("clip", request))
    assert pool.submit(leased_threads, budget, [text]).result() == (4, 4)


def test_a_request_with_a_job_that_cannot_widen_runs_side_by_side(pool: ThreadPoolExecutor) -> None:
    """MiniLM beside a numpy prosody extractor: neither takes every core, neither waits for the other."""
    budget, request = CoreBudget(4), Owner(widen=False)
    text, audio = budget.queue(Job("hello", request)), budget.queue(Job("clip", request))
    _, _, release = hold(pool, budget, [text])
    try:
        assert pool.submit(leased_threads, budget, [audio]).result(_WAIT_S) == (1, 1)
    finally:
        release()


def test_a_batch_is_alone_when_nothing_else_is_queued(pool: ThreadPoolExecutor) -> None:
    budget = CoreBudget(4)
    jobs = [budget.queue(Job(t)) for t in ("a", "b", "c")]
    assert pool.submit(leased_threads, budget, jobs).result() == (4, 4)


def test_a_job_that_starts_beside_a_running_one_stays_on_one_thread(pool: ThreadPoolExecutor) -> None:
    budget = CoreBudget(4)
    first, other = budget.queue(Job("a")), budget.queue(Job("b"))
    running, _, release = hold(pool, budget, [first])  # with "b" queued: on one thread
    try:
        budget.forget(other)  # nothing queued now, but "a" runs
        assert pool.submit(leased_threads, budget, [budget.queue(Job("c"))]).result(_WAIT_S) == (1, 1)
    finally:
        release()
    assert running.result(_WAIT_S) == 1


def test_jobs_wait_while_a_lone_job_holds_every_core(pool: ThreadPoolExecutor) -> None:
    """No second team beside one that fills the cores: the newcomer starts once the lone job ends."""
    budget = CoreBudget(2)
    lone, _, release = hold(pool, budget, [budget.queue(Job("lone"))])
    entered = threading.Event()
    newcomer = budget.queue(Job("newcomer"))

    def later() -> tuple[int, int]:
        with budget.lease([newcomer]) as threads:
            entered.set()
            return threads, torch.get_num_threads()

    waiting = pool.submit(later)
    assert not entered.wait(0.2)  # still waiting for the lone job (no upper bound is asserted)
    release()
    assert lone.result(_WAIT_S) == 2
    assert waiting.result(_WAIT_S) == (2, 2)  # alone in its turn


def test_jobs_that_waited_together_run_together_on_one_thread_each(pool: ThreadPoolExecutor) -> None:
    budget = CoreBudget(2)
    _, _, release = hold(pool, budget, [budget.queue(Job("lone"))])
    together = threading.Barrier(2, timeout=_WAIT_S)  # broken if one of them held every core

    def run(job: Job[str]) -> int:
        with budget.lease([job]) as threads:
            together.wait()
            return threads

    futures = [pool.submit(run, budget.queue(Job(name))) for name in ("x", "y")]
    release()
    assert [f.result(_WAIT_S) for f in futures] == [1, 1]


def test_a_forgotten_job_is_no_company(pool: ThreadPoolExecutor) -> None:
    """A caller that gave up (its job dropped from the batch) does not keep others on one thread."""
    budget = CoreBudget(4)
    job, gone = budget.queue(Job("a")), budget.queue(Job("b"))
    budget.forget(gone)
    assert pool.submit(leased_threads, budget, [job]).result() == (4, 4)


def test_a_small_job_never_widens_nor_blocks_others(pool: ThreadPoolExecutor) -> None:
    budget = CoreBudget(4)
    small, _, release = hold(pool, budget, [budget.queue(Job("rows"))], widen=False)
    try:
        assert pool.submit(leased_threads, budget, [budget.queue(Job("a"))]).result(_WAIT_S) == (1, 1)
    finally:
        release()
    assert small.result(_WAIT_S) == 1


@pytest.mark.parametrize(
    ("budget", "expected"),
    [(CoreBudget(4, adaptive=False), 1), (CoreBudget(4, shared=2, adaptive=False), 2), (CoreBudget(1), 1)],
)
def test_without_adaptive_threads_every_job_gets_the_shared_count(
    pool: ThreadPoolExecutor, budget: CoreBudget, expected: int
) -> None:
    assert pool.submit(leased_threads, budget, [budget.queue(Job("a"))]).result() == (expected, expected)
    assert budget.alone == expected


def test_use_threads_holds_when_another_thread_moves_the_process_default_first() -> None:
    """torch's first op in a thread re-reads the count the last `set_num_threads` anywhere left: a count
    set before a thread's first op did not stick (the benchmark's in-process engine ran on 2)."""

    def first_op() -> int:
        torch.ones(1 << 16).add_(1)  # large enough to go through the intra-op pool
        return torch.get_num_threads()

    with ThreadPoolExecutor(1) as one:  # the same thread for both calls
        one.submit(use_threads, 1).result()
        torch.set_num_threads(3)  # another thread (a naive baseline's), before this one's first op
        assert one.submit(first_op).result() == 1
