"""The demo-model-v2 training levers: latent scaling, min-SNR weighting, the pooled caption path, the recommended
guidance in the manifest, and the up-front latent cache. Tiny configs on the CPU."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from test_train import CAPTIONS, TinyTissue
from tiny_models import build_tiny_autoencoder_checkpoint

from renal_ldm.models.build import build_unet, uses_caption_embedding
from renal_ldm.models.checkpoint import load_model
from renal_ldm.models.configs import LDMTrainSettings, UNetConfig, get_config
from renal_ldm.models.manifest import MANIFEST, recommended_guidance
from renal_ldm.sample import DEFAULT_GUIDANCE, Sampler, SampleRequest
from renal_ldm.text import get_text_encoder
from renal_ldm.training import train_ldm
from renal_ldm.training.ldm import LatentCache, diffusion_target, measure_latent_std, snr_loss_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    return build_tiny_autoencoder_checkpoint(tmp_path_factory.mktemp("vae") / "vae")


def _tiny_with_caption_embedding():
    tiny = get_config("tiny")
    return dataclasses.replace(tiny, unet=dataclasses.replace(tiny.unet, caption_embedding=True))


def _settings(**kw) -> LDMTrainSettings:
    base = dict(max_steps=4, batch_size=2, checkpoint_every=0, progress=False, seed=3, warmup_steps=1)
    base.update(kw)
    return LDMTrainSettings(**base)


def test_snr_loss_weights_cap_the_low_noise_steps_and_leave_the_noisy_ones():
    alphas = torch.tensor([0.999, 0.9, 0.5, 0.01])  # SNR 999, 9, 1, ~0.01
    weights = snr_loss_weights(alphas, gamma=5.0)
    assert weights[0] == pytest.approx(5.0 / 999.0, rel=1e-4)
    assert weights[1] == pytest.approx(5.0 / 9.0, rel=1e-4)
    assert weights[2:].tolist() == pytest.approx([1.0, 1.0])


def test_v_target_is_diffusers_velocity_and_its_min_snr_weight_is_over_snr_plus_one():
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.0195)
    latents, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    t = torch.tensor([0, 250, 600, 999])
    a = scheduler.alphas_cumprod[t].view(4, 1, 1, 1)
    assert torch.allclose(
        diffusion_target("v_prediction", latents, noise, a), scheduler.get_velocity(latents, noise, t), atol=1e-6
    )
    assert diffusion_target("epsilon", latents, noise, a) is noise
    with pytest.raises(ValueError, match="v_prediction"):
        diffusion_target("x0", latents, noise, a)
    alphas = torch.tensor([0.9, 0.01])  # SNR 9, ~0.0101
    snr = alphas / (1 - alphas)
    assert snr_loss_weights(alphas, 5.0, "v_prediction").tolist() == pytest.approx(
        (torch.minimum(snr, torch.tensor(5.0)) / (snr + 1)).tolist()
    )


def test_an_snr_floor_keeps_the_high_noise_weight_where_min_snr_drops_it():
    alphas = torch.tensor([0.999, 0.9, 0.5, 0.01])  # SNR 999, 9, 1, ~0.0101
    snr = alphas / (1 - alphas)
    truncated = snr_loss_weights(alphas, 5.0, "v_prediction", floor=1.0)
    assert truncated.tolist() == pytest.approx((snr.clamp(1.0, 5.0) / (snr + 1)).tolist())
    assert truncated[3] == pytest.approx(1 / 1.0101, rel=1e-3)  # min-SNR alone: 0.0101 / 1.0101
    assert snr_loss_weights(alphas, 5.0, "v_prediction")[3] == pytest.approx(0.0101 / 1.0101, rel=1e-3)
    no_cap = snr_loss_weights(alphas, None, "v_prediction", floor=1.0)  # truncated SNR alone: max(SNR, 1)
    assert no_cap[0] == pytest.approx(999 / 1000, rel=1e-4)


@pytest.mark.parametrize(
    ("floor", "gamma", "expected"),
    [(0.0, None, "SNR floor must be a finite number > 0; got 0.0"), (6.0, 5.0, "SNR floor 6.0 is above")],
)
def test_a_bad_snr_floor_is_refused_before_training(vae_dir, tmp_path, floor, gamma, expected):
    with pytest.raises(ValueError, match=expected):
        train_ldm(
            TinyTissue(),
            tmp_path / "run",
            vae=vae_dir,
            settings=_settings(snr_floor=floor, snr_gamma=gamma),
            log=lambda m: None,
        )
    assert not (tmp_path / "run").exists()


def test_a_run_with_an_snr_floor_trains_and_records_it(vae_dir, tmp_path):
    settings = _settings(prediction="v_prediction", snr_gamma=5.0, snr_floor=1.0)
    result = train_ldm(TinyTissue(), tmp_path / "run", vae=vae_dir, settings=settings, log=lambda m: None)
    model = load_model(result.model_dir)
    assert model.extra["settings"]["snr_floor"] == 1.0 and model.extra["settings"]["snr_gamma"] == 5.0


def test_a_v_prediction_run_records_it_samples_with_it_and_keeps_it(vae_dir, tiny_model_dir, tmp_path):
    """--prediction v_prediction: the model's config and its samplers' schedules say v; a resume without the flag
    keeps v; starting from an epsilon model's weights with v is refused."""
    run = tmp_path / "run"
    data = TinyTissue(flips=False)
    train_ldm(data, run, vae=vae_dir, settings=_settings(prediction="v_prediction"), log=lambda m: None)
    model = load_model(run / "model")
    assert model.config.noise.prediction_type == "v_prediction"
    assert model.noise_scheduler.config.prediction_type == "v_prediction"
    image = Sampler(model, device="cpu").sample(SampleRequest(caption=CAPTIONS[1], n=1, steps=3))[0].array
    assert image.shape == (32, 32, 3) and image.std() > 0
    resumed = train_ldm(data, run, settings=_settings(max_steps=6), resume=True, log=lambda m: None)
    assert resumed.step == 6 and load_model(run / "model").config.noise.prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="init-from model's epsilon"):
        train_ldm(
            data,
            tmp_path / "from-eps",
            init_from=tiny_model_dir,
            settings=_settings(prediction="v_prediction"),
            log=lambda m: None,
        )
    with pytest.raises(ValueError, match="prediction must be one of"):
        train_ldm(data, tmp_path / "bad", vae=vae_dir, settings=_settings(prediction="x0"), log=lambda m: None)


def test_scale_latents_records_one_over_the_measured_std_and_resume_keeps_it(vae_dir, tmp_path):
    vae = load_model(vae_dir, require_unet=False)
    std = measure_latent_std(vae.vae, TinyTissue(flips=False))
    run = tmp_path / "run"
    data = TinyTissue(flips=False)
    train_ldm(data, run, vae=vae_dir, settings=_settings(scale_latents=True), log=lambda m: None)
    model = load_model(run / "model")
    assert model.config.autoencoder.scaling_factor == pytest.approx(1.0 / std, rel=1e-3)
    assert model.config.autoencoder.scaling_factor != 1.0
    vae_config = json.loads((run / "model" / "vae" / "config.json").read_text())
    assert vae_config["scaling_factor"] == model.config.autoencoder.scaling_factor  # diffusers readers agree
    resumed = train_ldm(data, run, settings=_settings(scale_latents=True, max_steps=6), resume=True, log=lambda m: None)
    assert resumed.step == 6
    assert load_model(run / "model").config.autoencoder.scaling_factor == model.config.autoencoder.scaling_factor


def test_the_pooled_caption_reaches_a_unet_with_a_caption_embedding():
    config = _tiny_with_caption_embedding()
    encoder = get_text_encoder("minilm")
    torch.manual_seed(0)
    unet = build_unet(config, encoder.dim).eval()
    assert uses_caption_embedding(unet)
    assert not uses_caption_embedding(build_unet(get_config("tiny"), encoder.dim))  # the reference layout
    x = torch.randn(1, 3, 8, 8)
    states = encoder.encode([CAPTIONS[0]])
    with torch.no_grad():
        a = unet(x, 500, encoder_hidden_states=states, class_labels=encoder.pool([CAPTIONS[1]])).sample
        b = unet(x, 500, encoder_hidden_states=states, class_labels=encoder.pool([CAPTIONS[2]])).sample
    assert not torch.allclose(a, b)  # same cross-attention states: only the pooled path differs


def test_minilm_pooling_ignores_padding_and_is_normalised():
    encoder = get_text_encoder("minilm")
    alone = encoder._pool_batch([CAPTIONS[1]])
    beside_a_longer_one = encoder._pool_batch([CAPTIONS[1], CAPTIONS[0]])[:1]
    torch.testing.assert_close(alone, beside_a_longer_one, atol=1e-5, rtol=1e-4)
    assert encoder.pool([CAPTIONS[0]]).norm(dim=-1).item() == pytest.approx(1.0, abs=1e-5)
    similarity = torch.nn.functional.cosine_similarity(encoder.pool([CAPTIONS[1]]), encoder.pool([CAPTIONS[2]]))
    assert similarity.item() < 0.999


def test_a_model_trained_with_a_caption_embedding_samples_and_follows_the_recommended_guidance(vae_dir, tmp_path):
    run = tmp_path / "run"
    result = train_ldm(
        TinyTissue(),
        run,
        vae=vae_dir,
        config=_tiny_with_caption_embedding(),
        settings=_settings(snr_gamma=5.0, guidance=3.5),
        log=lambda m: None,
    )
    model = load_model(result.model_dir)
    assert uses_caption_embedding(model.unet) and model.recommended_guidance == 3.5
    assert recommended_guidance(json.loads((result.model_dir / MANIFEST).read_text())) == 3.5
    request = SampleRequest(caption=CAPTIONS[1], n=1, steps=3)
    assert request.validated(model).guidance == 3.5  # no guidance asked for: the model's
    assert SampleRequest(caption=CAPTIONS[1], guidance=0.5).validated(model).guidance == 0.5
    sampler = Sampler(model, device="cpu")
    low, high = (sampler.sample(SampleRequest(caption=c, n=1, steps=3))[0].array for c in CAPTIONS[1:])
    assert low.shape == (32, 32, 3) and (low != high).any()


def test_a_model_without_a_recommendation_samples_at_the_reference_guidance(tiny_model_dir):
    model = load_model(tiny_model_dir)
    assert model.recommended_guidance is None
    assert SampleRequest(caption="").validated(model).guidance == DEFAULT_GUIDANCE


@pytest.mark.parametrize("bad", ["high", -1, float("inf")])
def test_a_bad_recommended_guidance_in_a_manifest_is_named(bad):
    with pytest.raises(ValueError, match="sampling.guidance must be a finite number >= 0"):
        recommended_guidance({"sampling": {"guidance": bad}})


def test_the_prefilled_latent_cache_serves_every_image_and_flip_without_encoding_again(vae_dir):
    vae = load_model(vae_dir, require_unet=False).vae
    data = TinyTissue(n=3, flips=False)
    cache = LatentCache(vae, 1.0, max_bytes=2**20)
    assert cache.prefill(data, flips=True, batch_size=2) == 12  # 3 images x 4 flips
    images = torch.stack([data[0]["image"].flip(-1), data[2]["image"].flip(-1, -2)])
    latents = cache.encode(images)
    assert cache.misses == 0 and cache.hits == 2
    with torch.no_grad():
        direct = vae.encode(images).latents
    torch.testing.assert_close(latents, direct, atol=1e-4, rtol=1e-3)


def test_the_latent_cache_prefill_stops_at_its_memory_budget(vae_dir):
    vae = load_model(vae_dir, require_unet=False).vae
    one = 3 * 8 * 8 * 4  # bytes of one tiny latent
    cache = LatentCache(vae, 1.0, max_bytes=5 * one)
    assert cache.prefill(TinyTissue(n=3, flips=False), flips=True) == 5
    assert cache.bytes == 5 * one


def test_the_unet_config_keeps_the_reference_layout_by_default():
    assert UNetConfig().caption_embedding is False
    assert get_config("pathldm").unet.caption_embedding is False
    assert get_config("demo").unet.caption_embedding is True


def test_a_finished_run_resumed_at_its_last_step_rewrites_its_model_without_training(vae_dir, tmp_path):
    """How a long run is stopped early: `train --resume --max-steps S` at its last checkpoint step S writes
    RUN/model (the EMA weights) straight away, with no step trained and no latent encoded again."""
    run = tmp_path / "run"
    settings = _settings(max_steps=4, checkpoint_every=2, ema=True, ema_decay=0.9)
    train_ldm(TinyTissue(), run, vae=vae_dir, settings=settings, log=lambda m: None)
    first = load_model(run / "model")
    logs: list[str] = []
    result = train_ldm(TinyTissue(), run, settings=settings, resume=True, log=logs.append)
    assert result.step == 4 and result.losses == []
    assert not any("latent cache" in line for line in logs)
    again = load_model(result.model_dir)
    for a, b in zip(again.unet.parameters(), first.unet.parameters(), strict=True):
        torch.testing.assert_close(a, b)
