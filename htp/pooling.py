"""Read-outs: mean over the text's own tokens, or the last token; L2-normalised float32."""

from __future__ import annotations

import torch


def mean_pool(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of hidden states under a [batch, seq] 0/1 weight mask (placeholders, prompt, padding are 0)."""
    weights = weights.to(hidden.dtype)
    # Zero the excluded positions rather than multiply them by 0: a NaN or Inf there (padding can overflow in half
    # precision) would survive 0 * x and spread into the text's vector.
    kept = torch.where(weights[..., None] > 0, hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device))
    summed = torch.einsum("bs,bsd->bd", weights, kept)
    return summed / weights.sum(dim=1, keepdim=True).clamp_min(1.0)


def last_pool(hidden: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Hidden state at each row's last real position (right padding: index = length - 1)."""
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def normalise(vectors: torch.Tensor) -> torch.Tensor:
    """L2-normalise in float32 so inner product is cosine similarity."""
    return torch.nn.functional.normalize(vectors.float(), dim=-1)
