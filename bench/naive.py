"""The baseline a user would write without the service: one request at a time, straight library calls.

Per utterance: funasr's `AutoModel.generate(path, granularity="utterance", extract_embedding=True)`
for the emotion2vec vector (funasr reads and resamples the file itself), a plain `transformers`
forward for BERT's [CLS] vector, then LPGNet over the whole conversation so far, kept as a Python list.
No batching across requests and no shared work. The models are loaded once, as any user would, and
funasr gets the same thread count as everything else (its own default of 4 would oversubscribe a
2-core CPU and handicap the baseline).

Under concurrency the baseline is what a synchronous web handler gives: one thread per request
(`ThreadPoolExecutor`), so concurrent requests contend for the cores instead of sharing a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.workload import Clip


@dataclass
class NaiveConversation:
    text: list[torch.Tensor] = field(default_factory=list)  # (Dt,) per utterance
    audio: list[torch.Tensor] = field(default_factory=list)  # (Da,) per utterance


class NaivePipeline:
    """funasr generate + transformers forward + LPGNet over the whole conversation, per request."""

    def __init__(self, funasr_model: Any, tokenizer: Any, bert: torch.nn.Module, lpgnet: torch.nn.Module):
        self.funasr_model = funasr_model
        self.tokenizer = tokenizer
        self.bert = bert
        self.lpgnet = lpgnet

    @classmethod
    def load(cls, text_dir: Path, audio_dir: Path, checkpoint: Path) -> NaivePipeline:
        from transformers import AutoModel, AutoTokenizer

        from model.checkpoint import load_checkpoint
        from model.encoders.emotion2vec import quiet_funasr

        with quiet_funasr():
            from funasr import AutoModel as FunASRModel

            funasr_model = FunASRModel(
                model=str(audio_dir),
                disable_update=True,
                disable_pbar=True,
                disable_log=True,
                device="cpu",
                ncpu=torch.get_num_threads(),
            )
        tokenizer = AutoTokenizer.from_pretrained(str(text_dir), local_files_only=True)
        bert = AutoModel.from_pretrained(str(text_dir), local_files_only=True).eval()
        return cls(funasr_model, tokenizer, bert, load_checkpoint(checkpoint).model.eval())

    @classmethod
    def sharing(
        cls, encoders: dict[str, Any], text_dir: Path, audio_dir: Path, checkpoint: Path
    ) -> NaivePipeline:
        """The same objects `load` would build, taken from PyTorch encoders when they have them (saves
        a load; `bench.serving.torch_encoders` gives the engine's or fp32 copies of its graphs').

        A PyTorch emotion2vec encoder keeps funasr's `AutoModel` and a text encoder keeps the
        `transformers` model and tokenizer; the calls below are still the naive ones.
        """
        from model.checkpoint import load_checkpoint

        audio, text = encoders.get("audio"), encoders.get("text")
        funasr_model = getattr(audio, "funasr_model", None)
        bert = getattr(getattr(text, "pooler", None), "model", None)
        tokenizer = getattr(text, "tokenizer", None)
        if funasr_model is None or bert is None or tokenizer is None:
            return cls.load(text_dir, audio_dir, checkpoint)
        return cls(funasr_model, tokenizer, bert, load_checkpoint(checkpoint).model.eval())

    def score(self, conversation: NaiveConversation, clip: Clip) -> np.ndarray:
        """Encode one utterance, append it, and return LPGNet's probabilities for it, (C,)."""
        result = self.funasr_model.generate(str(clip.path), granularity="utterance", extract_embedding=True)
        audio = torch.from_numpy(np.asarray(result[0]["feats"], dtype=np.float32))  # (Da,)
        with torch.no_grad():
            inputs = self.tokenizer(clip.transcript, return_tensors="pt", truncation=True)
            text = self.bert(**inputs).last_hidden_state[0, 0]  # (Dt,) [CLS]
            conversation.text.append(text)
            conversation.audio.append(audio)
            t = torch.stack(conversation.text).unsqueeze(0)  # (1, U, Dt)
            a = torch.stack(conversation.audio).unsqueeze(0)  # (1, U, Da)
            mask = torch.ones(t.shape[:2], dtype=torch.bool)  # (1, U)
            logits = self.lpgnet(t, a, mask, mask).logits  # (1, U, C)
            return torch.softmax(logits[0, -1].double(), dim=-1).numpy()
