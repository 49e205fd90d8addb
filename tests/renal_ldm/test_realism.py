"""Realism tests (renal_ldm/realism.py, `renal-ldm realism`): the classifier two-sample test tells clearly
different sets apart and not two draws of one distribution, the Frechet distance, and the refusals."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from renal_ldm import realism as R
from renal_ldm.cli import main
from renal_ldm.phantom import generate_phantom

SIZE = 64
N = 64
FAST = R.RealismSettings(size=SIZE, epochs=20, seed=0)


def _write(folder: Path, images, prefix: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        img.save(folder / f"{prefix}{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """N phantoms (seeds 0..), the same phantoms heavily blurred or with their channels swapped (RGB -> BRG),
    and N phantoms of other seeds (1000..)."""
    root = tmp_path_factory.mktemp("realism")
    phantoms = [Image.fromarray(generate_phantom(size=SIZE, seed=i).image) for i in range(N)]
    others = [Image.fromarray(generate_phantom(size=SIZE, seed=1000 + i).image) for i in range(N)]
    return {
        "phantom": _write(root / "phantom", phantoms),
        "blurred": _write(root / "blurred", [im.filter(ImageFilter.GaussianBlur(2)) for im in phantoms]),
        "shifted": _write(root / "shifted", [Image.fromarray(np.asarray(im)[..., [2, 0, 1]]) for im in phantoms]),
        "other": _write(root / "other", others),
    }


def _load(folder: Path, role: str) -> R.ImageSet:
    return R.read_images(R.list_images(folder, role), folder, role, SIZE)


@pytest.fixture(scope="module")
def sets(folders) -> dict[str, R.ImageSet]:
    return {name: _load(path, name) for name, path in folders.items()}


# --------------------------------------------------------------------------------------------- C2ST


@pytest.mark.parametrize("other, least", [("blurred", 0.875), ("shifted", 0.95)])
def test_c2st_tells_blurred_or_colour_shifted_phantoms_apart(sets, other, least, one_torch_thread):
    r = R.classifier_two_sample_test(sets["phantom"], sets[other], FAST)
    assert (r.per_class, r.train_real, r.train_synthetic, r.test_real, r.test_synthetic) == (N, 45, 45, 19, 19)
    assert r.test_total == 38
    assert r.accuracy >= least and r.kappa >= 2 * least - 1
    assert r.kappa == pytest.approx(2 * r.accuracy - 1)
    assert r.ci_low <= r.accuracy <= r.ci_high and r.ci_low > 0.5
    assert r.p_value < 0.001 and r.significant
    assert len(r.history) == FAST.epochs


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_c2st_verdict_is_the_datas_not_the_seeds(sets, seed, one_torch_thread):
    """Every seed trains a classifier that tells the blurred phantoms apart (at a constant learning rate a late
    epoch once blew up and called every image one class: accuracy 0.500 where other seeds gave 0.99)."""
    r = R.classifier_two_sample_test(sets["phantom"], sets["blurred"], dataclasses.replace(FAST, seed=seed))
    assert r.accuracy >= 0.875 and r.significant


def test_c2st_cannot_tell_two_draws_of_the_phantom_apart(sets, one_torch_thread):
    r = R.classifier_two_sample_test(sets["phantom"], sets["other"], FAST)
    assert r.ci_low <= 0.5 <= r.ci_high
    assert not r.significant
    assert r.kappa_ci_low <= 0.0 <= r.kappa_ci_high


def test_c2st_same_seed_same_result_other_seed_other_split(sets, one_torch_thread):
    settings = R.RealismSettings(size=SIZE, epochs=2, seed=3)
    a = R.classifier_two_sample_test(sets["phantom"], sets["other"], settings)
    b = R.classifier_two_sample_test(sets["phantom"], sets["other"], settings)
    assert a == b and a.predictions == b.predictions
    c = R.classifier_two_sample_test(sets["phantom"], sets["other"], R.RealismSettings(size=SIZE, epochs=2, seed=4))
    held = {p.file for p in a.predictions if p.split == "test"}
    assert held != {p.file for p in c.predictions if p.split == "test"}


def test_c2st_balances_unequal_sets_and_reports_progress(sets, folders, tmp_path, one_torch_thread):
    few = _write(tmp_path / "few", [Image.open(p) for p in R.list_images(folders["blurred"], "x")[:15]])
    seen: dict[str, tuple[int, int]] = {}
    r = R.classifier_two_sample_test(
        sets["phantom"],
        _load(few, "synthetic"),
        R.RealismSettings(size=SIZE, epochs=2),
        progress=lambda stage, done, total: seen.__setitem__(stage, (done, total)),
    )
    assert (r.n_real, r.n_synthetic, r.per_class) == (N, 15, 15)
    assert r.test_real == r.test_synthetic == round(15 * 0.3)
    assert r.train_real == r.train_synthetic == 15 - r.test_real
    done, total = seen["classifier training"]
    assert done == total == 2 * 1  # 2 epochs of one batch of 2 x 11 images


def test_c2st_cancel(sets):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(R.RealismCancelled):
        R.classifier_two_sample_test(sets["phantom"], sets["other"], FAST, cancel=cancel)


def test_binomial_summary_matches_the_textbook():
    acc, lo, hi, p = R.binomial_summary(50, 100)
    assert acc == 0.5 and lo < 0.5 < hi and p == pytest.approx(0.5397946186935897)
    acc, lo, hi, p = R.binomial_summary(20, 20)
    assert acc == 1.0 and hi == pytest.approx(1.0) and lo == pytest.approx(0.8389, abs=1e-4)  # Wilson
    assert p == pytest.approx(0.5**20)


# --------------------------------------------------------------------------------------- Frechet distance


def test_frechet_distance_zero_symmetric_and_the_mean_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6))
    assert R.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = np.array([1.0, 0, 0, 2.0, 0, 0])
    assert R.frechet_distance(a, a + shift) == pytest.approx(5.0, rel=1e-6)  # same covariance: |shift|^2
    b = rng.normal(size=(300, 6)) * 2.0 + 0.5
    ab, ba = R.frechet_distance(a, b), R.frechet_distance(b, a)
    assert ab == pytest.approx(ba, rel=1e-9)
    assert ab > R.frechet_distance(a, rng.normal(size=(300, 6))) > 0
    # N(0, I) vs N(0.5, 4 I) in 6 dims: 6 * 0.25 + 6 * (1 + 4 - 2 * 2) = 7.5, up to sampling error
    assert ab == pytest.approx(7.5, rel=0.2)


def test_frechet_distance_survives_a_singular_covariance():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    a[:, 0] = b[:, 0] = 0.0  # a dead feature: both covariances singular
    assert np.isfinite(R.frechet_distance(a, b))
    with pytest.raises(ValueError, match=r"\(5, 4\) and \(5, 3\)"):
        R.frechet_distance(a[:5], b[:5, :3])


def test_frechet_refuses_fewer_than_twice_the_feature_width():
    R.check_frechet_counts(64, 64, 32)
    with pytest.raises(ValueError) as err:
        R.check_frechet_counts(40, 100, 32, "the test extractor")
    message = str(err.value)
    assert "64" in message and "40" in message and "100" in message and "--features none" in message


# ---------------------------------------------------------------------------------------------- bad input


def test_folders_refused_with_one_clear_error_each(folders, tmp_path):
    with pytest.raises(FileNotFoundError, match="real folder .*nope does not exist"):
        R.list_images(tmp_path / "nope", "real")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    with pytest.raises(ValueError, match="synthetic folder .*empty holds no images"):
        R.list_images(tmp_path / "empty", "synthetic")
    few = _write(tmp_path / "few", [Image.open(p) for p in R.list_images(folders["other"], "x")[:9]])
    with pytest.raises(ValueError, match=f"at least {R.MIN_PER_CLASS} images per set; the synthetic .* has 9"):
        R.run_realism(folders["phantom"], few, FAST, features="none")
    broken = _write(tmp_path / "broken", [Image.open(p) for p in R.list_images(folders["other"], "x")[:12]])
    (broken / "005.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"synthetic image .*005\.png: not a readable image"):
        R.run_realism(folders["phantom"], broken, FAST, features="none")


def test_reads_a_data_set_folder_and_a_sample_folder(folders, tmp_path):
    dataset = tmp_path / "dataset"
    _write(dataset / "images", [Image.open(p) for p in R.list_images(folders["phantom"], "x")[:3]])
    (dataset / "masks").mkdir()
    assert [p.parent.name for p in R.list_images(dataset, "real")] == ["images"] * 3
    samples = _write(tmp_path / "samples", [Image.open(p) for p in R.list_images(folders["phantom"], "x")[:2]], "s_")
    (samples / "s_000.json").write_text("{}")
    (samples / "manifest.csv").write_text("image\n")
    assert [p.name for p in R.list_images(samples, "synthetic")] == ["s_000.png", "s_001.png"]
    rgba = Image.new("RGBA", (100, 80), (255, 0, 0, 0))  # transparent: white after compositing
    rgba.save(tmp_path / "rgba.png")
    pixels, native = R.read_image(tmp_path / "rgba.png", SIZE)
    assert native == (100, 80) and pixels.shape == (SIZE, SIZE, 3) and (pixels == 255).all()


def test_settings_refuse_bad_values():
    with pytest.raises(ValueError, match="test-fraction .* got 0.95"):
        R.RealismSettings(test_fraction=0.95).validated()
    with pytest.raises(ValueError, match="epochs .* got 0"):
        R.RealismSettings(epochs=0).validated()
    with pytest.raises(ValueError, match="size must be from 32 .* got 8"):
        R.RealismSettings(size=8).validated()


def test_feature_spec_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="not one of segmenter:DIR, torchscript:FILE"):
        R.make_extractor("resnet:foo.pth")
    with pytest.raises(FileNotFoundError, match="cannot be downloaded here"):
        R.make_extractor(f"inception:{tmp_path / 'pt_inception.pth'}")
    monkeypatch.setattr(R, "DEFAULT_SEGMENTER", tmp_path / "no-segmenter")
    with pytest.raises(FileNotFoundError, match="the default feature extractor, the shipped segmenter"):
        R.make_extractor(None)
    assert R.make_extractor("none") is None


# ------------------------------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def torchscript_extractor(tmp_path_factory) -> Path:
    """A tiny TorchScript feature extractor: per-channel mean and standard deviation (6 features)."""
    import torch

    class MeanStd(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)

    path = tmp_path_factory.mktemp("extractor") / "meanstd.pt"
    torch.jit.script(MeanStd()).save(str(path))
    return path


def _cli(folders, out: Path, *extra: str) -> int:
    argv = ["realism", "--real", str(folders["phantom"]), "--synthetic", str(folders["blurred"]), "--out", str(out)]
    return main([*argv, "--size", str(SIZE), "--epochs", "3", "--no-progress", "--threads", "1", *extra])


def test_cli_with_a_torchscript_extractor(folders, torchscript_extractor, tmp_path, capsys):
    out = tmp_path / "report"
    assert _cli(folders, out, "--features", f"torchscript:{torchscript_extractor}") == 0
    printed = capsys.readouterr().out
    assert "classifier test: accuracy" in printed and "Frechet distance" in printed
    report = json.loads((out / R.REPORT_JSON).read_text())
    c2st, frechet = report["c2st"], report["frechet"]
    assert (report["n_real"], report["n_synthetic"]) == (N, N)
    assert (c2st["train_real"], c2st["test_synthetic"]) == (45, 19)
    assert c2st["kappa"] == pytest.approx(2 * c2st["accuracy"] - 1)
    assert frechet["feature_dim"] == 6 and frechet["n_real"] == N and frechet["distance"] > 0
    assert "TorchScript" in frechet["extractor"]
    md = (out / R.REPORT_MD).read_text()
    assert "| held out | 19 | 19 |" in md and "Frechet distance" in md
    rows = (out / R.PREDICTIONS_CSV).read_text().splitlines()
    assert rows[0] == "file,label,split,p_synthetic" and len(rows) == 1 + 2 * N

    assert _cli(folders, out, "--features", "none") == 2  # an earlier report is not replaced silently
    assert "already holds a realism report" in capsys.readouterr().err
    assert _cli(folders, out, "--features", "none", "--overwrite") == 0
    assert json.loads((out / R.REPORT_JSON).read_text())["frechet"] is None


def test_cli_refusals(folders, torchscript_extractor, tmp_path, capsys):
    import torch

    class Wide(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :, :4, :8].flatten(1)  # 3 * 4 * 8 = 96 features: needs 192 images per set

    wide = tmp_path / "wide.pt"
    torch.jit.script(Wide()).save(str(wide))
    assert _cli(folders, tmp_path / "o", "--features", f"torchscript:{wide}") == 2
    err = capsys.readouterr().err
    assert "192" in err and f"real set has {N}" in err and err.count("\n") == 1
    assert not (tmp_path / "o" / R.REPORT_JSON).exists()

    state_dict = tmp_path / "pt_inception-2015-12-05.pth"
    torch.save({"conv.weight": torch.zeros(1)}, state_dict)
    assert _cli(folders, tmp_path / "o", "--features", f"inception:{state_dict}") == 2
    err = capsys.readouterr().err
    assert "is not a TorchScript module" in err and "cannot be downloaded here" in err

    argv = ["realism", "--real", str(tmp_path / "missing"), "--synthetic", str(folders["blurred"])]
    assert main([*argv, "--out", str(tmp_path / "o"), "--features", "none"]) == 2
    assert "real folder" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_segmenter(request, tmp_path_factory, one_torch_thread) -> Path:
    """A "tiny" segmenter (32 features): the session's shared one (tests/conftest.py) where there is one, else
    one trained here for two epochs on eight phantom patches."""
    try:
        return request.getfixturevalue("tiny_segmenter_dir")
    except pytest.FixtureLookupError:
        pass
    from renal_ldm.data import layout
    from renal_ldm.data.patches import PatchDataset
    from renal_ldm.segment import SEGMENTER_CONFIGS, SegmenterTrainSettings, train_segmenter

    root = tmp_path_factory.mktemp("segmenter")
    data = root / "data"
    (data / layout.IMAGES_DIR).mkdir(parents=True)
    (data / layout.MASKS_DIR).mkdir()
    for i in range(8):
        p = generate_phantom(size=SIZE, seed=500 + i)
        layout.write_pair(data, f"{i:06d}.png", p.image, p.mask)
    dataset = PatchDataset(data, return_mask=True, flips=False)
    settings = SegmenterTrainSettings(epochs=2, batch_size=4, crop=SIZE, val_fraction=0.0, patience=2, progress=False)
    out = root / "tiny"
    train_segmenter(dataset, dataset, out, config=SEGMENTER_CONFIGS["tiny"], settings=settings, log=lambda _: None)
    return out


def test_cli_with_a_tiny_segmenter_as_extractor(folders, tiny_segmenter, tmp_path, capsys):
    from renal_ldm.segment import load_segmenter

    width = load_segmenter(tiny_segmenter).feature_dim
    assert 2 * width <= N  # 32 features: 64 images per set suffice
    out = tmp_path / "seg"
    assert _cli(folders, out, "--features", f"segmenter:{tiny_segmenter}") == 0
    frechet = json.loads((out / R.REPORT_JSON).read_text())["frechet"]
    assert frechet["feature_dim"] == width and frechet["distance"] > 0 and "segmenter" in frechet["extractor"]
    assert f"| {frechet['extractor']} | {width} | {N} | {N} |" in (out / R.REPORT_MD).read_text()
    capsys.readouterr()
    assert _cli(folders, tmp_path / "seg2", "--features", f"segmenter:{tmp_path / 'nothing'}") == 2
    assert "segmenter folder" in capsys.readouterr().err
