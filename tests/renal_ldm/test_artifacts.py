"""The block-pattern and frame measures tell an artefact from clean texture (phantoms are the clean case)."""

from __future__ import annotations

import numpy as np
import pytest

from renal_ldm.artifacts import edge_ratio, frame_ratio, frame_ratio_interval, sharpness, soften, soften_to_sharpness
from renal_ldm.phantom import generate_phantom


@pytest.fixture(scope="module")
def phantoms():
    return [np.asarray(generate_phantom(128, seed=s).image) for s in range(4)]


def test_phantoms_have_no_grid_and_no_frame(phantoms):
    assert 0.8 < edge_ratio(phantoms, 4) < 1.25
    assert 0.8 < edge_ratio(phantoms, 32) < 1.25
    assert frame_ratio(phantoms) < 1.5


def test_a_block_pattern_on_the_latent_grid_is_found(phantoms):
    blocky = []
    for image in phantoms:
        cells = image.reshape(32, 4, 32, 4, 3).mean(axis=(1, 3), keepdims=True)  # 4 px blocks, as unconverged latents
        blocky.append(0.5 * image + 0.5 * np.broadcast_to(cells, (32, 4, 32, 4, 3)).reshape(image.shape))
    assert edge_ratio(blocky, 4) > 1.5
    assert edge_ratio(blocky, 4) > 1.3 * edge_ratio(phantoms, 4)


def test_a_frame_is_found(phantoms):
    framed = [image.astype(float).copy() for image in phantoms]
    for image in framed:
        image[:3], image[-3:], image[:, :3], image[:, -3:] = 255, 255, 255, 255
    assert frame_ratio(framed) > 2 * frame_ratio(phantoms)


def test_averaging_images_lowers_their_sharpness(phantoms):
    blurred = []
    for image in phantoms:
        x = image.astype(float)
        blurred.append((x + np.roll(x, 1, axis=0) + np.roll(x, 1, axis=1) + np.roll(x, (1, 1), axis=(0, 1))) / 4)
    assert sharpness(blurred) < 0.9 * sharpness(phantoms)
    assert sharpness([np.full((8, 8), 100.0)]) == 0.0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="period must be >= 2"):
        edge_ratio([np.zeros((16, 16))], 1)
    with pytest.raises(ValueError, match="too small for a grid period of 32"):
        edge_ratio([np.zeros((16, 16))], 32)
    with pytest.raises(ValueError, match="no images given"):
        frame_ratio([])
    with pytest.raises(ValueError, match="no images given"):
        sharpness([])


def test_the_frame_interval_brackets_the_ratio_and_narrows_with_more_images():
    images = [np.asarray(generate_phantom(128, seed=s).image) for s in range(24)]
    ratio, low, high = frame_ratio_interval(images)
    assert ratio == frame_ratio(images)
    assert low < ratio < high
    _, few_low, few_high = frame_ratio_interval(images[:6])
    assert high - low < few_high - few_low


def test_a_frame_lies_outside_the_interval_of_clean_tissue(phantoms):
    framed = [image.astype(float).copy() for image in phantoms]
    for image in framed:
        image[:3], image[-3:], image[:, :3], image[:, -3:] = 255, 255, 255, 255
    _, _, clean_high = frame_ratio_interval(phantoms)
    framed_ratio, framed_low, _ = frame_ratio_interval(framed)
    assert framed_low > clean_high


def test_frame_measures_name_what_is_wrong():
    with pytest.raises(ValueError, match="no images given"):
        frame_ratio_interval([])
    with pytest.raises(ValueError, match="too small for 4 px bands"):
        frame_ratio([np.zeros((16, 16, 3))])


def test_softening_to_a_sharpness_reaches_it_with_one_blur_for_the_set(phantoms):
    target = 0.5 * sharpness(phantoms)
    softened, sigma = soften_to_sharpness(phantoms, target)
    assert 0 < sigma < 4
    assert sharpness(softened) == pytest.approx(target, rel=0.011)
    assert [s.shape for s in softened] == [p.shape for p in phantoms] and softened[0].dtype == np.uint8
    again = soften(phantoms, sigma)  # the one sigma, applied to every image alike
    assert all((a == b).all() for a, b in zip(again, softened, strict=True))
    assert sharpness(soften(phantoms, sigma + 0.5)) < sharpness(softened)  # softer still with a wider blur


def test_softening_never_sharpens_and_names_bad_targets(phantoms):
    same, sigma = soften_to_sharpness(phantoms, 2 * sharpness(phantoms))
    assert sigma == 0 and all((a == b).all() for a, b in zip(same, phantoms, strict=True))
    with pytest.raises(ValueError, match="target sharpness must be > 0"):
        soften_to_sharpness(phantoms, 0)
    with pytest.raises(ValueError, match="above the target 0.01"):
        soften_to_sharpness(phantoms, 0.01)
    with pytest.raises(ValueError, match="blur sigma must be >= 0"):
        soften(phantoms, -1)
