"""Caption accuracy (`renal-ldm evaluate-captions`): phantom patches written as `renal-ldm sample` output, judged
by their true masks (the statistics alone) and by a tiny segmenter that has learnt them (the whole command)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from renal_ldm import evaluate
from renal_ldm.captions import GENERATING_CAPTION, caption_to_levels, levels_to_caption
from renal_ldm.classes import CAPTIONED_CLASSES, GLOMERULI_ID, OTHER_TISSUE_ID, SCLEROTIC_GLOMERULI_ID, by_name
from renal_ldm.cli import main
from renal_ldm.phantom import generate_phantom

SIZE = 64
COMPOSITIONS = (
    {"Glomeruli": 0.45},
    {"Glomeruli": 0.25, "Tubuli": 0.3},
    {"Tubuli": 0.45},
    {"Glomeruli": 0.1, "Tubuli": 0.1},
)
"""Few classes, every Glomeruli level: a tiny segmenter learns these in seconds."""


def phantoms(n: int = 8, size: int = SIZE):
    return [generate_phantom(size, seed=i, composition=COMPOSITIONS[i % len(COMPOSITIONS)]) for i in range(n)]


def write_sample_folder(folder: Path, items) -> Path:
    """Phantoms in the layout of `renal-ldm sample` (through its own writer), each with its own caption."""
    from renal_ldm.sample import SampleResult, write_samples

    results = [
        SampleResult(
            image=Image.fromarray(p.image),
            array=p.image,
            seed=i,
            caption=p.caption,
            index=i,
            params={"caption": p.caption, "seed": i, "size": p.image.shape[0]},
        )
        for i, p in enumerate(items)
    ]
    write_samples(results, folder)
    return folder


def assert_tables_add_up(report: dict) -> None:
    n = report["n_samples"]
    assert len(report["rows"]) == n
    for name, column in report["table_5_1_percent"].items():
        assert sum(column.values()) == pytest.approx(100.0), name
        assert sum(report["table_5_1_counts"][name].values()) == n
    for name, judged in report["classes"].items():
        confusion = judged["confusion"]
        assert set(confusion) == set(evaluate.LEVEL_KEYS)
        assert sum(sum(row.values()) for row in confusion.values()) == n, name
        for requested, row in confusion.items():  # each requested row holds exactly the samples asking for it
            assert sum(row.values()) == sum(r["requested"][name] == requested for r in report["rows"])
        diagonal = sum(confusion[k][k] for k in evaluate.LEVEL_KEYS)
        assert judged["exact_level_accuracy"] == pytest.approx(diagonal / n)


# ------------------------------------------------------------------------------------------------ statistics alone


def test_true_masks_give_exact_captions_and_tables_that_add_up():
    items = phantoms(12)
    rows = [
        evaluate.judge_mask(f"{i}.png", p.caption, caption_to_levels(p.caption), p.mask) for i, p in enumerate(items)
    ]
    result = evaluate.CaptionAccuracy(rows=tuple(rows))
    report = result.to_dict()
    assert_tables_add_up(report)
    assert all(result.exact_level_accuracy(c) == 1.0 for c in evaluate.ALL_CLASSES)
    assert result.caption_exact_match == 1.0
    assert all(r.predicted_caption == r.caption for r in rows)
    with_glomeruli = sum("Glomeruli" in p.caption for p in items)
    assert result.mentions_glomeruli == pytest.approx(100 * with_glomeruli / len(items))
    json.dumps(report, allow_nan=False)
    summary = result.summary()
    assert summary["n_samples"] == 12 and summary["exact_level_accuracy"]["Glomeruli"] == 1.0
    assert summary["table_5_1_percent"] == report["table_5_1_percent"]


def _mask(glomeruli: float, sclerotic: float, side: int = 100) -> np.ndarray:
    flat = np.full(side * side, OTHER_TISSUE_ID, np.uint8)
    g, s = round(glomeruli * flat.size), round(sclerotic * flat.size)
    flat[:g] = GLOMERULI_ID
    flat[g : g + s] = SCLEROTIC_GLOMERULI_ID
    return flat.reshape(side, side)


def test_specks_under_the_minimum_are_dropped_and_structures_kept():
    mask = np.full((64, 64), OTHER_TISSUE_ID, np.uint8)
    mask[10:30, 10:30] = GLOMERULI_ID  # a structure: 400 px
    mask[50, 50] = GLOMERULI_ID  # a one-pixel speck
    mask[40:42, 5:8] = SCLEROTIC_GLOMERULI_ID  # a 6 px speck of another class
    mask[60, 60], mask[61, 61] = GLOMERULI_ID, GLOMERULI_ID  # diagonal neighbours: one 2 px component
    before = caption_to_levels(evaluate.judge_mask("m.png", "", {}, mask).predicted_caption)
    assert before["Sclerotic Glomeruli"] == "low"

    cleaned, removed = evaluate.remove_specks(mask, 8)
    assert removed == 3
    assert (cleaned[10:30, 10:30] == GLOMERULI_ID).all() and cleaned[50, 50] == cleaned[60, 60] == 0
    assert not (cleaned == SCLEROTIC_GLOMERULI_ID).any()
    assert ((cleaned == OTHER_TISSUE_ID) == (mask == OTHER_TISSUE_ID)).all()  # other classes untouched
    assert mask[50, 50] == GLOMERULI_ID  # the input is not changed
    assert evaluate.remove_specks(mask, 0) == (mask, 0)
    assert evaluate.remove_specks(mask, 401)[0][20, 20] == 0  # a component smaller than the minimum goes too


def test_speck_sizes_per_class_drop_each_class_under_its_own_size():
    """A 100 px glomerulus is a speck for the phantom judge, a 100 px atrophic tubule a structure."""
    atrophic = by_name("Atrophic Tubuli").id
    mask = np.full((64, 64), OTHER_TISSUE_ID, np.uint8)
    mask[0:10, 0:10] = GLOMERULI_ID  # 100 px
    mask[20:30, 20:30] = atrophic  # 100 px
    mask[40:60, 40:60] = GLOMERULI_ID  # 400 px
    cleaned, removed = evaluate.remove_specks(mask, {"Glomeruli": 128, "Atrophic Tubuli": 32})
    assert removed == 1
    assert (cleaned[0:10, 0:10] == 0).all() and (cleaned[20:30, 20:30] == atrophic).all()
    assert (cleaned[40:60, 40:60] == GLOMERULI_ID).all()
    assert ((cleaned == OTHER_TISSUE_ID) == (mask == OTHER_TISSUE_ID)).all()  # a class left out keeps every pixel
    assert evaluate.remove_specks(mask, {"Glomeruli": 0}) == (mask, 0)


@pytest.mark.parametrize(
    ("sizes", "named"),
    [
        ({"Glomerulus": 128}, "'Glomerulus'"),
        ({"Glomeruli": -1}, "Glomeruli must be a whole number of pixels >= 0; got -1"),
        ({"Tubuli": 2.5}, "got 2.5"),
        (-3, "got -3"),
    ],
)
def test_a_bad_speck_size_is_named(sizes, named):
    with pytest.raises(ValueError, match=re.escape(named)):
        evaluate.remove_specks(np.zeros((4, 4), np.uint8), sizes)


def test_min_component_takes_pixels_or_the_phantom_judges_sizes():
    assert evaluate.parse_speck_sizes("16") == 16
    assert evaluate.parse_speck_sizes("phantom") == evaluate.PHANTOM_SPECK_SIZES
    assert set(evaluate.PHANTOM_SPECK_SIZES) == {c.name for c in CAPTIONED_CLASSES}
    for bad in ("-3", "big", "1.5"):
        with pytest.raises(ValueError, match=f"got '{re.escape(bad)}'"):
            evaluate.parse_speck_sizes(bad)


def test_combined_glomeruli_count_both_kinds_together():
    """Table 5.1c: the fraction of both kinds together gives the level; none only with neither kind."""
    masks = [_mask(0.15, 0.15), _mask(0.0, 0.0), _mask(0.1, 0.0), _mask(0.0, 0.3), _mask(0.3, 0.2)]
    requested = caption_to_levels(GENERATING_CAPTION)
    rows = [evaluate.judge_mask(f"{i}.png", GENERATING_CAPTION, requested, m) for i, m in enumerate(masks)]
    result = evaluate.CaptionAccuracy(rows=tuple(rows))
    table = result.predicted_level_counts(evaluate.COMBINED)
    assert table == {"none": 1, "low": 1, "medium": 2, "high": 1}
    assert result.predicted_level_counts(evaluate.GLOMERULI) == {"none": 2, "low": 2, "medium": 1, "high": 0}
    assert result.mentions_glomeruli == pytest.approx(80.0)
    assert result.glomeruli_only == pytest.approx(20.0)
    assert result.sclerotic_only == pytest.approx(20.0)
    assert result.glomeruli_only_of_mentions == pytest.approx(25.0)  # the reference's "4.2% of those images"
    # the generating caption asks for Glomeruli high: none of these samples has it
    assert result.exact_level_accuracy(evaluate.GLOMERULI) == 0.0
    assert result.confusion(evaluate.GLOMERULI)["high"] == {"none": 2, "low": 2, "medium": 1, "high": 0}
    assert result.exact_level_accuracy("Tubuli") == 0.0  # asked medium, predicted none
    assert result.exact_level_accuracy("Arteries") == 1.0  # not asked, not predicted


# ------------------------------------------------------------------------------------------------ sample folders


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    return write_sample_folder(tmp_path_factory.mktemp("samples") / "samples", phantoms())


def _copy(sample_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(sample_dir, tmp_path / "copy"))


def test_sample_folder_reads_captions_and_sizes(sample_dir):
    samples = evaluate.read_sample_folder(sample_dir)
    assert len(samples) == 8
    assert samples[0].image.name == "sample_00000_seed0.png"
    assert samples[0].caption == phantoms(1)[0].caption
    assert samples[0].requested["Glomeruli"] == "high" and samples[0].requested["Arteries"] == "none"
    assert {s.size for s in samples} == {(SIZE, SIZE)}


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", "samples folder not found"),
        ("empty", "no sample images (*.png)"),
        ("dataset", "a patch data set?"),
        ("no_sidecars", "holds 8 PNG images but no JSON sidecars"),
        ("one_sidecar_gone", "1 of 8 images"),
        ("no_caption", 'no "caption" text'),
        ("bad_caption", "the generating caption cannot be read"),
        ("bad_json", "not valid JSON"),
        ("sidecar_size", "but its sidecar says size 64"),
        ("mixed_sizes", "have different sizes"),
        ("too_few", "needs at least 5"),
    ],
)
def test_bad_sample_folders_are_refused_with_a_clear_error(sample_dir, tmp_path, damage, message):
    folder = _copy(sample_dir, tmp_path)
    first = folder / "sample_00000_seed0.json"
    if damage == "missing":
        folder = tmp_path / "nowhere"
    elif damage == "empty":
        folder = tmp_path / "empty"
        folder.mkdir()
    elif damage == "dataset":
        folder = tmp_path / "dataset"
        (folder / "images").mkdir(parents=True)
    elif damage == "no_sidecars":
        for p in folder.glob("*.json"):
            p.unlink()
    elif damage == "one_sidecar_gone":
        first.unlink()
    elif damage == "no_caption":
        first.write_text(json.dumps({"seed": 0}))
    elif damage == "bad_caption":
        first.write_text(json.dumps({"caption": "Lots of kidney here."}))
    elif damage == "bad_json":
        first.write_text("{")
    elif damage == "sidecar_size":
        Image.new("RGB", (32, 32)).save(folder / "sample_00000_seed0.png")  # the sidecar still says 64
    elif damage == "mixed_sizes":
        meta = json.loads(first.read_text())
        del meta["size"]
        first.write_text(json.dumps(meta))
        Image.new("RGB", (32, 32)).save(folder / "sample_00000_seed0.png")
    elif damage == "too_few":
        for p in sorted(folder.glob("sample_*.png"))[4:]:
            p.unlink()
            p.with_suffix(".json").unlink()
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        evaluate.read_sample_folder(folder)
    assert message in str(info.value)


def test_report_files_and_no_silent_overwrite(sample_dir, tmp_path):
    items = phantoms()
    rows = [
        evaluate.judge_mask(f"{i}.png", p.caption, caption_to_levels(p.caption), p.mask) for i, p in enumerate(items)
    ]
    result = evaluate.CaptionAccuracy(rows=tuple(rows), samples_dir=str(sample_dir), segmenter="truth")
    out = tmp_path / "report"
    paths = evaluate.write_caption_report(result, out)
    assert [p.name for p in paths] == list(evaluate.REPORT_FILES)
    report = json.loads((out / evaluate.REPORT_JSON).read_text())
    assert_tables_add_up(report)
    assert report["rows"][0]["predicted_caption"] == items[0].caption
    text = (out / evaluate.REPORT_MARKDOWN).read_text()
    assert "Table 5.1" in text and "| None |" in text and "exact-level accuracy" in text
    for chart in (evaluate.CHART_TABLE_5_1, evaluate.CHART_LEVEL_ACCURACY):
        with Image.open(out / chart) as img:
            assert img.format == "PNG" and img.width > 200
    with pytest.raises(FileExistsError, match="--overwrite"):
        evaluate.write_caption_report(result, out)
    evaluate.write_caption_report(result, out, overwrite=True)


def test_report_helpers_refuse_ragged_input():
    with pytest.raises(ValueError, match="has 1 cells; the header has 2"):
        evaluate.markdown_table(["a", "b"], [["x"]])
    with pytest.raises(ValueError, match="2 values for 3 groups"):
        evaluate.bar_chart("t", ["a", "b", "c"], [("s", (0, 0, 0), [1.0, 2.0])])


def test_an_ldm_checkpoint_is_no_segmenter(sample_dir, tiny_model_dir, tmp_path, capsys):
    code = main(
        [
            "evaluate-captions",
            "--samples",
            str(sample_dir),
            "--segmenter",
            str(tiny_model_dir),
            "--out",
            str(tmp_path / "r"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "is a latent diffusion model checkpoint, not a segmenter" in err and err.count("\n") == 1
    assert not (tmp_path / "r" / evaluate.REPORT_JSON).exists()


def test_sampling_options_need_model_and_model_needs_n(sample_dir, tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["evaluate-captions", "--samples", str(sample_dir), "--segmenter", "x", "--out", out, "--n", "5"]) == 2
    assert "--n only apply with --model" in capsys.readouterr().err
    assert main(["evaluate-captions", "--model", "m", "--segmenter", "x", "--out", out]) == 2
    assert "--model needs --n N" in capsys.readouterr().err
    assert main(["evaluate-captions", "--model", "m", "--segmenter", "x", "--out", out, "--n", "2"]) == 2
    assert "--n 2 is too few" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ with segmenters


def _train(root: Path, classes: str, epochs: int) -> Path:
    from renal_ldm.data import layout
    from renal_ldm.data.patches import PatchDataset
    from renal_ldm.segment import SEGMENTER_CONFIGS, SegmenterTrainSettings, train_segmenter

    data = root / "data"
    if not data.exists():
        (data / layout.IMAGES_DIR).mkdir(parents=True)
        (data / layout.MASKS_DIR).mkdir()
        for i, p in enumerate(phantoms()):
            layout.write_pair(data, f"{i:06d}.png", p.image, p.mask)
    dataset = PatchDataset(data, return_mask=True, flips=False)
    settings = SegmenterTrainSettings(
        epochs=epochs,
        batch_size=4,
        lr=5e-3,
        crop=SIZE,
        val_fraction=0.0,
        patience=epochs,
        progress=False,
        monitor="val_dice",
    )
    config = dataclasses.replace(SEGMENTER_CONFIGS["tiny"], classes=classes)
    out = root / f"segmenter-{classes}"
    train_segmenter(dataset, dataset, out, config=config, settings=settings, log=lambda _line: None)
    return out


@pytest.fixture(scope="module")
def phantom_segmenter(tmp_path_factory, one_torch_thread) -> Path:
    """A tiny eight-class segmenter that has learnt the eight phantoms (fixed set, validated on itself)."""
    return _train(tmp_path_factory.mktemp("seg"), "all", epochs=100)


def test_a_segmenter_that_learnt_the_phantoms_recovers_their_captions(sample_dir, phantom_segmenter, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(
        [
            "evaluate-captions",
            "--samples",
            str(sample_dir),
            "--segmenter",
            str(phantom_segmenter),
            "--out",
            str(out),
            "--save-masks",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / evaluate.REPORT_JSON).read_text())
    assert report["n_samples"] == 8 and report["judged_classes"] == list(evaluate.ALL_CLASSES)
    assert_tables_add_up(report)
    accuracy = {name: c["exact_level_accuracy"] for name, c in report["classes"].items()}
    assert accuracy["Glomeruli"] >= 0.75, accuracy
    assert np.mean(list(accuracy.values())) >= 0.85, accuracy
    truth = 100 * np.mean(["Glomeruli" in p.caption for p in phantoms()])
    assert abs(report["mentions_glomeruli_percent"] - truth) <= 12.5  # at most one of eight judged wrongly
    masks = sorted((out / evaluate.MASKS_DIR).glob("*.png"))
    assert len(masks) == 8
    assert np.asarray(Image.open(masks[0])).max() <= 7
    assert (out / evaluate.CHART_TABLE_5_1).is_file()


def test_min_component_drops_specks_from_the_judged_masks(sample_dir, phantom_segmenter, tmp_path, capsys):
    from scipy import ndimage

    out = tmp_path / "report"
    args = ["evaluate-captions", "--samples", str(sample_dir), "--segmenter", str(phantom_segmenter)]
    code = main([*args, "--out", str(out), "--save-masks", "--min-component", "16", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / evaluate.REPORT_JSON).read_text())
    assert report["min_component_px"] == 16
    assert any("under 16 px were dropped" in note for note in report["notes"])
    assert "under 16 px were dropped" in (out / evaluate.REPORT_MARKDOWN).read_text()
    for path in (out / evaluate.MASKS_DIR).glob("*.png"):
        mask = np.asarray(Image.open(path))
        for label in range(1, 8):
            components, n = ndimage.label(mask == label, structure=np.ones((3, 3)))
            assert n == 0 or np.bincount(components.ravel())[1:].min() >= 16, (path.name, label)

    code = main([*args, "--out", str(tmp_path / "bad"), "--min-component", "-3", "--no-progress"])
    assert code == 2 and "-3" in capsys.readouterr().err

    code = main([*args, "--out", str(tmp_path / "phantom"), "--min-component", "phantom", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "phantom" / evaluate.REPORT_JSON).read_text())
    assert report["min_component_px"] == evaluate.PHANTOM_SPECK_SIZES
    assert any("under Arteries 192, " in note and "Glomeruli 128" in note for note in report["notes"])


def test_a_glomeruli_segmenter_judges_glomeruli_only(sample_dir, tmp_path_factory, one_torch_thread, tmp_path, capsys):
    segmenter = _train(tmp_path_factory.mktemp("seg-g"), "glomeruli", epochs=5)
    out = tmp_path / "report"
    code = main(
        [
            "evaluate-captions",
            "--samples",
            str(sample_dir),
            "--segmenter",
            str(segmenter),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "only Glomeruli is judged" in err
    report = json.loads((out / evaluate.REPORT_JSON).read_text())
    assert report["judged_classes"] == ["Glomeruli"] and list(report["classes"]) == ["Glomeruli"]
    assert list(report["table_5_1_percent"]) == ["Glomeruli"]
    assert report["caption_exact_match"] is None and report["sclerotic_only_percent"] is None
    assert any("only Glomeruli is judged" in note for note in report["notes"])
    assert_tables_add_up(report)
    assert "judged: Glomeruli" in (out / evaluate.REPORT_MARKDOWN).read_text()


def test_model_is_sampled_first_then_judged(tiny_model_dir, phantom_segmenter, tmp_path, capsys):
    out = tmp_path / "report"
    args = [
        "evaluate-captions",
        "--model",
        str(tiny_model_dir),
        "--segmenter",
        str(phantom_segmenter),
        "--out",
        str(out),
        "--levels",
        "Glomeruli=high",
        "--n",
        "5",
        "--steps",
        "2",
        "--no-progress",
    ]
    assert main(args) == 0, capsys.readouterr().err
    pngs = sorted((out / evaluate.SAMPLES_DIR).glob("*.png"))
    assert len(pngs) == 5 and all(p.with_suffix(".json").is_file() for p in pngs)
    report = json.loads((out / evaluate.REPORT_JSON).read_text())
    assert report["n_samples"] == 5
    assert report["captions"] == [{"caption": levels_to_caption({"Glomeruli": "high"}), "n_samples": 5}]
    assert report["classes"]["Glomeruli"]["confusion"]["high"] == report["table_5_1_counts"]["Glomeruli"]
    assert_tables_add_up(report)
    capsys.readouterr()
    assert main(args) == 2  # an earlier report is never replaced silently
    assert "already holds a report" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 2  # nor are its samples mixed with new ones
    assert "already holds 5 samples" in capsys.readouterr().err


def test_the_demo_evaluation_refuses_a_realism_part_with_too_few_samples_before_sampling(tmp_path):
    """scripts/evaluate_demo_model.py: realism needs 2 x the judge's feature width in samples; parts that judge
    fewer are refused at once (exit 2, the count and what to add named), before minutes of sampling."""
    import subprocess
    import sys

    from renal_ldm.paths import SHIPPED_PHANTOM_SEGMENTER

    if not (SHIPPED_PHANTOM_SEGMENTER / "segmenter.json").is_file():
        pytest.skip(f"the shipped phantom segmenter is not at {SHIPPED_PHANTOM_SEGMENTER}")
    script = Path(__file__).resolve().parents[2] / "scripts" / "evaluate_demo_model.py"
    out = tmp_path / "eval"
    done = subprocess.run(
        [sys.executable, str(script), "--parts", "generating,realism", "--n", "20", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "judges 20 samples" in done.stderr and "at least 256" in done.stderr
    assert not out.exists()


def test_the_demo_evaluation_judges_the_frame_against_phantoms_of_the_same_caption():
    """scripts/evaluate_demo_model.py's artefact reference: fresh phantoms whose own caption asks what the samples
    were asked ("a lot of Glomeruli"), not any phantoms; tissue full of glomeruli has a busier border."""
    script = _evaluation_script()
    phantoms = script.phantoms_of_levels({"Glomeruli": "high"}, 3, 128)
    assert len(phantoms) == 3
    assert all(caption_to_levels(p.caption)["Glomeruli"] == "high" for p in phantoms)
    assert len({p.image.tobytes() for p in phantoms}) == 3


def test_the_frame_reference_phantoms_can_be_asked_to_lack_a_class():
    """A caption leaves out the classes it has none of, so "none" must match a class the caption does not name."""
    script = _evaluation_script()
    phantoms = script.phantoms_of_levels({"Glomeruli": "high", "Arteries": "none"}, 2, 128)
    assert all("Arteries" not in caption_to_levels(p.caption) for p in phantoms)


def test_the_frame_reference_phantoms_can_be_cut_from_a_wider_field():
    """The second reference: phantoms of the caption cut from a wider field, whose border is like their interior."""
    from renal_ldm.phantom import FIELD_CONTEXT

    script = _evaluation_script()
    cut = script.phantoms_of_levels({"Glomeruli": "high"}, 2, 128, context=FIELD_CONTEXT)
    plain = script.phantoms_of_levels({"Glomeruli": "high"}, 2, 128)
    assert all(p.image.shape == (128, 128, 3) and caption_to_levels(p.caption)["Glomeruli"] == "high" for p in cut)
    assert not any(np.array_equal(c.image, p.image) for c in cut for p in plain)


def _evaluation_script():
    """scripts/evaluate_demo_model.py as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "evaluate_demo_model", Path(__file__).resolve().parents[2] / "scripts" / "evaluate_demo_model.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_the_soft_reference_is_the_phantoms_made_as_soft_as_the_samples(tmp_path, tiny_model_dir):
    """scripts/evaluate_demo_model.py's reference at the samples' softness: each phantom written with its own
    caption, through the model's autoencoder and blurred to the samples' sharpness (never sharpened)."""
    from renal_ldm.artifacts import sharpness, soften
    from renal_ldm.sample import Sampler

    script = _evaluation_script()
    seeded = script.seeded_phantoms_of_levels({"Glomeruli": "high"}, 3, 128)
    assert all(np.array_equal(generate_phantom(128, seed=s, lead=["Glomeruli"]).image, p.image) for s, p in seeded)
    samples = tmp_path / "samples"
    samples.mkdir()
    for k, soft in enumerate(soften([p.image for _, p in seeded], 2.0)):  # stand-ins for soft samples
        Image.fromarray(soft).save(samples / f"sample_{k}.png")
    sampler = Sampler.from_dir(tiny_model_dir, device="cpu")
    info = script.soft_phantom_reference(sampler, seeded, samples, tmp_path / "ref")
    written = sorted((tmp_path / "ref").glob("phantom_*.png"))
    assert [png.stem for png in written] == [f"phantom_{seed}" for seed, _ in seeded]
    sidecar = json.loads((tmp_path / "ref" / f"phantom_{seeded[0][0]}.json").read_text())
    assert sidecar["caption"] == seeded[0][1].caption
    shown = sharpness([np.asarray(Image.open(png)) for png in written])
    sharp = info["sharpness"]
    assert shown == pytest.approx(sharp["phantoms_softened"])
    assert shown == pytest.approx(min(sharp["samples"], sharp["phantoms_through_autoencoder"]), rel=0.011)
    assert info["sigma_px"] >= 0 and sharp["phantoms"] > sharp["samples"]
