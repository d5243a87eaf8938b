"""How LPGNet reads its input vectors before the first projection: one idea, kept apart from the network.

`Prosody8Log` (optional: prosody-8's levels as logs), `InputNorm` (training-set standardisation) and
`ConversationNorm` (standardisation by the conversation's own statistics so far, with a prior). All
three are tensors in, tensors out, inside the graph, so training, `lpgnet evaluate` and the service
(PyTorch or ONNX) read the same vectors the same way.
"""

from __future__ import annotations

import torch
from torch import nn


class Prosody8Log(nn.Module):
    """Prosody-8 with its level features as logs: a gain g on the waveform multiplies them by g (or g^2),
    which becomes a shift of log g that the conversation's statistics remove; the signed harmonic mean
    goes through asinh (log-like for large values, linear near 0); the silence fraction stays as is.

    Its masks are buffers, so a network that reads its audio this way has another weights digest
    (`Checkpoint.version`) than one that does not, while every existing checkpoint keeps its own.
    """

    LOG_DIMS = (0, 1, 2, 3, 6, 7)  # sig_mean, sig_std, rmse_mean, rmse_std, auto_corr_max, auto_corr_std
    ASINH_DIM, ASINH_SCALE, FLOOR = 5, 100.0, 1e-6  # harmonic (1000 x mean of the harmonic part)

    log_dims: torch.Tensor
    asinh_dims: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        dims = torch.arange(8)
        self.register_buffer("log_dims", torch.isin(dims, torch.tensor(self.LOG_DIMS)))
        self.register_buffer("asinh_dims", dims == self.ASINH_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (..., 8) as the encoder gives it; rows of zeros (missing audio) stay finite
        logs = torch.log(x.clamp(min=self.FLOOR))
        signed = torch.where(self.asinh_dims, torch.asinh(self.ASINH_SCALE * x), x)
        return torch.where(self.log_dims, logs, signed)


class InputNorm(nn.Module):
    """Feature standardisation with statistics from the training set, stored as buffers."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ConversationNorm(nn.Module):
    """Standardise each utterance by its conversation's statistics so far, with a prior.

    x is already standardised globally, so the prior is mean 0, variance 1, worth `prior` utterances:
    mean_i = sum_{j<=i} x_j / (n_i + prior), E[x^2]_i = (sum_{j<=i} x_j^2 + prior) / (n_i + prior), over
    the present rows j (all rows of the dialogue in bidirectional mode). With `mean_prior` m the two are
    apart: mean_i = sum x_j / (n_i + m), and the spread sum (x_j - mean_i)^2 plus `prior` (variance 1)
    over n_i + prior. Part of the graph, so training, `lpgnet evaluate`, PyTorch and ONNX serving
    compute it identically over the same window.
    """

    def __init__(
        self, prior: float, causal: bool, eps: float = 1e-3, mean_prior: float | None = None
    ) -> None:
        super().__init__()
        self.prior, self.causal, self.eps, self.mean_prior = prior, causal, eps, mean_prior

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        # x (B, U, D) globally standardised, zero where missing; m (B, U) float
        w = m.unsqueeze(-1)
        if self.causal:
            n, s1, s2 = torch.cumsum(w, 1), torch.cumsum(x * w, 1), torch.cumsum(x * x * w, 1)
        else:
            n, s1, s2 = w.sum(1, keepdim=True), (x * w).sum(1, keepdim=True), (x * x * w).sum(1, keepdim=True)
        if self.mean_prior is not None:  # priors apart: the mean's, and the spread's (variance 1)
            mean = s1 / (n + self.mean_prior).clamp(min=1e-6)  # a row without audio is zeroed below
            spread = (s2 - 2 * mean * s1 + n * mean * mean).clamp(min=0.0)  # sum of (x - mean)^2
            var = ((spread + self.prior) / (n + self.prior)).clamp(min=self.eps)
        else:
            mean = s1 / (n + self.prior)  # (B, U, D) or (B, 1, D)
            var = ((s2 + self.prior) / (n + self.prior) - mean * mean).clamp(min=self.eps)
        return (x - mean) / torch.sqrt(var) * w


__all__ = ["ConversationNorm", "InputNorm", "Prosody8Log"]
