"""Phantom renal tissue: what users of the embedded data set rely on.

Determinism by seed, a mask that is exactly the painted geometry, captions derived from the mask, composition
control at caption-level precision, level coverage of the random mode, and a CLI that writes complete data
sets, refuses to clobber one, and names bad input. Small sizes keep the whole file fast.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.color import rgb2hed

from renal_ldm import cli
from renal_ldm.artifacts import frame_ratio_interval
from renal_ldm.captions import level_for_fraction, mask_fractions, mask_to_caption
from renal_ldm.classes import BACKGROUND_ID, CAPTIONED_CLASSES, MAX_LABEL, TISSUE_CLASSES
from renal_ldm.contact_sheet import contact_sheet, overlay_mask
from renal_ldm.data.layout import level_counts, read_captions
from renal_ldm.phantom import MIN_SIZE, PART_LABELS, Part, generate_dataset, generate_phantom, parse_composition

BACKGROUND = TISSUE_CLASSES[BACKGROUND_ID].name


# ----------------------------------------------------------------------------------------------- one phantom


def test_same_seed_gives_the_same_phantom_and_rng_matches_seed():
    a = generate_phantom(96, seed=7)
    b = generate_phantom(96, seed=7)
    c = generate_phantom(96, rng=np.random.default_rng(7))
    for other in (b, c):
        assert np.array_equal(a.image, other.image)
        assert np.array_equal(a.mask, other.mask)
        assert a.caption == other.caption


def test_different_seeds_differ():
    a, b = generate_phantom(96, seed=1), generate_phantom(96, seed=2)
    assert not np.array_equal(a.image, b.image)
    assert not np.array_equal(a.mask, b.mask)


@pytest.mark.parametrize("size", [64, (80, 112)])
def test_image_and_mask_shapes_types_and_labels(size):
    p = generate_phantom(size, seed=3)
    h, w = (size, size) if isinstance(size, int) else size
    assert p.image.shape == (h, w, 3) and p.image.dtype == np.uint8
    assert p.mask.shape == (h, w) and p.mask.dtype == np.uint8
    assert set(np.unique(p.mask).tolist()) <= set(range(MAX_LABEL + 1))


def test_caption_and_fractions_are_those_of_the_mask():
    for seed in range(5):
        p = generate_phantom(96, seed=seed)
        assert p.caption == mask_to_caption(p.mask)
        expected = {TISSUE_CLASSES[k].name: v for k, v in mask_fractions(p.mask).items()}
        assert p.fractions == pytest.approx(expected)
        assert sum(p.fractions.values()) == pytest.approx(1.0)


def test_mask_is_the_geometry_that_was_painted():
    """Mask and image come from one parts map; each part's pixels carry that part's colour."""
    composition = {BACKGROUND: 0.3, "Dilated Tubuli": 0.3, "Tubuli": 0.2}
    for seed in range(3):
        p = generate_phantom(128, seed=seed, composition=composition)
        assert np.array_equal(p.mask, PART_LABELS[p.parts])
        glass = ndimage.binary_erosion(p.parts == Part.GLASS, iterations=2)
        assert glass.sum() > 0.2 * glass.size
        assert p.image[glass].min() >= 210, "background (label 0) must be near-white glass"
        tissue = p.mask != BACKGROUND_ID
        assert p.image[tissue].mean() < p.image[glass].mean() - 25, "tissue is stained, glass is not"
        lumen = ndimage.binary_erosion(p.parts == Part.DILATED_LUMEN, iterations=2)
        epithelium = np.isin(p.parts, [Part.PROXIMAL_EPITHELIUM, Part.DISTAL_EPITHELIUM])
        assert p.image[lumen].mean() > p.image[epithelium].mean() + 30, "dilated lumens are clear"


def test_glomeruli_are_dense_with_nuclei_and_sclerotic_ones_are_not():
    hematoxylin = {Part.TUFT: [], Part.SCLEROTIC_TUFT: []}
    for seed in range(3):
        p = generate_phantom(128, seed=seed, composition={"Glomeruli": 0.3, "Sclerotic Glomeruli": 0.3})
        h = rgb2hed(p.image)[..., 0]
        for part in hematoxylin:
            hematoxylin[part].append(h[p.parts == part].mean())
    assert np.mean(hematoxylin[Part.TUFT]) > 1.5 * np.mean(hematoxylin[Part.SCLEROTIC_TUFT])


# ------------------------------------------------------------------------------------------------ composition

SINGLE_TARGETS = [({c.name: t}, 128) for c in CAPTIONED_CLASSES for t in (0.1, 0.3, 0.5)]


@pytest.mark.parametrize(
    "composition,size",
    SINGLE_TARGETS
    + [
        ({"Glomeruli": 0.45, "Tubuli": 0.25}, 256),
        ({"Tubuli": 0.3, "Arteries": 0.1, "Sclerotic Glomeruli": 0.1}, 128),
        ({BACKGROUND: 0.3, "Tubuli": 0.45}, 256),
    ],
    ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else str(v),
)
def test_achieved_level_matches_the_target_level(composition, size):
    for seed in range(2):
        p = generate_phantom(size, seed=seed, composition=composition)
        for name, target in composition.items():
            if name != BACKGROUND:
                assert level_for_fraction(p.fractions[name]) == level_for_fraction(target), (name, p.fractions)
        for cls in CAPTIONED_CLASSES:  # classes not asked for stay absent (interstitium is the filler)
            if cls.name not in composition and cls.name != "other kidney tissue":
                assert p.fractions[cls.name] == 0.0


def test_naming_other_tissue_leaves_the_rest_as_background():
    p = generate_phantom(128, seed=0, composition={"other kidney tissue": 0.5, "Tubuli": 0.2})
    assert p.fractions[BACKGROUND] == pytest.approx(0.3, abs=0.01)


def test_lead_classes_dominate_random_tiles_and_no_lead_draws_as_before():
    """--lead adds tiles where the named classes lead: glomeruli reach "a lot of" in far more of them than in the
    plain random mode, and every tile holds at least one of the lead classes."""

    def share_high(records, name):
        return sum(level_for_fraction(r[name]) == "high" for r in records) / len(records)

    plain = [generate_phantom(128, seed=s).fractions for s in range(60)]
    led = [generate_phantom(128, seed=s, lead=["Glomeruli", "Sclerotic Glomeruli"]).fractions for s in range(60)]
    assert all(r["Glomeruli"] > 0 or r["Sclerotic Glomeruli"] > 0 for r in led)
    assert share_high(led, "Glomeruli") >= 2 * share_high(plain, "Glomeruli") + 0.05
    # Without a lead the draws are the ones data sets were made with: the same phantom as ever for a seed.
    same = generate_phantom(96, seed=7, lead=None)
    assert np.array_equal(same.image, generate_phantom(96, seed=7).image)


@pytest.mark.parametrize(
    "lead,composition,message",
    [
        (["other kidney tissue"], None, "'other kidney tissue' is not a structure"),
        (["Glomerulus"], None, "Glomerulus"),
        ([], None, "no lead class"),
        (["Glomeruli"], {"Tubuli": 0.3}, "either a composition or a lead"),
    ],
)
def test_bad_lead_is_refused_by_name(lead, composition, message):
    with pytest.raises(ValueError, match=message):
        generate_phantom(64, lead=lead, composition=composition)


def test_random_mode_covers_every_level_of_every_class():
    records = [{"fractions": generate_phantom(128, seed=s).fractions} for s in range(200)]
    counts = level_counts(records)
    missing = [(name, level) for name, levels in counts.items() for level, n in levels.items() if n == 0]
    assert not missing, counts


@pytest.mark.parametrize(
    "composition,message",
    [
        ({"Glomerulus": 0.3}, "Glomerulus"),
        ({"Glomeruli": 0.7, "Tubuli": 0.5}, "sum to 1.2"),
        ({"Tubuli": -0.1}, "-0.1"),
        ({"Tubuli": "lots"}, "lots"),
        ({"Tubuli": 0.2, "tubuli": 0.1}, "twice"),
    ],
)
def test_bad_composition_is_refused_by_name(composition, message):
    with pytest.raises(ValueError, match=message):
        generate_phantom(64, composition=composition)


def test_context_gives_a_patch_cut_from_a_wider_field_measured_on_itself():
    wide = generate_phantom(96 + 2 * 24, seed=5)
    cut = generate_phantom(96, seed=5, context=24)
    assert cut.image.shape == (96, 96, 3) and cut.mask.shape == (96, 96)
    # the centre of the wider field the same seed draws; caption and fractions measured on the patch itself
    assert np.array_equal(cut.image, wide.image[24:-24, 24:-24])
    assert np.array_equal(cut.mask, PART_LABELS[cut.parts])
    assert cut.caption == mask_to_caption(cut.mask)
    assert cut.fractions == pytest.approx({k: v for k, v in _named_fractions(cut.mask).items()})
    assert generate_phantom(96, seed=5, context=24).caption == cut.caption  # a seed still reproduces it


def _named_fractions(mask):
    return {TISSUE_CLASSES[k].name: v for k, v in mask_fractions(mask).items()}


def test_context_takes_away_the_border_the_packing_leaves():
    """Without context, tiles led by glomeruli have a busier border band than interior (structures cut by the
    border on purpose), unlike a tile from a slide. With context the border looks like the interior."""
    lead = ["Glomeruli", "Sclerotic Glomeruli"]
    plain = [generate_phantom(128, seed=900000 + k, lead=lead).image for k in range(64)]
    cut = [generate_phantom(128, seed=900000 + k, lead=lead, context=32).image for k in range(64)]
    busy, _, _ = frame_ratio_interval(plain)
    ratio, low, high = frame_ratio_interval(cut)
    assert busy > 1.03
    assert low < 1.0 < high and abs(ratio - 1) < abs(busy - 1)


@pytest.mark.parametrize("context", [-1, 2.5, True, "8"])
def test_bad_context_is_refused_by_name(context):
    with pytest.raises(ValueError, match=f"context.*{context!r}"):
        generate_phantom(64, context=context)


def test_too_small_size_is_refused():
    with pytest.raises(ValueError, match=f"16.*at least {MIN_SIZE}"):
        generate_phantom(16)


def test_parse_composition_spec():
    assert parse_composition("Glomeruli=0.45, tubuli=0.25") == {"Glomeruli": 0.45, "Tubuli": 0.25}
    assert parse_composition(f"{BACKGROUND}=0.2,Tubuli=0.3") == {BACKGROUND: 0.2, "Tubuli": 0.3}
    with pytest.raises(ValueError, match="NAME=FRACTION"):
        parse_composition("Glomeruli")
    with pytest.raises(ValueError, match="'x'"):
        parse_composition("Glomeruli=x")


# ------------------------------------------------------------------------------------------- data set and CLI


def main(argv):
    """`renal-ldm` with only the phantom command registered: the real entry point and error handling, without
    importing the other commands' heavy dependencies (torch, diffusers) into this fast test file."""
    modules = cli.COMMAND_MODULES
    cli.COMMAND_MODULES = ["renal_ldm.cli.phantom_cmd"]
    try:
        return cli.main(argv)
    finally:
        cli.COMMAND_MODULES = modules


def test_phantom_command_is_registered():
    assert "renal_ldm.cli.phantom_cmd" in cli.COMMAND_MODULES


def _read_pair(root, name):
    image = Image.open(root / "images" / name)
    mask = Image.open(root / "masks" / name)
    return image, mask


def test_cli_writes_a_complete_data_set_that_regenerates_pair_by_pair(tmp_path, capsys):
    out, sheet = tmp_path / "ds", tmp_path / "sheet.png"
    code = main(
        [
            "phantom",
            "--out",
            str(out),
            "--n",
            "5",
            "--size",
            "64",
            "--seed",
            "40",
            "--workers",
            "1",
            "--contact-sheet",
            str(sheet),
        ]
    )
    assert code == 0
    assert "wrote 5 pairs" in capsys.readouterr().out
    lines = (out / "captions.jsonl").read_text().splitlines()
    assert len(lines) == 5
    for i, line in enumerate(lines):
        record = json.loads(line)
        assert set(record) == {"file", "caption", "fractions"}
        assert record["file"] == f"{i:06d}.png"
        image, mask = _read_pair(out, record["file"])
        assert image.mode == "RGB" and image.size == (64, 64)
        assert mask.mode == "L"
        labels = np.asarray(mask)
        assert labels.max() <= MAX_LABEL
        assert record["caption"] == mask_to_caption(labels)
        assert set(record["fractions"]) == {c.name for c in TISSUE_CLASSES}
        alone = generate_phantom(64, seed=40 + i)
        assert np.array_equal(np.asarray(image), alone.image)
        assert np.array_equal(labels, alone.mask)
    assert Image.open(sheet).size[0] > 0


def test_workers_write_the_same_data_set_as_one_process(tmp_path):
    one = generate_dataset(tmp_path / "one", 4, 64, seed=9, workers=1)
    two = generate_dataset(tmp_path / "two", 4, 64, seed=9, workers=2)
    assert read_captions(one) == read_captions(two)
    for i in range(4):
        name = f"{i:06d}.png"
        for sub in ("images", "masks"):
            assert np.array_equal(np.asarray(Image.open(one / sub / name)), np.asarray(Image.open(two / sub / name)))


def test_cli_composition_is_honoured(tmp_path):
    out = tmp_path / "ds"
    assert (
        main(
            [
                "phantom",
                "--out",
                str(out),
                "--n",
                "2",
                "--size",
                "128",
                "--composition",
                "Arteries=0.3",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    for record in read_captions(out):
        assert level_for_fraction(record["fractions"]["Arteries"]) == "medium"
        assert record["fractions"]["Glomeruli"] == 0.0


def test_cli_lead_is_recorded_and_honoured(tmp_path):
    out = tmp_path / "ds"
    args = ["phantom", "--out", str(out), "--n", "4", "--size", "96", "--lead", "Sclerotic Glomeruli", "--workers", "1"]
    assert main(args) == 0
    assert json.loads((out / "phantom.json").read_text())["lead"] == ["Sclerotic Glomeruli"]
    assert all(record["fractions"]["Sclerotic Glomeruli"] > 0 for record in read_captions(out))


def test_cli_context_is_recorded_and_regenerates_pair_by_pair(tmp_path):
    out = tmp_path / "ds"
    args = ["phantom", "--out", str(out), "--n", "2", "--size", "64", "--context", "16", "--workers", "1"]
    assert main(args) == 0
    assert json.loads((out / "phantom.json").read_text())["context"] == 16
    for record in read_captions(out):
        index = int(record["file"].split(".")[0])
        phantom = generate_phantom(64, seed=index, context=16)
        assert np.array_equal(np.asarray(Image.open(out / "images" / record["file"]).convert("RGB")), phantom.image)
        assert record["caption"] == phantom.caption


def test_cli_refuses_to_overwrite_a_data_set_unless_asked(tmp_path, capsys):
    out = tmp_path / "ds"
    args = ["phantom", "--out", str(out), "--size", "64", "--workers", "1"]
    assert main(args + ["--n", "3"]) == 0
    before = (out / "captions.jsonl").read_text()
    capsys.readouterr()
    assert main(args + ["--n", "2", "--seed", "5"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "captions.jsonl").read_text() == before
    assert len(list((out / "images").iterdir())) == 3

    assert main(args + ["--n", "2", "--seed", "5", "--overwrite"]) == 0
    assert len(read_captions(out)) == 2
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000000.png", "000001.png"]


def test_cli_writes_into_a_folder_without_a_data_set(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    assert main(["phantom", "--out", str(tmp_path), "--n", "1", "--size", "64", "--workers", "1"]) == 0
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--size", "16"], "size 16 is too small"),
        (["--n", "0"], "positive integer; got 0"),
        (["--composition", "Glomerulus=0.3"], "Glomerulus"),
        (["--composition", "Glomeruli=0.7,Tubuli=0.5"], "sum to 1.2"),
        (["--workers", "0"], "workers"),
        (["--contact-sheet", "sheet.jpg"], "sheet.jpg"),
        (["--lead", "Interstitium"], "Interstitium"),
        (["--lead", "Glomeruli", "--composition", "Tubuli=0.3"], "either --composition or --lead"),
        (["--context", "-4"], "context must be a whole number of pixels >= 0; got -4"),
    ],
)
def test_cli_names_bad_values(tmp_path, capsys, extra, message):
    args = ["phantom", "--out", str(tmp_path / "ds"), "--n", "2", "--size", "64", "--workers", "1"]
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "ds" / "captions.jsonl").exists()


# ------------------------------------------------------------------------------------------------ contact sheet


def test_overlay_tints_tissue_only_and_sheet_lays_out_rows():
    p = generate_phantom(64, seed=1, composition={BACKGROUND: 0.3, "Glomeruli": 0.4})
    tinted = overlay_mask(p.image, p.mask, alpha=0.5)
    glass = p.mask == BACKGROUND_ID
    assert np.array_equal(tinted[glass], p.image[glass])
    assert not np.array_equal(tinted[~glass], p.image[~glass])

    sheet = contact_sheet(
        [[p.image, p.image, None], [p.image]],
        masks=[[None, p.mask, None], [p.mask]],
        row_labels=["phantom", "generated"],
        tile_labels=[["a", "b", None], ["c"]],
        legend=False,
    )
    assert sheet.mode == "RGB"
    assert sheet.size[0] > 3 * 64 and sheet.size[1] > 2 * 64
    with pytest.raises(ValueError, match="does not match"):
        overlay_mask(p.image, p.mask[:32])
