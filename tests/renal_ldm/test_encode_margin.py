"""Encoding inside a mirrored margin (`train --encode-margin`, `tune-decoder --encode-margin`): the border cells of a
latent become interior cells like the rest, training and the decoder tune learn those latents and record the
margin, and a margin the encoder cannot use is refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from renal_ldm.cli import main as cli_main
from renal_ldm.data.patches import PatchDataset, split_dataset
from renal_ldm.models.checkpoint import load_model
from renal_ldm.models.configs import AutoencoderTrainSettings, LDMTrainSettings
from renal_ldm.paths import SHIPPED_DEMO_MODEL
from renal_ldm.phantom import generate_phantom
from renal_ldm.training import train_ldm
from renal_ldm.training.common import check_encode_margin, encode_interior
from renal_ldm.training.decoder import DECODER_RECORD, tune_decoder
from renal_ldm.training.ldm import LatentCache

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ring(z: torch.Tensor) -> torch.Tensor:
    ring = torch.zeros(z.shape[-2:], dtype=torch.bool)
    ring[0, :] = ring[-1, :] = ring[:, 0] = ring[:, -1] = True
    return ring


def test_shipped_autoencoders_border_cells_become_interior_cells():
    """The cause of the frame, on the real demo autoencoder: plainly encoded, the outermost cells differ from a
    mirrored encoding's many times more than the interior ones; with the margin their size matches the interior."""
    if not (SHIPPED_DEMO_MODEL / "vae").is_dir():
        pytest.skip(f"the shipped demo model is not at {SHIPPED_DEMO_MODEL}")
    vae = load_model(SHIPPED_DEMO_MODEL).vae
    images = np.stack([np.asarray(generate_phantom(128, seed=555000 + k).image) for k in range(12)])
    x = torch.tensor(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        plain, mirrored = encode_interior(vae, x, 0), encode_interior(vae, x, 16)
    assert plain.shape == mirrored.shape == (12, 3, 32, 32)
    ring = _ring(plain)
    change = (plain - mirrored).abs().mean(dim=(0, 1))
    assert change[ring].mean() > 5 * change[~ring].mean()
    size = mirrored.abs().mean(dim=(0, 1))
    assert size[ring].mean() / size[~ring].mean() == pytest.approx(1.0, abs=0.02)


def test_no_margin_is_the_plain_encoding(tiny_model_dir):
    vae = load_model(tiny_model_dir).vae
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(encode_interior(vae, x, 0), vae.encode(x).latents)
        assert encode_interior(vae, x, 8).shape == vae.encode(x).latents.shape


@pytest.mark.parametrize("margin", [-4, 6, 32, 40])
def test_a_margin_the_encoder_cannot_use_is_refused_by_name(margin):
    with pytest.raises(ValueError, match=f"encode margin {margin} px.*multiple of the autoencoder's factor 4"):
        check_encode_margin(margin, 32, 4)


def test_training_learns_the_mirrored_latents_and_records_the_margin(tiny_vae_dir, four_phantoms, tmp_path):
    data = PatchDataset(four_phantoms, flips=False)
    settings = LDMTrainSettings(
        max_steps=1, batch_size=2, checkpoint_every=0, progress=False, flip=False, warmup_steps=0, encode_margin=8
    )
    result = train_ldm(data, tmp_path / "run", vae=tiny_vae_dir, settings=settings, log=print)
    model = load_model(result.model_dir)
    assert model.extra["settings"]["encode_margin"] == 8
    cache = LatentCache(model.vae, 1.0, 2**20, margin=8)
    images = torch.stack([data[i]["image"] for i in range(2)])
    with torch.no_grad():
        torch.testing.assert_close(cache.encode(images), encode_interior(model.vae, images, 8))
        assert not torch.allclose(cache.encode(images), model.vae.encode(images).latents)


def test_train_command_refuses_a_bad_margin_and_writes_nothing(tiny_vae_dir, four_phantoms, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", str(four_phantoms), "--vae", str(tiny_vae_dir), "--out", str(out), "--max-steps", "1"]
    assert cli_main([*argv, "--encode-margin", "6", "--no-progress"]) == 2
    assert "encode margin 6 px" in capsys.readouterr().err
    assert not (out / "model").exists()


def test_decoder_tune_decodes_the_mirrored_latents_and_records_the_margin(tiny_model_dir, four_phantoms, tmp_path):
    train, held_out = split_dataset(PatchDataset(four_phantoms, flips=False), 1, seed=0)
    settings = AutoencoderTrainSettings(max_steps=2, batch_size=2, progress=False)
    result = tune_decoder(tiny_model_dir, train, held_out, tmp_path / "tuned", settings=settings, encode_margin=8)
    record = load_model(result.model_dir).extra[DECODER_RECORD]
    assert record["encode_margin"] == 8
    with pytest.raises(ValueError, match="encode margin 2 px"):
        tune_decoder(tiny_model_dir, train, held_out, tmp_path / "bad", settings=settings, encode_margin=2)
    assert not (tmp_path / "bad").exists()
