"""WSI tiling: right patches, right captions from a mask at another resolution, and never a whole slide in memory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from renal_ldm.captions import caption_to_levels, mask_to_caption
from renal_ldm.classes import GLOMERULI_ID, OTHER_TISSUE_ID, by_name
from renal_ldm.cli import main
from renal_ldm.data.patches import PatchDataset
from renal_ldm.data.slide_reader import (
    OpenSlideReader,
    PilReader,
    RegionReader,
    TiffReader,
    open_mask,
    open_slide,
)
from renal_ldm.data.tiling import tile_slide

TUBULI = by_name("Tubuli").id
SIDE, PATCH, K = 2048, 256, 4  # slide side, patch side, mask downsample
PINK, GLASS = (190, 80, 160), (242, 242, 242)


def slide_pixels() -> np.ndarray:
    """Tissue on the left half plus a 64 px strip beyond it; glass elsewhere. Mild texture, like a scan."""
    rgb = np.empty((SIDE, SIDE, 3), np.uint8)
    rgb[:] = GLASS
    rgb[:, : SIDE // 2 + 64] = PINK
    rgb[::7, ::5] -= 20
    return rgb


def mask_labels() -> np.ndarray:
    """At slide/4: Tubuli under the left half, Glomeruli filling patch (0, 0) and half of patch (256, 0),
    other kidney tissue under the 64 px strip, background under the glass."""
    m = np.zeros((SIDE // K, SIDE // K), np.uint8)
    m[:, : SIDE // 2 // K] = TUBULI
    m[:64, :64] = GLOMERULI_ID
    m[:64, 64:96] = GLOMERULI_ID
    m[:, 256:272] = OTHER_TISSUE_ID
    return m


def write_pyramid(path, rgb: np.ndarray, tile: int = 256) -> None:
    """One page per level, reduced levels marked as such (subfiletype 1), which OpenSlide reads as a pyramid."""
    with tifffile.TiffWriter(path) as tw:
        tw.write(rgb, tile=(tile, tile), photometric="rgb", compression="zlib")
        tw.write(rgb[::4, ::4].copy(), tile=(tile, tile), photometric="rgb", compression="zlib", subfiletype=1)


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    root = tmp_path_factory.mktemp("slide")
    write_pyramid(root / "s.tif", slide_pixels())
    Image.fromarray(mask_labels()).save(root / "s_mask.png")
    return root


def read_png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_pyramid_opens_through_openslide_with_both_levels(slide):
    with open_slide(slide / "s.tif") as reader:
        assert isinstance(reader, OpenSlideReader)
        assert reader.level_dimensions == ((SIDE, SIDE), (SIDE // 4, SIDE // 4))
        assert np.array_equal(reader.read_region(0, 300, 40, 10, 10), slide_pixels()[40:50, 300:310])


def test_mask_at_downsample_4_filters_and_captions_patches(slide, tmp_path):
    reader, mask = open_slide(slide / "s.tif"), open_mask(slide / "s_mask.png")
    result = tile_slide(reader, tmp_path / "out", mask=mask, min_tissue=0.5)
    assert (result.candidates, result.written, result.skipped) == (64, 32, 32)
    assert result.mask_downsample == (4.0, 4.0)
    # bounded memory: the slide was read one patch at a time, and only for patches that were kept
    assert reader.max_request == (PATCH, PATCH) and reader.requests == 32
    assert mask.max_request == (PATCH // K, PATCH // K)

    rows = {r["file"]: r for r in map(json.loads, (tmp_path / "out" / "captions.jsonl").read_text().splitlines())}
    assert len(rows) == 32 and sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == sorted(rows)
    assert caption_to_levels(rows["s_0_0.png"]["caption"]) == {"Glomeruli": "high"}
    assert caption_to_levels(rows["s_256_0.png"]["caption"]) == {"Tubuli": "high", "Glomeruli": "high"}
    assert caption_to_levels(rows["s_768_1792.png"]["caption"]) == {"Tubuli": "high"}
    assert rows["s_256_0.png"]["fractions"]["Glomeruli"] == 0.5 and rows["s_0_0.png"]["tissue"] == 1.0

    out_mask = read_png(tmp_path / "out" / "masks" / "s_256_0.png")  # nearest-neighbour upsampling x4
    assert np.array_equal(out_mask, np.kron(mask_labels()[:64, 64:128], np.ones((K, K), np.uint8)))
    assert np.array_equal(read_png(tmp_path / "out" / "images" / "s_256_0.png"), slide_pixels()[:256, 256:512])
    data = PatchDataset(tmp_path / "out")
    assert sorted(data.captions) == sorted(r["caption"] for r in rows.values())


def test_min_tissue_thresholds_with_a_mask(slide, tmp_path):
    counts = [
        tile_slide(
            slide / "s.tif", tmp_path / str(t), mask=slide / "s_mask.png", level=1, size=128, min_tissue=t
        ).written
        for t in (0.0, 0.1, 1.0)
    ]
    assert counts == [16, 12, 8]  # level-1 patches over the strip hold 64 / 512 = 0.125 tissue
    rows = [json.loads(line) for line in (tmp_path / "0.1" / "captions.jsonl").read_text().splitlines()]
    strip = next(r for r in rows if r["file"] == "s_1024_0.png")
    assert caption_to_levels(strip["caption"]) == {"other kidney tissue": "low"} and strip["tissue"] == 0.125


def test_without_mask_otsu_on_saturation_finds_the_tissue(slide, tmp_path):
    reader = open_slide(slide / "s.tif")
    result = tile_slide(reader, tmp_path / "otsu", min_tissue=0.5)
    assert result.written == 32 and result.mask_downsample is None
    assert 0.0 < result.saturation_threshold < 0.5
    assert reader.max_request[0] <= PATCH and reader.max_request[1] <= PATCH  # thumbnail read in patch chunks
    assert reader.requests == 4 + 32  # level 1 (512 px) in four chunks for the view, then the kept patches
    assert tile_slide(slide / "s.tif", tmp_path / "otsu2", min_tissue=0.2).written == 40
    assert not (tmp_path / "otsu" / "masks").exists() and not (tmp_path / "otsu" / "captions.jsonl").exists()
    names = {p.name for p in (tmp_path / "otsu" / "images").iterdir()}
    assert all(int(n.split("_")[1]) < SIDE // 2 for n in names)


def test_level_and_stride(slide, tmp_path):
    result = tile_slide(slide / "s.tif", tmp_path / "l1", mask=slide / "s_mask.png", level=1, min_tissue=0)
    assert result.written == 4
    names = sorted(p.name for p in (tmp_path / "l1" / "images").iterdir())
    assert names == ["s_0_0.png", "s_0_1024.png", "s_1024_0.png", "s_1024_1024.png"]  # level-0 coordinates
    row = json.loads((tmp_path / "l1" / "captions.jsonl").read_text().splitlines()[0])
    expected = mask_to_caption(mask_labels()[:256, :256])
    assert row["file"] == "s_0_0.png" and row["caption"] == expected
    strided = tile_slide(slide / "s.tif", tmp_path / "st", level=1, size=128, stride=64, mask=slide / "s_mask.png")
    assert strided.candidates == 7 * 7
    assert {p.name for p in (tmp_path / "st" / "images").iterdir()} >= {"s_256_0.png", "s_768_1536.png"}


def test_refusals(slide, tmp_path):
    bad_mask = tmp_path / "wide.png"
    Image.fromarray(np.zeros((256, 512), np.uint8)).save(bad_mask)
    with pytest.raises(ValueError, match="not the slide 2048x2048 at one downsample"):
        tile_slide(slide / "s.tif", tmp_path / "a", mask=bad_mask)
    with pytest.raises(ValueError, match="no level 2"):
        tile_slide(slide / "s.tif", tmp_path / "b", level=2)
    with pytest.raises(FileNotFoundError, match="slide not found"):
        tile_slide(tmp_path / "none.svs", tmp_path / "c")
    grey = tmp_path / "grey.png"
    Image.fromarray(np.zeros((300, 300), np.uint8)).save(grey)
    with pytest.raises(ValueError, match="must be an RGB image"):
        tile_slide(grey, tmp_path / "d")
    binary = tmp_path / "binary.png"
    Image.fromarray(np.where(mask_labels() > 0, 255, 0).astype(np.uint8)).save(binary)
    with pytest.raises(ValueError, match="binary.png.*outside 0..7"):
        tile_slide(slide / "s.tif", tmp_path / "e", mask=binary)
    assert not list((tmp_path / "e").rglob("*.png"))  # a failed run leaves no half data set
    kept = tile_slide(slide / "s.tif", tmp_path / "f", mask=slide / "s_mask.png", level=1, size=128).written
    with pytest.raises(ValueError, match="not the slide"):
        tile_slide(slide / "s.tif", tmp_path / "f", mask=bad_mask, overwrite=True)
    assert len(list((tmp_path / "f" / "images").iterdir())) == kept == 8  # a refused overwrite deletes nothing
    late_bad = mask_labels()
    late_bad[-8:, -8:] = 9  # an unknown label found only at the last patch, after the old set was set aside
    Image.fromarray(late_bad).save(tmp_path / "late_bad.png")
    captions = (tmp_path / "f" / "captions.jsonl").read_text()
    with pytest.raises(ValueError, match="outside 0..7"):
        tile_slide(
            slide / "s.tif",
            tmp_path / "f",
            mask=tmp_path / "late_bad.png",
            level=1,
            size=128,
            min_tissue=0,
            overwrite=True,
        )
    assert len(list((tmp_path / "f" / "images").iterdir())) == len(list((tmp_path / "f" / "masks").iterdir())) == 8
    assert (tmp_path / "f" / "captions.jsonl").read_text() == captions  # a failed overwrite restores the old set
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["captions.jsonl", "images", "masks"]


def test_cli_refuses_to_overwrite_then_overwrites_and_appends(slide, tmp_path, capsys):
    out = str(tmp_path / "cli")
    mask = ["--mask", str(slide / "s_mask.png"), "--out", out, "--level", "1", "--size", "128"]
    base = ["tile", "--slide", str(slide / "s.tif")] + mask
    assert main(base) == 0
    assert "wrote 8 of 16 patches (128 px, level 1)" in capsys.readouterr().out
    assert main(base + ["--min-tissue", "0"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(base + ["--min-tissue", "0", "--overwrite"]) == 0
    assert len(list((tmp_path / "cli" / "images").iterdir())) == 16
    assert main(base + ["--append"]) == 2  # the same slide twice would duplicate patches
    assert "already tiled" in capsys.readouterr().err

    other = tmp_path / "other.tif"
    other.write_bytes((slide / "s.tif").read_bytes())
    assert main(["tile", "--slide", str(other)] + mask + ["--append"]) == 0
    assert len(PatchDataset(out)) == 24 == len((tmp_path / "cli" / "captions.jsonl").read_text().splitlines())


def test_plain_png_and_stripped_tiff_slides_give_the_same_patches(tmp_path):
    rgb = slide_pixels()[:512, 768:1280]  # tissue | glass, 512 x 512
    Image.fromarray(rgb).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "b.tif", rgb, photometric="rgb", rowsperstrip=16)
    labels = np.kron(mask_labels()[:128, 192:320], np.ones((K, K), np.uint8))
    tifffile.imwrite(tmp_path / "m.tif", labels[::2, ::2].copy(), tile=(64, 64))  # label TIFF at downsample 2
    results = {}
    for name, kind in (("a.png", PilReader), ("b.tif", TiffReader)):
        reader = open_slide(tmp_path / name)
        assert isinstance(reader, kind)
        tile_slide(reader, tmp_path / name.split(".")[0], mask=tmp_path / "m.tif", size=128, min_tissue=0)
        assert reader.max_request == (128, 128)
        stem = name.split(".")[0]
        results[name] = {p.name[len(stem) :]: read_png(p) for p in sorted((tmp_path / stem / "images").iterdir())}
    assert len(results["a.png"]) == 16 and results["a.png"].keys() == results["b.tif"].keys()
    assert all(np.array_equal(results["a.png"][k], results["b.tif"][k]) for k in results["a.png"])
    assert np.array_equal(results["a.png"]["_256_0.png"], rgb[:128, 256:384])
    assert np.array_equal(read_png(tmp_path / "a" / "masks" / "a_128_256.png"), labels[256:384, 128:256])


def test_tiff_reader_regions_match_the_whole_image(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "t.tif", rgb, tile=(64, 64), photometric="rgb")
    tifffile.imwrite(tmp_path / "s.tif", rgb, rowsperstrip=7, photometric="rgb")
    palette = rng.integers(0, 4, (50, 60), dtype=np.uint8)
    cmap = np.zeros((3, 256), np.uint16)
    cmap[:, 1] = (255 << 8, 0, 0)
    tifffile.imwrite(tmp_path / "p.tif", palette, photometric="palette", colormap=cmap)
    for name in ("t.tif", "s.tif"):
        with TiffReader(tmp_path / name) as reader:
            for x, y, w, h in ((0, 0, 300, 200), (63, 1, 70, 130), (250, 190, 50, 10), (5, 5, 1, 1)):
                assert np.array_equal(reader.read_region(0, x, y, w, h), rgb[y : y + h, x : x + w]), (name, x, y)
            with pytest.raises(ValueError, match="outside level 0"):
                reader.read_region(0, 290, 0, 20, 20)
    with TiffReader(tmp_path / "p.tif") as reader:
        region = reader.read_region(0, 0, 0, 60, 50)
        red = np.tile([255, 0, 0], ((palette == 1).sum(), 1))
        assert region.shape == (50, 60, 3) and np.array_equal(region[palette == 1], red)


def test_real_kidney_tiles_into_captioned_patches(kidney_pas_dir, tmp_path):
    out = tmp_path / "kidney"
    for image in sorted((kidney_pas_dir / "images").glob("*.png")):
        result = tile_slide(
            image, out, mask=kidney_pas_dir / "masks" / image.name, binary_class="Glomeruli", min_tissue=0, append=True
        )
        assert result.written == 16  # 1024 px tile -> 4 x 4 patches of 256 px; zero is other kidney tissue
    rows = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert len(rows) == 256 == len(PatchDataset(out))
    with_glomeruli = 0
    for row in rows:
        levels = caption_to_levels(row["caption"])
        has = bool((read_png(out / "masks" / row["file"]) == GLOMERULI_ID).any())
        assert ("Glomeruli" in levels) == has == (row["fractions"]["Glomeruli"] > 0), row["file"]
        assert levels.get("other kidney tissue") in ("low", "medium", "high")
        with_glomeruli += has
    assert 16 <= with_glomeruli < 256  # every tile holds a glomerulus; not every patch does


def test_mask_of_an_odd_sized_slide_at_rounded_downsample_is_accepted(tmp_path):
    Image.fromarray(np.full((530, 1030, 3), PINK, np.uint8)).save(tmp_path / "odd.png")
    labels = np.full((133, 258), TUBULI, np.uint8)  # ceil(530 / 4) x ceil(1030 / 4)
    labels[:, 128:] = GLOMERULI_ID
    Image.fromarray(labels).save(tmp_path / "odd_mask.png")
    result = tile_slide(tmp_path / "odd.png", tmp_path / "out", mask=tmp_path / "odd_mask.png", size=256)
    assert result.written == 8 and result.mask_downsample == pytest.approx((1030 / 258, 530 / 133))
    rows = [json.loads(line) for line in (tmp_path / "out" / "captions.jsonl").read_text().splitlines()]
    assert {r["file"]: caption_to_levels(r["caption"]) for r in rows}["odd_0_0.png"] == {"Tubuli": "high"}


def test_a_reader_that_forgets_a_method_fails_at_construction(tmp_path):
    class NoClose(RegionReader):
        def _read(self, level, x, y, w, h):
            return np.zeros((h, w, 3), np.uint8)

    class Complete(NoClose):
        def __init__(self) -> None:
            super().__init__()
            self.path = tmp_path / "memory"
            self._set_levels([(64, 32)])

        def close(self) -> None:
            pass

    with pytest.raises(TypeError, match="abstract method.*close"):
        NoClose()
    with Complete() as reader:
        assert reader.read_region(0, 8, 8, 4, 2).shape == (2, 4, 3) and reader.max_request == (4, 2)
