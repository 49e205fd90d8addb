"""`renal-ldm tune-decoder`: a better decoder without touching the latents a UNet was trained on. The encoder,
codebook and UNet come out bit-identical, the decoder reconstructs better, the checkpoint keeps its kind and
sampling defaults, and bad input is refused by name with nothing written."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import build_tiny_autoencoder_checkpoint

from renal_ldm.cli import main as cli_main
from renal_ldm.data.patches import PatchDataset, split_dataset
from renal_ldm.models.checkpoint import MANIFEST, load_model
from renal_ldm.models.configs import AutoencoderTrainSettings
from renal_ldm.phantom import generate_dataset
from renal_ldm.sample import Sampler, SampleRequest
from renal_ldm.training.autoencoder import evaluate_reconstruction
from renal_ldm.training.decoder import DECODER_RECORD, tune_decoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("phantoms") / "data", n=12, size=32, seed=0)


@pytest.fixture(scope="module")
def split(phantoms):
    return split_dataset(PatchDataset(phantoms, flips=False), 0.25, seed=0)


def _settings(**kw) -> AutoencoderTrainSettings:
    return AutoencoderTrainSettings(**{**dict(max_steps=40, batch_size=4, lr=1e-3, progress=False), **kw})


def _state(module, decoder: bool) -> dict[str, torch.Tensor]:
    keep = lambda k: k.startswith(("decoder.", "post_quant_conv.")) == decoder  # noqa: E731
    return {k: v for k, v in module.state_dict().items() if keep(k)}


def test_tuned_decoder_reconstructs_better_and_leaves_latents_and_unet_alone(tiny_model_dir, split, tmp_path):
    train, held_out = split
    result = tune_decoder(tiny_model_dir, train, held_out, tmp_path / "tuned", settings=_settings(), log=print)
    before, after = load_model(tiny_model_dir), load_model(result.model_dir)

    assert result.psnr > result.psnr_before + 1.0, (result.psnr_before, result.psnr)
    assert evaluate_reconstruction(after.vae, held_out)["psnr"] == pytest.approx(result.psnr, abs=1e-4)
    for key, value in _state(before.vae, decoder=False).items():  # encoder, quant_conv, codebook
        assert torch.equal(value, after.vae.state_dict()[key]), key
    assert any(not torch.equal(v, after.vae.state_dict()[k]) for k, v in _state(before.vae, decoder=True).items())
    for key, value in before.unet.state_dict().items():
        assert torch.equal(value, after.unet.state_dict()[key]), key
    assert after.config == before.config
    assert after.recommended_guidance == before.recommended_guidance
    record = after.extra[DECODER_RECORD]
    assert record["from_fingerprint"] == before.fingerprint
    assert record["held_out_psnr"] == pytest.approx(result.psnr)
    assert record["held_out_psnr_before"] == pytest.approx(result.psnr_before)

    request = SampleRequest(caption="There is a lot of Glomeruli visible in the image.", n=1, seed=2, steps=3)
    assert Sampler(after, "cpu").sample(request)[0].array.shape == (32, 32, 3)


def test_an_autoencoder_checkpoint_stays_an_autoencoder(split, tmp_path):
    train, held_out = split
    source = build_tiny_autoencoder_checkpoint(tmp_path / "vae")
    result = tune_decoder(source, train, held_out, tmp_path / "tuned", settings=_settings(max_steps=2), log=print)
    manifest = json.loads((result.model_dir / MANIFEST).read_text())
    assert manifest["kind"] == "autoencoder"
    assert load_model(result.model_dir, require_unet=False).unet is None


def test_command_tunes_and_reports_the_psnr(tiny_model_dir, phantoms, tmp_path, capsys):
    out = tmp_path / "tuned"
    argv = ["tune-decoder", "--model", str(tiny_model_dir), "--data", str(phantoms), "--out", str(out)]
    assert cli_main([*argv, "--max-steps", "2", "--batch-size", "4", "--no-progress"]) == 0
    assert "held-out PSNR:" in capsys.readouterr().out
    assert load_model(out).extra[DECODER_RECORD]["steps"] == 2
    assert (out / "decoder_metrics.jsonl").read_text().count("\n") == 2


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "missing-model"),
        ("same", "is the checkpoint being tuned"),
        ("exists", "already holds a checkpoint"),
    ],
)
def test_command_refuses_bad_targets_by_name_and_writes_nothing(
    case, expected, tiny_model_dir, phantoms, tmp_path, capsys
):
    model, out = str(tiny_model_dir), tmp_path / "tuned"
    if case == "missing":
        model = str(tmp_path / "missing-model")
    elif case == "same":
        out = tiny_model_dir
    else:
        out.mkdir()
        (out / MANIFEST).write_text("{}")
    before = sorted(p.name for p in tiny_model_dir.iterdir())
    argv = ["tune-decoder", "--model", model, "--data", str(phantoms), "--out", str(out), "--max-steps", "1"]
    assert cli_main([*argv, "--no-progress"]) == 2
    assert expected in capsys.readouterr().err
    assert sorted(p.name for p in tiny_model_dir.iterdir()) == before
    if case == "exists":
        assert (out / MANIFEST).read_text() == "{}"
