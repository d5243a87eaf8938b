"""How many CPUs the thread pools are sized for: affinity, capped by a cgroup CPU quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from model.encoders.devices import count_available_cpus


def affinity() -> int:
    return len(os.sched_getaffinity(0))


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    ("cpu_max", "quota"), [("50000 100000", 1), ("150000 100000", 2), ("100000 100000", 1)]
)
def test_a_cgroup_v2_quota_caps_the_count_rounded_up(tmp_path: Path, cpu_max: str, quota: int) -> None:
    write(tmp_path / "cpu.max", cpu_max + "\n")
    assert count_available_cpus(tmp_path) == min(affinity(), quota)


def test_no_quota_means_the_affinity_set(tmp_path: Path) -> None:
    write(tmp_path / "cpu.max", "max 100000\n")
    assert count_available_cpus(tmp_path) == affinity()
    assert count_available_cpus(tmp_path / "nothing-here") == affinity()


def test_a_cgroup_v1_quota_caps_the_count(tmp_path: Path) -> None:
    write(tmp_path / "cpu" / "cpu.cfs_quota_us", "100000\n")
    write(tmp_path / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert count_available_cpus(tmp_path) == 1
    write(tmp_path / "cpu" / "cpu.cfs_quota_us", "-1\n")  # v1's "no quota"
    assert count_available_cpus(tmp_path) == affinity()
