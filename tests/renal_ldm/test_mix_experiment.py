"""The training-mix experiment (thesis Tables 4.1 and 5.2) on 64 px phantoms with the tiny segmenter.

"Real" patches are phantoms of seed 0, "synthetic" ones phantoms of another seed with a bluer stain, the
validation set phantoms of a third seed. One experiment (6 mixes x 2 seeds, 2 epochs) is run once per module.
"""

from __future__ import annotations

import json
import shutil
import statistics

import numpy as np
import pytest
from PIL import Image

from renal_ldm.cli import main as cli_main
from renal_ldm.data.layout import IMAGES_DIR, MASKS_DIR
from renal_ldm.mix_experiment import (
    BASELINE,
    DICE_PNG,
    LOSS_PNG,
    MIXES,
    RESULT_FILE,
    RUNS_DIR,
    TABLE_JSON,
    TABLE_MD,
    MixExperimentSettings,
    run_mix_experiment,
    run_name,
)
from renal_ldm.phantom import generate_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PATCHES = 4
SEEDS = 2
SETTINGS = MixExperimentSettings(
    patches=PATCHES, seeds=SEEDS, classes="glomeruli", config="tiny", epochs=2, patience=2, batch_size=2, crop=32
)
EXPECTED_COUNTS = {
    "100_0": (4, 0),
    "75_25": (3, 1),
    "50_50": (2, 2),
    "25_75": (1, 3),
    "0_100": (0, 4),
    "100_100": (4, 4),
}


def _tint(root, factors=(0.8, 0.9, 1.15)) -> None:
    """Recolour a phantom set's images in place (a different 'stain'), masks unchanged."""
    for path in sorted((root / IMAGES_DIR).iterdir()):
        rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
        Image.fromarray(np.clip(rgb * np.array(factors), 0, 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("mix-data")
    real = generate_dataset(base / "real", 6, 64, seed=0)
    synthetic = generate_dataset(base / "synthetic", 6, 64, seed=1000)
    _tint(synthetic)
    # glomeruli in every validation patch, so Dice is never the trivial 1.0 of an empty class
    val = generate_dataset(base / "val", 3, 64, seed=5000, composition={"Glomeruli": 0.3, "Tubuli": 0.3})
    return {"real": real, "synthetic": synthetic, "val": val, "base": base}


@pytest.fixture(scope="module")
def experiment(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("mix") / "out"
    events = []
    report = run_mix_experiment(
        data["real"], data["synthetic"], data["val"], out, SETTINGS, on_run=events.append, log=lambda _: None
    )
    return {"out": out, "report": report, "events": events}


def _result(out, mix, seed) -> dict:
    return json.loads((out / RUNS_DIR / run_name(mix, seed) / RESULT_FILE).read_text())


def test_every_mix_and_seed_trains_on_the_right_counts_of_the_right_sets(experiment, data):
    out = experiment["out"]
    real_names = {p.name for p in (data["real"] / IMAGES_DIR).iterdir()}
    for seed in range(SEEDS):
        for mix in MIXES:
            r = _result(out, mix.name, seed)
            n_real, n_synthetic = EXPECTED_COUNTS[mix.name]
            assert (r["mix"], r["seed"]) == (mix.name, seed)
            assert (r["n_real"], r["n_synthetic"]) == (n_real, n_synthetic)
            assert len(r["real_patches"]) == n_real and len(set(r["real_patches"])) == n_real
            assert len(r["synthetic_patches"]) == n_synthetic
            assert {name.split("/")[-1] for name in r["real_patches"]} <= real_names
            assert 1 <= r["epochs_trained"] == len(r["history"]) <= SETTINGS.epochs
            assert r["final_dice"] == r["history"][-1]["val_dice"]
            assert r["final_val_loss"] == r["history"][-1]["val_loss"]
            assert r["best_dice"] == max(h["val_dice"] for h in r["history"])
    report = experiment["report"]
    assert (report.runs_trained, report.runs_skipped) == (len(MIXES) * SEEDS, 0)
    assert [(e.index, e.mix, e.seed, e.done) for e in experiment["events"]][:2] == [
        (1, "100_0", 0, False),
        (1, "100_0", 0, True),
    ]
    assert {e.total for e in experiment["events"]} == {len(MIXES) * SEEDS}


def test_a_seed_picks_the_same_real_patches_in_every_mix_that_uses_them(experiment):
    out = experiment["out"]
    for seed in range(SEEDS):
        real = {m.name: _result(out, m.name, seed)["real_patches"] for m in MIXES}
        synthetic = {m.name: _result(out, m.name, seed)["synthetic_patches"] for m in MIXES}
        assert real["100_0"] == real["100_100"]
        assert set(real["25_75"]) <= set(real["50_50"]) <= set(real["75_25"]) <= set(real["100_0"])
        assert set(synthetic["75_25"]) <= set(synthetic["50_50"]) <= set(synthetic["25_75"]) <= set(synthetic["0_100"])
    assert _result(out, "100_0", 0)["real_patches"] != _result(out, "100_0", 1)["real_patches"]


def test_table_has_mean_and_std_over_seeds_and_the_missegmented_ratio(experiment):
    out = experiment["out"]
    table = json.loads((out / TABLE_JSON).read_text())
    assert [row["mix"] for row in table["mixes"]] == [m.name for m in MIXES]
    assert table["runs_finished"] == table["runs_total"] == len(MIXES) * SEEDS
    for row in table["mixes"]:
        finals = [_result(out, row["mix"], s)["final_dice"] for s in range(SEEDS)]
        assert row["seeds"] == [0, 1]
        assert row["final_dice"]["values"] == finals
        assert row["final_dice"]["mean"] == pytest.approx(statistics.fmean(finals))
        assert row["final_dice"]["std"] == pytest.approx(statistics.stdev(finals))
        for key in ("final_val_loss", "best_dice", "epochs_trained"):
            assert row[key]["n"] == SEEDS and row[key]["std"] is not None
        bases = [_result(out, BASELINE, s)["final_dice"] for s in range(SEEDS)]
        ratios = [(1 - a) / (1 - b) for a, b in zip(finals, bases, strict=True)]
        assert row["missegmented_ratio"]["values"] == pytest.approx(ratios)
        assert (row["n_real"], row["n_synthetic"]) == EXPECTED_COUNTS[row["mix"]]
    baseline = table["mixes"][0]["missegmented_ratio"]
    assert baseline["values"] == [1.0, 1.0] and baseline["mean"] == 1.0 and baseline["std"] == 0.0
    markdown = (out / TABLE_MD).read_text()
    for mix in MIXES:
        assert f"| {mix.name} | {EXPECTED_COUNTS[mix.name][0]} | {EXPECTED_COUNTS[mix.name][1]} |" in markdown
    assert "±" in markdown and "1.000 ± 0.000 (+0%)" in markdown
    assert markdown == experiment["report"].markdown


def test_curves_are_written_as_png(experiment):
    for name in (LOSS_PNG, DICE_PNG):
        with Image.open(experiment["out"] / name) as img:
            assert img.format == "PNG" and img.width > 400 and img.height > 300
            colours = len(set(img.convert("RGB").getdata()))
        assert colours > 6  # the lines and the legend are drawn, not just a white page


def test_same_seed_gives_identical_results(experiment, data, tmp_path):
    again = run_mix_experiment(
        data["real"],
        data["synthetic"],
        data["val"],
        tmp_path / "again",
        MixExperimentSettings(**{**SETTINGS.to_dict(), "seeds": 1}),
        mixes=[m for m in MIXES if m.name == "75_25"],
        log=lambda _: None,
    )
    assert again.runs_trained == 1
    first, second = _result(experiment["out"], "75_25", 0), _result(tmp_path / "again", "75_25", 0)
    assert second["history"] == first["history"]
    assert second["real_patches"] == first["real_patches"]
    assert second["synthetic_patches"] == first["synthetic_patches"]


def test_resume_skips_finished_runs_and_retrains_only_the_missing_one(experiment, data, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(experiment["out"], out)
    missing = out / RUNS_DIR / run_name("50_50", 1) / RESULT_FILE
    kept = _result(out, "50_50", 1)
    missing.unlink()
    before = (out / RUNS_DIR / run_name("100_0", 0) / RESULT_FILE).stat().st_mtime_ns
    events = []
    report = run_mix_experiment(
        data["real"],
        data["synthetic"],
        data["val"],
        out,
        SETTINGS,
        resume=True,
        on_run=events.append,
        log=lambda _: None,
    )
    assert (report.runs_trained, report.runs_skipped) == (1, len(MIXES) * SEEDS - 1)
    assert [(e.mix, e.seed) for e in events if not e.skipped and not e.done] == [("50_50", 1)]
    assert (out / RUNS_DIR / run_name("100_0", 0) / RESULT_FILE).stat().st_mtime_ns == before
    assert _result(out, "50_50", 1)["history"] == kept["history"]
    assert report.table["mixes"] == json.loads((experiment["out"] / TABLE_JSON).read_text())["mixes"]

    again = run_mix_experiment(
        data["real"], data["synthetic"], data["val"], out, SETTINGS, resume=True, log=lambda _: None
    )
    assert (again.runs_trained, again.runs_skipped) == (0, len(MIXES) * SEEDS)


class _Interrupt(Exception):
    pass


def test_a_run_interrupted_mid_training_continues_to_the_same_result(experiment, data, tmp_path):
    out = tmp_path / "interrupted"
    settings = MixExperimentSettings(**{**SETTINGS.to_dict(), "seeds": 1})
    mixes = [m for m in MIXES if m.name == "25_75"]

    def stop_after_first_epoch(message: str) -> None:
        if message.startswith("epoch 1:"):
            raise _Interrupt

    with pytest.raises(_Interrupt):
        run_mix_experiment(
            data["real"], data["synthetic"], data["val"], out, settings, mixes=mixes, log=stop_after_first_epoch
        )
    assert not (out / RUNS_DIR / run_name("25_75", 0) / RESULT_FILE).exists()
    messages = []
    report = run_mix_experiment(
        data["real"], data["synthetic"], data["val"], out, settings, mixes=mixes, resume=True, log=messages.append
    )
    assert report.runs_trained == 1
    assert any("continuing" in m for m in messages) and not any(m.startswith("epoch 1:") for m in messages)
    assert _result(out, "25_75", 0)["history"] == _result(experiment["out"], "25_75", 0)["history"]


def test_resume_with_more_seeds_trains_only_the_new_seed(experiment, data, tmp_path):
    out = tmp_path / "more-seeds"
    shutil.copytree(experiment["out"], out)
    more = MixExperimentSettings(**{**SETTINGS.to_dict(), "seeds": SEEDS + 1})
    report = run_mix_experiment(
        data["real"], data["synthetic"], data["val"], out, more, resume=True, log=lambda _: None
    )
    assert (report.runs_trained, report.runs_skipped) == (len(MIXES), len(MIXES) * SEEDS)
    assert all(row["seeds"] == [0, 1, 2] for row in report.table["mixes"])
    assert json.loads((out / "experiment.json").read_text())["settings"]["seeds"] == SEEDS + 1


def test_resume_with_other_parameters_is_refused(experiment, data):
    other = MixExperimentSettings(**{**SETTINGS.to_dict(), "patches": 3})
    with pytest.raises(ValueError, match=r"patches: 4 -> 3"):
        run_mix_experiment(data["real"], data["synthetic"], data["val"], experiment["out"], other, resume=True)


# ----------------------------------------------------------------------------------------------- bad input


def _run(data, out, **changes):
    paths = {"real": data["real"], "synthetic": data["synthetic"], "val": data["val"]}
    paths.update({k: v for k, v in changes.items() if k in paths})
    options = {k: v for k, v in changes.items() if k not in paths}
    settings = MixExperimentSettings(**{**SETTINGS.to_dict(), **options.pop("settings", {})})
    return run_mix_experiment(paths["real"], paths["synthetic"], paths["val"], out, settings, **options)


def test_a_folder_without_masks_is_refused(data, tmp_path):
    images_only = tmp_path / "images-only"
    shutil.copytree(data["synthetic"] / IMAGES_DIR, images_only / IMAGES_DIR)
    with pytest.raises(FileNotFoundError, match=rf"--synthetic {images_only}.* no {MASKS_DIR}/"):
        _run(data, tmp_path / "out", synthetic=images_only)
    assert not (tmp_path / "out").exists()


def test_fewer_patches_than_asked_names_both_numbers(data, tmp_path):
    with pytest.raises(ValueError, match=r"--real .* holds 6 patch-mask pairs, fewer than --patches 7"):
        _run(data, tmp_path / "out", settings={"patches": 7})
    assert not (tmp_path / "out").exists()


def test_mismatched_patch_sizes_are_refused(data, tmp_path):
    bigger = generate_dataset(tmp_path / "bigger", 6, 80, seed=7)
    with pytest.raises(ValueError, match=r"real patches are 64x64 .* synthetic patches are 80x80"):
        _run(data, tmp_path / "out", synthetic=bigger)


def test_an_existing_out_needs_resume_or_overwrite(experiment, data, tmp_path):
    with pytest.raises(FileExistsError, match=r"--resume .* --overwrite"):
        _run(data, experiment["out"])
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"already holds files"):
        _run(data, occupied)
    with pytest.raises(ValueError, match=r"exclude each other"):
        _run(data, occupied, resume=True, overwrite=True)


def test_overwrite_starts_again_and_keeps_other_files(experiment, data, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(experiment["out"], out)
    (out / "notes.txt").write_text("mine")
    report = _run(data, out, settings={"seeds": 1}, overwrite=True, mixes=MIXES[:1], log=lambda _: None)
    assert report.runs_trained == 1
    assert sorted(p.name for p in (out / RUNS_DIR).iterdir()) == [run_name("100_0", 0)]
    assert (out / "notes.txt").read_text() == "mine"


def test_cli_bad_input_is_one_line_and_exit_2(data, tmp_path, capsys):
    args = ["mix-experiment", "--real", str(data["real"]), "--synthetic", str(data["synthetic"])]
    args += ["--val", str(data["val"]), "--out", str(tmp_path / "out"), "--patches", "9", "--config", "tiny"]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "holds 6 patch-mask pairs, fewer than --patches 9" in err


def test_cli_runs_the_experiment_and_prints_the_table(data, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["mix-experiment", "--real", str(data["real"]), "--synthetic", str(data["synthetic"])]
    args += ["--val", str(data["val"]), "--out", str(out), "--patches", "2", "--seeds", "1", "--config", "tiny"]
    args += ["--epochs", "1", "--batch-size", "2", "--crop", "32", "--no-progress"]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "| 100_100 | 2 | 2 | 4 |" in printed and "6 runs trained, 0 finished before" in printed
    assert cli_main([*args, "--resume"]) == 0
    assert "0 runs trained, 6 finished before" in capsys.readouterr().out


def test_the_cli_parser_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, renal_ldm.cli as c; c.build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == (
        "False"
    )


def test_counts_follow_table_4_1_and_a_perfect_baseline_leaves_the_ratio_undefined():
    from renal_ldm.mix_experiment import summarize

    assert {m.name: m.counts(198) for m in MIXES} == {
        "100_0": (198, 0),
        "75_25": (149, 49),
        "50_50": (99, 99),
        "25_75": (50, 148),
        "0_100": (0, 198),
        "100_100": (198, 198),
    }
    run = {"n_real": 1, "n_synthetic": 0, "final_val_loss": 0.1, "best_dice": 1.0, "epochs_trained": 1}
    results = {(BASELINE, 0): {**run, "final_dice": 1.0}, ("50_50", 0): {**run, "final_dice": 0.9}}
    rows = summarize(results, [m for m in MIXES if m.name in (BASELINE, "50_50")], [0])
    assert [row["missegmented_ratio"]["mean"] for row in rows] == [None, None]
    assert rows[0]["final_dice"] == {"mean": 1.0, "std": None, "n": 1, "values": [1.0]}
