"""Sentence vectors from any Hugging Face `transformers` encoder (BERT, MiniLM, RoBERTa...).

`HFTextEncoder` loads a tokenizer and an `AutoModel` from a hub id or a local directory (local
directories load with `local_files_only=True`, so they never touch the network) and pools the last
layer: `cls` takes the [CLS] vector, `mean` averages the tokens the attention mask keeps. A
sentence-transformers folder (like the bundled all-MiniLM-L6-v2) is recognised: its pooling mode,
`max_seq_length` and whether `modules.json` ends with a `Normalize` module become the defaults, so the
vectors equal what `SentenceTransformer.encode` gives.

Shapes: N texts -> (N, D) float32 on CPU, D = the model's hidden size.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from model.encoders.devices import resolve_device
from model.encoders.identity import short_hash, text_spec_name, versioned_spec, weights_fingerprint
from model.encoders.precision import Precision, cpu_autocast, precision_name, resolve_bf16

logger = logging.getLogger(__name__)

Pooling = Literal["cls", "mean"]
POOLINGS: tuple[Pooling, ...] = ("cls", "mean")
MODEL_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def pool_hidden_states(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Pool (B, L, D) hidden states with a (B, L) mask into (B, D).

    `mean` follows sentence-transformers: sum of kept tokens over max(count, 1e-9).
    """
    if pooling == "cls":
        return hidden[:, 0]
    keep = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1e-9)


class TextPooler(nn.Module):
    """Transformer + pooling (+ optional L2 normalisation) as one module: ids in, (B, D) out.

    The same module runs in PyTorch and is what `model.encoders.onnx` exports, so both agree.
    """

    def __init__(self, model: nn.Module, pooling: Pooling, normalize: bool) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling
        self.normalize = normalize

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, L) int64
        attention_mask: torch.Tensor,  # (B, L) int64, 1 = token
        token_type_ids: torch.Tensor | None = None,  # (B, L) int64 or None
    ) -> torch.Tensor:
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        pooled = pool_hidden_states(hidden, attention_mask, self.pooling).float()  # (B, D)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled


class HFTextEncoder:
    """Text encoder over a `transformers` model. `encode_batch(texts) -> (N, D)` float32 CPU.

    Args:
        model: hub id (e.g. "bert-base-uncased") or local directory.
        pooling: "cls" or "mean"; default: the sentence-transformers pooling when the directory has
            one, else "cls".
        name: the model's identity in the spec name `hf:<name>:<pooling>`; default: the hub id or the
            directory's basename. Pass the canonical id when loading a local copy of a hub model so
            a checkpoint trained on the hub model matches (the weights fingerprint in the version
            still tells different weights apart).
        device: "cpu", "cuda" or "auto" (CUDA when available).
        fp16: run in float16; default: True on CUDA, False on CPU.
        precision: "fp32" (default), "bf16" (CPU autocast) or "auto" (bf16 where the CPU has it);
            see `model.encoders.precision`.
        max_length: truncation length in tokens; default: sentence-transformers `max_seq_length`,
            else the tokenizer's `model_max_length` capped by the position embeddings.
        normalize: L2-normalise the output; default: True iff `modules.json` has a Normalize module.
        batch_size: texts per forward pass.
    """

    sample_rate: int | None = None

    def __init__(
        self,
        model: str | Path = "bert-base-uncased",
        *,
        pooling: Pooling | None = None,
        name: str | None = None,
        device: str | torch.device = "auto",
        fp16: bool | None = None,
        precision: Precision = "fp32",
        max_length: int | None = None,
        normalize: bool | None = None,
        batch_size: int = 32,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer  # heavy import, only when a model is built

        source = str(model)
        local = Path(source).is_dir()
        load_kwargs: dict[str, Any] = {"local_files_only": True} if local else {}
        st = _sentence_transformers_settings(Path(source)) if local else {}
        self.pooling: Pooling = pooling or st.get("pooling") or "cls"
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        self.normalize = bool(st.get("normalize", False)) if normalize is None else normalize
        self.device = resolve_device(device)
        self.fp16 = (self.device.type == "cuda") if fp16 is None else fp16
        self.bf16 = resolve_bf16(precision, self.device)
        self.batch_size = batch_size

        self.tokenizer = AutoTokenizer.from_pretrained(source, **load_kwargs)
        transformer = AutoModel.from_pretrained(source, **load_kwargs).eval()
        config = transformer.config
        self.max_length = max_length or st.get("max_seq_length") or _model_max_length(self.tokenizer, config)

        identity = {
            "model_type": config.model_type,
            "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads,
            "vocab": short_hash(sorted(self.tokenizer.get_vocab().items())),
            "pooling": self.pooling,
            "normalize": self.normalize,
            "max_length": self.max_length,
            "weights": weights_fingerprint(transformer),
        }
        self.spec = versioned_spec(
            text_spec_name(name, source, self.pooling),
            identity,
            dim=int(config.hidden_size),
            modality="text",
        )
        if self.fp16:
            transformer = transformer.half()
        self.pooler = TextPooler(transformer.to(self.device), self.pooling, self.normalize).eval()
        logger.info(
            "text encoder %s on %s, %s, max %d tokens",
            self.spec.summary(),
            self.device,
            self.precision,
            self.max_length,
        )

    @property
    def precision(self) -> str:
        """ "fp32", or "bf16" / "fp16" where the forward runs in reduced precision."""
        return precision_name(fp16=self.fp16, bf16=self.bf16)

    def tokenize(self, texts: Sequence[str]) -> tuple[dict[str, torch.Tensor], list[bool]]:
        """Model inputs (B, L) for `texts` and which of them were truncated."""
        return tokenize_texts(self.tokenizer, texts, self.max_length)

    def encode_with_info(self, texts: Sequence[str]) -> tuple[torch.Tensor, list[bool]]:
        """texts: N strings ("" is fine) -> ((N, D) float32, N flags: was the text truncated)."""

        def encode(batch: list[str]) -> tuple[torch.Tensor, list[bool]]:
            inputs, flags = self.tokenize(batch)
            with torch.inference_mode(), cpu_autocast(self.bf16):
                vectors = self.pooler(**{k: v.to(self.device) for k, v in inputs.items()})
            return vectors.float().cpu(), flags

        return encode_by_length(texts, self.spec.dim, self.batch_size, encode)

    def encode_batch(self, items: Sequence[str]) -> torch.Tensor:
        """items: N strings -> (N, D) float32 CPU tensor."""
        return self.encode_with_info(items)[0]


def encode_by_length(
    texts: Sequence[str],
    dim: int,
    batch_size: int,
    encode: Callable[[list[str]], tuple[torch.Tensor, list[bool]]],
) -> tuple[torch.Tensor, list[bool]]:
    """Run `encode` (B texts -> ((B, D) float32, B truncation flags)) over batches of similar length,
    so little compute goes to padding, and return ((N, D), N flags) in the order of `texts`."""
    require_strings(texts)
    out = torch.zeros((len(texts), dim), dtype=torch.float32)
    truncated = [False] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        vectors, flags = encode([texts[i] for i in idx])
        out[idx] = vectors
        for i, flag in zip(idx, flags, strict=True):
            truncated[i] = flag
    return out, truncated


def require_strings(texts: Sequence[str]) -> None:
    """Raise TypeError unless every item is a str (None or bytes would tokenise to nonsense)."""
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"text encoder inputs must be str, got {type(text).__name__}")


def tokenize_texts(
    tokenizer: Any, texts: Sequence[str], max_length: int
) -> tuple[dict[str, torch.Tensor], list[bool]]:
    """Tokenise with padding and truncation at `max_length` tokens.

    Returns the model inputs (input_ids, attention_mask and, if the model has them, token_type_ids;
    each (B, L) int64) and one flag per text: True when truncation dropped tokens.
    """
    require_strings(texts)
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    if batch.encodings is not None:  # fast tokenizer: it keeps what truncation cut off
        truncated = [len(e.overflowing) > 0 for e in batch.encodings]
    else:
        full = tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
        truncated = [len(ids) > max_length for ids in full]
    inputs = {k: v for k, v in batch.items() if k in MODEL_INPUT_NAMES}
    return inputs, truncated


class FastTokenizer:
    """A directory's `tokenizer.json` run by the `tokenizers` library as transformers' fast tokenizer runs
    it in `tokenize_texts`: special tokens added, truncation longest-first at `max_length`, padding to
    the longest text with the pad token and sides of `tokenizer_config.json`. The same ids, flags and
    masks, without importing transformers (1.3 s of a service's start on a 2-core Zen 3). Set up once
    here; a call only reads it, so threads may share one."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer  # a `tokenizers.Tokenizer` with its truncation and padding set

    @classmethod
    def load(cls, directory: str | Path, max_length: int) -> FastTokenizer | None:
        """None where the directory has no `tokenizer.json` or names no pad token (a slow tokenizer's)."""
        root = Path(directory)
        try:
            config = json.loads((root / "tokenizer_config.json").read_text())
        except (OSError, ValueError):
            return None
        pad = config.get("pad_token")
        pad = pad.get("content") if isinstance(pad, dict) else pad
        if not (root / "tokenizer.json").is_file() or not isinstance(pad, str):
            return None
        from tokenizers import Tokenizer  # transformers' own backend, installed with it

        tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        pad_id = tokenizer.token_to_id(pad)
        if pad_id is None:
            return None
        tokenizer.enable_truncation(
            max_length, stride=0, strategy="longest_first", direction=config.get("truncation_side", "right")
        )
        tokenizer.enable_padding(
            direction=config.get("padding_side", "right"),
            pad_id=pad_id,
            pad_type_id=int(config.get("pad_token_type_id", 0)),
            pad_token=pad,
        )
        return cls(tokenizer)

    def __call__(self, texts: Sequence[str]) -> tuple[dict[str, torch.Tensor], list[bool]]:
        """As `tokenize_texts`: (input_ids, attention_mask, token_type_ids; each (B, L) int64) and one
        truncation flag per text."""
        require_strings(texts)
        encodings = self._tokenizer.encode_batch(list(texts))
        inputs = {
            "input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.int64),
            "attention_mask": torch.tensor([e.attention_mask for e in encodings], dtype=torch.int64),
            "token_type_ids": torch.tensor([e.type_ids for e in encodings], dtype=torch.int64),
        }
        return inputs, [len(e.overflowing) > 0 for e in encodings]


def _sentence_transformers_settings(directory: Path) -> dict[str, Any]:
    """Pooling, normalisation and max_seq_length of a sentence-transformers folder ({} if not one)."""
    settings: dict[str, Any] = {}
    modules_file = directory / "modules.json"
    if not modules_file.is_file():
        return settings
    modules = json.loads(modules_file.read_text())
    settings["normalize"] = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
    for module in modules:
        if str(module.get("type", "")).endswith("Pooling"):
            pooling_file = directory / module.get("path", "") / "config.json"
            if pooling_file.is_file():
                cfg = json.loads(pooling_file.read_text())
                if cfg.get("pooling_mode_mean_tokens"):
                    settings["pooling"] = "mean"
                elif cfg.get("pooling_mode_cls_token"):
                    settings["pooling"] = "cls"
                else:
                    raise ValueError(f"unsupported sentence-transformers pooling: {cfg}")
    st_config = directory / "sentence_bert_config.json"
    if st_config.is_file():
        max_seq_length = json.loads(st_config.read_text()).get("max_seq_length")
        if max_seq_length:
            settings["max_seq_length"] = int(max_seq_length)
    return settings


def _model_max_length(tokenizer: Any, config: Any) -> int:
    """The tokenizer's limit (ignoring its 'unlimited' sentinel), capped by the position embeddings."""
    limits = [int(tokenizer.model_max_length)] if tokenizer.model_max_length < 1_000_000 else []
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        limits.append(int(positions))
    return min(limits) if limits else 512
