from tests.app_fixtures import *  # noqa: F403

# ---- encoder fixtures (model/encoders, tests/test_encoders_*.py): keep this block as one unit ----
from tests.conftest_encoders import *  # noqa: E402, F403

# ---- end of encoder fixtures ----


def pytest_configure(config) -> None:  # noqa: ANN001 - pytest's hook signature
    """Under pytest-xdist, each worker's torch gets its share of the cores, not all of them: two workers
    each running two-thread torch ops on two cores oversubscribe them (the DailyDialog evaluation took
    46 s alone and 241 s beside the bench's run). Subprocesses a test starts (the service, the bench)
    are untouched: they set their own threads, as in production."""
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "PYTEST_XDIST_WORKER" in os.environ:
        import torch

        from model.encoders.devices import count_available_cpus  # affinity, capped by a cgroup quota

        torch.set_num_threads(max(1, count_available_cpus() // workers))
