"""Model configs, construction, and checkpoint directories with their error messages."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from accelerate import init_empty_weights
from tiny_models import build_tiny_model

from renal_ldm.models.build import (
    build_noise_scheduler,
    build_sampling_scheduler,
    build_unet,
    build_vae,
    uses_caption_embedding,
)
from renal_ldm.models.checkpoint import LatentDiffusionModel, load_model, save_model
from renal_ldm.models.configs import MODEL_CONFIGS, ModelConfig, get_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONTEXT = 24


@pytest.mark.parametrize("name", list(MODEL_CONFIGS))
def test_named_configs_build_with_the_reference_structure(name):
    config = get_config(name)
    assert config.autoencoder.downsampling_factor == 4
    assert config.autoencoder.latent_channels == 3
    assert config.latent_size == config.image_size // 4
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with init_empty_weights():  # the reference-size UNet would take seconds to initialise for real
        vae = build_vae(config)
        unet = build_unet(config, CONTEXT)
    assert unet.config.in_channels == unet.config.out_channels == 3
    assert tuple(unet.config.block_out_channels) == config.unet.block_out_channels
    assert unet.config.cross_attention_dim == CONTEXT
    # Shapes through the real modules on the meta device: image -> latent / 4 with 3 channels -> image.
    with torch.no_grad():
        image = torch.empty(1, 3, config.image_size, config.image_size, device="meta")
        latent = vae.encode(image).latents
        assert tuple(latent.shape) == (1, 3, config.latent_size, config.latent_size)
        eps = unet(
            latent,
            torch.tensor(10, device="meta"),
            encoder_hidden_states=torch.empty(1, 7, CONTEXT, device="meta"),
            class_labels=_pooled(unet),
        ).sample
        assert eps.shape == latent.shape


def _pooled(unet):
    """The pooled caption a UNet with a caption-embedding path (config demo) also takes; None for the others."""
    return torch.empty(1, CONTEXT, device="meta") if uses_caption_embedding(unet) else None


@pytest.mark.parametrize("name,multiple", [("tiny", 8), ("demo", 32), ("pathldm", 32)])
def test_size_multiple_is_the_smallest_side_that_reaches_the_unets_coarsest_level(name, multiple):
    config = get_config(name)
    assert config.size_multiple == multiple
    with init_empty_weights():
        vae = build_vae(config)
        unet = build_unet(config, CONTEXT)
    coarsest = []
    unet.mid_block.register_forward_hook(lambda _m, _i, out: coarsest.append(tuple(out.shape[-2:])))
    with torch.no_grad():
        latent = vae.encode(torch.empty(1, 3, multiple, multiple, device="meta")).latents
        eps = unet(
            latent,
            torch.tensor(10, device="meta"),
            encoder_hidden_states=torch.empty(1, 7, CONTEXT, device="meta"),
            class_labels=_pooled(unet),
        ).sample
    assert coarsest == [(1, 1)] and eps.shape == latent.shape


def test_reference_sizes():
    ref = get_config("pathldm")
    assert ref.unet.block_out_channels == (192, 384, 576, 960)
    assert ref.autoencoder.block_out_channels == (128, 256, 512) and ref.autoencoder.num_vq_embeddings == 8192
    sched = build_noise_scheduler(ref)
    assert sched.config.num_train_timesteps == 1000
    betas = torch.linspace(0.0015**0.5, 0.0195**0.5, 1000, dtype=torch.float64) ** 2
    torch.testing.assert_close(sched.betas.double(), betas, atol=1e-7, rtol=1e-5)
    ddim = build_sampling_scheduler("ddim", sched.config)
    ddim.set_timesteps(50)
    assert ddim.timesteps[-1].item() == 1 and ddim.timesteps[0].item() == 981
    with pytest.raises(ValueError, match="unknown scheduler"):
        build_sampling_scheduler("euler", sched.config)
    with pytest.raises(ValueError, match="unknown model config 'huge'"):
        get_config("huge")


def test_tiny_latents_are_a_quarter_of_the_image():
    config = get_config("tiny")
    vae = build_vae(config).eval()
    with torch.no_grad():
        latent = vae.encode(torch.zeros(2, 3, 32, 32)).latents
        assert latent.shape == (2, 3, 8, 8)
        assert vae.decode(latent).sample.shape == (2, 3, 32, 32)


@pytest.fixture()
def tiny_checkpoint(tmp_path):
    model = build_tiny_model(context_dim=CONTEXT, data_fingerprint="abc")
    path = save_model(tmp_path / "ckpt", model, extra={"note": "test"})
    return model, path


def test_save_load_round_trip_gives_identical_outputs(tiny_checkpoint):
    model, path = tiny_checkpoint
    loaded = load_model(path)
    assert loaded.config == model.config and loaded.context_dim == CONTEXT and loaded.text_encoder == "minilm"
    assert loaded.data_fingerprint == "abc" and loaded.fingerprint and loaded.extra["note"] == "test"
    x = torch.randn(2, 3, 8, 8)
    ctx = torch.randn(2, 5, CONTEXT)
    with torch.no_grad():
        model.unet.eval()
        model.vae.eval()
        assert torch.equal(
            model.unet(x, 500, encoder_hidden_states=ctx).sample, loaded.unet(x, 500, encoder_hidden_states=ctx).sample
        )
        assert torch.equal(model.vae.decode(x).sample, loaded.vae.decode(x).sample)
    assert loaded.noise_scheduler.config.num_train_timesteps == 1000


def test_missing_and_foreign_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        load_model(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="renal_ldm.json is missing"):
        load_model(tmp_path / "empty")


def test_partial_directory_names_the_missing_file(tiny_checkpoint):
    _, path = tiny_checkpoint
    (path / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing unet/diffusion_pytorch_model.safetensors"):
        load_model(path)


def test_mismatched_config_names_the_differing_shapes(tiny_checkpoint):
    _, path = tiny_checkpoint
    manifest = json.loads((path / "renal_ldm.json").read_text())
    manifest["config"]["autoencoder"]["latent_channels"] = 4
    (path / "renal_ldm.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError) as err:
        load_model(path)
    message = str(err.value)
    assert "vae weights" in message and "shapes differ" in message
    assert "checkpoint (3," in message and "config (4," in message


def test_autoencoder_only_checkpoint_is_refused_where_a_unet_is_needed(tiny_checkpoint, tmp_path):
    model, _ = tiny_checkpoint
    ae_dir = save_model(tmp_path / "ae", LatentDiffusionModel(config=model.config, vae=model.vae))
    assert not (ae_dir / "unet").exists()
    with pytest.raises(ValueError, match="'autoencoder' checkpoint .*no denoising UNet"):
        load_model(ae_dir)
    ae = load_model(ae_dir, require_unet=False)
    assert ae.unet is None and ae.vae is not None


def test_save_replaces_atomically(tiny_checkpoint):
    model, path = tiny_checkpoint
    save_model(path, model, extra={"note": "second"})
    assert load_model(path).extra["note"] == "second"
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    shutil.rmtree(path)
