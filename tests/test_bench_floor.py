"""bench/floor.py: the floor is the fastest candidate that keeps parity with PyTorch fp32 (fake encoders)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from bench.floor import Candidate, FloorMode, candidate_name, floor_figures
from bench.workload import Clip


class FakeEncoder:
    """Answers a fixed vector after `delay_ms`."""

    sample_rate = None

    def __init__(self, vector: list[float], delay_ms: float) -> None:
        self.vector = torch.tensor([vector])
        self.delay_ms = delay_ms

    def encode_batch(self, items: list[str]) -> torch.Tensor:
        time.sleep(self.delay_ms / 1000.0)
        return self.vector.repeat(len(items), 1)


def _floor() -> FloorMode:
    return FloorMode(
        [
            Candidate("text", "torch", "fp32", 1, FakeEncoder([1.0, 0.0, 0.0], 8)),  # the reference
            Candidate("text", "torch", "bf16", 1, FakeEncoder([1.0, 0.05, 0.0], 3)),  # cos 0.9988 >= 0.99
            Candidate("text", "onnx", "int8", 2, FakeEncoder([1.0, 0.1, 0.0], 0)),  # cos 0.995 < 0.999
        ]
    )


def test_floor_rejects_int8_below_its_parity_bound_and_takes_the_fastest_counted_one() -> None:
    floor = _floor()
    clip = Clip(Path("clip.wav"), "hello there")
    parts = []
    for _ in range(4):
        floor._run(clip)
        assert floor.last_parts is not None
        parts.append(dict(floor.last_parts))
    figures = floor_figures(floor, parts, {"text": "torch-bf16-t1"}, [])
    rows = {r["name"]: r for r in figures["candidates"]}
    assert not rows["onnx-int8-t2"]["accepted"] and rows["onnx-int8-t2"]["cosine_min"] < 0.999
    assert rows["torch-bf16-t1"]["accepted"] and rows["torch-bf16-t1"]["best"]
    assert rows["torch-bf16-t1"]["served"] and not rows["torch-fp32-t1"]["served"]
    assert figures["best"] == {"text": "torch-bf16-t1"}
    assert figures["floor_p50_ms"] == rows["torch-bf16-t1"]["p50_ms"]
    assert figures["served_p50_ms"] == rows["torch-bf16-t1"]["p50_ms"]
    assert len(figures["series"]) == 4
    assert floor.accepted() == {"text": ["text:torch-fp32-t1", "text:torch-bf16-t1"]}


def test_candidate_name_of_a_served_encoder() -> None:
    class OnnxTextEncoder:
        pass

    class HFTextEncoder:
        precision = "bf16"

    assert candidate_name(OnnxTextEncoder(), 1) == "onnx-fp32-t1"
    assert candidate_name(HFTextEncoder(), 2) == "torch-bf16-t2"
