"""What a UNet receives for its captions, built in one place for training, sampling and the conditioning check.

A caption reaches the UNet as token states for cross-attention, plus, where the model has them, the pooled
caption embedding (unet.caption_embedding) and the token mask that keeps cross-attention off the padding
(unet.caption_mask). Each caption is encoded alone (the encoder caches by text), so a caption's inputs never
depend on the batch it came in, in training as in sampling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from renal_ldm.models.build import uses_caption_embedding
from renal_ldm.text import TextEncoder


@dataclass(frozen=True)
class UNetInputs:
    """The caption inputs of one UNet call, row for row."""

    context: torch.Tensor  # (R, T, D) token states
    pooled: torch.Tensor | None = None  # (R, D), for a UNet with a caption-embedding path
    mask: torch.Tensor | None = None  # (R, T), for a model with unet.caption_mask: 1 real token, 0 padding

    @classmethod
    def stack(cls, branches: Sequence[UNetInputs], b: int) -> UNetInputs:
        """One-row inputs repeated for b images each, in order (for guidance: [uncond] * b + [cond] * b)."""

        def rows(part: str) -> torch.Tensor | None:
            parts = [getattr(x, part) for x in branches]
            return None if parts[0] is None else torch.cat([p.expand(b, *p.shape[1:]) for p in parts])

        return cls(rows("context"), rows("pooled"), rows("mask"))

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> UNetInputs:
        """The same inputs with fn applied to each tensor present (device moves, row selection, padding)."""
        return UNetInputs(*(None if x is None else fn(x) for x in (self.context, self.pooled, self.mask)))

    def kwargs(self) -> dict[str, torch.Tensor | None]:
        """Keyword arguments of diffusers' UNet2DConditionModel for these inputs."""
        return {"encoder_hidden_states": self.context, "class_labels": self.pooled, "encoder_attention_mask": self.mask}


def caption_inputs(encoder: TextEncoder, captions: Sequence[str], unet, masked: bool) -> UNetInputs:
    """UNet inputs for captions, one row each, on the encoder's device; masked: the model's unet.caption_mask."""
    captions = [str(c) for c in captions]
    return UNetInputs(
        torch.cat([encoder.encode([c]) for c in captions]),
        torch.cat([encoder.pool([c]) for c in captions]) if uses_caption_embedding(unet) else None,
        torch.cat([encoder.token_mask([c]) for c in captions]) if masked else None,
    )
