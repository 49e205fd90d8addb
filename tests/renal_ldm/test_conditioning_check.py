"""The conditioning check tells a UNet that reads its caption from one that cannot."""

from __future__ import annotations

import pytest
import torch
from test_train import CAPTIONS

from renal_ldm.conditioning_check import conditioning_check, derangement
from renal_ldm.models.checkpoint import load_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g) * 2 - 1, size=32, mode="bilinear")


def test_a_derangement_moves_every_caption():
    order = derangement(5, torch.Generator().manual_seed(1))
    assert sorted(order) == list(range(5)) and all(i != j for i, j in enumerate(order))
    with pytest.raises(ValueError, match="at least 2 patches"):
        derangement(1, torch.Generator())


def test_a_unet_that_reads_its_caption_has_a_gap_and_one_that_cannot_has_none(tiny_model_dir):
    captions = [CAPTIONS[i % 3] for i in range(6)]
    reading = conditioning_check(load_model(tiny_model_dir), _images(6), captions, timesteps=(300, 700))
    assert reading.right != reading.shuffled
    deaf = load_model(tiny_model_dir)
    with torch.no_grad():
        for name, parameter in deaf.unet.named_parameters():
            if "attn2.to_k" in name or "attn2.to_v" in name:  # cross-attention: the caption's only way in
                parameter.zero_()
    blind = conditioning_check(deaf, _images(6), captions, timesteps=(300, 700))
    assert blind.right == pytest.approx(blind.shuffled, rel=1e-6) and blind.gap == pytest.approx((0.0, 0.0), abs=1e-6)
    assert "| 300 |" in blind.table()
