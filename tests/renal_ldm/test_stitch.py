"""renal_ldm.slides: the streamed pyramidal TIFF writer and `renal-ldm stitch`, read back through OpenSlide.

Each guarantee of the two module docstrings has a test here. Images are small grids of 64-96 px patches with
a 32-64 px TIFF tile, so every slide still has several levels.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from renal_ldm.cli import main
from renal_ldm.sample_files import MANIFEST_CSV
from renal_ldm.slides import pyramid
from renal_ldm.slides.pyramid import halve, level_sizes, tile_strips, write_pyramid
from renal_ldm.slides.stitch import (
    PROVENANCE_SUFFIX,
    list_samples,
    provenance_path,
    stitch_slide,
)

openslide = pytest.importorskip("openslide")

PATCH = 96
TILE = 64


def noise_patch(seed: int, w: int = PATCH, h: int = PATCH) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def smooth_patch(seed: int, side: int = PATCH) -> np.ndarray:
    """Tissue-like low-frequency colour (JPEG's case; noise would measure only JPEG's loss on noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    base = rng.uniform(120, 220, 3)
    wave = np.sin(2 * np.pi * (rng.uniform(0.5, 2) * x + rng.uniform(0.5, 2) * y))[..., None]
    return np.clip(base + 30 * wave * rng.uniform(-1, 1, 3), 0, 255).astype(np.uint8)


def patch_folder(folder: Path, patches: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(patches):
        Image.fromarray(p).save(folder / f"patch_{i:03d}.png")
    return folder


def write_sample_folder(folder: Path, patches: list[np.ndarray]) -> Path:
    """Patches in the layout of `renal-ldm sample`, through its own writer (manifest.csv + JSON sidecars)."""
    from renal_ldm.sample import SampleResult, write_samples

    results = [
        SampleResult(
            image=Image.fromarray(p),
            array=p,
            seed=100 + i,
            caption=f"caption {i}",
            index=i,
            params={"caption": f"caption {i}", "seed": 100 + i},
        )
        for i, p in enumerate(patches)
    ]
    write_samples(results, folder)
    return folder


def region(slide, col: int, row: int, side: int = PATCH) -> np.ndarray:
    rgba = np.asarray(slide.read_region((col * side, row * side), 0, (side, side)))
    assert (rgba[..., 3] == 255).all()
    return rgba[..., :3]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- the writer ---------------------------------------------------------------------------------------------


def test_openslide_reads_every_level_with_the_mpp_and_exact_deflate_pixels(tmp_path):
    image = noise_patch(0, 200, 150)
    out = tmp_path / "slide.tif"
    strips = [image[:10], image[10:11], image[11:100], image[100:]]  # any heights: rebanded to tile rows
    sizes = write_pyramid(out, strips, 200, 150, tile=32, mpp=0.25, compression="deflate", workers=1)

    assert sizes == [(200, 150), (100, 75), (50, 38), (25, 19)] == level_sizes(200, 150, 32)
    with openslide.OpenSlide(out) as slide:
        assert slide.properties["openslide.vendor"] == "generic-tiff"
        assert slide.level_count == 4
        assert slide.level_dimensions == tuple(sizes)
        assert float(slide.properties["openslide.mpp-x"]) == 0.25
        assert float(slide.properties["openslide.mpp-y"]) == 0.25
        assert np.array_equal(np.asarray(slide.read_region((0, 0), 0, (200, 150)))[..., :3], image)
        level1 = np.asarray(slide.read_region((0, 0), 1, (100, 75)))[..., :3]
        assert np.array_equal(level1, halve(image))  # each level: 2x2 area average of the one above
        level2 = np.asarray(slide.read_region((0, 0), 2, (50, 38)))[..., :3]
        assert np.array_equal(level2, halve(level1))


def test_layout_is_main_ifd_chain_reduced_subfiles_tiled_centimetres(tmp_path):
    out = tmp_path / "slide.tif"
    write_pyramid(out, [noise_patch(1, 160, 100)], 160, 100, tile=32, mpp=0.5, compression="deflate", workers=1)
    with tifffile.TiffFile(out) as tif:
        pages = list(tif.pages)
        assert len(pages) == 4
        for k, page in enumerate(pages):
            assert page.is_tiled and page.tilewidth == page.tilelength == 32
            assert page.subfiletype == (1 if k else 0)
            assert "SubIFDs" not in page.tags
            assert page.tags["ResolutionUnit"].value == 3  # centimetre
            x_num, x_den = page.tags["XResolution"].value
            assert x_num / x_den == pytest.approx(20000 / 2**k)  # 10^4 / mpp pixels per cm, per level
            assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE


def test_halve_is_the_rounded_area_mean_and_repeats_an_odd_edge():
    band = np.array([[[0], [1], [9]], [[2], [2], [7]], [[5], [5], [5]]], np.uint8).repeat(3, axis=2)
    assert halve(band)[..., 0].tolist() == [[(0 + 1 + 2 + 2 + 2) // 4, (9 + 9 + 7 + 7 + 2) // 4], [5, 5]]


def test_tile_callback_source_and_strips_are_taken_lazily(tmp_path):
    image = noise_patch(2, 100, 70)
    calls = []

    def tile_at(x, y, w, h):
        calls.append((x, y, w, h))
        return image[y : y + h, x : x + w]

    strips_taken = []

    def counted(strips):
        for i, s in enumerate(strips):
            strips_taken.append(i)
            yield s

    taken_at_first_tile = []

    def progress(done, total):
        if done == 1:
            taken_at_first_tile.append(len(strips_taken))

    out = tmp_path / "cb.tif"
    write_pyramid(
        out, counted(tile_strips(tile_at, 100, 70, 32)), 100, 70, tile=32, compression="deflate", progress=progress
    )
    assert calls[:4] == [(0, 0, 32, 32), (32, 0, 32, 32), (64, 0, 32, 32), (96, 0, 4, 32)]
    assert len(calls) == 4 * 3
    assert taken_at_first_tile == [1]  # one strip in memory when the first tile is written, not the slide
    with openslide.OpenSlide(out) as slide:
        assert np.array_equal(np.asarray(slide.read_region((0, 0), 0, (100, 70)))[..., :3], image)


def test_progress_counts_every_tile_of_every_level_once(tmp_path):
    seen = []
    image = noise_patch(4, 100, 70)
    write_pyramid(
        tmp_path / "p.tif", [image], 100, 70, tile=32, progress=lambda done, total: seen.append((done, total))
    )
    total = pyramid.tile_count(100, 70, 32)
    assert total == 4 * 3 + 2 * 2 + 1  # levels 100x70, 50x35, 25x18
    assert seen == [(i, total) for i in range(1, total + 1)]


def test_strips_beyond_the_slide_are_refused_even_when_they_start_a_new_band(tmp_path):
    image = noise_patch(5, 48, 32)  # exactly one band of 32 rows; a further strip is never needed by a tile
    with pytest.raises(ValueError, match="more than the slide's 32 rows"):
        write_pyramid(tmp_path / "x.tif", [image, image[:4]], 48, 32, tile=32)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("strips", "message"),
    [
        (lambda im: [im[:30]], "strips hold 30 rows; the slide has 40"),
        (lambda im: [im, im[:1]], "more than the slide's 40 rows"),
        (lambda im: [im[:, :20]], "expected uint8 rows of shape (n, 48, 3)"),
    ],
)
def test_wrong_strips_are_refused_and_leave_nothing(tmp_path, strips, message):
    image = noise_patch(3, 48, 40)
    out = tmp_path / "bad.tif"
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        write_pyramid(out, strips(image), 48, 40, tile=16, compression="deflate")
    assert list(tmp_path.iterdir()) == []


def test_arguments_are_checked(tmp_path):
    out = tmp_path / "x.tif"
    with pytest.raises(ValueError, match="multiple of 16 px; got 40"):
        write_pyramid(out, [], 10, 10, tile=40)
    with pytest.raises(ValueError, match="positive number, e.g. 0.5; got 0"):
        write_pyramid(out, [], 10, 10, mpp=0)
    with pytest.raises(ValueError, match="one of jpeg, deflate; got 'lzw'"):
        write_pyramid(out, [], 10, 10, compression="lzw")
    with pytest.raises(ValueError, match="from 1 to 100; got 101"):
        write_pyramid(out, [], 10, 10, quality=101)
    assert list(tmp_path.iterdir()) == []


# --- stitch ---------------------------------------------------------------------------------------------------


def test_stitch_round_trip_deflate_every_cell_exact(tmp_path):
    patches = [noise_patch(i) for i in range(6)]
    folder = patch_folder(tmp_path / "patches", patches)
    out = tmp_path / "slide.tif"
    result = stitch_slide(folder, out, "3x2", mpp=0.5, compression="deflate", tile=TILE, workers=1)

    assert result.levels == [(288, 192), (144, 96), (72, 48), (36, 24)]
    assert (result.used, result.available, result.source_order) == (6, 6, "file names")
    with openslide.OpenSlide(out) as slide:
        assert slide.level_count == 4
        assert slide.level_dimensions == ((288, 192), (144, 96), (72, 48), (36, 24))
        assert slide.properties["openslide.mpp-x"] == "0.5"
        for i, patch in enumerate(patches):
            assert np.array_equal(region(slide, i % 3, i // 3), patch), f"cell {i}"
    assert leftovers(tmp_path) == []


def test_stitch_jpeg_quality_90_reads_back_close(tmp_path):
    patches = [smooth_patch(i) for i in range(4)]
    folder = patch_folder(tmp_path / "patches", patches)
    out = tmp_path / "slide.tif"
    stitch_slide(folder, out, "2x2", compression="jpeg", quality=90, tile=TILE, workers=1)
    with tifffile.TiffFile(out) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.JPEG
    with openslide.OpenSlide(out) as slide:
        assert slide.level_count == 3
        for i, patch in enumerate(patches):
            diff = np.abs(region(slide, i % 2, i // 2).astype(int) - patch).mean()
            assert diff < 3, f"cell {i}: mean abs diff {diff:.2f}"


def test_sample_folder_in_manifest_order_with_captions_and_seeds(tmp_path):
    patches = [noise_patch(i) for i in range(5)]
    folder = write_sample_folder(tmp_path / "samples", patches)
    manifest = folder / MANIFEST_CSV
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    reordered = rows[::-1]  # the manifest, not file names, decides the order
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(reordered)

    out = tmp_path / "slide.tif"
    result = stitch_slide(folder, out, (2, 2), compression="deflate", tile=TILE, workers=1)
    assert (result.used, result.available, result.source_order) == (4, 5, MANIFEST_CSV)
    record = json.loads(provenance_path(out).read_text())
    assert provenance_path(out) == out.with_name("slide.tif" + PROVENANCE_SUFFIX)
    assert [c["file"] for c in record["cells"]] == [r["image"] for r in reordered[:4]]
    assert record["cells"][0] == {
        "col": 0,
        "row": 0,
        "x": 0,
        "y": 0,
        "file": reordered[0]["image"],
        "caption": "caption 4",
        "seed": 104,
    }
    assert record["grid"] == {"cols": 2, "rows": 2} and record["patch"] == {"width": PATCH, "height": PATCH}
    assert (record["mpp"], record["order"], record["compression"]) == (0.5, "manifest", "deflate")
    with openslide.OpenSlide(out) as slide:
        assert np.array_equal(region(slide, 1, 1), patches[1])  # manifest row 4 of the reversed list


def test_shuffle_is_a_seeded_permutation(tmp_path):
    patches = [noise_patch(i, 64, 64) for i in range(9)]
    folder = patch_folder(tmp_path / "patches", patches)
    files = {}
    for name, order in (("a", "shuffle:7"), ("b", "shuffle:7"), ("c", "shuffle:8"), ("m", "manifest")):
        stitch_slide(folder, tmp_path / f"{name}.tif", "3x3", order=order, compression="deflate", tile=32, workers=1)
        files[name] = [c["file"] for c in json.loads(provenance_path(tmp_path / f"{name}.tif").read_text())["cells"]]
    assert files["a"] == files["b"]
    assert files["a"] != files["c"] and files["a"] != files["m"]
    assert sorted(files["a"]) == files["m"]
    with openslide.OpenSlide(tmp_path / "a.tif") as slide:
        for i, name in enumerate(files["a"]):
            assert np.array_equal(region(slide, i % 3, i // 3, 64), patches[int(name[6:9])])


def test_a_grid_the_samples_cannot_fill_is_refused(tmp_path):
    folder = patch_folder(tmp_path / "patches", [noise_patch(i) for i in range(3)])
    out = tmp_path / "slide.tif"
    with pytest.raises(ValueError, match=r"grid 2x2 needs 4 samples; .*patches holds 3"):
        stitch_slide(folder, out, "2x2")
    assert not out.exists() and leftovers(tmp_path) == []


def test_mixed_sizes_are_refused_naming_the_sizes(tmp_path):
    patches = [noise_patch(i) for i in range(4)] + [noise_patch(9, 64, 64)]
    folder = patch_folder(tmp_path / "patches", patches)
    out = tmp_path / "slide.tif"
    with pytest.raises(ValueError, match=r"same size; found 96x96 px: 4 .*; 64x64 px: 1 \(e.g. patch_004.png\)"):
        stitch_slide(folder, out, "2x2")
    assert not out.exists() and leftovers(tmp_path) == []


def test_existing_output_is_kept_without_overwrite_and_replaced_with_it(tmp_path):
    folder = patch_folder(tmp_path / "patches", [noise_patch(i) for i in range(4)])
    out = tmp_path / "slide.tif"
    out.write_bytes(b"not a slide")
    with pytest.raises(FileExistsError, match="slide.tif exists; pass --overwrite"):
        stitch_slide(folder, out, "2x2")
    assert out.read_bytes() == b"not a slide"
    stitch_slide(folder, out, "2x2", overwrite=True, compression="deflate", tile=TILE, workers=1)
    with openslide.OpenSlide(out) as slide:
        assert np.array_equal(region(slide, 1, 0), noise_patch(1))


def test_a_failure_while_writing_leaves_nothing_at_the_output(tmp_path):
    folder = patch_folder(tmp_path / "patches", [noise_patch(i) for i in range(4)])
    broken = folder / "patch_003.png"
    broken.write_bytes(broken.read_bytes()[:200])  # the header (its size) reads; the pixels do not
    out = tmp_path / "slide.tif"
    with pytest.raises(OSError):
        stitch_slide(folder, out, "2x2", compression="deflate", tile=TILE, workers=1)
    assert not out.exists() and not provenance_path(out).exists()
    assert leftovers(tmp_path) == []


def test_the_output_slide_is_not_a_sample_of_its_own_folder(tmp_path):
    folder = patch_folder(tmp_path / "patches", [noise_patch(i) for i in range(4)])
    out = folder / "slide.tif"
    stitch_slide(folder, out, "2x2", compression="deflate", tile=TILE, workers=1)
    samples, _ = list_samples(folder, exclude=out)
    assert [s.path.name for s in samples] == [f"patch_{i:03d}.png" for i in range(4)]
    stitch_slide(folder, out, "2x2", overwrite=True, compression="deflate", tile=TILE, workers=1)


def test_tiles_are_multiples_of_16():
    assert pyramid.TILE_GRANULE == 16


def test_cli_stitch_then_refuses_to_overwrite(tmp_path, capsys):
    folder = patch_folder(tmp_path / "patches", [noise_patch(i, 64, 64) for i in range(4)])
    out = tmp_path / "slide.tif"
    args = ["stitch", "--samples", str(folder), "--grid", "2x2", "--out", str(out), "--tile", "32"]
    assert main(args + ["--compression", "deflate", "--mpp", "0.25"]) == 0
    printed = capsys.readouterr().out
    assert "2x2 patches of 64x64 px = 128x128 px at 0.25 mpp, 3 levels, deflate" in printed
    with openslide.OpenSlide(out) as slide:
        assert slide.properties["openslide.mpp-x"] == "0.25"
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--order", "random"]) == 2
    assert "order must be manifest or shuffle:SEED" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--grid", "3x3"]) == 2
    assert "grid 3x3 needs 9 samples" in capsys.readouterr().err
