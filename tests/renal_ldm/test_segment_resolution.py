"""Segmenting at a lower resolution (SegmenterConfig.downsample) and the training augmentations and schedule:
area averaging, windowed upsampling that equals the one-pass result, full-size masks for any (odd) size, validation
Dice at full resolution as `predict` gives it, rotations that keep image and mask aligned, and old configs loading.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from renal_ldm.cli import main
from renal_ldm.data.masks import load_mask
from renal_ldm.data.patches import PatchDataset, read_rgb
from renal_ldm.phantom import generate_dataset, generate_phantom
from renal_ldm.segment import (
    Segmenter,
    SegmenterConfig,
    SegmenterTrainSettings,
    _random_crop,
    blur_jitter,
    dice_score,
    downsample_image,
    downsample_mask,
    learning_rate,
    load_segmenter,
    stain_jitter,
    train_segmenter,
    upsample_window,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------- resampling


def test_downsample_image_is_the_mean_of_each_block_mirrored_at_the_edge():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    small = downsample_image(image, 2)
    assert small.shape == (3, 4, 3) and small.dtype == np.uint8
    assert np.array_equal(small[0, 0], np.rint(image[:2, :2].reshape(4, 3).mean(0)).astype(np.uint8))
    # the last row and column are mirrored: block (2, 3) holds pixel (4, 6) four times
    assert np.array_equal(small[2, 3], image[4, 6])
    assert downsample_image(image, 1) is image


def test_downsample_mask_takes_the_most_frequent_label():
    mask = np.array([[4, 4, 6, 6, 1], [4, 6, 6, 6, 1], [6, 6, 4, 4, 1]], np.uint8)
    assert downsample_mask(mask, 2).tolist() == [[4, 6, 1], [6, 4, 1]]  # a 2-2 tie goes to the lower label


@pytest.mark.parametrize("factor", [2, 3])
@pytest.mark.parametrize("height,width", [(1, 1), (17, 9), (40, 33)])
def test_upsample_window_agrees_with_the_whole_map(factor, height, width):
    h, w = -(-height // factor), -(-width // factor)
    low = torch.randn(2, h, w, generator=torch.Generator().manual_seed(0))
    whole = F.interpolate(low[None], scale_factor=factor, mode="bilinear")[0, :, :height, :width]
    step = 5
    for y0 in range(0, height, step):
        for x0 in range(0, width, step):
            y1, x1 = min(y0 + step, height), min(x0 + step, width)
            torch.testing.assert_close(upsample_window(low, factor, y0, y1, x0, x1), whole[:, y0:y1, x0:x1])


# ------------------------------------------------------------------------------------------- inference


def _segmenter(downsample: int, classes: str = "glomeruli") -> Segmenter:
    torch.manual_seed(0)
    return Segmenter(SegmenterConfig(classes=classes, base_channels=4, depth=2, downsample=downsample))


@pytest.mark.parametrize("shape", [(1, 1), (37, 53), (64, 64), (129, 31)])
def test_a_downsampling_segmenter_returns_full_size_masks(shape):
    seg = _segmenter(2)
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    labels = seg.predict(image)
    assert labels.shape == shape and set(np.unique(labels)) <= {4, 6}
    assert seg.predict_scores(image).shape == (1, *shape)


def test_downsampled_scores_are_the_upsampled_network_output():
    """Shrink, segment the shrunk image whole, upsample the logits bilinearly, crop to the image: by hand here."""
    seg = _segmenter(2, "all")
    image = generate_phantom(size=(75, 61), seed=4).image
    small = downsample_image(image, 2)
    full_resolution = Segmenter(dataclasses.replace(seg.config, downsample=1), seg.net)
    low = torch.from_numpy(full_resolution.predict_scores(small)).log()  # softmax(log softmax(z)) = softmax(z)
    expected = F.interpolate(low[None], scale_factor=2, mode="bilinear")[0, :, :75, :61].softmax(0)
    np.testing.assert_allclose(seg.predict_scores(image), expected.numpy(), atol=1e-5)
    tiled = seg.predict_scores(image, tile=12)  # network tiles of 12 px and windows of 24 image px
    np.testing.assert_allclose(tiled, seg.predict_scores(image, tile=10_000), atol=1e-5)
    assert np.array_equal(seg.predict(image, tile=12), seg.predict(image))


def test_features_see_the_shrunk_image():
    seg = _segmenter(2)
    image = generate_phantom(size=48, seed=2).image
    plain = Segmenter(SegmenterConfig(classes="glomeruli", base_channels=4, depth=2), seg.net)
    np.testing.assert_allclose(seg.features([image]), plain.features([downsample_image(image, 2)]), atol=1e-6)


def test_configs_saved_before_downsample_load_as_full_resolution(tiny_segmenter_dir, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(tiny_segmenter_dir, old)
    manifest = json.loads((old / "segmenter.json").read_text())
    manifest["config"].pop("downsample", None)
    (old / "segmenter.json").write_text(json.dumps(manifest))
    seg = load_segmenter(old)
    assert seg.config.downsample == 1 and seg.config == load_segmenter(tiny_segmenter_dir).config
    with pytest.raises(ValueError, match="downsample"):
        SegmenterConfig(downsample=0)


# -------------------------------------------------------------------------------------------- training


def test_rotations_and_flips_keep_image_and_mask_aligned():
    """The image encodes its mask (channel 0 = 30 x label, channels 1-2 = position), so after any flip and quarter
    turn the window's centre must still show the crop's mask, and the eight symmetries all occur."""
    from renal_ldm.segmentation.config import named_config

    config = named_config("tiny", "all")
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 8, (60, 50)).astype(np.uint8)
    yy, xx = np.mgrid[:60, :50]
    image = np.stack([mask * 30, yy * 4, xx * 5], axis=-1).astype(np.uint8)
    gen = torch.Generator().manual_seed(0)
    pad, out = config.padding_per_side, config.valid_output_size(16)
    seen = set()
    for _ in range(64):
        window, target = _random_crop(image, mask, config, out, gen, flips=True, rotations=True)
        centre = window[pad : pad + out, pad : pad + out]
        assert np.array_equal(centre[..., 0], target * 30)
        corner = (int(centre[0, 0, 1] > centre[-1, -1, 1]), int(centre[0, 0, 2] > centre[-1, -1, 2]))
        transposed = int(centre[0, -1, 1] != centre[0, 0, 1])  # position changes along a row: rows <-> columns
        seen.add((*corner, transposed))
    assert len(seen) == 8


def test_stain_jitter_is_mild_seeded_and_off_at_zero():
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    assert stain_jitter(x, 0.0, torch.Generator()) is x
    a = stain_jitter(x, 0.1, torch.Generator().manual_seed(1))
    b = stain_jitter(x, 0.1, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape
    assert a.min() >= -1 and a.max() <= 1
    assert 0 < (a - x).abs().mean() < 0.2
    with pytest.raises(ValueError, match="stain_jitter"):
        SegmenterTrainSettings(stain_jitter=1.5)


def test_blur_jitter_softens_about_half_of_the_images_seeded_and_is_off_at_zero():
    """Blurred images lose edge contrast but keep their mean; the rest come back unchanged."""

    def edges(image: torch.Tensor) -> float:
        return float(
            (image[..., 1:, :] - image[..., :-1, :]).abs().mean() + (image[..., 1:] - image[..., :-1]).abs().mean()
        )

    x = (torch.rand(1, 1, 48, 48) > 0.5).float().expand(16, 3, 48, 48) * 2 - 1  # sharp black/white speckle
    assert blur_jitter(x, 0.0, torch.Generator()) is x
    a = blur_jitter(x, 1.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, blur_jitter(x, 1.5, torch.Generator().manual_seed(3))) and a.shape == x.shape
    changed = [i for i in range(16) if not torch.equal(a[i], x[i])]
    assert 3 <= len(changed) <= 13
    for i in changed:  # a sigma drawn near 0 changes an image by rounding only
        assert edges(a[i]) <= edges(x[i]) + 1e-6 and abs(float(a[i].mean() - x[i].mean())) < 0.05
    assert sum(edges(a[i]) < 0.9 * edges(x[i]) for i in changed) >= 3
    with pytest.raises(ValueError, match="blur must be a sigma in px from 0 \\(off\\) to 4.0"):
        SegmenterTrainSettings(blur=5.0)


def test_cosine_schedule_decays_from_lr_to_zero():
    settings = SegmenterTrainSettings(lr=1e-3, lr_schedule="cosine")
    assert learning_rate(settings, 0, 100) == pytest.approx(1e-3)
    assert learning_rate(settings, 50, 100) == pytest.approx(5e-4)
    assert learning_rate(settings, 100, 100) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(SegmenterTrainSettings(lr=1e-3), 77, 100) == 1e-3
    assert math.isclose(learning_rate(settings, 25, 100), 1e-3 * (1 + math.cos(math.pi / 4)) / 2)
    with pytest.raises(ValueError, match="lr_schedule"):
        SegmenterTrainSettings(lr_schedule="step")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg-res") / "data"
    generate_dataset(root, n=5, size=45, seed=11, composition={"Glomeruli": 0.35, "Tubuli": 0.2})
    return root


def _settings(**kw) -> SegmenterTrainSettings:
    base = dict(epochs=3, batch_size=2, lr=3e-3, crop=12, crops_per_image=2, patience=10, progress=False)
    base.update(rotations=True, stain_jitter=0.1, lr_schedule="cosine")
    return SegmenterTrainSettings(**{**base, **kw})


def test_validation_dice_is_measured_at_full_resolution_as_predict_gives_it(phantoms, tmp_path):
    data = PatchDataset(phantoms, return_mask=True, flips=False)
    train, val = torch.utils.data.Subset(data, [0, 1, 2]), torch.utils.data.Subset(data, [3, 4])
    config = SegmenterConfig(classes="glomeruli", base_channels=4, depth=2, downsample=2)
    result = train_segmenter(train, val, tmp_path / "run", config=config, settings=_settings(), log=lambda m: None)
    seg = load_segmenter(tmp_path / "run")
    assert seg.config.downsample == 2
    records = [data.records[i] for i in (3, 4)]
    predicted = [seg.predict(read_rgb(r.image)) for r in records]
    assert predicted[0].shape == (45, 45)
    saved = result.history[result.best_epoch - 1].val_dice
    assert dice_score(predicted, [load_mask(r.mask) for r in records], "glomeruli") == pytest.approx(saved)


def test_resume_is_exact_with_rotations_jitter_and_cosine(phantoms, tmp_path, monkeypatch):
    """A run interrupted after epoch 2 of 3 and resumed is the straight run (same schedule, crops and jitter)."""
    data = PatchDataset(phantoms, return_mask=True, flips=False)
    train, val = torch.utils.data.Subset(data, [0, 1, 2]), torch.utils.data.Subset(data, [3, 4])
    config = SegmenterConfig(classes="glomeruli", base_channels=4, depth=2, downsample=2)
    straight = train_segmenter(train, val, tmp_path / "a", config=config, settings=_settings(), log=lambda m: None)
    from renal_ldm import segment

    calls, evaluate = [], segment._evaluate

    def interrupted_in_epoch_3(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return evaluate(*args, **kw)

    with monkeypatch.context() as patch:
        patch.setattr(segment, "_evaluate", interrupted_in_epoch_3)
        with pytest.raises(KeyboardInterrupt):
            train_segmenter(train, val, tmp_path / "b", config=config, settings=_settings(), log=lambda m: None)
    resumed = train_segmenter(
        train, val, tmp_path / "b", config=config, settings=_settings(resume=True), log=lambda m: None
    )
    assert [h.to_dict() for h in resumed.history] == [h.to_dict() for h in straight.history]


def test_cli_downsample_and_augmentation_flags(phantoms, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train-segmenter", "--data", str(phantoms), "--classes", "glomeruli", "--config", "tiny", "--out", str(run)]
    args += ["--epochs", "2", "--crop", "12", "--batch-size", "2", "--threads", "1", "--no-progress", "--downsample"]
    args += ["2", "--rotations", "--stain-jitter", "0.1", "--lr-schedule", "cosine"]
    assert main(args) == 0
    manifest = json.loads((run / "segmenter.json").read_text())
    assert manifest["config"]["downsample"] == 2
    training = manifest["training"]
    assert training["rotations"] and training["stain_jitter"] == 0.1 and training["lr_schedule"] == "cosine"
    capsys.readouterr()
    assert main([*args[:-7], "--downsample", "1", "--resume", "--epochs", "3"]) == 2
    assert "--downsample 2" in capsys.readouterr().err
    out = tmp_path / "m.png"
    image = sorted((phantoms / "images").glob("*.png"))[0]
    assert main(["segment", "--segmenter", str(run), "--input", str(image), "--out", str(out)]) == 0
    assert load_mask(out).shape == (45, 45)


def test_scale_jitter_magnifies_image_and_mask_alike():
    """Labels in 10 px blocks, coded into channel 0 of the image and positions into channels 1-2: after a jittered
    crop the window's centre still shows the crop's mask (bar the blurred block borders), and the magnification
    (the position gradient per pixel) varies between crops within the asked range."""
    from scipy.ndimage import binary_dilation

    from renal_ldm.segmentation.config import named_config

    config = named_config("tiny", "all")
    rng = np.random.default_rng(1)
    mask = np.kron(rng.integers(0, 8, (12, 10)), np.ones((10, 10), int)).astype(np.uint8)
    yy, xx = np.mgrid[:120, :100]
    image = np.stack([mask * 30, yy * 2, xx * 2], axis=-1).astype(np.uint8)
    gen = torch.Generator().manual_seed(0)
    pad, out = config.padding_per_side, config.valid_output_size(24)
    steps = []
    for _ in range(32):
        window, target = _random_crop(image, mask, config, out, gen, flips=False, scale_jitter=0.5)
        assert window.shape == (out + 2 * pad, out + 2 * pad, 3) and target.shape == (out, out)
        centre = window[pad : pad + out, pad : pad + out].astype(int)
        wrong = np.abs(centre[..., 0] - target.astype(int) * 30) > 15
        labels = np.pad(target.astype(int), 1, mode="edge")
        edge = np.zeros_like(wrong)
        for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):  # a pixel whose 4-neighbour has another label
            edge |= labels[dy : dy + out, dx : dx + out] != target
        near_edge = binary_dilation(edge, np.ones((3, 3), bool))  # resampling may put a border 1 px off
        near_edge[[0, -1]] = near_edge[:, [0, -1]] = True  # a border just outside the crop is not in `target`
        assert not (wrong & ~near_edge).any() and wrong.mean() < 0.25
        steps.append((centre[-1, :, 1].mean() - centre[0, :, 1].mean()) / (out - 1) / 2)  # image px per crop px
    assert 1 / 1.5 - 0.05 < min(steps) < 0.85 and 1.2 < max(steps) < 1.5 + 0.05
    with pytest.raises(ValueError, match="scale_jitter"):
        SegmenterTrainSettings(scale_jitter=1.0)
