"""ONNX export of LPGNet and an onnxruntime runner with the same call signature.

The graph takes text (B, U, Dt), audio (B, U, Da), text_mask and audio_mask (B, U) bool, with B and
U dynamic, and returns the three logit tensors (B, U, C). Normalisation statistics are buffers of the
model, so they are inside the graph: the runner feeds raw encoder vectors, exactly like PyTorch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from model.lpgnet import LPGNet, LPGNetOutput

log = logging.getLogger(__name__)

INPUT_NAMES = ["text", "audio", "text_mask", "audio_mask"]
OUTPUT_NAMES = ["logits", "text_logits", "audio_logits"]


def export_lpgnet(model: LPGNet, path: str | Path, opset: int = 18) -> Path:
    """Write `model` (put in eval mode) as an ONNX graph with dynamic batch and utterance axes."""
    model = model.eval()
    cfg = model.cfg
    b, u = 2, 5  # example sizes; both axes are exported as dynamic
    example = (
        torch.randn(b, u, cfg.text_dim),
        torch.randn(b, u, cfg.audio_dim),
        torch.ones(b, u, dtype=torch.bool),
        torch.ones(b, u, dtype=torch.bool),
    )
    batch, utts = torch.export.Dim("batch", max=4096), torch.export.Dim("utterances", max=4096)
    dyn = {name: {0: batch, 1: utts} for name in INPUT_NAMES}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program = torch.onnx.export(
        model,
        example,
        input_names=INPUT_NAMES,
        output_names=OUTPUT_NAMES,
        dynamic_shapes=dyn,
        opset_version=opset,
        dynamo=True,
        verbose=False,
    )
    assert program is not None
    program.save(str(path))
    return path


def onnx_providers(device: str = "auto") -> list[str]:
    """CUDA first when asked for (or available under "auto"), CPU always as the fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    want_cuda = device == "cuda" or (device == "auto" and "CUDAExecutionProvider" in available)
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise RuntimeError("device 'cuda' requested but onnxruntime has no CUDAExecutionProvider")
    return (["CUDAExecutionProvider"] if want_cuda else []) + ["CPUExecutionProvider"]


class OnnxLPGNet:
    """LPGNet run by onnxruntime; call it like the PyTorch module (tensors or arrays in)."""

    def __init__(self, path: str | Path, device: str = "auto", intra_op_threads: int = 0) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads  # 0: onnxruntime's default
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=onnx_providers(device))
        log.info("LPGNet ONNX session on %s", self.session.get_providers()[0])

    def __call__(
        self,
        text: torch.Tensor | np.ndarray,
        audio: torch.Tensor | np.ndarray,
        text_mask: torch.Tensor | np.ndarray,
        audio_mask: torch.Tensor | np.ndarray,
    ) -> LPGNetOutput:
        feeds = {
            "text": np.asarray(text, dtype=np.float32),
            "audio": np.asarray(audio, dtype=np.float32),
            "text_mask": np.asarray(text_mask, dtype=bool),
            "audio_mask": np.asarray(audio_mask, dtype=bool),
        }
        outs = self.session.run(OUTPUT_NAMES, feeds)
        return LPGNetOutput(*(torch.from_numpy(o) for o in outs))
