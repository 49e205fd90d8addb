"""Automated realism tests: can a classifier tell synthetic patches from real ones, and how far apart are
their feature distributions?

Two measurements of one real and one synthetic image folder (`renal-ldm realism`, later the Evaluate page):

1. **Classifier two-sample test (C2ST).** Both sets are balanced to the same count (the larger one is
   subsampled by the seed), split per class into training and held-out images, and a small CNN (a few strided
   convolutions, global average pooling, one logit) learns real versus synthetic with random flips. Its
   held-out accuracy comes with a 95% Wilson interval, the binomial-test p-value of accuracy > 0.5, and the
   implied kappa 2 x accuracy - 1. On a balanced held-out set that is exactly Cohen's kappa between the
   classifier's calls and the truth, the statistic of the survey: 0 = cannot tell the sets apart (chance),
   1 = always tells them apart, below 0 = systematically wrong. The same seed gives the same result.
2. **Frechet distance** between the two sets' feature distributions (the FID formula), with a pluggable
   extractor: the shipped segmenter's encoder by default (`segmenter:DIR`, works offline), or a TorchScript
   module the user supplies (`torchscript:FILE`, or `inception:FILE` for an Inception-v3 FID network: those
   weights cannot be downloaded here and torchvision is not installed, so it must be a local TorchScript
   file). A covariance of D-dimensional features needs well over D samples; fewer than 2 x D per set is refused.

Images are read as 8-bit RGB (16-bit by value >> 8, alpha over white, EXIF orientation applied) and
center-cropped and resized to one square size exactly as survey images are (`renal_ldm.survey_images`), so the
classifier sees what survey raters see. A folder is a folder of PNG/JPEG/TIFF files (a `renal-ldm sample`
output works: its JSON sidecars and manifest are ignored) or a patch data set (its `images/` is read).

This module imports torch and scipy only inside the functions that need them, so the CLI parser can read the
defaults from `RealismSettings` without loading torch.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from renal_ldm.csv_cells import csv_text
from renal_ldm.data.layout import IMAGE_SUFFIXES
from renal_ldm.fsutil import write_file_atomically
from renal_ldm.paths import SHIPPED_PHANTOM_SEGMENTER
from renal_ldm.survey_images import DEFAULT_SIZE, MAX_SIZE, MIN_SIZE

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total), the form app/background.py polls; the CLI turns it into tqdm bars."""

MIN_PER_CLASS = 10
"""Fewest images per set the classifier test accepts: below that the held-out set is a handful of images and
the interval spans nearly everything."""
C2ST_GRAD_CLIP = 1.0
"""Largest gradient norm of a classifier step (with the cosine schedule, what keeps its training from blowing up)."""
DEFAULT_SEGMENTER = SHIPPED_PHANTOM_SEGMENTER
DEFAULT_FEATURES = "segmenter"
"""`--features` default: the shipped phantom segmenter's encoder (models/segmenter-phantom)."""
FEATURE_KINDS = ("segmenter:DIR", "torchscript:FILE", "inception:FILE", "none")
FID_NOTE = (
    "the FID Inception-v3 weights cannot be downloaded here and torchvision is not installed, so Inception "
    "features must be supplied as a local TorchScript file: a module mapping float32 N x 3 x H x W RGB images in "
    "[0, 1] to N x D features (made elsewhere with torch.jit.script or torch.jit.trace and copied here)"
)
REPORT_JSON = "realism.json"
REPORT_MD = "realism.md"
PREDICTIONS_CSV = "c2st_predictions.csv"
REPORT_FILES = (REPORT_JSON, REPORT_MD, PREDICTIONS_CSV)
ALPHA = 0.05
"""Significance level of the report's verdict (the interval is the matching 95% one)."""


class RealismCancelled(Exception):
    """The job was cancelled (the page's cancel event was set) between two batches."""


@dataclass(frozen=True)
class RealismSettings:
    """How the realism test runs; the CLI's defaults are these."""

    seed: int = 0
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    test_fraction: float = 0.3
    size: int = DEFAULT_SIZE
    """Side of the square every image is center-cropped and resized to: the survey's size by default."""
    width: int = 16
    """Channels of the classifier's first convolution (doubling per layer up to 4x)."""
    feature_batch: int = 16
    device: str | None = None
    """"cpu" or "cuda"; None: cuda when present."""

    def validated(self) -> RealismSettings:
        def positive_int(name: str, value: Any) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1; got {value!r}")

        for name in ("epochs", "batch_size", "width", "feature_batch"):
            positive_int(name.replace("_", "-"), getattr(self, name))
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a whole number of at least 0; got {self.seed!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number; got {self.lr!r}")
        tf = self.test_fraction
        if not (isinstance(tf, (int, float)) and 0.05 <= tf <= 0.8):
            raise ValueError(f"test-fraction must be from 0.05 to 0.8 (the held-out share per class); got {tf!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)):
            raise ValueError(f"size must be a whole number of pixels from {MIN_SIZE} to {MAX_SIZE}; got {self.size!r}")
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ValueError(f"size must be from {MIN_SIZE} to {MAX_SIZE} px; got {self.size}")
        if self.device not in (None, "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be cpu or cuda; got {self.device!r}")
        return self


# ------------------------------------------------------------------------------------------------ images


@dataclass
class ImageSet:
    """One folder's images, read and brought to one square size."""

    role: str
    folder: Path
    files: list[Path]
    pixels: np.ndarray  # (N, size, size, 3) uint8
    native_sizes: list[tuple[int, int]]  # (width, height) before cropping and resizing

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.files]

    def size_summary(self) -> str:
        sizes = sorted(set(self.native_sizes))
        shown = ", ".join(f"{w}x{h}" for w, h in sizes[:4]) + (f" and {len(sizes) - 4} more" if len(sizes) > 4 else "")
        return shown


def list_images(folder: str | Path, role: str) -> list[Path]:
    """The image files of a folder (or of its images/ when it is a patch data set), sorted by name.

    FileNotFoundError / NotADirectoryError / ValueError naming the folder and what was expected.
    """
    folder = Path(folder).expanduser()
    expected = f"expected a folder of {', '.join(IMAGE_SUFFIXES)} images (or a data set holding images/)"
    if not folder.exists():
        raise FileNotFoundError(f"{role} folder {folder} does not exist; {expected}")
    if not folder.is_dir():
        raise NotADirectoryError(f"{role} folder {folder} is not a folder; {expected}")
    files = _image_files(folder)
    if not files and (folder / "images").is_dir():
        files = _image_files(folder / "images")
    if not files:
        raise ValueError(f"{role} folder {folder} holds no images; {expected}")
    return files


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def read_image(path: Path, size: int, role: str = "image") -> tuple[np.ndarray, tuple[int, int]]:
    """(size x size x 3 uint8 pixels, native (width, height)) of one file, converted and cropped like a survey
    image; ValueError naming the file when it cannot be read."""
    from renal_ldm.survey_images import center_square, to_rgb

    try:
        with Image.open(path) as img:
            img.load()
            native = img.size
            rgb = to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError, ValueError) as exc:
        if path.suffix.lower() in (".tif", ".tiff") and not isinstance(exc, ValueError):
            from renal_ldm.data.patches import read_rgb  # tifffile fallback for TIFFs Pillow cannot decode

            try:
                arr = read_rgb(path)
            except ValueError as inner:
                raise ValueError(f"{role} image {inner}") from None
            native = (arr.shape[1], arr.shape[0])
            rgb = Image.fromarray(arr)
        else:
            raise ValueError(
                f"{role} image {path}: not a readable image ({exc}); expected a PNG, JPEG or TIFF RGB image"
            ) from None
    return np.array(center_square(rgb, size), dtype=np.uint8), native


def read_images(
    files: Sequence[Path], folder: Path, role: str, size: int, progress: Progress | None = None, cancel=None
) -> ImageSet:
    pixels = np.empty((len(files), size, size, 3), dtype=np.uint8)
    natives = []
    stage = f"reading {role} images"
    for i, path in enumerate(files):
        _check_cancel(cancel)
        pixels[i], native = read_image(path, size, role)
        natives.append(native)
        if progress:
            progress(stage, i + 1, len(files))
    return ImageSet(role, Path(folder), list(files), pixels, natives)


def _check_cancel(cancel) -> None:
    if cancel is not None and cancel.is_set():
        raise RealismCancelled("realism test cancelled")


# ---------------------------------------------------------------------------------- classifier two-sample test


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    loss: float
    train_accuracy: float  # running accuracy on the (flipped) training batches of this epoch


@dataclass(frozen=True)
class Prediction:
    file: str
    label: str  # "real" or "synthetic"
    split: str  # "train" or "test"
    p_synthetic: float


@dataclass(frozen=True)
class C2STResult:
    n_real: int  # images in the real folder
    n_synthetic: int
    per_class: int  # images of each set the test used (the smaller set's count)
    train_real: int
    train_synthetic: int
    test_real: int
    test_synthetic: int
    correct: int
    test_total: int
    accuracy: float
    ci_low: float
    ci_high: float
    p_value: float
    kappa: float
    kappa_ci_low: float
    kappa_ci_high: float
    real_recall: float  # share of held-out real images called real
    synthetic_recall: float  # share of held-out synthetic images called synthetic
    auc: float
    history: list[EpochStats]
    predictions: list[Prediction] = field(repr=False)

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("predictions")
        d["ci_method"] = "Wilson score interval, 95%"
        d["p_value_test"] = "exact binomial test of accuracy > 0.5 (one-sided)"
        return d


def _build_classifier(width: int):
    import torch
    from torch import nn

    class C2STNet(nn.Module):
        """Strided 3x3 convolutions (GroupNorm, ReLU) down to 1/32 of the input, global average pooling, one logit
        (positive: synthetic)."""

        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            channels = 3
            for i in range(5):
                out = width * 2 ** min(i, 2)
                layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False), nn.GroupNorm(4, out)]
                layers.append(nn.ReLU(inplace=True))
                channels = out
            self.features = nn.Sequential(*layers)
            self.head = nn.Linear(channels, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x).mean(dim=(2, 3))).squeeze(1)

    return C2STNet()


def _stratified_split(n: int, test_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    n_test = min(max(round(n * test_fraction), 1), n - 1)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _default_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device here; expected cpu")
    return device


def binomial_summary(correct: int, total: int) -> tuple[float, float, float, float]:
    """(accuracy, 95% Wilson low, high, one-sided exact binomial p-value of accuracy > 0.5)."""
    from scipy.stats import binomtest

    if total < 1:
        raise ValueError(f"no held-out images to score; expected at least 1, got {total}")
    ci = binomtest(correct, total).proportion_ci(confidence_level=0.95, method="wilson")
    p = binomtest(correct, total, 0.5, alternative="greater").pvalue
    return correct / total, float(ci.low), float(ci.high), float(p)


def classifier_two_sample_test(
    real: ImageSet,
    synthetic: ImageSet,
    settings: RealismSettings = RealismSettings(),
    *,
    progress: Progress | None = None,
    cancel=None,
) -> C2STResult:
    """Train the small CNN on a stratified split of the balanced sets and score it on the held-out images."""
    import torch
    from scipy.stats import mannwhitneyu

    settings = settings.validated()
    for s in (real, synthetic):
        if len(s.files) < MIN_PER_CLASS:
            raise ValueError(
                f"the classifier test needs at least {MIN_PER_CLASS} images per set; the {s.role} folder "
                f"{s.folder} has {len(s.files)}"
            )
    rng = np.random.default_rng(settings.seed)
    per_class = min(len(real.files), len(synthetic.files))
    chosen = [np.sort(rng.choice(len(s.files), per_class, replace=False)) for s in (real, synthetic)]
    splits = [_stratified_split(per_class, settings.test_fraction, rng) for _ in (real, synthetic)]
    train_idx = [c[tr] for c, (tr, _) in zip(chosen, splits, strict=True)]
    test_idx = [c[te] for c, (_, te) in zip(chosen, splits, strict=True)]

    def stack(idx: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.concatenate([real.pixels[idx[0]], synthetic.pixels[idx[1]]])
        y = np.concatenate([np.zeros(len(idx[0])), np.ones(len(idx[1]))]).astype(np.float32)
        return torch.from_numpy(x), torch.from_numpy(y)

    x_train, y_train = stack(train_idx)
    x_test, y_test = stack(test_idx)
    device = torch.device(_default_device(settings.device))

    def to_input(batch: torch.Tensor) -> torch.Tensor:  # NHWC uint8 -> NCHW float in [-1, 1]
        return batch.to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        net = _build_classifier(settings.width).to(device)
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    n_train = len(y_train)
    batches = math.ceil(n_train / settings.batch_size)
    total_steps = settings.epochs * batches
    # Cosine decay to zero and clipped gradients: at a constant learning rate the classifier could fit the training
    # split and then blow up in a late epoch (loss 0.06 -> 1.26, every image called one class: accuracy 0.500 on
    # images that other seeds tell apart at 0.99), so the verdict depended on the seed (models/demo/README.md).
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    history: list[EpochStats] = []
    step = 0
    for epoch in range(1, settings.epochs + 1):
        net.train()
        order = torch.randperm(n_train, generator=generator)
        loss_sum, hits = 0.0, 0
        for b in range(batches):
            _check_cancel(cancel)
            idx = order[b * settings.batch_size : (b + 1) * settings.batch_size]
            x = x_train[idx].clone()
            flip_w = torch.rand(len(idx), generator=generator) < 0.5
            flip_h = torch.rand(len(idx), generator=generator) < 0.5
            x[flip_w] = x[flip_w].flip(2)  # NHWC: dim 2 is width, dim 1 height
            x[flip_h] = x[flip_h].flip(1)
            y = y_train[idx].to(device)
            logits = net(to_input(x))
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), C2ST_GRAD_CLIP)
            optimizer.step()
            schedule.step()
            loss_sum += float(loss.detach()) * len(idx)
            hits += int(((logits > 0).float() == y).sum())
            step += 1
            if progress:
                progress("classifier training", step, total_steps)
        history.append(EpochStats(epoch, loss_sum / n_train, hits / n_train))

    def scores(x_all: torch.Tensor) -> np.ndarray:
        net.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(x_all), settings.batch_size):
                out.append(torch.sigmoid(net(to_input(x_all[start : start + settings.batch_size]))).cpu())
        return torch.cat(out).double().numpy()

    p_test = scores(x_test)
    p_train = scores(x_train)
    truth = y_test.numpy() > 0.5
    called = p_test > 0.5
    correct = int((called == truth).sum())
    accuracy, lo, hi, p_value = binomial_summary(correct, len(truth))
    u = mannwhitneyu(p_test[truth], p_test[~truth], alternative="two-sided").statistic
    auc = float(u) / (int(truth.sum()) * int((~truth).sum()))

    predictions = []
    for split, idx, probs in (("train", train_idx, p_train), ("test", test_idx, p_test)):
        names = [real.names[i] for i in idx[0]] + [synthetic.names[i] for i in idx[1]]
        labels = ["real"] * len(idx[0]) + ["synthetic"] * len(idx[1])
        predictions += [Prediction(n, lab, split, float(p)) for n, lab, p in zip(names, labels, probs, strict=True)]
    return C2STResult(
        n_real=len(real.files),
        n_synthetic=len(synthetic.files),
        per_class=per_class,
        train_real=len(train_idx[0]),
        train_synthetic=len(train_idx[1]),
        test_real=len(test_idx[0]),
        test_synthetic=len(test_idx[1]),
        correct=correct,
        test_total=len(truth),
        accuracy=accuracy,
        ci_low=lo,
        ci_high=hi,
        p_value=p_value,
        kappa=2 * accuracy - 1,
        kappa_ci_low=2 * lo - 1,
        kappa_ci_high=2 * hi - 1,
        real_recall=float((~called[~truth]).mean()),
        synthetic_recall=float(called[truth].mean()),
        auc=auc,
        history=history,
        predictions=predictions,
    )


# --------------------------------------------------------------------------------------- Frechet distance


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (rows are samples), the FID formula
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

    A singular product (non-finite square root) is retried with eps added to both diagonals; the tiny imaginary
    part numerical error leaves in the square root is dropped. Symmetric, 0 for identical sets.
    """
    from scipy import linalg

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets of shapes {a.shape} and {b.shape}; expected (N, D) and (M, D)")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"feature sets of {len(a)} and {len(b)} samples; expected at least 2 each")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    s_a = np.atleast_2d(np.cov(a, rowvar=False))
    s_b = np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():  # a singular product is expected with few samples; handled just below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(s_a)) * eps
        covmean = linalg.sqrtm((s_a + offset) @ (s_b + offset))
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    distance = float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean))
    return max(distance, 0.0)  # rounding can leave -1e-12 for identical sets


def check_frechet_counts(n_real: int, n_synthetic: int, feature_dim: int, extractor: str = "the extractor") -> None:
    """ValueError unless both sets have at least 2 x feature_dim samples (else the covariance is singular)."""
    need = 2 * feature_dim
    if n_real < need or n_synthetic < need:
        raise ValueError(
            f"the Frechet distance needs at least 2 x the feature width = {need} images per set ({extractor} gives "
            f"{feature_dim} features per image; fewer samples leave the covariance singular); the real set has "
            f"{n_real} and the synthetic set {n_synthetic}: add images, or pass --features none to run the "
            f"classifier test alone"
        )


class FeatureExtractor:
    """Maps (N, H, W, 3) uint8 images to (N, feature_dim) float features."""

    description: str
    feature_dim: int

    def __call__(self, images: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def probe(self, image: np.ndarray) -> int:
        """The feature width, from one image when the extractor does not declare it."""
        return self.feature_dim


class SegmenterFeatures(FeatureExtractor):
    """The globally pooled deepest encoder features of a trained renal-ldm segmenter (`Segmenter.features`)."""

    def __init__(self, folder: str | Path, default: bool = False) -> None:
        folder = Path(folder).expanduser()
        if not folder.exists():
            if default:
                raise FileNotFoundError(
                    f"the default feature extractor, the shipped segmenter {folder}, is not there; pass "
                    f"--features segmenter:DIR (a renal-ldm train-segmenter output), torchscript:FILE, or none"
                )
            raise FileNotFoundError(
                f"segmenter folder {folder} does not exist; expected a renal-ldm train-segmenter output folder"
            )
        from renal_ldm.segment import load_segmenter

        self.segmenter = load_segmenter(folder)
        self.feature_dim = int(self.segmenter.feature_dim)
        self.description = f"segmenter encoder ({folder}, {self.segmenter.config.classes} classes)"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.segmenter.features(list(images)), dtype=np.float64)


class TorchScriptFeatures(FeatureExtractor):
    """A TorchScript module: float32 N x 3 x H x W RGB in [0, 1] -> N x D (or N x D x 1 x 1) features."""

    def __init__(self, path: str | Path, kind: str = "torchscript", device: str | None = None) -> None:
        import torch

        path = Path(path).expanduser()
        label = "Inception-v3" if kind == "inception" else "TorchScript"
        if not path.is_file():
            raise FileNotFoundError(f"{label} feature extractor file {path} does not exist; {FID_NOTE}")
        self.device = torch.device(_default_device(device))
        try:
            self.module = torch.jit.load(str(path), map_location=self.device).eval()
        except Exception as exc:  # torch raises RuntimeError, pickle errors, ... for a non-TorchScript file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(
                f"{path} is not a TorchScript module (torch.jit.load: {first[:200]}); a state dict or pickled "
                f"checkpoint (.pth) cannot be used: {FID_NOTE}"
            ) from None
        self.description = f"{label} ({path})"
        self.feature_dim = 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.array(images, dtype=np.uint8)).to(self.device).permute(0, 3, 1, 2).float().div(255.0)
        try:
            with torch.no_grad():
                out = self.module(x)
        except Exception as exc:  # a script error surfaces as torch.jit.Error / RuntimeError
            first = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
            raise ValueError(
                f"the feature extractor {self.description} failed on a {tuple(x.shape)} batch ({first}); expected a "
                f"module taking float32 N x 3 x H x W images in [0, 1]"
            ) from None
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.ndim < 2 or out.shape[0] != len(images):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"the feature extractor {self.description} returned {shape} for {len(images)} images; expected "
                f"N x D features"
            )
        return out.flatten(start_dim=1).double().cpu().numpy()

    def probe(self, image: np.ndarray) -> int:
        if not self.feature_dim:
            self.feature_dim = int(self(image[None]).shape[1])
        return self.feature_dim


def make_extractor(spec: str | None, device: str | None = None) -> FeatureExtractor | None:
    """The extractor a --features value names: segmenter[:DIR], torchscript:FILE, inception:FILE, or none."""
    spec = DEFAULT_FEATURES if spec is None else str(spec).strip()
    kind, _, target = spec.partition(":")
    kind = kind.lower()
    if kind == "none" and not target:
        return None
    if kind == "segmenter":
        return SegmenterFeatures(target or DEFAULT_SEGMENTER, default=not target)
    if kind in ("torchscript", "inception") and target:
        return TorchScriptFeatures(target, kind, device)
    if kind == "inception":
        raise ValueError(f"--features inception needs a file: inception:FILE; {FID_NOTE}")
    raise ValueError(f"--features {spec!r} is not one of {', '.join(FEATURE_KINDS)} (default: {DEFAULT_FEATURES})")


def extract_features(
    extractor: FeatureExtractor,
    images: ImageSet,
    batch_size: int = 16,
    progress: Progress | None = None,
    cancel=None,
) -> np.ndarray:
    chunks = []
    n = len(images.pixels)
    for start in range(0, n, batch_size):
        _check_cancel(cancel)
        chunks.append(extractor(images.pixels[start : start + batch_size]))
        if progress:
            progress(f"{images.role} features", min(start + batch_size, n), n)
    return np.concatenate(chunks)


@dataclass(frozen=True)
class FrechetResult:
    extractor: str
    feature_dim: int
    n_real: int
    n_synthetic: int
    distance: float


# ------------------------------------------------------------------------------------------------ the run


@dataclass(frozen=True)
class RealismReport:
    real_folder: str
    synthetic_folder: str
    n_real: int
    n_synthetic: int
    settings: RealismSettings
    c2st: C2STResult
    frechet: FrechetResult | None
    notes: list[str]
    seconds: float

    def to_dict(self) -> dict:
        return {
            "real_folder": self.real_folder,
            "synthetic_folder": self.synthetic_folder,
            "n_real": self.n_real,
            "n_synthetic": self.n_synthetic,
            "settings": asdict(self.settings),
            "c2st": self.c2st.to_dict(),
            "frechet": asdict(self.frechet) if self.frechet else None,
            "notes": self.notes,
            "seconds": round(self.seconds, 1),
        }


def run_realism(
    real_dir: str | Path,
    synthetic_dir: str | Path,
    settings: RealismSettings = RealismSettings(),
    *,
    features: str | FeatureExtractor | None = DEFAULT_FEATURES,
    progress: Progress | None = None,
    cancel=None,
) -> RealismReport:
    """Both measurements of two image folders. Every check that can fail on the input runs before any training:
    missing or empty folders, too few images for the classifier test or the Frechet distance, unreadable files.

    features: a --features string (see `make_extractor`; "none" skips the Frechet distance) or an extractor.
    """
    started = time.perf_counter()
    settings = settings.validated()
    files = {role: list_images(folder, role) for role, folder in (("real", real_dir), ("synthetic", synthetic_dir))}
    for role, found in files.items():
        if len(found) < MIN_PER_CLASS:
            raise ValueError(
                f"the classifier test needs at least {MIN_PER_CLASS} images per set; the {role} folder "
                f"{real_dir if role == 'real' else synthetic_dir} has {len(found)}"
            )
    extractor = features if isinstance(features, FeatureExtractor) else make_extractor(features, settings.device)
    if extractor is not None:
        if not extractor.feature_dim:
            first, _ = read_image(files["real"][0], settings.size, "real")
            extractor.probe(first)
        check_frechet_counts(len(files["real"]), len(files["synthetic"]), extractor.feature_dim, extractor.description)
    real = read_images(files["real"], Path(real_dir), "real", settings.size, progress, cancel)
    synthetic = read_images(files["synthetic"], Path(synthetic_dir), "synthetic", settings.size, progress, cancel)
    notes = _input_notes(real, synthetic, settings.size)
    c2st = classifier_two_sample_test(real, synthetic, settings, progress=progress, cancel=cancel)
    frechet = None
    if extractor is not None:
        f_real = extract_features(extractor, real, settings.feature_batch, progress, cancel)
        f_synthetic = extract_features(extractor, synthetic, settings.feature_batch, progress, cancel)
        frechet = FrechetResult(
            extractor.description,
            int(f_real.shape[1]),
            len(f_real),
            len(f_synthetic),
            frechet_distance(f_real, f_synthetic),
        )
    return RealismReport(
        str(Path(real_dir).expanduser().resolve()),
        str(Path(synthetic_dir).expanduser().resolve()),
        len(real.files),
        len(synthetic.files),
        settings,
        c2st,
        frechet,
        notes,
        time.perf_counter() - started,
    )


def _input_notes(real: ImageSet, synthetic: ImageSet, size: int) -> list[str]:
    """Differences between the sets other than content that a classifier could learn (a tell, not realism)."""
    notes = []
    if real.folder.expanduser().resolve() == synthetic.folder.expanduser().resolve():
        notes.append("the real and the synthetic folder are the same folder")
    sizes = {s.role: set(s.native_sizes) for s in (real, synthetic)}
    if sizes["real"] != sizes["synthetic"]:
        notes.append(
            f"the sets differ in native size (real {real.size_summary()}, synthetic {synthetic.size_summary()}): "
            f"resizing to {size} px treats them differently, which the classifier may learn instead of realism"
        )
    for s in (real, synthetic):
        small = sum(1 for w, h in s.native_sizes if min(w, h) < size)
        if small:
            notes.append(f"{small} {s.role} image(s) smaller than {size} px were up-scaled (soft images are a tell)")
    if len(real.files) != len(synthetic.files):
        used = min(len(real.files), len(synthetic.files))
        notes.append(f"the classifier test used {used} images of each set (balanced; the larger set was subsampled)")
    return notes


# ---------------------------------------------------------------------------------------------- the report


def verdict(c2st: C2STResult) -> str:
    if c2st.significant:
        return (
            f"the classifier tells the sets apart better than chance (p = {c2st.p_value:.2g} < {ALPHA}): "
            f"the synthetic images are distinguishable"
        )
    return (
        f"the classifier does not tell the sets apart better than chance (p = {c2st.p_value:.2g} >= {ALPHA}): "
        f"no evidence the synthetic images are distinguishable at this sample size"
    )


def report_markdown(report: RealismReport) -> str:
    c, f, s = report.c2st, report.frechet, report.settings
    lines = [
        "# Realism test",
        "",
        f"- real: `{report.real_folder}` ({report.n_real} images)",
        f"- synthetic: `{report.synthetic_folder}` ({report.n_synthetic} images)",
        f"- images center-cropped and resized to {s.size} x {s.size} px; seed {s.seed}",
        "",
        "## Classifier two-sample test",
        "",
        f"A small CNN learnt real versus synthetic for {s.epochs} epochs on a stratified split "
        f"({s.test_fraction:g} of each set held out), with random flips.",
        "",
        "| images | real | synthetic |",
        "| --- | ---: | ---: |",
        f"| training | {c.train_real} | {c.train_synthetic} |",
        f"| held out | {c.test_real} | {c.test_synthetic} |",
        "",
        "| measure | value | 95% CI |",
        "| --- | ---: | --- |",
        f"| held-out accuracy | {c.accuracy:.3f} ({c.correct} of {c.test_total}) | {c.ci_low:.3f} to {c.ci_high:.3f} "
        f"(Wilson) |",
        f"| implied kappa (2 x accuracy - 1) | {c.kappa:.3f} | {c.kappa_ci_low:.3f} to {c.kappa_ci_high:.3f} |",
        f"| p-value, accuracy > 0.5 (binomial test) | {c.p_value:.3g} | |",
        f"| real called real / synthetic called synthetic | {c.real_recall:.3f} / {c.synthetic_recall:.3f} | |",
        f"| AUC of the classifier's score | {c.auc:.3f} | |",
        f"| training accuracy, last epoch | {c.history[-1].train_accuracy:.3f} | |",
        "",
        f"Verdict: {verdict(c)}.",
        "",
        "The kappa is comparable with the survey's Cohen's kappa: 0 = chance (the sets cannot be told apart), "
        "1 = always told apart.",
        "",
        "## Frechet distance",
        "",
    ]
    if f is None:
        lines.append("Not computed (`--features none`).")
    else:
        lines += [
            "| extractor | feature width | real | synthetic | Frechet distance |",
            "| --- | ---: | ---: | ---: | ---: |",
            f"| {f.extractor} | {f.feature_dim} | {f.n_real} | {f.n_synthetic} | {f.distance:.4g} |",
            "",
            "Distances are comparable only between runs with the same extractor and similar sample counts.",
        ]
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    lines += ["", f"Took {report.seconds:.0f} s.", ""]
    return "\n".join(lines)


def check_report_folder(out_dir: str | Path, overwrite: bool = False) -> Path:
    """The output folder, refused (FileExistsError) when it holds an earlier report and overwrite is off."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; expected a folder for {', '.join(REPORT_FILES)}")
    if not overwrite:
        present = [name for name in REPORT_FILES if (out / name).exists()]
        if present:
            raise FileExistsError(
                f"{out} already holds a realism report ({', '.join(present)}); pass --overwrite to replace it, "
                f"or choose another --out"
            )
    return out


def write_report(report: RealismReport, out_dir: str | Path) -> list[Path]:
    """realism.json, realism.md and c2st_predictions.csv in out_dir (each written atomically)."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    write_file_atomically(out / REPORT_JSON, json.dumps(report.to_dict(), indent=2) + "\n")
    write_file_atomically(out / REPORT_MD, report_markdown(report))
    rows = ((p.file, p.label, p.split, f"{p.p_synthetic:.6f}") for p in report.c2st.predictions)
    write_file_atomically(out / PREDICTIONS_CSV, csv_text(["file", "label", "split", "p_synthetic"], rows))
    return [out / name for name in REPORT_FILES]


__all__ = [
    "C2STResult",
    "FeatureExtractor",
    "FrechetResult",
    "RealismCancelled",
    "RealismReport",
    "RealismSettings",
    "SegmenterFeatures",
    "TorchScriptFeatures",
    "check_frechet_counts",
    "classifier_two_sample_test",
    "frechet_distance",
    "make_extractor",
    "read_images",
    "run_realism",
    "write_report",
]
