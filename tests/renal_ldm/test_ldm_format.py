"""Latent-diffusion checkpoints in and out (renal_ldm.models.ldm_format, ldm_import, ldm_export): each guarantee of
their docstrings, at a tiny width on the CPU.

The models here use LDM's fixed 32 GroupNorm groups (the shared tiny config's 8 groups have no LDM form, which
export must refuse). The exported layout was also checked once against the original code: the exported tensors load
strictly into CompVis/latent-diffusion's UNetModel, Encoder and Decoder and give the same outputs to 1e-5 (a
scratch check; the original code is not a dependency of this repository).
"""

from __future__ import annotations

import dataclasses
import sys
import types

import numpy as np
import pytest
import torch
import yaml
from tiny_models import _spread, write_tiny_plip

from renal_ldm.cli import main
from renal_ldm.models.build import build_noise_scheduler, build_unet, build_vae
from renal_ldm.models.checkpoint import LatentDiffusionModel, load_model, save_model
from renal_ldm.models.configs import MODEL_CONFIGS, AutoencoderConfig, ModelConfig, UNetConfig
from renal_ldm.models.ldm_export import export_ldm
from renal_ldm.models.ldm_format import (
    EMA_PREFIX,
    SCHEDULE_BUFFERS,
    TEXT_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    LDMFormatError,
    ema_name,
    load_source,
    unet_pairs,
    vae_pairs,
)
from renal_ldm.models.ldm_import import TEXT_DIR, import_ldm, import_vae
from renal_ldm.models.manifest import read_manifest
from renal_ldm.sample import Sampler, SampleRequest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LDM_TINY = ModelConfig(
    name="ldm-tiny",
    image_size=32,
    autoencoder=AutoencoderConfig(
        block_out_channels=(32, 32, 64),
        layers_per_block=1,
        num_vq_embeddings=64,
        norm_num_groups=32,
        scaling_factor=0.8,
        mid_block_add_attention=True,  # exercises LDM's 1x1-conv attention that diffusers holds as linear layers
    ),
    unet=UNetConfig(
        base_channels=32,
        channel_mult=(1, 2),
        layers_per_block=1,
        attention_levels=(1,),
        num_attention_heads=2,
        norm_num_groups=32,
    ),
)
CAPTION = "There is a lot of Glomeruli visible in the image."
REQUEST = SampleRequest(caption=CAPTION, n=2, seed=11, steps=3)


def build_model(text_encoder: str, context_dim: int, config: ModelConfig = LDM_TINY, seed: int = 0):
    torch.manual_seed(seed)
    return LatentDiffusionModel(
        config=config,
        vae=_spread(build_vae(config), seed + 1),
        unet=_spread(build_unet(config, context_dim), seed + 2),
        noise_scheduler=build_noise_scheduler(config),
        text_encoder=text_encoder,
        context_dim=context_dim,
    )


@pytest.fixture(scope="module")
def plip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plip") / "plip"
    write_tiny_plip(folder)
    return folder


@pytest.fixture(scope="module")
def plip_model(tmp_path_factory, plip_dir):
    return save_model(tmp_path_factory.mktemp("model") / "plip-model", build_model(f"plip:{plip_dir}", 32))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, plip_model):
    """The PLIP model as an LDM .ckpt and YAML (read-only: tests that change them write copies)."""
    root = tmp_path_factory.mktemp("exported")
    report = export_ldm(plip_model, root / "model.ckpt", root / "model.yaml")
    return report.ckpt, report.config


def load_state(ckpt) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def save_state(state: dict[str, torch.Tensor], path):
    torch.save({"state_dict": state, "global_step": 7}, path)
    return path


def draw(model_dir) -> list[np.ndarray]:
    return [r.array for r in Sampler(load_model(model_dir), device="cpu", exact_batches=True).sample(REQUEST)]


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# Round trips ----------------------------------------------------------------------------------------------------


def test_export_then_import_gives_identical_samples_with_a_plip_text_encoder(plip_model, plip_dir, exported, tmp_path):
    ckpt, config = exported
    payload = torch.load(ckpt, map_location="cpu", weights_only=True)  # plain data: loads without running code
    state = payload["state_dict"]
    assert all(torch.is_tensor(v) for v in state.values())
    assert any(k.startswith(UNET_PREFIX) for k in state) and any(k.startswith(VAE_PREFIX) for k in state)
    assert set(SCHEDULE_BUFFERS) <= set(state)
    assert any(k.startswith(TEXT_PREFIX + "text_model.") for k in state)  # the CLIP text weights travel along
    params = yaml.safe_load(config.read_text())["model"]["params"]
    assert params["cond_stage_config"]["params"] == {"version": str(plip_dir), "max_length": 154}
    assert params["linear_start"] == 0.0015 and params["beta_schedule"] == "linear" and params["scale_factor"] == 0.8

    report = import_ldm(ckpt, config, tmp_path / "back")  # tokenizer from the YAML's local `version` folder
    back = load_model(tmp_path / "back")
    original = load_model(plip_model)
    assert same_weights(back.unet, original.unet) and same_weights(back.vae, original.vae)
    assert dataclasses.replace(back.config, name="x", text_encoder="x") == dataclasses.replace(
        original.config, name="x", text_encoder="x"
    )
    assert back.text_encoder == f"plip:{(tmp_path / 'back' / TEXT_DIR).resolve()}"
    assert (tmp_path / "back" / TEXT_DIR / "vocab.json").read_text() == (plip_dir / "vocab.json").read_text()
    assert report.converted == {"unet": 208, "vae": 153, "text_encoder": 36}
    assert report.skipped == {"noise-schedule buffers, checked against the YAML": len(SCHEDULE_BUFFERS)}
    assert back.extra["step"] == 0 and back.extra["imported_from"]["checkpoint"] == "model.ckpt"

    before, after = draw(plip_model), draw(tmp_path / "back")
    assert not np.array_equal(before[0], before[1])  # two seeds, two images: the comparison below means something
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_round_trip_with_minilm_carries_the_spec_and_the_samples(tmp_path):
    model_dir = save_model(tmp_path / "minilm-model", build_model("minilm", 384, seed=3))
    export_ldm(model_dir, tmp_path / "m.ckpt", tmp_path / "m.yaml")
    stage = yaml.safe_load((tmp_path / "m.yaml").read_text())["model"]["params"]["cond_stage_config"]
    assert stage == {"target": "renal_ldm.text.get_text_encoder", "params": {"spec": "minilm"}}
    import_ldm(tmp_path / "m.ckpt", tmp_path / "m.yaml", tmp_path / "back")
    assert load_model(tmp_path / "back").text_encoder == "minilm"
    for a, b in zip(draw(model_dir), draw(tmp_path / "back"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_safetensors_source_converts_like_the_ckpt(exported, tmp_path):
    from safetensors.torch import save_file

    ckpt, config = exported
    save_file(load_state(ckpt), str(tmp_path / "model.safetensors"))
    import_ldm(ckpt, config, tmp_path / "a")
    import_ldm(tmp_path / "model.safetensors", config, tmp_path / "b")
    a, b = load_model(tmp_path / "a"), load_model(tmp_path / "b")
    assert same_weights(a.unet, b.unet) and same_weights(a.vae, b.vae)


def test_the_ema_copy_is_imported_with_ema_and_reported_without(exported, tmp_path):
    ckpt, config = exported
    state = load_state(ckpt)
    ema = {ema_name(k[len(UNET_PREFIX) :]): v * 0.5 for k, v in state.items() if k.startswith(UNET_PREFIX)}
    state.update(ema)
    state.update({EMA_PREFIX + "decay": torch.tensor(0.9999), EMA_PREFIX + "num_updates": torch.tensor(10)})
    source = save_state(state, tmp_path / "ema.ckpt")

    plain = import_ldm(source, config, tmp_path / "plain")
    assert plain.skipped["the EMA copy of the UNet; --ema imports it instead"] == len(ema)
    assert plain.skipped["EMA counters"] == 2
    with_ema = import_ldm(source, config, tmp_path / "ema", ema=True)
    assert with_ema.skipped["the non-EMA UNet (--ema took the EMA copy)"] == len(ema)
    a, b = load_model(tmp_path / "plain").unet.state_dict(), load_model(tmp_path / "ema").unet.state_dict()
    assert all(torch.equal(b[k], a[k] * 0.5) for k in a)

    with pytest.raises(LDMFormatError, match="holds no EMA weights"):
        import_ldm(ckpt, config, tmp_path / "no-ema", ema=True)
    only_ema = {k: v for k, v in state.items() if not k.startswith(UNET_PREFIX)}
    with pytest.raises(LDMFormatError, match="only the EMA copy of the UNet.*pass --ema"):
        import_ldm(save_state(only_ema, tmp_path / "only-ema.ckpt"), config, tmp_path / "x")


# One clear error each ------------------------------------------------------------------------------------------


def _drop(key):
    return lambda s: s.pop(key)


def _add(key):
    return lambda s: s.__setitem__(key, torch.zeros(3))


def _reshape(key):
    return lambda s: s.__setitem__(key, torch.zeros(4, 32, 1, 1))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_drop(UNET_PREFIX + "out.2.bias"), r"1 tensor missing: model\.diffusion_model\.out\.2\.bias"),
        (_drop(VAE_PREFIX + "quantize.embedding.weight"), r"missing: first_stage_model\.quantize\.embedding\.weight"),
        (_add(UNET_PREFIX + "extra.weight"), r"1 tensor unexpected .*: model\.diffusion_model\.extra\.weight"),
        (_add("some_other_module.weight"), r"unexpected .*: some_other_module\.weight"),
        (
            _reshape(VAE_PREFIX + "quant_conv.weight"),
            r"first_stage_model\.quant_conv\.weight has shape \(4, 32, 1, 1\); the config implies \(3, 3, 1, 1\)",
        ),
    ],
    ids=["missing-unet", "missing-codebook", "extra-unet", "extra-top-level", "wrong-shape"],
)
def test_a_checkpoint_that_differs_from_its_config_is_refused_by_name(exported, tmp_path, change, message):
    ckpt, config = exported
    state = load_state(ckpt)
    change(state)
    with pytest.raises(LDMFormatError, match=message):
        import_ldm(save_state(state, tmp_path / "bad.ckpt"), config, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))  # nothing written


def _set(path: str, value):
    def change(data):
        node = data
        *parents, leaf = path.split(".")
        for name in parents:
            node = node[name]
        if value is KeyError:
            del node[leaf]
        else:
            node[leaf] = value

    return change


def _both(*changes):
    return lambda data: [change(data) for change in changes]


U = "model.params.unet_config.params."
DD = "model.params.first_stage_config.params.ddconfig."


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set(U + "use_scale_shift_norm", True), r"use_scale_shift_norm = True has no equivalent"),
        (_set(U + "resblock_updown", True), r"resblock_updown = True has no equivalent"),
        (_set(U + "use_linear_in_transformer", True), r"use_linear_in_transformer = True has no equivalent"),
        (_set(U + "mystery_option", 3), r"unknown architecture option\(s\) mystery_option"),
        (
            _both(_set(U + "num_head_channels", 16), _set(U + "attention_resolutions", [1, 2])),
            r"16 gives \[2, 4\] heads",
        ),
        (_set(DD + "attn_resolutions", [16]), r"attn_resolutions = \[16\]: attention inside"),
        (_set(DD + "attn_type", "linear"), r"attn_type = 'linear' has no equivalent"),
        (_set("model.params.conditioning_key", "concat"), r"conditioning_key = 'concat'"),
        (_set("model.params.beta_schedule", "sqrt"), r"beta_schedule = 'sqrt' has no equivalent"),
        (_set("model.params.first_stage_config.target", "ldm.models.autoencoder.AutoencoderKL"), "a KL autoencoder"),
        (_set("model.params.linear_end", 0.012), r"betas differs from the config's schedule"),
    ],
    ids=[
        "scale-shift-norm",
        "resblock-updown",
        "linear-transformer",
        "unknown-option",
        "heads-per-level",
        "vae-level-attention",
        "linear-attention",
        "concat-conditioning",
        "sqrt-schedule",
        "kl-first-stage",
        "schedule-differs",
    ],
)
def test_an_architecture_option_without_equivalent_is_refused_by_name(exported, tmp_path, change, message):
    ckpt, config = exported
    data = yaml.safe_load(config.read_text())
    change(data)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(LDMFormatError, match=message):
        import_ldm(ckpt, tmp_path / "bad.yaml", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_without_text_weights_a_text_encoder_is_required(exported, tmp_path, plip_dir):
    ckpt, config = exported
    state = {k: v for k, v in load_state(ckpt).items() if not k.startswith("cond_stage_model.")}
    source = save_state(state, tmp_path / "no-text.ckpt")
    data = yaml.safe_load(config.read_text())
    data["model"]["params"]["cond_stage_config"]["params"]["version"] = "vinid/plip"  # a hub name: not local
    (tmp_path / "hub.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(LDMFormatError, match=r"holds no text encoder weights.*pass --text-encoder plip:DIR"):
        import_ldm(source, tmp_path / "hub.yaml", tmp_path / "out")
    with pytest.raises(LDMFormatError, match=r"minilm is 384 wide, but the UNet's context_dim is 32"):
        import_ldm(source, tmp_path / "hub.yaml", tmp_path / "out", text_encoder="minilm")
    import_ldm(source, tmp_path / "hub.yaml", tmp_path / "out", text_encoder=f"plip:{plip_dir}")
    assert load_model(tmp_path / "out").text_encoder == f"plip:{plip_dir}"


def test_an_existing_output_is_replaced_only_with_force(exported, tmp_path):
    ckpt, config = exported
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="--force"):
        import_ldm(ckpt, config, tmp_path / "out")
    import_ldm(ckpt, config, tmp_path / "out", force=True)
    assert read_manifest(tmp_path / "out")["kind"] == "ldm"


# Safe loading --------------------------------------------------------------------------------------------------


class Arbitrary:
    """An object a checkpoint should never carry."""


class RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("payload", [Arbitrary(), RunsCode()], ids=["object", "reduce"])
def test_a_pickle_that_wants_to_build_objects_is_refused(tmp_path, payload, capsys):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "extra": payload}, path)
    with pytest.raises(LDMFormatError, match=r"not a plain weights checkpoint: unpickling it would import and run"):
        load_source(path)
    assert "this must never run" not in capsys.readouterr().out
    with pytest.raises(LDMFormatError, match="cannot be read as a PyTorch checkpoint"):
        (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint at all")
        load_source(tmp_path / "junk.ckpt")


def test_lightning_callback_classes_used_as_keys_are_read_as_inert_names(tmp_path, monkeypatch):
    """Old Lightning checkpoints key their callback states by class; the class is never imported on load."""
    name = "pytorch_lightning.callbacks.model_checkpoint"
    module = types.ModuleType(name)

    class ModelCheckpoint:
        pass

    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = name, "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint
    for part in ("pytorch_lightning", "pytorch_lightning.callbacks", name):
        monkeypatch.setitem(sys.modules, part, module if part == name else types.ModuleType(part))
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "callbacks": {ModelCheckpoint: {"best": 1.0}}}, path)
    for part in ("pytorch_lightning", "pytorch_lightning.callbacks", name):
        monkeypatch.delitem(sys.modules, part)
    source = load_source(path)
    assert source.keys() == ["w"] and torch.equal(source.take("w"), torch.ones(2))


# Export refusals -----------------------------------------------------------------------------------------------


def test_export_refuses_what_latent_diffusion_cannot_express(tmp_path):
    tiny = MODEL_CONFIGS["tiny"]  # GroupNorm with 8 groups
    with pytest.raises(LDMFormatError, match=r"unet\.norm_num_groups = 8: latent-diffusion fixes GroupNorm at 32"):
        export_ldm(build_model("minilm", 16, tiny), tmp_path / "x.ckpt", tmp_path / "x.yaml")
    pooled = dataclasses.replace(LDM_TINY, unet=dataclasses.replace(LDM_TINY.unet, caption_embedding=True))
    with pytest.raises(LDMFormatError, match=r"unet\.caption_embedding = True .* no equivalent"):
        export_ldm(build_model("minilm", 16, pooled), tmp_path / "x.ckpt", tmp_path / "x.yaml")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", list(MODEL_CONFIGS))
def test_every_shipped_architecture_has_a_complete_name_map(name):
    """Every LDM name pairs with exactly one diffusers name (ldm_format._pairs raises otherwise)."""
    config = MODEL_CONFIGS[name]
    config = dataclasses.replace(config, unet=dataclasses.replace(config.unet, caption_embedding=False))
    with torch.device("meta"):
        unet, vae = build_unet(config, 512), build_vae(config)
    assert len(unet_pairs(config, unet)) == len(unet.state_dict())
    pairs = vae_pairs(config, vae)
    assert len(pairs) == len(vae.state_dict())
    squeezed = {p.ldm for p in pairs if p.squeezed}
    expected = {f"{side}.mid.attn_1.{c}.weight" for side in ("encoder", "decoder") for c in ("q", "k", "v", "proj_out")}
    assert squeezed == (expected if config.autoencoder.mid_block_add_attention else set())


@pytest.mark.parametrize(
    ("schedule", "prediction"),
    [("scaled_linear", "epsilon"), ("linear", "sample"), ("squaredcos_cap_v2", "v_prediction")],
)
def test_each_mapped_schedule_is_the_same_betas_on_both_sides(schedule, prediction, tmp_path):
    """LDM's make_beta_schedule (ldm_betas) and diffusers' DDPMScheduler agree for every mapped schedule, and the
    schedule and parameterization survive a round trip."""
    from diffusers import DDPMScheduler

    from renal_ldm.models.ldm_format import ldm_betas

    noise = dataclasses.replace(LDM_TINY.noise, beta_schedule=schedule, prediction_type=prediction)
    diffusers_betas = DDPMScheduler(
        num_train_timesteps=noise.num_train_timesteps,
        beta_start=noise.beta_start,
        beta_end=noise.beta_end,
        beta_schedule=schedule,
    ).betas
    np.testing.assert_allclose(ldm_betas(noise), diffusers_betas.double().numpy(), rtol=1e-5, atol=1e-7)
    config = dataclasses.replace(LDM_TINY, noise=noise)
    export_ldm(build_model("minilm", 384, config), tmp_path / "s.ckpt", tmp_path / "s.yaml")
    import_ldm(tmp_path / "s.ckpt", tmp_path / "s.yaml", tmp_path / "back")
    assert load_model(tmp_path / "back").config.noise == noise


# import-vae ----------------------------------------------------------------------------------------------------


def test_import_vae_from_a_full_checkpoint_without_yaml(exported, plip_model, tmp_path):
    ckpt, _ = exported
    report = import_vae(ckpt, None, tmp_path / "vae")
    vae = load_model(tmp_path / "vae", require_unet=False)
    assert read_manifest(tmp_path / "vae")["kind"] == "autoencoder"
    assert same_weights(vae.vae, load_model(plip_model).vae)
    assert vae.config.autoencoder == dataclasses.replace(LDM_TINY.autoencoder, scaling_factor=1.0)
    assert report.skipped["not part of the first stage"] > 200  # the UNet, text weights and schedule


def test_import_vae_from_a_first_stage_checkpoint_with_its_training_losses(exported, plip_model, tmp_path):
    ckpt, config = exported
    stage = {k[len(VAE_PREFIX) :]: v for k, v in load_state(ckpt).items() if k.startswith(VAE_PREFIX)}
    stage["loss.discriminator.main.0.weight"] = torch.zeros(8, 3, 4, 4)
    stage["loss.perceptual_loss.lin0.model.1.weight"] = torch.zeros(1, 64, 1, 1)
    first_stage = yaml.safe_load(config.read_text())["model"]["params"]["first_stage_config"]
    first_stage["target"] = "ldm.models.autoencoder.VQModel"
    (tmp_path / "vq.yaml").write_text(yaml.safe_dump({"model": first_stage}))
    report = import_vae(save_state(stage, tmp_path / "vq.ckpt"), tmp_path / "vq.yaml", tmp_path / "vae")
    assert report.skipped == {"training-only: the autoencoder's loss (discriminator, LPIPS)": 2}
    assert same_weights(load_model(tmp_path / "vae", require_unet=False).vae, load_model(plip_model).vae)
    stage["encoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(LDMFormatError, match=r"unexpected .*: encoder\.extra\.weight"):
        import_vae(save_state(stage, tmp_path / "vq2.ckpt"), tmp_path / "vq.yaml", tmp_path / "vae2")


def test_an_imported_first_stage_trains_an_ldm(exported, tmp_path):
    """`renal-ldm train --vae DIR` takes what import-vae writes (here through train_ldm, with a small UNet)."""
    from renal_ldm.models.configs import LDMTrainSettings
    from renal_ldm.training import train_ldm

    import_vae(exported[0], None, tmp_path / "vae")
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    data = [{"image": image, "caption": CAPTION, "name": f"p{i}"} for i, image in enumerate(images)]
    settings = LDMTrainSettings(max_steps=1, batch_size=2, checkpoint_every=0, warmup_steps=1, progress=False)
    result = train_ldm(
        data,
        tmp_path / "run",
        vae=tmp_path / "vae",
        config=LDM_TINY,
        text_encoder="minilm",
        settings=settings,
        log=lambda m: None,
    )
    trained = load_model(result.model_dir)
    assert same_weights(trained.vae, load_model(tmp_path / "vae", require_unet=False).vae)


# The command line ----------------------------------------------------------------------------------------------


def test_the_commands_report_and_fail_with_one_line(exported, plip_dir, tmp_path, capsys):
    ckpt, config = exported
    data = yaml.safe_load(config.read_text())
    data["model"]["params"]["cond_stage_config"]["params"]["version"] = "vinid/plip"  # the tokenizer: --text-encoder
    (tmp_path / "hub.yaml").write_text(yaml.safe_dump(data))
    args = ["import-ldm", "--ckpt", str(ckpt), "--config", str(tmp_path / "hub.yaml"), "--out", str(tmp_path / "m")]
    assert main([*args, "--text-encoder", f"plip:{plip_dir}"]) == 0
    out = capsys.readouterr().out
    assert f"wrote ldm checkpoint {tmp_path / 'm'}" in out and "unet: 208 tensors" in out
    assert "text_encoder: 36 tensors" in out and "tokenizer" not in out  # weights: the ckpt's; tokenizer: plip_dir
    assert (tmp_path / "m" / TEXT_DIR / "merges.txt").is_file()
    args = ["export-ldm", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "e.ckpt")]
    assert main([*args, "--config", str(tmp_path / "e.yaml")]) == 0
    assert main(["import-vae", "--ckpt", str(tmp_path / "e.ckpt"), "--out", str(tmp_path / "v")]) == 0
    capsys.readouterr()
    assert main(["import-ldm", "--ckpt", str(ckpt), "--config", str(config), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("renal-ldm import-ldm: error:") and "--force" in err[0]
    assert main(["import-ldm", "--ckpt", str(tmp_path / "absent.ckpt"), "--config", str(config), "--out", "x"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
