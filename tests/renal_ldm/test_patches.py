"""Patch data sets: what training sees (images in [-1, 1], captions from masks, paired flips) and clear refusals."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from renal_ldm.captions import caption_to_levels, mask_to_caption
from renal_ldm.classes import GLOMERULI_ID, by_name
from renal_ldm.data import patches
from renal_ldm.data.masks import labels_to_rgb
from renal_ldm.data.patches import PatchDataset, data_fingerprint, split_dataset

TUBULI = by_name("Tubuli").id
SIZE = 16


def labels_for(i: int) -> np.ndarray:
    """Tubuli everywhere, Glomeruli in the top-left corner growing with i: distinct captions per patch."""
    labels = np.full((SIZE, SIZE), TUBULI, np.uint8)
    labels[: 2 + i % 12, : SIZE // 2] = GLOMERULI_ID
    return labels


def image_for(labels: np.ndarray) -> np.ndarray:
    """RGB whose red channel encodes the label, so image and mask flips can be checked against each other."""
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    rgb[..., 0] = labels * 30
    rgb[..., 1] = np.arange(SIZE, dtype=np.uint8)[None, :] * 8  # left-right gradient
    rgb[..., 2] = np.arange(SIZE, dtype=np.uint8)[:, None] * 8  # top-bottom gradient
    return rgb


def make_folder(root, n: int = 6, palette_masks: bool = False):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        labels = labels_for(i)
        Image.fromarray(image_for(labels)).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(labels_to_rgb(labels) if palette_masks else labels).save(root / "masks" / f"{i:03d}.png")
    return root


@pytest.fixture(autouse=True)
def _fresh_memory_cache():
    patches._MEMORY_CACHE.clear()
    yield
    patches._MEMORY_CACHE.clear()


def test_items_are_scaled_images_with_mask_captions(tmp_path):
    root = make_folder(tmp_path / "ds", palette_masks=True)
    ds = PatchDataset(root, flips=False, return_mask=True)
    assert len(ds) == 6
    item = ds[3]
    assert item["image"].shape == (3, SIZE, SIZE) and item["image"].dtype == torch.float32
    expected = torch.from_numpy(image_for(labels_for(3))).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(item["image"], expected)
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    assert torch.equal(item["mask"], torch.from_numpy(labels_for(3).astype(np.int64)))
    assert item["caption"] == mask_to_caption(labels_for(3))
    assert caption_to_levels(item["caption"])["Glomeruli"] in ("low", "medium")
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, SIZE, SIZE) and len(batch["caption"]) == 4


def test_flips_move_image_and_mask_together_and_are_seedable(tmp_path):
    root = make_folder(tmp_path / "ds", n=1)
    seen = set()
    ds = PatchDataset(root, return_mask=True, generator=torch.Generator().manual_seed(7))
    draws = [ds[0] for _ in range(40)]
    for item in draws:
        assert torch.equal(((item["image"][0] + 1) * 127.5).round() / 30, item["mask"].float())
        green, blue = item["image"][1], item["image"][2]
        seen.add((bool(green[0, 0] > green[0, -1]), bool(blue[0, 0] > blue[-1, 0])))
    assert seen == {(False, False), (True, False), (False, True), (True, True)}

    again = PatchDataset(root, return_mask=True, generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(again[0]["image"], d["image"]) for d in draws)
    still = PatchDataset(root, flips=False)  # flips off: always the stored orientation
    stored = torch.from_numpy(image_for(labels_for(0))).permute(2, 0, 1).float() / 127.5 - 1
    assert all(torch.allclose(still[0]["image"], stored) for _ in range(5))


def test_captions_are_cached_across_constructions(tmp_path):
    root = make_folder(tmp_path / "ds")
    first = PatchDataset(root)
    assert first.masks_read == 6
    patches._MEMORY_CACHE.clear()  # prove the on-disk cache alone suffices (a new process)
    second = PatchDataset(root)
    assert second.masks_read == 0 and second.captions == first.captions
    assert PatchDataset(root).masks_read == 0  # in-memory cache

    changed = np.full((SIZE, SIZE), GLOMERULI_ID, np.uint8)
    Image.fromarray(changed).save(root / "masks" / "002.png")
    os.utime(root / "masks" / "002.png", ns=(1, 1))  # a new version even on a coarse-mtime filesystem
    third = PatchDataset(root)
    assert third.masks_read == 1
    assert third.captions[2] == mask_to_caption(changed) != first.captions[2]

    other_options = PatchDataset(root, zero_is_background=True)  # options change how masks read: recompute
    assert other_options.masks_read == 6


def test_manifests_including_the_phantom_captions_file(tmp_path):
    root = make_folder(tmp_path / "ds", n=3)
    with_masks = root / "pairs.jsonl"
    rows = [{"image": f"images/{i:03d}.png", "mask": f"masks/{i:03d}.png"} for i in range(3)]
    with_masks.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    by_mask = PatchDataset(with_masks)
    assert by_mask.captions == [mask_to_caption(labels_for(i)) for i in range(3)]

    given = root / "given.jsonl"
    given.write_text(json.dumps({"image": "images/001.png", "caption": "my caption"}) + "\n")
    assert PatchDataset(given).captions == ["my caption"]

    phantom = root / "captions.jsonl"
    phantom.write_text(
        "".join(json.dumps({"file": f"{i:03d}.png", "caption": f"c{i}", "fractions": {}}) + "\n" for i in range(3))
    )
    ds = PatchDataset(phantom, return_mask=True, flips=False)
    assert ds.captions == ["c0", "c1", "c2"] and ds.masks_read == 0
    assert torch.equal(ds[1]["mask"], torch.from_numpy(labels_for(1).astype(np.int64)))


def test_manifest_errors_name_the_line(tmp_path):
    make_folder(tmp_path, n=1)
    cases = {
        "not json": "line 1: not JSON",
        json.dumps({"image": "images/000.png"}): 'neither "mask" nor "caption"',
        json.dumps({"mask": "masks/000.png"}): 'no "image"',
        json.dumps({"image": "images/404.png", "caption": "x"}): "image file not found",
        json.dumps({"image": 7, "caption": "x"}): '"image" must be a file path \\(a string\\); got 7',
        json.dumps({"image": "images/000.png", "mask": ["m.png"]}): '"mask" must be a file path',
    }
    for line, message in cases.items():
        (tmp_path / "m.jsonl").write_text(line + "\n")
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            PatchDataset(tmp_path / "m.jsonl")
    (tmp_path / "m.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="lists no patches"):
        PatchDataset(tmp_path / "m.jsonl")


def test_folder_errors_name_the_file_and_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="data set not found"):
        PatchDataset(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="no images/ folder"):
        PatchDataset(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="no masks/ folder"):
        PatchDataset(tmp_path)
    (tmp_path / "masks").mkdir()
    with pytest.raises(ValueError, match=r"no images in .*images; expected files ending in \.png"):
        PatchDataset(tmp_path)

    root = make_folder(tmp_path / "ds", n=2)
    os.remove(root / "masks" / "001.png")
    with pytest.raises(ValueError, match=r"001\.png: no mask for this image"):
        PatchDataset(root)
    Image.fromarray(np.zeros((SIZE, SIZE + 1), np.uint8)).save(root / "masks" / "001.png")
    with pytest.raises(ValueError, match=r"001\.png: mask is 17x16 but its image 001\.png is 16x16"):
        PatchDataset(root)
    Image.fromarray(labels_for(1)).save(root / "masks" / "001.png")
    (root / "images" / "001.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"001\.png: not a readable image"):
        PatchDataset(root)
    Image.fromarray(labels_for(1) * 10).save(root / "images" / "001.png")  # greyscale
    with pytest.raises(ValueError, match=r"001\.png: image mode 'L'; expected an RGB image"):
        PatchDataset(root)


def test_fingerprint_tracks_content_not_order(tmp_path):
    root = make_folder(tmp_path / "ds")
    ds = PatchDataset(root)
    fp = data_fingerprint(ds)
    assert len(fp) == 64 and fp == data_fingerprint(PatchDataset(root))
    manifest = root / "m.jsonl"
    rows = [{"image": f"images/{i:03d}.png", "mask": f"masks/{i:03d}.png"} for i in reversed(range(6))]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert data_fingerprint(PatchDataset(manifest)) == fp  # same files, other order

    Image.fromarray(np.full((SIZE, SIZE), GLOMERULI_ID, np.uint8)).save(root / "masks" / "000.png")
    assert data_fingerprint(PatchDataset(root)) != fp
    train, held = split_dataset(ds, 2, seed=0)
    assert data_fingerprint(train) != data_fingerprint(held)


def test_split_is_fixed_by_seed_and_names(tmp_path):
    root = make_folder(tmp_path / "ds", n=20)
    ds = PatchDataset(root)
    train, held = split_dataset(ds, 0.25, seed=3)
    assert len(held) == 5 and len(train) == 15
    assert sorted(train.indices + held.indices) == list(range(20))
    again_train, again_held = split_dataset(PatchDataset(root), 0.25, seed=3)
    assert again_held.indices == held.indices and again_train.indices == train.indices
    assert split_dataset(ds, 0.25, seed=4)[1].indices != held.indices

    held_names = {ds.records[i].name for i in held.indices}  # adding a patch never moves these to train
    Image.fromarray(image_for(labels_for(0))).save(root / "images" / "zzz.png")
    shutil.copy(root / "masks" / "000.png", root / "masks" / "zzz.png")
    grown = PatchDataset(root)
    grown_held = {grown.records[i].name for i in split_dataset(grown, 5, seed=3)[1].indices}
    assert len(grown_held & held_names) >= 4

    assert len(split_dataset(ds, 0.0)[1]) == 0 and len(split_dataset(ds, 0.01)[1]) == 1
    with pytest.raises(ValueError, match=r"held_out fraction must be in \[0, 1\)"):
        split_dataset(ds, 1.5)
    with pytest.raises(ValueError, match="held_out count"):
        split_dataset(ds, 20)


def test_real_kidney_tiles_with_binary_masks(kidney_pas_dir):
    ds = PatchDataset(kidney_pas_dir, binary_class="Glomeruli", flips=False)
    assert len(ds) == 16
    assert all("Glomeruli" in caption_to_levels(c) for c in ds.captions)  # every tile holds a glomerulus
    item = ds[0]
    assert item["image"].shape == (3, 1024, 1024) and -1 <= float(item["image"].min()) < 0
    assert not (kidney_pas_dir / patches.CACHE_FILE).exists() or os.access(kidney_pas_dir, os.W_OK)
