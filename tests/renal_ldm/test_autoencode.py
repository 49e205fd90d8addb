"""`renal-ldm autoencode`: a data set through a model's autoencoder, same names and masks, and bad input refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from renal_ldm.autoencode import autoencode_dataset
from renal_ldm.cli import main
from renal_ldm.data.layout import read_captions
from renal_ldm.models.checkpoint import load_model
from renal_ldm.phantom import generate_dataset
from renal_ldm.sample import to_uint8
from renal_ldm.training.autoencoder import reconstruct

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_cli(*args: str) -> int:
    return main(["autoencode", *args, "--no-progress"])


@pytest.fixture
def patches(tmp_path):
    return generate_dataset(tmp_path / "data", n=3, size=32, seed=0)


def test_every_image_comes_back_as_the_autoencoder_gives_it_with_its_mask_and_caption(
    tiny_model_dir, patches, tmp_path
):
    import torch

    out = tmp_path / "ae"
    model, data = str(tiny_model_dir), str(patches)
    assert run_cli("--model", model, "--data", data, "--out", str(out), "--batch-size", "2") == 0
    names = sorted(p.name for p in (patches / "images").iterdir())
    assert sorted(p.name for p in (out / "images").iterdir()) == names
    vae = load_model(tiny_model_dir, require_unet=False).vae.eval()
    records = {r["file"]: r for r in read_captions(out / "captions.jsonl")}
    source = {r["file"]: r for r in read_captions(patches / "captions.jsonl")}
    for name in names:
        original = np.array(Image.open(patches / "images" / name).convert("RGB"))
        x = torch.from_numpy(original).permute(2, 0, 1)[None].float() / 127.5 - 1
        expected = to_uint8(reconstruct(vae, x))[0]
        written = np.asarray(Image.open(out / "images" / name))
        assert np.abs(written.astype(int) - expected.astype(int)).max() <= 1  # batched vs alone: rounding
        assert not np.array_equal(written, original)
        assert np.array_equal(
            np.asarray(Image.open(out / "masks" / name)), np.asarray(Image.open(patches / "masks" / name))
        )
        assert records[name]["caption"] == source[name]["caption"]
        mse = np.mean((written / 255.0 - original / 255.0) ** 2)
        assert records[name]["psnr_db"] == pytest.approx(10 * np.log10(1 / mse), abs=0.01)


def test_the_report_gives_the_mean_psnr_and_an_existing_set_is_kept_unless_overwritten(
    tiny_model_dir, patches, tmp_path
):
    out = tmp_path / "ae"
    report = autoencode_dataset(tiny_model_dir, patches, out)
    psnrs = [r["psnr_db"] for r in read_captions(out / "captions.jsonl")]
    assert report.images == 3 and report.psnr_db == pytest.approx(np.mean(psnrs), abs=0.01)
    before = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    with pytest.raises(FileExistsError, match="ae"):
        autoencode_dataset(tiny_model_dir, patches, out)
    assert {p.name: p.read_bytes() for p in (out / "images").iterdir()} == before
    assert autoencode_dataset(tiny_model_dir, patches, out, overwrite=True).images == 3


def test_sizes_the_autoencoder_cannot_take_are_named_before_anything_is_written(
    tiny_model_dir, patches, tmp_path, capsys
):
    image = patches / "images" / "000001.png"
    Image.fromarray(np.asarray(Image.open(image))[:30, :31]).save(image)
    mask = patches / "masks" / "000001.png"
    Image.fromarray(np.asarray(Image.open(mask))[:30, :31]).save(mask)
    out = tmp_path / "ae"
    assert run_cli("--model", str(tiny_model_dir), "--data", str(patches), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "000001.png: 31x30 px" in err and "multiples of" in err
    assert not out.exists()


def test_an_empty_or_missing_data_set_and_a_missing_model_are_named(tiny_model_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    assert run_cli("--model", str(tiny_model_dir), "--data", str(empty), "--out", str(tmp_path / "a")) == 2
    assert f"no images in {empty / 'images'}" in capsys.readouterr().err
    assert run_cli("--model", str(tiny_model_dir), "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "b")) == 2
    assert "data set not found" in capsys.readouterr().err
    data = generate_dataset(tmp_path / "data", n=1, size=32, seed=0)
    assert run_cli("--model", str(tmp_path / "no-model"), "--data", str(data), "--out", str(tmp_path / "c")) == 2
    assert "no-model" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_a_manifest_naming_two_images_of_one_stem_is_refused(tiny_model_dir, patches, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(patches, other)
    manifest = tmp_path / "both.jsonl"
    lines = [
        {"image": str(root / "images" / "000000.png"), "mask": str(root / "masks" / "000000.png")}
        for root in (patches, other)
    ]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(ValueError, match="would both be written as 000000.png"):
        autoencode_dataset(tiny_model_dir, manifest, tmp_path / "ae")
    assert not (tmp_path / "ae").exists()
