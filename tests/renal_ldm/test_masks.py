"""Masks in every format users bring must read to the same labels, and anything ambiguous must be refused loudly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from renal_ldm.captions import caption_to_levels, mask_to_caption
from renal_ldm.classes import GLOMERULI_ID, OTHER_TISSUE_ID, TISSUE_CLASSES, by_name
from renal_ldm.cli import main
from renal_ldm.data.masks import labels_to_rgb, load_mask, to_label_mask

TUBULI = by_name("Tubuli").id


def label_grid() -> np.ndarray:
    """A 16 x 16 mask holding every label 0..7 as a 2-row band, so each class has 1/8 of the pixels."""
    return np.repeat(np.arange(8, dtype=np.uint8), 2)[:, None].repeat(16, axis=1)


def save(tmp_path, name: str, pixels: np.ndarray, mode: str | None = None) -> str:
    path = tmp_path / name
    img = Image.fromarray(pixels)
    (img.convert(mode) if mode else img).save(path)
    return str(path)


def binary_rgb() -> np.ndarray:
    """The kidney-pas format: black background, red (255, 0, 0) glomerulus in the top-left quarter."""
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:4, :4] = (255, 0, 0)
    return rgb


def test_label_png_reads_back_exactly(tmp_path):
    labels = label_grid()
    out = load_mask(save(tmp_path, "labels.png", labels))
    assert out.dtype == np.uint8 and np.array_equal(out, labels)


def test_palette_rgb_and_palette_mode_png_read_as_labels(tmp_path):
    labels = label_grid()
    rgb = labels_to_rgb(labels)
    assert np.array_equal(load_mask(save(tmp_path, "rgb.png", rgb)), labels)
    indexed = Image.fromarray(labels)  # a palette-mode PNG whose palette entries are the class colours
    indexed.putpalette([v for c in TISSUE_CLASSES for v in c.color])
    indexed.save(tmp_path / "p.png")
    assert np.array_equal(load_mask(tmp_path / "p.png"), labels)
    rgba = np.dstack([rgb, np.full(labels.shape, 255, np.uint8)])
    assert np.array_equal(load_mask(save(tmp_path, "rgba.png", rgba)), labels)


def test_grey_rgb_label_image_reads_as_labels(tmp_path):
    labels = label_grid()
    assert np.array_equal(load_mask(save(tmp_path, "grey.png", np.dstack([labels] * 3))), labels)


@pytest.mark.parametrize("zero_is_background, zero_label", [(False, OTHER_TISSUE_ID), (True, 0)])
def test_binary_masks_map_nonzero_to_the_named_class(tmp_path, zero_is_background, zero_label):
    expected = np.full((8, 8), zero_label, np.uint8)
    expected[:4, :4] = GLOMERULI_ID
    grey = np.where(binary_rgb()[..., 0] > 0, 255, 0).astype(np.uint8)
    for path in (
        save(tmp_path, "red.png", binary_rgb()),
        save(tmp_path, "grey.png", grey),
        save(tmp_path, "bit.png", grey, "1"),
    ):
        out = load_mask(path, binary_class="glomeruli", zero_is_background=zero_is_background)
        assert np.array_equal(out, expected), path


def test_values_outside_label_range_are_named(tmp_path):
    labels = label_grid()
    labels[0, 0], labels[0, 1] = 9, 200
    with pytest.raises(ValueError) as err:
        load_mask(save(tmp_path, "bad.png", labels))
    assert "9, 200" in str(err.value) and "bad.png" in str(err.value) and "binary" in str(err.value)


def test_unknown_palette_colour_is_named(tmp_path):
    rgb = labels_to_rgb(label_grid())
    rgb[0, 0] = (1, 2, 3)
    with pytest.raises(ValueError, match=r"unknown palette colours.*\(1, 2, 3\)"):
        load_mask(save(tmp_path, "odd.png", rgb))


def test_two_colour_mask_without_binary_class_suggests_it(tmp_path):
    with pytest.raises(ValueError, match="--binary-class"):
        load_mask(save(tmp_path, "red.png", binary_rgb()))


def test_photograph_is_refused(tmp_path):
    photo = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="photograph"):
        load_mask(save(tmp_path, "photo.png", photo))


def test_binary_mask_with_more_than_two_values_and_background_class_are_refused():
    with pytest.raises(ValueError, match="3 distinct values"):
        to_label_mask(np.array([[0, 1, 2]], np.uint8), binary_class="Glomeruli")
    with pytest.raises(ValueError, match=r"2 distinct values \(128, 255\)"):  # two non-zero values, no zero
        to_label_mask(np.array([[128, 255]], np.uint8), binary_class="Glomeruli")
    with pytest.raises(ValueError, match="tissue class"):
        to_label_mask(np.array([[0, 1]], np.uint8), binary_class=TISSUE_CLASSES[0].name)


def test_missing_and_unreadable_files_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_mask(tmp_path / "nope.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="text.png: not a readable image"):
        load_mask(tmp_path / "text.png")


def test_caption_cli_on_each_mask_kind(tmp_path, capsys):
    labels = np.full((10, 10), TUBULI, np.uint8)
    labels[:5] = GLOMERULI_ID  # half Glomeruli (high), half Tubuli (high)
    expected = mask_to_caption(labels)
    for path in (
        save(tmp_path, "labels.png", labels),
        save(tmp_path, "palette.png", labels_to_rgb(labels)),
        save(tmp_path, "grey.png", np.dstack([labels] * 3)),
    ):
        assert main(["caption", "--mask", path]) == 0
        assert capsys.readouterr().out.strip() == expected

    red = save(tmp_path, "red.png", binary_rgb())
    assert main(["caption", "--mask", red, "--binary-class", "Glomeruli", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fractions"]["Glomeruli"] == 0.25 and out["fractions"]["other kidney tissue"] == 0.75
    assert out["levels"] == {"Glomeruli": "medium", "other kidney tissue": "high"}
    assert caption_to_levels(out["caption"]) == out["levels"]

    assert main(["caption", "--mask", red, "--binary-class", "Glomeruli", "--zero-is-background", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["levels"] == {"Glomeruli": "medium"}


def test_caption_cli_reports_a_bad_mask_in_one_line(tmp_path, capsys):
    assert main(["caption", "--mask", save(tmp_path, "red.png", binary_rgb())]) == 2
    err = capsys.readouterr().err
    assert "red.png" in err and "--binary-class" in err and "Traceback" not in err
