"""emotion2vec utterance vectors (Ma et al., 2023) through FunASR, batched over utterances of any length.

The utterance vector is what `funasr.AutoModel.generate(..., granularity="utterance",
extract_embedding=True)` returns: the waveform (16 kHz) is layer-normalised over its own samples when
the config says `normalize`, run through the model, and the last layer's frames (extra tokens
removed) are averaged. 768-d for emotion2vec base.

FunASR runs one utterance at a time. Its `extract_features(source, padding_mask=...)` accepts a padded
batch but is not exact: the convolutional positional encoder (5 layers of width-19 convolutions) reads
the padded frames, so a 0.5 s clip batched with a 10 s one drifts to cosine ~0.98 of its unbatched
vector. `Emotion2VecPooler` therefore re-plays FunASR's eval forward from FunASR's own sub-modules
(conv feature extractor, positional convolutions, prenet blocks, main blocks) and only redoes the glue
for padding:

- frame lengths follow the conv formula floor((L - k) / s + 1) per layer, as FunASR's
  `convert_padding_mask` does;
- padded frames are zeroed before every positional convolution, which is exactly the zero padding an
  unbatched utterance sees at its end;
- the ALiBi bias is built in-graph (no shape-keyed cache) and the key padding is folded into it as -inf,
  so attention needs no data-dependent branch; the pooled mean covers valid frames only.

The result equals FunASR's `generate` per utterance (float rounding) and exports to ONNX with dynamic
batch and length (see `model.encoders.onnx`).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.encoders.devices import resolve_device
from model.encoders.identity import emotion2vec_spec_name, versioned_spec, weights_fingerprint
from model.encoders.precision import Precision, cpu_autocast, precision_name, resolve_bf16

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
DEFAULT_MODEL = "iic/emotion2vec_base"


class Emotion2VecPooler(nn.Module):
    """FunASR emotion2vec in eval mode, batched with padding, mean-pooled over valid frames.

    Input: `source` (B, S) float waveforms at 16 kHz, already normalised per utterance and zero-padded
    (see `prepare_waveforms`), and `padding_mask` (B, S) bool, True where a sample is padding.
    Output: (B, D) utterance vectors.
    """

    alibi_slopes: torch.Tensor  # (H_alibi,) buffer

    def __init__(self, model: Any) -> None:  # funasr's Emotion2vec, untyped
        super().__init__()
        with quiet_funasr():
            from funasr.models.emotion2vec.base import get_alibi

        encoder: Any = model.modality_encoders["AUDIO"]
        cfg = encoder.modality_cfg
        if not cfg.use_alibi_encoder or cfg.learned_alibi:
            raise NotImplementedError("only emotion2vec configs with fixed ALiBi biases are supported")
        if encoder.alibi_scale is not None and encoder.alibi_scale.size(0) > 1:
            raise NotImplementedError("per-layer ALiBi scales are not supported")
        self.encoder: Any = encoder
        self.blocks: nn.ModuleList = model.blocks
        self.norm: nn.Module | None = model.norm
        self.num_extra = int(cfg.num_extra_tokens)
        # every block (prenet and main) has cfg.num_heads heads; ALiBi may cover only the first ones
        self.num_heads = int(model.cfg.num_heads)
        self.conv_layers = [(int(k), int(s)) for _, k, s in encoder.feature_enc_layers]
        positional = encoder.relative_positional_encoder
        self.pre_norm: nn.Module | None = None
        if isinstance(positional[0], nn.LayerNorm):  # conv_pos_pre_ln
            self.pre_norm, positional = positional[0], positional[1]
        # Sequential(TransposeLast, *blocks, TransposeLast): keep the blocks, which work on (B, D, T).
        self.positional_blocks = nn.ModuleList(list(positional)[1:-1])
        # get_alibi(2, H)[h, 0, 1] = -slope_h
        slopes = -get_alibi(2, int(cfg.num_alibi_heads))[:, 0, 1].clone()
        self.register_buffer("alibi_slopes", slopes, persistent=False)

    @property
    def min_samples(self) -> int:
        """Shortest input giving one frame: the receptive field of the conv feature extractor."""
        field, jump = 1, 1
        for kernel, stride in self.conv_layers:
            field += (kernel - 1) * jump
            jump *= stride
        return field

    def frame_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor:
        """(B,) valid samples -> (B,) valid frames, FunASR's conv output-length formula."""
        lengths = sample_lengths
        for kernel, stride in self.conv_layers:
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        return lengths.clamp(min=0)

    def forward(self, source: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        frame_counts = self.frame_lengths((~padding_mask).sum(dim=1))  # (B,)
        x = self.encoder.local_features(source)  # (B, T, D): conv stack + LayerNorm + projection
        frames = torch.arange(x.shape[1], device=x.device)  # (T,)
        valid = frames.unsqueeze(0) < frame_counts.unsqueeze(1)  # (B, T)
        keep = valid.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        x = x * keep

        # Relative positional convolutions; zeroing padded frames before each layer reproduces the
        # zero padding an unbatched utterance gets past its end.
        h = self.pre_norm(x) if self.pre_norm is not None else x
        h = h.transpose(1, 2)  # (B, D, T)
        keep_t = keep.transpose(1, 2)  # (B, 1, T)
        for block in self.positional_blocks:
            h = block(h * keep_t)
        x = x + h.transpose(1, 2)  # (B, T, D)

        # ALiBi: bias[h, i, j] = -slope_h * scale_h * |i - j|, zero for the extra tokens (FunASR pads
        # it with zeros); heads beyond the ALiBi heads get no positional bias.
        distance = (frames.unsqueeze(0) - frames.unsqueeze(1)).abs().to(torch.float32)  # (T, T)
        slopes = self.alibi_slopes
        if self.encoder.alibi_scale is not None:
            slopes = slopes * self.encoder.alibi_scale.clamp_min(0).reshape(-1).to(torch.float32)
        bias = -slopes.view(-1, 1, 1) * distance  # (H_alibi, T, T)
        bias = F.pad(bias, (self.num_extra, 0, self.num_extra, 0, 0, self.num_heads - bias.shape[0]))
        key_padding = F.pad(~valid, (self.num_extra, 0))  # (B, T + E)
        key_bias = torch.zeros(key_padding.shape, dtype=torch.float32, device=x.device)
        key_bias = key_bias.masked_fill(key_padding, float("-inf"))
        bias = bias.unsqueeze(0) + key_bias[:, None, None, :]  # (B, H, T + E, T + E)

        if self.encoder.extra_tokens is not None:
            x = torch.cat([self.encoder.extra_tokens.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        x = self.encoder.context_encoder(x, None, bias, None)  # prenet blocks
        for block in self.blocks:
            x, _ = block(x, padding_mask=None, alibi_bias=bias)
        if self.norm is not None:
            x = self.norm(x)
        x = x[:, self.num_extra :]  # (B, T, D)
        return (x * keep).sum(dim=1).float() / keep.sum(dim=1).float().clamp(min=1.0)  # (B, D)


def prepare_waveforms(
    waves: Sequence[np.ndarray], *, normalize: bool, min_samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise each waveform on its own samples and zero-pad them into a batch.

    waves: N mono 16 kHz arrays (S_i,). Normalisation is `F.layer_norm` over the unpadded waveform,
    as FunASR's `inference` does. Waveforms shorter than `min_samples` (the conv receptive field,
    25 ms for base) are zero-extended to it and the extension counts as signal, so they still give a
    vector. Returns `source` (N, S_max) float32 and `padding_mask` (N, S_max) bool, True = padding.
    """
    tensors = []
    for wave in waves:
        x = torch.as_tensor(np.asarray(wave, dtype=np.float32)).reshape(-1)
        if x.numel() == 0:
            raise ValueError("emotion2vec needs at least one sample per utterance")
        if not torch.isfinite(x).all():
            raise ValueError("waveform holds NaN or infinite samples")
        if normalize:
            x = F.layer_norm(x, x.shape)
        if x.numel() < min_samples:
            x = F.pad(x, (0, min_samples - x.numel()))
        tensors.append(x)
    longest = max((t.numel() for t in tensors), default=min_samples)
    source = torch.zeros((len(tensors), longest), dtype=torch.float32)
    padding_mask = torch.ones((len(tensors), longest), dtype=torch.bool)
    for i, t in enumerate(tensors):
        source[i, : t.numel()] = t
        padding_mask[i, : t.numel()] = False
    return source, padding_mask


class Emotion2VecEncoder:
    """Audio encoder: 16 kHz mono float32 waveforms -> (N, D) emotion2vec utterance vectors.

    Args:
        model: a FunASR model id (e.g. "iic/emotion2vec_base", downloaded by FunASR on first use) or a
            local directory in FunASR's format (config.yaml + model.pt), which loads offline.
        name: identity in the spec name `emotion2vec:<name>`; default: the id or the directory's
            basename. Pass the canonical id when loading a local copy of a hub model.
        device: "cpu", "cuda" or "auto".
        fp16: run in float16 (CUDA only; off by default: FunASR's feature extractor is fp32-first).
        precision: "fp32" (default), "bf16" (CPU autocast, 1.4-1.8x cheaper where the CPU has native
            bf16) or "auto" (bf16 only there); see `model.encoders.precision`.
        max_batch_seconds: padded audio per forward pass; bounds the (B, H, T, T) attention memory.
    """

    sample_rate: int | None = SAMPLE_RATE

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        *,
        name: str | None = None,
        device: str | torch.device = "auto",
        fp16: bool = False,
        precision: Precision = "fp32",
        max_batch_seconds: float = 120.0,
    ) -> None:
        source = str(model)
        local = Path(source).is_dir()
        if local and not all((Path(source) / f).is_file() for f in ("config.yaml", "model.pt")):
            raise FileNotFoundError(f"{Path(source).name}: expected FunASR's config.yaml + model.pt")
        self.device = resolve_device(device)
        self.funasr_model = load_funasr_model(source, device=self.device)
        torch_model = self.funasr_model.model.float().eval()
        self.normalize = bool(torch_model.cfg.get("normalize", False))
        identity = {
            "embed_dim": int(torch_model.cfg.embed_dim),
            "depth": int(torch_model.cfg.depth),
            "feature_encoder_spec": str(torch_model.cfg.modalities.audio.feature_encoder_spec),
            "normalize": self.normalize,
            "weights": weights_fingerprint(torch_model),
        }
        self.spec = versioned_spec(
            emotion2vec_spec_name(name, source),
            identity,
            dim=int(torch_model.cfg.embed_dim),
            modality="audio",
        )
        self.fp16 = fp16 and self.device.type == "cuda"
        self.bf16 = resolve_bf16(precision, self.device)
        self.pooler = Emotion2VecPooler(torch_model).to(self.device).eval()
        if self.fp16:
            self.pooler.half()
        self.max_batch_samples = int(max_batch_seconds * SAMPLE_RATE)
        logger.info("audio encoder %s on %s, %s", self.spec.summary(), self.device, self.precision)

    @property
    def precision(self) -> str:
        """ "fp32", or "bf16" / "fp16" where the forward runs in reduced precision."""
        return precision_name(fp16=self.fp16, bf16=self.bf16)

    def encode_batch(self, items: Sequence[np.ndarray]) -> torch.Tensor:
        """items: N waveforms (S_i,) float32 at 16 kHz -> (N, D) float32 CPU tensor."""
        out = torch.zeros((len(items), self.spec.dim), dtype=torch.float32)
        for idx in length_batches([np.asarray(w).size for w in items], self.max_batch_samples):
            source, padding_mask = prepare_waveforms(
                [items[i] for i in idx], normalize=self.normalize, min_samples=self.pooler.min_samples
            )
            source = source.to(self.device, torch.float16 if self.fp16 else torch.float32)
            with torch.inference_mode(), cpu_autocast(self.bf16):
                vectors = self.pooler(source, padding_mask.to(self.device))
            out[idx] = vectors.float().cpu()
        return out


def length_batches(lengths: Sequence[int], max_padded: int) -> Iterator[list[int]]:
    """Group indices, longest first, so each group's padded size (longest x count) stays <= max_padded.

    A single item longer than `max_padded` still forms its own group.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    group: list[int] = []
    for i in order:
        if group and lengths[group[0]] * (len(group) + 1) > max_padded:
            yield group
            group = []
        group.append(i)
    if group:
        yield group


def load_funasr_model(model: str, *, device: torch.device) -> Any:
    """`funasr.AutoModel(model=..., disable_update=True)`, quietly, keeping torch's thread count."""
    with quiet_funasr():
        from funasr import AutoModel

        return AutoModel(
            model=model,
            disable_update=True,
            disable_pbar=True,
            disable_log=True,
            log_level="WARNING",
            device=str(device),
            ncpu=torch.get_num_threads(),  # FunASR would otherwise set the global count to 4
            ignore_init_mismatch=False,  # a shape mismatch must fail, not keep random weights
        )


@contextlib.contextmanager
def quiet_funasr() -> Iterator[None]:
    """Contain FunASR's side effects on the process while importing or building it.

    Importing FunASR prints to stdout and calls `logging.basicConfig(level=INFO)` (from a module it
    imports eagerly); `AutoModel` calls it again. Inside this block stdout goes to the debug log and
    the root logger's handlers and level are restored afterwards.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    guard = logging.NullHandler()
    root.addHandler(guard)  # a root logger with a handler makes basicConfig a no-op
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
        if captured.getvalue().strip():
            logger.debug("funasr: %s", captured.getvalue().strip())
