"""The UNet's border padding (unet.padding_mode): with "replicate" no layer sees zeros at the border; the mode is
recorded, followed when loading and sampling, switchable in a fine-tune, refused by the LDM export, and absent
from older manifests (zeros, as diffusers builds it)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from renal_ldm.cli import main as cli_main
from renal_ldm.data.patches import PatchDataset
from renal_ldm.models.build import build_unet
from renal_ldm.models.checkpoint import load_model
from renal_ldm.models.configs import LDMTrainSettings, ModelConfig, UNetConfig, get_config
from renal_ldm.models.ldm_format import LDMFormatError, check_ldm_expressible
from renal_ldm.sample import Sampler, SampleRequest
from renal_ldm.training import train_ldm

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONTEXT_DIM = 8


def _tiny_unet(mode: str):
    config = get_config("tiny")
    config = dataclasses.replace(config, unet=dataclasses.replace(config.unet, padding_mode=mode))
    torch.manual_seed(0)
    return build_unet(config, CONTEXT_DIM).eval()


def _padding_modes(unet) -> set[str]:
    return {m.padding_mode for m in unet.modules() if isinstance(m, torch.nn.Conv2d) and any(m.padding)}


@torch.inference_mode()
def _output_on_a_uniform_latent(unet) -> torch.Tensor:
    x = torch.full((1, 3, 16, 16), 0.7)
    context = torch.randn(1, 5, CONTEXT_DIM, generator=torch.Generator().manual_seed(0))
    return unet(x, 500, encoder_hidden_states=context).sample


def test_replicate_padding_keeps_a_uniform_latent_uniform_to_the_border():
    """With zeros the prediction for a featureless latent differs at the border; with replicate it does not."""
    zeros = _output_on_a_uniform_latent(_tiny_unet("zeros"))
    replicate = _output_on_a_uniform_latent(_tiny_unet("replicate"))
    spread = lambda y: float((y - y.mean(dim=(2, 3), keepdim=True)).abs().amax())  # noqa: E731
    assert spread(zeros) > 1e-2, "zero padding should mark the border"
    assert spread(replicate) < 1e-5


def test_build_applies_the_mode_to_every_padded_convolution():
    assert _padding_modes(_tiny_unet("zeros")) == {"zeros"}
    assert _padding_modes(_tiny_unet("replicate")) == {"replicate"}


def test_unknown_padding_mode_is_refused_by_name():
    with pytest.raises(ValueError, match="'reflect'.*zeros.*replicate"):
        UNetConfig(padding_mode="reflect")


def test_manifests_from_before_the_option_load_with_zeros(tiny_model_dir):
    old = {"name": "tiny", "image_size": 32, "unet": {"base_channels": 32}}
    assert ModelConfig.from_dict(old).unet.padding_mode == "zeros"
    assert _padding_modes(load_model(tiny_model_dir).unet) == {"zeros"}


def _settings(**kw) -> LDMTrainSettings:
    base = dict(max_steps=2, batch_size=2, checkpoint_every=0, progress=False, flip=False, warmup_steps=0)
    return LDMTrainSettings(**{**base, **kw})


def test_fine_tune_switches_the_padding_and_the_sampler_follows(tiny_vae_dir, four_phantoms, tmp_path):
    data = PatchDataset(four_phantoms, flips=False)
    base = train_ldm(data, tmp_path / "base", vae=tiny_vae_dir, settings=_settings(), log=print)
    tuned = train_ldm(
        data, tmp_path / "tuned", init_from=base.model_dir, settings=_settings(padding_mode="replicate"), log=print
    )
    before, after = load_model(base.model_dir), load_model(tuned.model_dir)
    assert before.config.unet.padding_mode == "zeros"
    assert after.config.unet.padding_mode == "replicate"
    assert _padding_modes(after.unet) == {"replicate"}

    sampler = Sampler(after, "cpu")
    request = SampleRequest(caption="There is a lot of Glomeruli visible in the image.", n=1, seed=3, steps=3)
    first = sampler.sample(request)[0].array
    again = sampler.sample(request)[0].array
    assert first.shape == (32, 32, 3)
    np.testing.assert_array_equal(first, again)
    assert _padding_modes(sampler.model.unet) == {"replicate"}  # the sampler's own set-up keeps the mode
    wide = sampler.sample(dataclasses.replace(request, size=96))[0].array  # windows above the training size
    assert wide.shape == (96, 96, 3)


def test_train_command_takes_padding_mode(tiny_vae_dir, four_phantoms, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--data", str(four_phantoms), "--vae", str(tiny_vae_dir), "--out", str(out), "--max-steps", "1"]
    assert cli_main([*argv, "--batch-size", "2", "--padding-mode", "replicate", "--no-progress"]) == 0
    assert load_model(out / "model").config.unet.padding_mode == "replicate"


def test_train_command_refuses_an_unknown_padding_mode(tiny_vae_dir, four_phantoms, tmp_path, capsys):
    argv = ["train", "--data", str(four_phantoms), "--vae", str(tiny_vae_dir), "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit):
        cli_main([*argv, "--padding-mode", "circular"])
    assert "circular" in capsys.readouterr().err


def test_ldm_export_refuses_replicate_padding_by_name(tiny_model_dir):
    model = load_model(tiny_model_dir)
    unet = dataclasses.replace(model.config.unet, caption_embedding=False, padding_mode="replicate")
    with pytest.raises(LDMFormatError, match="padding_mode"):
        check_ldm_expressible(dataclasses.replace(model.config, unet=unet))
