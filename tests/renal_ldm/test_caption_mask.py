"""The caption token mask (unet.caption_mask): cross-attention sees a caption's words and never its padding, in
training and in every sampling path; models without it, and the LDM export, are unchanged or refused by name."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from renal_ldm.captions import GENERATING_CAPTION
from renal_ldm.cli import main as cli_main
from renal_ldm.data.patches import PatchDataset
from renal_ldm.models.caption_inputs import caption_inputs
from renal_ldm.models.checkpoint import load_model
from renal_ldm.models.configs import LDMTrainSettings, ModelConfig
from renal_ldm.models.ldm_format import LDMFormatError, check_ldm_expressible
from renal_ldm.sample import Sampler, SampleRequest
from renal_ldm.text import MINILM_MAX_TOKENS, get_text_encoder
from renal_ldm.training import train_ldm

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _settings(**kw) -> LDMTrainSettings:
    base = dict(max_steps=2, batch_size=2, checkpoint_every=0, progress=False, flip=False, warmup_steps=0)
    return LDMTrainSettings(**{**base, **kw})


def _masked(model, on: bool = True):
    model.config = dataclasses.replace(model.config, unet=dataclasses.replace(model.config.unet, caption_mask=on))
    return model


def _request(**kw) -> SampleRequest:
    base = dict(caption="There is a lot of Glomeruli visible in the image.", n=1, seed=5, steps=4, guidance=3.0)
    base.update(kw)
    return SampleRequest(**base)


def test_minilm_token_mask_marks_the_words_and_not_the_padding():
    encoder = get_text_encoder("minilm")
    caption = "a lot of Glomeruli"
    words = len(encoder.tokenizer(caption)["input_ids"])  # with [CLS] and [SEP]
    mask = encoder.token_mask([caption, ""])
    assert mask.shape == (2, MINILM_MAX_TOKENS)
    assert mask[0].tolist() == [1.0] * words + [0.0] * (MINILM_MAX_TOKENS - words)
    assert mask[1].sum().item() == 2  # the empty caption: [CLS] [SEP]


def test_a_masked_model_ignores_the_padding_states(tiny_model_dir, monkeypatch):
    """Garbage in the padding positions of the caption states changes nothing with the mask, and changes the
    image without it (so the check can fail)."""
    encoder = get_text_encoder("minilm")
    real_encode = encoder.encode

    def noisy_padding(captions):
        states = real_encode(captions).clone()
        pad = encoder.token_mask(captions) == 0
        states[pad] = torch.randn(int(pad.sum()), states.shape[-1], generator=torch.Generator().manual_seed(0)) * 5
        return states

    images = {}
    for on in (True, False):
        sampler = Sampler(_masked(load_model(tiny_model_dir), on), device="cpu")
        clean = sampler.sample(_request())[0].array
        monkeypatch.setattr(encoder, "encode", noisy_padding)
        images[on] = clean, sampler.sample(_request())[0].array
        monkeypatch.setattr(encoder, "encode", real_encode)
    np.testing.assert_array_equal(*images[True])
    assert np.abs(images[False][0].astype(int) - images[False][1].astype(int)).max() > 0


@pytest.mark.parametrize("size", [32, 96])  # whole latent, and MultiDiffusion windows (> 2x the training size)
def test_masked_sampling_with_the_kv_cache_equals_diffusers_attention(tiny_model_dir, size):
    cached = Sampler(_masked(load_model(tiny_model_dir)), device="cpu")
    stock = Sampler(_masked(load_model(tiny_model_dir)), device="cpu", cache_context=False)
    request = _request(n=2, batch_size=2, size=size)
    for a, b in zip(cached.sample(request), stock.sample(request), strict=True):
        np.testing.assert_array_equal(a.array, b.array)


def test_masked_unet_call_equals_the_words_alone(tiny_model_dir):
    """The mask is exact: attending to the masked 128 tokens is attending to the real tokens only."""
    model = _masked(load_model(tiny_model_dir))
    encoder = get_text_encoder("minilm")
    inputs = caption_inputs(encoder, [GENERATING_CAPTION], model.unet, masked=True)
    words = int(inputs.mask.sum())
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        masked = model.unet(x, 500, **inputs.kwargs()).sample
        trimmed = model.unet(x, 500, encoder_hidden_states=inputs.context[:, :words], class_labels=inputs.pooled)
    torch.testing.assert_close(masked, trimmed.sample, atol=1e-5, rtol=1e-5)


def test_training_with_caption_mask_feeds_the_mask_and_records_it(tiny_vae_dir, four_phantoms, tmp_path, monkeypatch):
    import renal_ldm.training.ldm as ldm

    real = ldm.diffusion_loss
    seen = []

    def recording(unet, noisy, timesteps, inputs, *args, **kwargs):
        seen.append(inputs.mask)
        return real(unet, noisy, timesteps, inputs, *args, **kwargs)

    data = PatchDataset(four_phantoms, flips=False)
    base = train_ldm(data, tmp_path / "base", vae=tiny_vae_dir, settings=_settings(), log=print)
    assert load_model(base.model_dir).config.unet.caption_mask is False
    assert real is ldm.diffusion_loss
    monkeypatch.setattr(ldm, "diffusion_loss", recording)
    tuned = train_ldm(
        data,
        tmp_path / "tuned",
        init_from=base.model_dir,
        settings=_settings(caption_mask=True),
        log=print,
    )
    assert load_model(tuned.model_dir).config.unet.caption_mask is True
    assert len(seen) == 2 and all(m is not None and m.shape == (2, MINILM_MAX_TOKENS) for m in seen)
    counts = torch.cat(seen).sum(dim=1)
    assert ((counts >= 2) & (counts < MINILM_MAX_TOKENS)).all()  # words kept, padding masked


def test_train_command_takes_caption_mask(tiny_vae_dir, four_phantoms, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--data", str(four_phantoms), "--vae", str(tiny_vae_dir), "--out", str(out), "--max-steps", "1"]
    assert cli_main([*argv, "--batch-size", "2", "--caption-mask", "--no-progress"]) == 0
    assert load_model(out / "model").config.unet.caption_mask is True


def test_manifests_from_before_the_mask_load_unmasked():
    old = {"name": "tiny", "image_size": 32, "unet": {"base_channels": 32, "caption_embedding": True}}
    assert ModelConfig.from_dict(old).unet.caption_mask is False


def test_ldm_export_refuses_a_masked_model_by_name(tiny_model_dir):
    model = load_model(tiny_model_dir)
    unet = dataclasses.replace(model.config.unet, caption_embedding=False, caption_mask=True)
    with pytest.raises(LDMFormatError, match="caption_mask"):
        check_ldm_expressible(dataclasses.replace(model.config, unet=unet))
