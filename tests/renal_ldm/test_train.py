"""Training: overfitting a tiny batch, exact resume, precision policy, NaN stop, and the CLI chain."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from tiny_models import build_tiny_autoencoder_checkpoint
from torch.utils.data import Dataset

from renal_ldm.captions import GENERATING_CAPTION, HEADER
from renal_ldm.cli import main as cli_main
from renal_ldm.models.checkpoint import load_model, read_manifest
from renal_ldm.training import (
    FP16_REFUSED,
    LDMTrainSettings,
    TrainingDiverged,
    check_mixed_precision,
    train_ldm,
)
from renal_ldm.training.common import cpu_has_native_bf16, read_jsonl

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CAPTIONS = [
    GENERATING_CAPTION,
    HEADER + "\nThe image shows a low amount of Tubuli.",
    HEADER + "\nThere is a lot of Arteries visible in the image.",
]


class TinyTissue(Dataset):
    """Smooth random 32 px images; flips drawn from the global torch RNG, like PatchDataset does."""

    def __init__(self, n: int = 6, flips: bool = True) -> None:
        g = torch.Generator().manual_seed(1234)
        coarse = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
        self.images = torch.nn.functional.interpolate(coarse, size=32, mode="bilinear", align_corners=False)
        self.flips = flips

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        image = self.images[i]
        if self.flips and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return {"image": image, "caption": CAPTIONS[i % len(CAPTIONS)], "name": f"p{i}"}


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    return build_tiny_autoencoder_checkpoint(tmp_path_factory.mktemp("vae") / "vae")


def _settings(**kw) -> LDMTrainSettings:
    base = dict(max_steps=6, batch_size=2, checkpoint_every=0, progress=False, seed=11, warmup_steps=3)
    base.update(kw)
    return LDMTrainSettings(**base)


def _losses(run) -> list[float]:
    return [line["loss"] for line in read_jsonl(run / "metrics.jsonl")]


def test_overfits_a_fixed_tiny_batch(vae_dir, tmp_path):
    data = TinyTissue(n=2, flips=False)
    # A learning rate far above the study's 2.5e-5 so that a CPU test sees the loss fall within seconds.
    settings = _settings(max_steps=40, lr=2e-3, warmup_steps=0, caption_dropout=0.0, flip=False)
    result = train_ldm(data, tmp_path / "run", vae=vae_dir, settings=settings, log=lambda m: None)
    losses = result.losses
    first, last = np.mean(losses[:8]), np.mean(losses[-8:])
    assert last < 0.5 * first, (first, last)
    lines = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [line["step"] for line in lines] == list(range(1, 41))
    assert set(lines[0]) >= {"step", "loss", "lr", "samples_per_s"}


def test_resume_continues_exactly_like_an_uninterrupted_run(vae_dir, tmp_path):
    data = TinyTissue()
    straight = tmp_path / "straight"
    train_ldm(data, straight, vae=vae_dir, settings=_settings(ema=True), log=lambda m: None)

    split = tmp_path / "split"
    first = train_ldm(data, split, vae=vae_dir, settings=_settings(max_steps=3, ema=True), log=lambda m: None)
    assert first.step == 3
    with pytest.raises(FileExistsError, match="--resume"):
        train_ldm(data, split, vae=vae_dir, settings=_settings(ema=True), log=lambda m: None)
    with pytest.raises(ValueError, match="seed"):
        train_ldm(data, split, settings=_settings(seed=12, ema=True), resume=True, log=lambda m: None)
    second = train_ldm(data, split, settings=_settings(ema=True), resume=True, log=lambda m: None)
    assert second.resumed_from == 3 and second.step == 6

    a, b = _losses(straight), _losses(split)
    assert len(a) == len(b) == 6
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 1e-6, (a, b)
    lrs = [line["lr"] for line in read_jsonl(split / "metrics.jsonl")]
    assert lrs == [line["lr"] for line in read_jsonl(straight / "metrics.jsonl")]
    # The final (EMA) weights agree too.
    wa = load_file(str(straight / "model" / "unet" / "diffusion_pytorch_model.safetensors"))
    wb = load_file(str(split / "model" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) <= 1e-6

    manifest = read_manifest(split / "model")
    assert manifest["kind"] == "ldm" and manifest["text_encoder"] == "minilm" and manifest["context_dim"] == 384
    assert manifest["extra"]["ema"] is True and manifest["extra"]["step"] == 6
    model = load_model(split / "model")
    assert model.unet is not None and model.config.image_size == 32


def test_init_from_starts_a_new_run_from_a_trained_models_weights(vae_dir, tmp_path):
    data = TinyTissue(flips=False)
    settings = _settings(max_steps=4, lr=2e-3, flip=False, scale_latents=True)
    base = train_ldm(data, tmp_path / "base", vae=vae_dir, settings=settings, log=lambda m: None)
    base_model = load_model(base.model_dir)

    # One step at a tiny learning rate: the new run starts where the base model ended, not from scratch.
    tuned = train_ldm(
        data,
        tmp_path / "tuned",
        init_from=base.model_dir,
        settings=_settings(max_steps=1, lr=1e-9, warmup_steps=0, flip=False),
        log=lambda m: None,
    )
    tuned_model = load_model(tuned.model_dir)
    wa, wb = base_model.unet.state_dict(), tuned_model.unet.state_dict()
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5
    # The latent scale the base UNet learnt on comes along (not re-measured, not reset to 1).
    assert tuned_model.config.autoencoder.scaling_factor == base_model.config.autoencoder.scaling_factor != 1.0
    extra = read_manifest(tuned.model_dir)["extra"]
    assert extra["init_from"] == str(base.model_dir) and extra["init_step"] == 4 and extra["step"] == 1
    assert extra["init_fingerprint"] == base_model.fingerprint
    assert extra["vae_fingerprint"] == read_manifest(base.model_dir)["extra"]["vae_fingerprint"]

    # A resume keeps the lineage; a model of another kind, or an autoencoder beside it, is refused by name.
    train_ldm(
        data,
        tmp_path / "tuned",
        settings=_settings(max_steps=2, lr=1e-9, warmup_steps=0, flip=False),
        resume=True,
        log=lambda m: None,
    )
    assert read_manifest(tmp_path / "tuned" / "model")["extra"]["init_step"] == 4
    with pytest.raises(ValueError, match="omit --vae"):
        train_ldm(data, tmp_path / "x", init_from=base.model_dir, vae=vae_dir, settings=settings, log=print)
    with pytest.raises(ValueError, match="expected a latent diffusion model"):
        train_ldm(data, tmp_path / "y", init_from=vae_dir, settings=settings, log=print)
    with pytest.raises(ValueError, match="text encoder"):
        train_ldm(
            data, tmp_path / "z", init_from=base.model_dir, text_encoder="plip:/nowhere", settings=settings, log=print
        )


def test_fp16_is_refused_with_the_reason(vae_dir, tmp_path):
    with pytest.raises(ValueError) as err:
        train_ldm(TinyTissue(), tmp_path / "run", vae=vae_dir, settings=_settings(mixed_precision="fp16"))
    assert str(err.value) == FP16_REFUSED
    assert "underflow" in FP16_REFUSED and "never trained" in FP16_REFUSED
    assert not (tmp_path / "run").exists()


def test_bf16_is_refused_without_cuda_or_a_native_bf16_cpu(monkeypatch, vae_dir, tmp_path):
    import renal_ldm.training.common as common

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(common, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ValueError, match="bf16 needs a CUDA GPU or a CPU with native bf16"):
        train_ldm(TinyTissue(), tmp_path / "run", vae=vae_dir, settings=_settings(mixed_precision="bf16"))
    assert not (tmp_path / "run").exists()
    assert check_mixed_precision("bf16", cuda_available=True, cpu_bf16=False) == "bf16"
    assert check_mixed_precision("bf16", cuda_available=False, cpu_bf16=True) == "bf16"
    assert check_mixed_precision("no") == "no"
    with pytest.raises(ValueError, match="unknown mixed precision"):
        check_mixed_precision("int8")


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16 (avx512_bf16 or AMX)")
def test_bf16_autocast_trains_on_a_native_bf16_cpu(vae_dir, tmp_path):
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)  # accelerate keeps one precision per process; the other tests use fp32
    try:
        result = _train_bf16(vae_dir, tmp_path)
    finally:
        AcceleratorState._reset_state(True)
    assert all(math.isfinite(loss) for loss in result.losses)
    model = load_model(result.model_dir)
    assert all(p.dtype == torch.float32 for p in model.unet.parameters())  # fp32 master weights, bf16 compute


def _train_bf16(vae_dir, tmp_path):
    return train_ldm(TinyTissue(), tmp_path / "run", vae=vae_dir, settings=_settings(mixed_precision="bf16"))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(monkeypatch, vae_dir, tmp_path):
    import renal_ldm.training.ldm as ldm

    real = ldm.diffusion_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(ldm, "diffusion_loss", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as err:
        train_ldm(TinyTissue(), run, vae=vae_dir, settings=_settings(checkpoint_every=2), log=lambda m: None)
    message = str(err.value)
    assert "loss became nan at step 5" in message
    assert "step 4" in message and "intact" in message
    state = torch.load(run / "checkpoint" / "training_state.pt", weights_only=True)
    assert state["step"] == 4
    kept = load_model(run / "checkpoint" / "model")
    assert all(torch.isfinite(p).all() for p in kept.unet.parameters())
    assert [line["step"] for line in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3, 4]
    assert not (run / "model").exists()

    monkeypatch.setattr(ldm, "diffusion_loss", real)  # the run can go on from the kept checkpoint
    result = train_ldm(TinyTissue(), run, settings=_settings(checkpoint_every=2), resume=True, log=lambda m: None)
    assert result.resumed_from == 4 and result.step == 6
    assert all(math.isfinite(x) for x in _losses(run))


def _write_folder(root, n: int = 6, size: int = 32) -> None:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        coarse = rng.integers(40, 230, size=(4, 4, 3)).astype(np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.BILINEAR)
        image.save(root / "images" / f"{i:03d}.png")
        mask = np.full((size, size), 6, np.uint8)
        mask[: size // 2, : size // (2 + i % 3)] = 4
        mask[size // 2 :, :4] = 3
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{i:03d}.png")


def test_cli_train_vae_then_train_then_sample(tmp_path, capsys):
    data = tmp_path / "data"
    _write_folder(data)
    vae, run, out = tmp_path / "vae", tmp_path / "run", tmp_path / "samples"

    assert (
        cli_main(
            [
                "train-vae",
                "--data",
                str(data),
                "--config",
                "tiny",
                "--out",
                str(vae),
                "--max-steps",
                "3",
                "--batch-size",
                "2",
                "--held-out",
                "0.34",
                "--no-progress",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "held-out PSNR" in captured.out
    manifest = read_manifest(vae)
    assert manifest["kind"] == "autoencoder"
    psnr = manifest["extra"]["held_out_psnr"]
    assert 0 < psnr < 100 and manifest["extra"]["held_out_items"] == 2
    assert manifest["data_fingerprint"]
    assert read_jsonl(vae / "metrics.jsonl")[-1]["held_out_psnr"] == psnr
    with pytest.raises(ValueError, match="a latent diffusion model"):
        load_model(vae)

    assert (
        cli_main(
            [
                "train",
                "--data",
                str(data),
                "--vae",
                str(vae),
                "--out",
                str(run),
                "--max-steps",
                "3",
                "--batch-size",
                "2",
                "--checkpoint-every",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == str(run / "model")
    manifest = read_manifest(run / "model")
    assert manifest["kind"] == "ldm" and manifest["context_dim"] == 384 and manifest["text_encoder"] == "minilm"
    assert manifest["data_fingerprint"] and manifest["config"]["name"] == "tiny"
    assert len(read_jsonl(run / "metrics.jsonl")) == 3

    # Refusals print one clear line and exit 2.
    assert cli_main(["train", "--data", str(data), "--vae", str(vae), "--out", str(run), "--max-steps", "4"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (
        cli_main(
            [
                "train",
                "--data",
                str(data),
                "--vae",
                str(vae),
                "--out",
                str(tmp_path / "r2"),
                "--mixed-precision",
                "fp16",
            ]
        )
        == 2
    )
    assert "underflow" in capsys.readouterr().err

    assert (
        cli_main(
            ["sample", "--model", str(run / "model"), "--n", "2", "--steps", "2", "--out", str(out), "--no-progress"]
        )
        == 0
    )
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2 and Image.open(pngs[0]).size == (32, 32)
    side = json.loads(pngs[0].with_suffix(".json").read_text())
    assert side["caption"] == GENERATING_CAPTION and side["model"] == str(run / "model")
