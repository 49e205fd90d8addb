"""The patch data-set format (renal_ldm.data.layout): each guarantee of its docstring, as a user would see it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from renal_ldm.captions import mask_fractions, mask_to_caption
from renal_ldm.classes import GLOMERULI_ID, OTHER_TISSUE_ID, by_id, by_name
from renal_ldm.data import layout
from renal_ldm.data.layout import CACHE_FILE, CAPTIONS_FILE, PARAMETERS_FILE, DatasetWriter, read_captions
from renal_ldm.data.patches import PatchDataset
from renal_ldm.data.tiling import tile_slide
from renal_ldm.phantom import generate_dataset

TUBULI_ID = by_name("Tubuli").id


def pair(seed: int, side: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A random RGB patch and a mask with three labels in proportions that depend on the seed."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    mask = np.full((side, side), OTHER_TISSUE_ID, np.uint8)
    mask[: 2 + seed % 8] = GLOMERULI_ID
    mask[:, : 1 + seed % 5] = TUBULI_ID
    return image, mask


def write_set(root, names, **kwargs) -> list[dict]:
    with DatasetWriter(root, **kwargs) as writer:
        return [writer.add(name, *pair(i)) for i, name in enumerate(names)]


def snapshot(root) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes): what "exactly as before" means."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_records_round_trip_and_are_those_of_the_masks(tmp_path):
    with DatasetWriter(tmp_path / "ds") as writer:
        written = [writer.add(f"p{i}.png", *pair(i), x=i, source="test") for i in range(3)]
    assert read_captions(tmp_path / "ds") == written == read_captions(tmp_path / "ds" / CAPTIONS_FILE)
    for i, record in enumerate(written):
        image, mask = pair(i)
        assert list(record)[:3] == list(layout.RECORD_KEYS) and record["x"] == i and record["source"] == "test"
        assert record["caption"] == mask_to_caption(mask)
        assert record["fractions"] == {by_id(k).name: round(v, 6) for k, v in mask_fractions(mask).items()}
        saved = Image.open(layout.mask_path(tmp_path / "ds", record["file"]))
        assert saved.mode == "L" and np.array_equal(np.asarray(saved), mask)
        assert np.array_equal(np.asarray(Image.open(layout.image_path(tmp_path / "ds", record["file"]))), image)


def test_patch_dataset_reads_what_the_writer_wrote(tmp_path):
    records = write_set(tmp_path / "ds", ["a.png", "b.png"])
    captions = [r["caption"] for r in records]
    assert PatchDataset(tmp_path / "ds", flips=False).captions == captions
    assert PatchDataset(tmp_path / "ds" / CAPTIONS_FILE, flips=False).captions == captions
    item = PatchDataset(tmp_path / "ds", flips=False, return_mask=True)[1]
    assert item["name"] == "images/b.png" and np.array_equal(item["mask"].numpy(), pair(1)[1])


def test_a_folder_holding_a_data_set_is_refused_and_left_alone(tmp_path):
    write_set(tmp_path, ["a.png"])
    before = snapshot(tmp_path)
    refusal = r"holds a data set \(images/, masks/, captions.jsonl\); choose an empty folder or pass --overwrite"
    with pytest.raises(FileExistsError, match=refusal):
        DatasetWriter(tmp_path)
    with pytest.raises(FileExistsError) as refused:
        DatasetWriter(tmp_path, append_hint="to add this slide's patches")
    assert "--append (append=True) to add this slide's patches" in str(refused.value)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("entry", layout.DATASET_ENTRIES)
def test_any_entry_alone_means_a_data_set(tmp_path, entry):
    (tmp_path / entry).mkdir() if "." not in entry else (tmp_path / entry).write_text("")
    with pytest.raises(FileExistsError, match=entry):
        layout.check_output(tmp_path)


def test_a_folder_with_other_files_only_is_written_into_and_the_files_kept(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    write_set(tmp_path, ["a.png"])
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert len(read_captions(tmp_path)) == 1


def test_overwrite_replaces_only_the_data_sets_own_entries(tmp_path):
    generate_dataset(tmp_path, 2, 32, seed=0)  # with phantom.json
    PatchDataset(tmp_path)  # writes the caption cache
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "runs").mkdir()
    assert (tmp_path / CACHE_FILE).is_file() and (tmp_path / PARAMETERS_FILE).is_file()
    write_set(tmp_path, ["new.png"], overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["captions.jsonl", "images", "masks", "notes.txt", "runs"]
    assert [p.name for p in (tmp_path / "images").iterdir()] == ["new.png"]
    assert [r["file"] for r in read_captions(tmp_path)] == ["new.png"]


class Boom(RuntimeError):
    pass


def test_a_failed_overwrite_puts_the_old_data_set_back_exactly(tmp_path):
    generate_dataset(tmp_path, 3, 32, seed=0)
    (tmp_path / "notes.txt").write_text("keep me")
    before = snapshot(tmp_path)
    with pytest.raises(Boom), DatasetWriter(tmp_path, overwrite=True, parameters={"n": 1}) as writer:
        writer.add("000000.png", *pair(0))
        assert not (tmp_path / CAPTIONS_FILE).exists()  # set aside while the new set is written
        raise Boom
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["captions.jsonl", "images", "masks", "notes.txt", PARAMETERS_FILE]
    )


def test_a_failed_run_into_a_fresh_folder_leaves_no_entry(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(Boom), DatasetWriter(tmp_path, parameters={"n": 2}) as writer:
        writer.add("a.png", *pair(0))
        raise Boom
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    with pytest.raises(Boom), DatasetWriter(tmp_path / "new") as writer:
        raise Boom
    assert not (tmp_path / "new").exists()


def test_append_keeps_earlier_records_and_a_failed_append_removes_only_its_pairs(tmp_path):
    first = write_set(tmp_path, ["a.png", "b.png"])
    before = snapshot(tmp_path)
    with pytest.raises(Boom), DatasetWriter(tmp_path, append=True) as writer:
        writer.add("c.png", *pair(2))
        assert read_captions(tmp_path) == first  # captions.jsonl is whole: the old one until the run ends
        raise Boom
    assert snapshot(tmp_path) == before
    with DatasetWriter(tmp_path, append=True) as writer:
        third = writer.add("c.png", *pair(2))
    assert read_captions(tmp_path) == first + [third]
    assert len(PatchDataset(tmp_path)) == 3


def test_append_refuses_another_kind_of_data_set_and_never_replaces_a_pair(tmp_path):
    write_set(tmp_path, ["a.png"])
    with pytest.raises(ValueError, match="it has masks and this run has no mask; use one kind per data set"):
        DatasetWriter(tmp_path, append=True, with_masks=False)
    with pytest.raises(FileExistsError, match="a.png already exists"), DatasetWriter(tmp_path, append=True) as w:
        w.add("a.png", *pair(5))
    assert read_captions(tmp_path)[0]["caption"] == mask_to_caption(pair(0)[1])
    assert np.array_equal(np.asarray(Image.open(layout.mask_path(tmp_path, "a.png"))), pair(0)[1])
    with pytest.raises(ValueError, match="exclude each other"):
        DatasetWriter(tmp_path, overwrite=True, append=True)


@pytest.mark.parametrize(
    "name,image,mask,message",
    [
        ("a.jpg", np.zeros((4, 4, 3), np.uint8), None, "ending in .png"),
        ("sub/a.png", np.zeros((4, 4, 3), np.uint8), None, "plain file name"),
        ("a.png", np.zeros((4, 4), np.uint8), None, r"shape \(4, 4\).*expected uint8 \(H, W, 3\)"),
        ("a.png", np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), np.uint8), "mask of shape"),
        ("a.png", np.zeros((4, 4, 3), np.uint8), np.full((4, 4), 9, np.uint8), "outside the valid range 0..7"),
    ],
)
def test_bad_pairs_are_refused_by_name_and_write_nothing(tmp_path, name, image, mask, message):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(ValueError, match=message):
        layout.write_pair(tmp_path, name, image, mask)
    assert not list(tmp_path.rglob("*.png"))


def test_phantom_writer_and_tiler_follow_the_one_rule(tmp_path):
    """A phantom set refuses a tiling run and is replaced by an overwriting one; the reverse holds too."""
    slide = tmp_path / "slide.png"
    Image.fromarray(np.full((64, 64, 3), (190, 80, 160), np.uint8)).save(slide)
    Image.fromarray(np.full((64, 64), TUBULI_ID, np.uint8)).save(tmp_path / "mask.png")
    out = tmp_path / "ds"
    generate_dataset(out, 2, 32, seed=0)
    with pytest.raises(FileExistsError, match="already holds a data set .*--overwrite.*--append"):
        tile_slide(slide, out, size=32, mask=tmp_path / "mask.png")
    tile_slide(slide, out, size=32, mask=tmp_path / "mask.png", overwrite=True)
    assert not (out / PARAMETERS_FILE).exists()  # the phantom parameters described the replaced set
    assert [json.loads(line)["file"] for line in (out / CAPTIONS_FILE).read_text().splitlines()] == [
        "slide_0_0.png",
        "slide_32_0.png",
        "slide_0_32.png",
        "slide_32_32.png",
    ]
    with pytest.raises(FileExistsError, match="already holds a data set"):
        generate_dataset(out, 2, 32, seed=0)
    generate_dataset(out, 2, 32, seed=0, overwrite=True)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000000.png", "000001.png"]
