"""Seamless slide generation (`renal-ldm sample-slide`): one canvas of windows streamed into a pyramidal TIFF,
per-region captions, the same pixels as the windowed sampler, bounded memory, and every refusal."""

from __future__ import annotations

import json
import threading

import numpy as np
import openslide
import pytest
from PIL import Image

from renal_ldm.captions import levels_to_caption
from renal_ldm.cli import main
from renal_ldm.models.checkpoint import load_model
from renal_ldm.sample import Sampler, SampleRequest, SamplingCancelled
from renal_ldm.slides.generate import GENERATED_FORMAT, generate_slide, parse_size
from renal_ldm.slides.layout import load_layout, parse_layout, uniform_layout
from renal_ldm.windows import Window

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = 2
GLOMERULI = levels_to_caption({"Glomeruli": "high"})
TUBULI = levels_to_caption({"Tubuli": "high"})


@pytest.fixture(scope="module")
def sampler(tiny_model_dir):
    return Sampler(load_model(tiny_model_dir), device="cpu", window_batch=4)


def _slide(path) -> np.ndarray:
    with openslide.OpenSlide(str(path)) as slide:
        w, h = slide.dimensions
        return np.asarray(slide.read_region((0, 0), 0, (w, h)).convert("RGB"))


def _generate(sampler, out, size="64x48", layout=None, **kw):
    options = dict(seed=3, steps=STEPS, guidance=2.0, compression="deflate", tile=16)
    options.update(kw)
    return generate_slide(sampler, out, size, layout or uniform_layout(GLOMERULI), **options)


def test_a_generated_slide_is_a_pyramidal_tiff_with_its_mpp_and_provenance(sampler, tmp_path):
    result = _generate(sampler, tmp_path / "slide.tif", mpp=0.25)
    with openslide.OpenSlide(str(result.out)) as slide:
        assert slide.level_count == 3 and slide.dimensions == (64, 48)
        assert slide.level_dimensions[1] == (32, 24)
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25)
    record = json.loads(result.provenance.read_text())
    assert record["format"] == GENERATED_FORMAT and record["captions"] == [GLOMERULI]
    assert record["seed"] == 3 and record["steps"] == STEPS and record["size"] == {"width": 64, "height": 48}
    assert sum(record["windows_per_caption"]) == result.windows > 1


def test_the_same_request_gives_the_same_slide_and_another_seed_another(sampler, tmp_path):
    a = _slide(_generate(sampler, tmp_path / "a.tif").out)
    b = _slide(_generate(sampler, tmp_path / "b.tif").out)
    c = _slide(_generate(sampler, tmp_path / "c.tif", seed=4).out)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_a_square_slide_of_one_caption_is_the_windowed_sample_of_the_same_seed(sampler, tmp_path):
    slide = _slide(_generate(sampler, tmp_path / "s.tif", size="64x64").out)
    request = SampleRequest(caption=GLOMERULI, n=1, seed=3, steps=STEPS, guidance=2.0, size=64, windows="always")
    np.testing.assert_array_equal(slide, sampler.sample(request)[0].array)


def test_each_region_of_a_layout_follows_its_own_caption(sampler, tmp_path):
    layout = parse_layout({"default": TUBULI, "regions": [{"caption": GLOMERULI, "box": [0, 0, 0.5, 1]}]}, 128, 32)
    mixed = _slide(_generate(sampler, tmp_path / "mixed.tif", "128x32", layout).out).astype(float)
    glomeruli = _slide(_generate(sampler, tmp_path / "g.tif", "128x32", uniform_layout(GLOMERULI)).out)
    tubuli = _slide(_generate(sampler, tmp_path / "t.tif", "128x32", uniform_layout(TUBULI)).out)
    left, right = slice(0, 32), slice(96, 128)  # a window away from where the regions meet

    def distance(a, b, cols):
        return float(np.abs(a[:, cols] - b[:, cols].astype(float)).mean())

    assert distance(mixed, glomeruli, left) < distance(mixed, tubuli, left)
    assert distance(mixed, tubuli, right) < distance(mixed, glomeruli, right)
    record = json.loads((tmp_path / "mixed.tif.json").read_text())
    assert record["captions"] == [TUBULI, GLOMERULI] and min(record["windows_per_caption"]) > 0


def test_windows_take_the_caption_most_of_their_cells_ask_for():
    layout = parse_layout(
        {
            "default": "a",
            "regions": [{"caption": "b", "box": [0, 0, 0.25, 1]}, {"caption": "c", "box": [0.75, 0, 1, 1]}],
        },
        160,
        40,
    )
    cells = layout.caption_map(10, 40)
    assert (cells[:, :10] == 1).all() and (cells[:, 10:30] == 0).all() and (cells[:, 30:] == 2).all()
    pick = layout.window_caption(10, 40)
    assert [pick(Window(0, left, 10)) for left in (0, 3, 15, 30)] == [1, 1, 0, 2]


def test_a_later_region_wins_where_regions_overlap_and_pixel_units_work():
    layout = parse_layout(
        {
            "units": "px",
            "regions": [
                {"caption": "a", "box": [0, 0, 100, 100]},
                {"levels": "Glomeruli=high", "polygon": [[0, 0], [50, 0], [50, 100], [0, 100]]},
            ],
        },
        100,
        100,
    )
    cells = layout.caption_map(10, 10)
    assert layout.captions == ("a", GLOMERULI)
    assert (cells[:, :5] == 1).all() and (cells[:, 5:] == 0).all()


def test_a_label_image_layout_maps_region_ids_to_captions(tmp_path):
    ids = np.zeros((4, 8), np.uint8)
    ids[:, 4:] = 7
    Image.fromarray(ids, mode="L").save(tmp_path / "regions.png")
    (tmp_path / "layout.json").write_text(
        json.dumps({"labels": "regions.png", "captions": {"0": TUBULI, "7": {"levels": "Glomeruli=high"}}})
    )
    layout = load_layout(tmp_path / "layout.json", 256, 128)
    cells = layout.caption_map(8, 16)
    assert layout.captions == (TUBULI, GLOMERULI)
    assert (cells[:, :8] == 0).all() and (cells[:, 8:] == 1).all()


@pytest.mark.parametrize(
    "data,message",
    [
        ([1, 2], "must be a JSON object"),
        ({"default": "a", "colour": 1}, r"unknown keys \['colour'\]"),
        ({"regions": [{"caption": "a", "box": [0, 0, 0.5, 1]}]}, "leaves 50.0% of the slide without a caption"),
        ({"regions": [{"caption": "a", "box": [0, 0, 1.5, 1]}]}, r"reaches outside the slide at \(1.5, 0\)"),
        ({"regions": [{"caption": "a", "box": [0.5, 0, 0.5, 1]}]}, "is empty"),
        ({"regions": [{"caption": "a", "polygon": [[0, 0], [1, 1]]}]}, "at least three"),
        ({"regions": [{"caption": "a", "levels": "Tubuli=high", "box": [0, 0, 1, 1]}]}, 'exactly one of "caption"'),
        ({"regions": [{"levels": "Tubuli=loads", "box": [0, 0, 1, 1]}]}, "loads"),
        ({"default": 5}, "a caption is text"),
        ({"units": "mm", "default": "a"}, "units must be one of fraction, px"),
        ({}, "names no caption"),
    ],
)
def test_a_bad_layout_is_refused_with_what_was_expected(data, message):
    with pytest.raises(ValueError, match=message):
        parse_layout(data, 64, 64).caption_map(8, 8)


def test_layout_files_that_cannot_be_read_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no layout file"):
        load_layout(tmp_path / "missing.json", 64, 64)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_layout(tmp_path / "bad.json", 64, 64)
    (tmp_path / "no-image.json").write_text(json.dumps({"labels": "gone.png", "captions": {"0": "a"}}))
    with pytest.raises(FileNotFoundError, match="gone.png, which does not exist"):
        load_layout(tmp_path / "no-image.json", 64, 64)
    Image.fromarray(np.array([[0, 3]], np.uint8), mode="L").save(tmp_path / "ids.png")
    (tmp_path / "unnamed.json").write_text(json.dumps({"labels": "ids.png", "captions": {"0": "a"}}))
    with pytest.raises(ValueError, match=r"region ids \[3\] that the layout's captions do not name"):
        load_layout(tmp_path / "unnamed.json", 64, 64)
    (tmp_path / "huge.json").write_text(" " * (2 * 2**20 + 1))
    with pytest.raises(ValueError, match="a layout JSON is at most"):
        load_layout(tmp_path / "huge.json", 64, 64)


def test_unet_calls_stay_within_the_window_batch_and_strips_within_a_row_of_tiles(sampler, tmp_path, monkeypatch):
    rows: list[int] = []
    unet = sampler.model.unet
    original = unet.forward

    def counting(x, *args, **kwargs):
        rows.append(x.shape[0])
        return original(x, *args, **kwargs)

    monkeypatch.setattr(unet, "forward", counting)
    request = SampleRequest(caption=GLOMERULI, seed=1, steps=1, guidance=2.0)
    latents = sampler.sample_canvas(request, 96, 160, [GLOMERULI])
    assert rows and max(rows) <= sampler.window_batch
    strips = list(sampler.decode_strips(latents))
    tile_px = max(sampler.model.config.latent_size, sampler.decode_tile) * 4
    assert sum(s.shape[1] for s in strips) == 96 and all(s.shape[2] == 160 for s in strips)
    assert max(s.shape[1] for s in strips) <= tile_px


def test_tiled_strips_are_given_out_as_soon_as_no_later_tile_covers_them(tiny_model_dir):
    sampler = Sampler(load_model(tiny_model_dir), device="cpu", decode_tile=8)  # 32 px decoder tiles
    latents = sampler.sample_canvas(SampleRequest(caption="", steps=1, guidance=1.0), 96, 48, [""])
    strips = list(sampler.decode_strips(latents))
    # rows of 32 px tiles every 16 px: a band is final once the next row of tiles starts; the last row ends it
    assert [s.shape[1] for s in strips] == [16, 16, 16, 16, 32]
    np.testing.assert_array_equal(np.concatenate(strips, axis=1), sampler.decode(latents))
    assert sampler.decode(latents).shape == (1, 96, 48, 3)


def test_progress_is_monotonic_over_sampling_and_writing(sampler, tmp_path):
    seen: list[tuple[int, int]] = []
    _generate(sampler, tmp_path / "p.tif", progress=lambda done, total: seen.append((done, total)))
    dones = [d for d, _ in seen]
    assert dones == sorted(dones) and seen[-1][0] == seen[-1][1]
    assert len({t for _, t in seen}) == 1  # the total is known from the first call


def test_a_cancelled_slide_leaves_nothing_at_the_output_path(sampler, tmp_path):
    cancel = threading.Event()

    def progress(done, total):
        if done >= 2:
            cancel.set()

    with pytest.raises(SamplingCancelled):
        _generate(sampler, tmp_path / "gone.tif", progress=progress, cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_bad_requests_are_refused_before_sampling(sampler, tmp_path):
    with pytest.raises(ValueError, match="is not a multiple of 8 px on both sides.*try 64x48"):
        _generate(sampler, tmp_path / "x.tif", "60x44")
    with pytest.raises(ValueError, match="not WIDTHxHEIGHT"):
        parse_size("big")
    with pytest.raises(ValueError, match="slide width must be 1..65536"):
        parse_size("0x64")
    with pytest.raises(ValueError, match="must end in .tif"):
        _generate(sampler, tmp_path / "x.png")
    (tmp_path / "taken.tif").write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="--overwrite"):
        _generate(sampler, tmp_path / "taken.tif")
    assert (tmp_path / "taken.tif").read_bytes() == b"keep"
    with pytest.raises(ValueError, match="steps must be"):
        _generate(sampler, tmp_path / "x.tif", steps=0)
    with pytest.raises(ValueError, match="without a caption"):
        _generate(
            sampler,
            tmp_path / "x.tif",
            layout=parse_layout({"regions": [{"caption": "a", "box": [0, 0, 0.5, 1]}]}, 64, 48),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.tif"]


def test_the_command_writes_a_slide_from_levels_and_refuses_a_bad_size(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "cli.tif"
    args = ["sample-slide", "--model", str(tiny_model_dir), "--levels", "Glomeruli=high", "--size", "64x32"]
    assert main([*args, "--out", str(out), "--steps", "1", "--tile", "16", "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out and _slide(out).shape == (32, 64, 3)
    assert main([*args[:-1], "65x32", "--out", str(tmp_path / "bad.tif"), "--steps", "1"]) == 2
    assert "not a multiple of 8 px" in capsys.readouterr().err
