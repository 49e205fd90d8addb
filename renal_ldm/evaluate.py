"""Caption accuracy of generated samples (the reference study's section 4.2.1 and Table 5.1), and the report files
evaluations write (JSON, markdown tables, bar charts drawn with PIL: matplotlib is not a dependency).

    result = evaluate_captions("out/samples", "models/segmenter-phantom")   # a `renal-ldm sample` folder
    write_caption_report(result, "out/eval")   # caption_accuracy.json, caption_accuracy.md, two bar charts

How a sample is judged, as in the reference: the segmenter predicts its label mask; class fractions (pixel count
over all pixels, background included) give levels with the caption thresholds (renal_ldm.captions); the
predicted caption is written from those levels. The generating caption comes from the sample's JSON sidecar and
gives the requested level of every class (none where the caption does not mention it). Reported:

- Table 5.1: for Glomeruli, Sclerotic Glomeruli and both combined, the share of samples whose predicted level
  is none / low / medium / high. "Combined" is the fraction of classes 4 and 5 together, which is how the
  reference's numbers add up: its combined "none" (8.74%) is the share with neither kind, so the 91.3% whose
  caption mentions glomeruli is 100 - 8.74, and "glomeruli but no sclerotic" (3.86%) is 12.60 - 8.74;
- the share of predicted captions that mention glomeruli (either kind), and of those with only one kind;
- for every judged class a requested x predicted level confusion table, the exact-level accuracy (requested
  level == predicted level, none included) and the presence accuracy (mentioned in both or in neither);
- the share of samples whose predicted caption equals the generating caption exactly.

A "glomeruli" segmenter (glomerulus versus the rest) judges the class Glomeruli only; the report says so.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from renal_ldm import __version__
from renal_ldm.captions import (
    LEVELS,
    NONE,
    caption_to_levels,
    fractions_to_levels,
    level_for_fraction,
    levels_to_caption,
    mask_fractions,
)
from renal_ldm.classes import CAPTIONED_CLASSES, GLOMERULI_ID, SCLEROTIC_GLOMERULI_ID, by_id
from renal_ldm.fsutil import write_file_atomically

LEVEL_KEYS: tuple[str, ...] = (NONE, *LEVELS)
"""Rows and columns of every level table: none, low, medium, high."""
LEVEL_LABELS = {key: key.capitalize() for key in LEVEL_KEYS}

GLOMERULI = by_id(GLOMERULI_ID).name
SCLEROTIC = by_id(SCLEROTIC_GLOMERULI_ID).name
COMBINED = f"{GLOMERULI} or {SCLEROTIC}"
"""Table 5.1c: the fraction of both glomerulus classes together, turned into a level."""
TABLE_5_1_COLUMNS: tuple[str, ...] = (GLOMERULI, SCLEROTIC, COMBINED)
ALL_CLASSES: tuple[str, ...] = tuple(c.name for c in CAPTIONED_CLASSES)

REFERENCE_SAMPLES = 400
REFERENCE_TABLE_5_1: dict[str, dict[str, float]] = {
    GLOMERULI: {NONE: 12.34, "low": 77.38, "medium": 9.77, "high": 0.50},
    SCLEROTIC: {NONE: 12.60, "low": 78.92, "medium": 7.46, "high": 1.03},
    COMBINED: {NONE: 8.74, "low": 58.35, "medium": 28.02, "high": 4.88},
}
"""The reference's Table 5.1: 400 samples of 256 px for the generating caption, in percent."""
REFERENCE_MENTIONS_GLOMERULI = 91.3
REFERENCE_GLOMERULI_ONLY = 3.86
REFERENCE_SCLEROTIC_ONLY = 3.60
REFERENCE_GLOMERULI_ONLY_OF_MENTIONS = 4.2
"""The reference's "in only 4.2% of those images [mentioning glomeruli] were the glomeruli deemed not sclerotic"."""

SpeckSizes = int | Mapping[str, int]
"""Smallest predicted component that counts: one size in pixels for every class, or a size per class name
(classes left out count every pixel)."""

PHANTOM_JUDGE_SPECKS = "phantom"
"""What `--min-component` takes for PHANTOM_SPECK_SIZES (the shipped phantom judge's own sizes)."""

PHANTOM_SPECK_SIZES: dict[str, int] = {
    "Arteries": 192,
    "Atrophic Tubuli": 32,
    "Tubuli": 128,
    "Glomeruli": 128,
    "Sclerotic Glomeruli": 192,
    "other kidney tissue": 0,
    "Dilated Tubuli": 128,
}
"""The smallest component per class that the shipped phantom segmenter (v3) reads reliably at 128 px, measured
by scripts/calibrate_speck_threshold.py on 400 phantoms it never saw, as they are and through the demo
autoencoder, against their own captions: per class the smallest size within one point of its best exact-level
accuracy. It never looked at generated samples. See remove_specks for what it changes."""

MIN_SAMPLES = 5
"""Fewest samples a caption-accuracy run accepts: percentages of fewer say nothing."""

REPORT_JSON = "caption_accuracy.json"
REPORT_MARKDOWN = "caption_accuracy.md"
CHART_TABLE_5_1 = "table_5_1.png"
CHART_LEVEL_ACCURACY = "level_accuracy.png"
REPORT_FILES = (REPORT_JSON, REPORT_MARKDOWN, CHART_TABLE_5_1, CHART_LEVEL_ACCURACY)
MASKS_DIR = "masks"
"""Where predicted label masks go inside the report folder when asked for (values 0..7, mode L PNG)."""
SAMPLES_DIR = "samples"
"""Where `sample_for_evaluation` draws into inside the report folder."""

ProgressCallback = Callable[[int, int], None]


class EvaluationCancelled(Exception):
    """Raised by an evaluation whose cancel event was set; nothing is written."""


# ------------------------------------------------------------------------------------------------ sample folders


@dataclass(frozen=True)
class SampleFile:
    """One generated image and what its sidecar says it was asked to show."""

    image: Path
    sidecar: Path
    caption: str
    requested: dict[str, str]  # every captioned class -> none/low/medium/high, in label-id order
    size: tuple[int, int]  # (height, width) of the image file


def read_sample_folder(folder: str | Path, *, min_samples: int = MIN_SAMPLES) -> list[SampleFile]:
    """The samples of a `renal-ldm sample` output folder: every PNG with its JSON sidecar (same stem).

    Errors name what is wrong: a missing folder, no PNGs, PNGs without sidecars, a sidecar without a readable
    "caption", a sidecar whose "size" is not the image's, images of different sizes, fewer than `min_samples`.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"samples folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"samples path is not a folder: {folder}; expected a `renal-ldm sample` output folder")
    images = sorted(p for p in folder.glob("*.png") if not p.name.startswith("."))
    layout = "a `renal-ldm sample` output folder (one PNG and one JSON sidecar with its caption per sample)"
    if not images:
        hint = (
            " (a patch data set? its images/ carry masks, not generating captions)"
            if (folder / "images").is_dir()
            else ""
        )
        raise ValueError(f"no sample images (*.png) in {folder}{hint}; expected {layout}")
    missing = [p for p in images if not p.with_suffix(".json").is_file()]
    if len(missing) == len(images):
        raise ValueError(f"{folder} holds {len(images)} PNG images but no JSON sidecars; expected {layout}")
    if missing:
        shown = ", ".join(p.name for p in missing[:3])
        raise ValueError(
            f"{len(missing)} of {len(images)} images in {folder} have no JSON sidecar (e.g. {shown}); expected {layout}"
        )
    if len(images) < min_samples:
        raise ValueError(
            f"{folder} holds {len(images)} samples; caption accuracy needs at least {min_samples} "
            "(percentages of fewer say nothing)"
        )
    samples = [_read_sample(image) for image in images]
    sizes = Counter(s.size for s in samples)
    if len(sizes) > 1:
        (common, _), *_ = sizes.most_common()
        odd = next(s for s in samples if s.size != common)
        raise ValueError(
            f"samples in {folder} have different sizes: {_size_text(common)} (most) and {_size_text(odd.size)} "
            f"({odd.image.name}); judge one size at a time (levels are fractions of the whole image)"
        )
    return samples


def _read_sample(image: Path) -> SampleFile:
    sidecar = image.with_suffix(".json")
    try:
        meta = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{sidecar}: not valid JSON ({exc}); expected a `renal-ldm sample` sidecar") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("caption"), str):
        raise ValueError(f'{sidecar}: no "caption" text; expected a `renal-ldm sample` sidecar with its caption')
    try:
        mentioned = caption_to_levels(meta["caption"])
    except ValueError as exc:
        raise ValueError(f"{sidecar}: the generating caption cannot be read: {exc}") from None
    try:
        with Image.open(image) as img:
            width, height = img.size
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{image}: not a readable image ({exc})") from None
    side = meta.get("size")
    if isinstance(side, int) and not isinstance(side, bool) and (height, width) != (side, side):
        raise ValueError(
            f"{image.name} is {_size_text((height, width))} but its sidecar says size {side} ({side}x{side}); "
            "the image was changed after sampling or belongs to another sidecar"
        )
    requested = {name: mentioned.get(name, NONE) for name in ALL_CLASSES}
    return SampleFile(image=image, sidecar=sidecar, caption=meta["caption"], requested=requested, size=(height, width))


def _size_text(size: tuple[int, int]) -> str:
    return f"{size[1]}x{size[0]} px"


# ------------------------------------------------------------------------------------------------ judging


@dataclass(frozen=True)
class SampleJudgement:
    """One sample's requested and predicted levels (every captioned class; none = absent)."""

    file: str
    caption: str
    requested: dict[str, str]
    predicted: dict[str, str]
    predicted_caption: str
    fractions: dict[str, float]  # predicted pixel fraction per captioned class

    @property
    def combined_fraction(self) -> float:
        return self.fractions[GLOMERULI] + self.fractions[SCLEROTIC]

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "caption": self.caption,
            "requested": dict(self.requested),
            "predicted": dict(self.predicted),
            "predicted_caption": self.predicted_caption,
            "fractions": {k: round(v, 6) for k, v in self.fractions.items()},
        }


def judge_mask(file: str, caption: str, requested: Mapping[str, str], mask: np.ndarray) -> SampleJudgement:
    """Compare a predicted label mask with the levels its generating caption asked for."""
    fractions = mask_fractions(mask)
    levels = fractions_to_levels(fractions)
    return SampleJudgement(
        file=file,
        caption=caption,
        requested={name: requested.get(name, NONE) for name in ALL_CLASSES},
        predicted={name: levels.get(name, NONE) for name in ALL_CLASSES},
        predicted_caption=levels_to_caption(levels),
        fractions={c.name: float(fractions[c.id]) for c in CAPTIONED_CLASSES},
    )


def _level(fraction: float) -> str:
    return level_for_fraction(fraction) if fraction > 0.0 else NONE


def judged_classes(segmenter_classes: str) -> tuple[str, ...]:
    """The classes a segmenter of this kind can judge: all seven captioned ones, or Glomeruli alone."""
    if segmenter_classes == "all":
        return ALL_CLASSES
    if segmenter_classes == "glomeruli":
        return (GLOMERULI,)
    raise ValueError(f"unknown segmenter classes {segmenter_classes!r}; expected 'all' or 'glomeruli'")


@dataclass(frozen=True)
class CaptionAccuracy:
    """Every figure of a caption-accuracy run, computed from its rows."""

    rows: tuple[SampleJudgement, ...]
    segmenter_classes: str = "all"
    samples_dir: str | None = None
    segmenter: str | None = None
    notes: tuple[str, ...] = ()
    min_component_px: SpeckSizes = 0
    judged: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.rows:
            raise ValueError("caption accuracy needs at least one judged sample")
        object.__setattr__(self, "judged", judged_classes(self.segmenter_classes))

    @property
    def n(self) -> int:
        return len(self.rows)

    def _pct(self, count: int) -> float:
        return 100.0 * count / self.n

    @property
    def table_columns(self) -> tuple[str, ...]:
        """The Table 5.1 columns this segmenter can fill."""
        return TABLE_5_1_COLUMNS if self.segmenter_classes == "all" else (GLOMERULI,)

    def predicted_level_counts(self, name: str) -> dict[str, int]:
        """Samples per predicted level of a class (or COMBINED)."""
        if name == COMBINED:
            levels = [_level(r.combined_fraction) for r in self.rows]
        else:
            levels = [r.predicted[name] for r in self.rows]
        counts = Counter(levels)
        return {key: counts.get(key, 0) for key in LEVEL_KEYS}

    def table_5_1(self) -> dict[str, dict[str, float]]:
        """Column -> level -> percent of samples (each column sums to 100)."""
        return {
            name: {k: self._pct(v) for k, v in self.predicted_level_counts(name).items()} for name in self.table_columns
        }

    def _present(self, name: str) -> list[bool]:
        return [r.predicted[name] != NONE for r in self.rows]

    @property
    def mentions_glomeruli(self) -> float:
        """Percent of predicted captions mentioning glomeruli of either kind (the reference: 91.3)."""
        return self._pct(sum(g or s for g, s in zip(self._present(GLOMERULI), self._present(SCLEROTIC), strict=True)))

    @property
    def glomeruli_only(self) -> float:
        """Percent with Glomeruli but no Sclerotic Glomeruli predicted (the reference: 3.86)."""
        return self._pct(
            sum(g and not s for g, s in zip(self._present(GLOMERULI), self._present(SCLEROTIC), strict=True))
        )

    @property
    def sclerotic_only(self) -> float:
        """Percent with Sclerotic Glomeruli but no Glomeruli predicted (the reference: 3.60)."""
        return self._pct(
            sum(s and not g for g, s in zip(self._present(GLOMERULI), self._present(SCLEROTIC), strict=True))
        )

    @property
    def glomeruli_only_of_mentions(self) -> float | None:
        """Of the samples mentioning glomeruli, percent with no Sclerotic Glomeruli (the reference: 4.2); None
        when no sample mentions glomeruli or the segmenter cannot tell the two kinds apart."""
        if self.segmenter_classes != "all" or self.mentions_glomeruli == 0:
            return None
        return 100.0 * self.glomeruli_only / self.mentions_glomeruli

    def confusion(self, name: str) -> dict[str, dict[str, int]]:
        """Requested level -> predicted level -> samples, for one class (all 16 cells; they sum to n)."""
        table = {req: dict.fromkeys(LEVEL_KEYS, 0) for req in LEVEL_KEYS}
        for r in self.rows:
            table[r.requested[name]][r.predicted[name]] += 1
        return table

    def exact_level_accuracy(self, name: str) -> float:
        """Fraction of samples whose predicted level of the class is the requested one (none included)."""
        return sum(r.requested[name] == r.predicted[name] for r in self.rows) / self.n

    def presence_accuracy(self, name: str) -> float:
        """Fraction of samples where the class is mentioned in both captions or in neither."""
        return sum((r.requested[name] == NONE) == (r.predicted[name] == NONE) for r in self.rows) / self.n

    @property
    def caption_exact_match(self) -> float | None:
        """Fraction of predicted captions equal to the generating caption (None unless every class is judged)."""
        if self.judged != ALL_CLASSES:
            return None
        return sum(all(r.requested[c] == r.predicted[c] for c in ALL_CLASSES) for r in self.rows) / self.n

    def captions(self) -> list[tuple[str, int]]:
        """Distinct generating captions with their sample counts, most frequent first."""
        return Counter(r.caption for r in self.rows).most_common()

    def summary(self) -> dict[str, Any]:
        """The headline numbers (for a results list): sample count, glomerulus mentions, Table 5.1, accuracies."""
        return {
            "n_samples": self.n,
            "segmenter_classes": self.segmenter_classes,
            "mentions_glomeruli_percent": self.mentions_glomeruli,
            "caption_exact_match": self.caption_exact_match,
            "exact_level_accuracy": {name: self.exact_level_accuracy(name) for name in self.judged},
            "table_5_1_percent": self.table_5_1(),
        }

    def to_dict(self, *, rows: bool = True) -> dict[str, Any]:
        """Every number of the run (and its per-sample rows), for the JSON report."""
        data: dict[str, Any] = {
            "kind": "caption_accuracy",
            "renal_ldm_version": __version__,
            "samples_dir": self.samples_dir,
            "segmenter": {"path": self.segmenter, "classes": self.segmenter_classes},
            "min_component_px": (
                dict(self.min_component_px) if isinstance(self.min_component_px, Mapping) else self.min_component_px
            ),
            "n_samples": self.n,
            "judged_classes": list(self.judged),
            "notes": list(self.notes),
            "captions": [{"caption": c, "n_samples": k} for c, k in self.captions()],
            "table_5_1_percent": self.table_5_1(),
            "table_5_1_counts": {name: self.predicted_level_counts(name) for name in self.table_columns},
            "mentions_glomeruli_percent": self.mentions_glomeruli,
            "glomeruli_only_percent": self.glomeruli_only if self.segmenter_classes == "all" else None,
            "sclerotic_only_percent": self.sclerotic_only if self.segmenter_classes == "all" else None,
            "glomeruli_only_of_mentions_percent": self.glomeruli_only_of_mentions,
            "caption_exact_match": self.caption_exact_match,
            "classes": {
                name: {
                    "confusion": self.confusion(name),
                    "exact_level_accuracy": self.exact_level_accuracy(name),
                    "presence_accuracy": self.presence_accuracy(name),
                    "predicted_levels": self.predicted_level_counts(name),
                }
                for name in self.judged
            },
            "reference": {
                "n_samples": REFERENCE_SAMPLES,
                "caption": "the generating caption (renal_ldm.captions.GENERATING_CAPTION)",
                "table_5_1_percent": REFERENCE_TABLE_5_1,
                "mentions_glomeruli_percent": REFERENCE_MENTIONS_GLOMERULI,
                "glomeruli_only_percent": REFERENCE_GLOMERULI_ONLY,
                "sclerotic_only_percent": REFERENCE_SCLEROTIC_ONLY,
                "glomeruli_only_of_mentions_percent": REFERENCE_GLOMERULI_ONLY_OF_MENTIONS,
            },
        }
        if rows:
            data["rows"] = [r.to_dict() for r in self.rows]
        return data


def load_judge(path: str | Path, *, device=None):
    """The segmenter at `path` (renal_ldm.segment), refusing a latent diffusion checkpoint with a clear error."""
    from renal_ldm.models.manifest import is_checkpoint

    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"segmenter folder not found: {path}; expected a folder written by "
            "`renal-ldm train-segmenter` (e.g. models/segmenter-phantom)"
        )
    if is_checkpoint(path):
        raise ValueError(
            f"{path} is a latent diffusion model checkpoint, not a segmenter; pass a folder written by "
            "`renal-ldm train-segmenter` (e.g. models/segmenter-phantom) as --segmenter, and the model as --model"
        )
    from renal_ldm.segment import load_segmenter

    return load_segmenter(path, device=device or "cpu")


def speck_sizes(min_px: SpeckSizes) -> dict[int, int]:
    """Class id -> smallest component that counts, for every captioned class, from one size or a size per class
    name; a ValueError names a bad size or class."""
    if isinstance(min_px, Mapping):
        names = {c.name: c.id for c in CAPTIONED_CLASSES}
        unknown = sorted(set(min_px) - set(names))
        if unknown:
            raise ValueError(f"speck sizes name unknown classes {unknown}; expected some of {', '.join(names)}")
        sizes = {names[name]: value for name, value in min_px.items()}
    else:
        sizes = {c.id: min_px for c in CAPTIONED_CLASSES}
    for class_id, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"minimum component size for {by_id(class_id).name} must be a whole number of pixels >= 0; "
                f"got {value!r}"
            )
    return {c.id: sizes.get(c.id, 0) for c in CAPTIONED_CLASSES}


def parse_speck_sizes(text: str) -> SpeckSizes:
    """`--min-component`'s value: a whole number of pixels, or PHANTOM_JUDGE_SPECKS for PHANTOM_SPECK_SIZES."""
    if str(text).strip() == PHANTOM_JUDGE_SPECKS:
        return dict(PHANTOM_SPECK_SIZES)
    try:
        value = int(str(text).strip())
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(
            f"--min-component must be a whole number of pixels >= 0 or {PHANTOM_JUDGE_SPECKS!r} (the shipped "
            f"phantom judge's sizes per class); got {text!r}"
        )
    return value


def describe_speck_sizes(min_px: SpeckSizes) -> str:
    """'32 px' or 'Arteries 192, ... px' for notes and reports."""
    if isinstance(min_px, Mapping):
        return ", ".join(f"{name} {value}" for name, value in min_px.items()) + " px"
    return f"{min_px} px"


def remove_specks(mask: np.ndarray, min_px: SpeckSizes) -> tuple[np.ndarray, int]:
    """The label mask with every connected component (8-connected) of a captioned class smaller than `min_px`
    pixels (one size, or a size per class name) set to 0 (white background, never captioned), and how many
    components that removed.

    Why: the caption rule mentions a class for any pixel of it, and a segmenter's stray pixels are not
    structures. Measured on 400 unseen phantoms of 128 px, as they are / through the demo autoencoder, judged by
    models/segmenter-phantom v3 (scripts/calibrate_speck_threshold.py): mean per-class exact-level accuracy
    against their own captions 0.805 / 0.719 counting every pixel, 0.935 / 0.838 with specks under 32 px
    dropped (the single size used until 2026-12-07), 0.969 / 0.908 with PHANTOM_SPECK_SIZES (per class: a small
    atrophic tubule is a structure, a glomerulus or an artery of under 128 px is not); glomeruli found in the
    212 of them whose caption has none: 28% every pixel, 3.3% / 12.3% at 32 px, 0.9% / 3.3% per class.
    Fractions of the other classes are unchanged (they are shares of all pixels, background included).
    """
    from scipy import ndimage

    sizes = speck_sizes(min_px)
    if all(size <= 1 for size in sizes.values()):
        return mask, 0
    out = np.array(mask, copy=True)
    removed = 0
    eight = np.ones((3, 3), bool)
    for class_id, size in sizes.items():
        if size <= 1:
            continue
        components, n = ndimage.label(out == class_id, structure=eight)
        if n == 0:
            continue
        counts = np.bincount(components.ravel(), minlength=n + 1)
        small = np.flatnonzero(counts < size)
        small = small[small > 0]
        if small.size:
            out[np.isin(components, small)] = 0
            removed += int(small.size)
    return out, removed


def evaluate_captions(
    samples_dir: str | Path,
    segmenter,
    *,
    min_samples: int = MIN_SAMPLES,
    min_component_px: SpeckSizes = 0,
    masks_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> CaptionAccuracy:
    """Judge every sample of a `renal-ldm sample` folder with a segmenter (a Segmenter or its folder).

    min_component_px drops predicted specks smaller than that (one size, or a size per class name) before
    captioning (remove_specks; 0, the default, is the reference's rule: any pixel counts). masks_dir, when given,
    receives each predicted label mask (after that) as <sample stem>.png (values 0..7), which `renal-ldm caption
    --mask` reads.
    progress(done, total) is called after every sample; cancel is checked before each one (EvaluationCancelled).
    """
    dropping = any(size > 1 for size in speck_sizes(min_component_px).values())  # a bad size fails before work
    samples = read_sample_folder(samples_dir, min_samples=min_samples)  # before loading anything heavy
    segmenter_path = None
    if isinstance(segmenter, (str, Path)):
        segmenter_path = str(segmenter)
        segmenter = load_judge(segmenter)
    classes = segmenter.config.classes
    judged = judged_classes(classes)
    from renal_ldm.data.patches import read_rgb

    if masks_dir is not None:
        masks_dir = Path(masks_dir)
        masks_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    specks = 0
    for done, sample in enumerate(samples, start=1):
        if cancel is not None and cancel.is_set():
            raise EvaluationCancelled(f"caption accuracy cancelled after {done - 1} of {len(samples)} samples")
        image = read_rgb(sample.image)
        mask = np.asarray(segmenter.predict(image))
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"the segmenter returned a {mask.shape[1]}x{mask.shape[0]} mask for the {_size_text(sample.size)} "
                f"image {sample.image.name}; expected the image's size"
            )
        mask, removed = remove_specks(mask, min_component_px)
        specks += removed
        if masks_dir is not None:
            Image.fromarray(mask.astype(np.uint8), mode="L").save(masks_dir / f"{sample.image.stem}.png")
        rows.append(judge_mask(sample.image.name, sample.caption, sample.requested, mask))
        if progress is not None:
            progress(done, len(samples))
    notes = []
    if dropping:
        notes.append(
            f"predicted components under {describe_speck_sizes(min_component_px)} were dropped before captioning "
            f"({specks} in {len(samples)} samples); the reference counted every pixel"
        )
    if judged != ALL_CLASSES:
        notes.append(
            f"the segmenter tells {GLOMERULI} from the rest only (classes={classes!r}): only {GLOMERULI} is "
            f"judged; {SCLEROTIC}, the combined count and the other classes are not reported"
        )
    return CaptionAccuracy(
        rows=tuple(rows),
        segmenter_classes=classes,
        samples_dir=str(samples_dir),
        segmenter=segmenter_path,
        notes=tuple(notes),
        min_component_px=min_component_px,
    )


def sample_for_evaluation(
    model_dir: str | Path,
    request,
    out_dir: str | Path,
    *,
    device=None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> list[Path]:
    """Draw `request` (a renal_ldm.sample.SampleRequest) from a model into out_dir, which must hold no samples
    yet (so the judged folder is exactly this request); returns the PNG paths."""
    from renal_ldm.models.checkpoint import load_model
    from renal_ldm.models.manifest import locate_checkpoint
    from renal_ldm.sample import Sampler, default_device, write_samples

    out_dir = Path(out_dir)
    check_no_samples(out_dir)
    device = device or default_device()
    model_dir, _ = locate_checkpoint(model_dir)  # a training run directory means its model
    model = load_model(model_dir, device=device, require_unet=True)
    request = request.validated(model)
    sampler = Sampler(model, device=device)
    results = sampler.sample(request, progress=progress, cancel=cancel)
    return write_samples(results, out_dir)


def check_no_samples(out_dir: str | Path) -> None:
    """A folder to sample into for an evaluation must not hold samples already: they would be judged too."""
    out_dir = Path(out_dir)
    if out_dir.is_dir():
        found = [p for p in out_dir.glob("*.png") if not p.name.startswith(".")]
        if found:
            raise FileExistsError(
                f"{out_dir} already holds {len(found)} samples; choose a new --out, or judge those with "
                f"--samples {out_dir}"
            )


# ------------------------------------------------------------------------------------------------ report


def check_report_dir(out_dir: str | Path, names: Sequence[str], *, overwrite: bool = False) -> Path:
    """The report folder, refusing to replace an earlier report's files unless overwrite."""
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"report path is not a folder: {out_dir}")
    present = [name for name in names if (out_dir / name).exists()]
    if present and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds a report ({', '.join(present)}); choose another --out or pass --overwrite"
        )
    return out_dir


def write_caption_report(result: CaptionAccuracy, out_dir: str | Path, *, overwrite: bool = False) -> list[Path]:
    """caption_accuracy.json (all numbers and rows), caption_accuracy.md and the two bar charts; returns them."""
    out_dir = check_report_dir(out_dir, REPORT_FILES, overwrite=overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / name for name in REPORT_FILES]
    write_json(paths[0], result.to_dict())
    write_file_atomically(paths[1], caption_report_markdown(result))
    save_png(table_5_1_chart(result), paths[2])
    save_png(level_accuracy_chart(result), paths[3])
    return paths


def _pct_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def caption_report_markdown(result: CaptionAccuracy) -> str:
    """The report as markdown: Table 5.1 beside the reference, glomerulus mentions, per-class accuracy and
    confusion tables."""
    lines = ["# Caption accuracy", ""]
    lines.append(f"- samples: {result.n}" + (f" from `{result.samples_dir}`" if result.samples_dir else ""))
    lines.append(
        f"- segmenter: `{result.segmenter or 'in memory'}` (classes: {result.segmenter_classes}); judged: "
        + ", ".join(result.judged)
    )
    captions = result.captions()
    if len(captions) == 1:
        lines.append("- generating caption: " + " / ".join(captions[0][0].split("\n")))
    else:
        lines.append(f"- {len(captions)} generating captions, the most frequent:")
        lines += [f"  - {k} sample{'s' * (k != 1)}: " + " / ".join(c.split("\n")) for c, k in captions[:5]]
    lines += [f"- note: {note}" for note in result.notes]
    lines += [
        "",
        "## Table 5.1: predicted amount of glomeruli (% of samples)",
        "",
        f"The reference column is the study's Table 5.1 ({REFERENCE_SAMPLES} samples of its own model for the "
        "generating caption); compare only runs with that caption.",
        "",
    ]
    table = result.table_5_1()
    header = ["Amount"]
    for name in result.table_columns:
        header += [name, "reference"]
    rows = []
    for key in LEVEL_KEYS:
        row = [LEVEL_LABELS[key]]
        for name in result.table_columns:
            row += [f"{table[name][key]:.2f}", f"{REFERENCE_TABLE_5_1[name][key]:.2f}"]
        rows.append(row)
    total = ["Total"]
    for name in result.table_columns:
        total += [f"{sum(table[name].values()):.2f}", f"{sum(REFERENCE_TABLE_5_1[name].values()):.2f}"]
    rows.append(total)
    lines += markdown_table(header, rows, align="l" + "r" * (len(header) - 1)).splitlines()
    lines += [
        "",
        "| share of samples whose predicted caption mentions | this run (%) | reference (%) |",
        "|:--|--:|--:|",
    ]
    lines.append(
        f"| glomeruli of either kind | {_pct_text(result.mentions_glomeruli)} | {REFERENCE_MENTIONS_GLOMERULI} |"
    )
    if result.segmenter_classes == "all":
        lines.append(
            f"| {GLOMERULI} but no {SCLEROTIC} | {_pct_text(result.glomeruli_only)} | {REFERENCE_GLOMERULI_ONLY} |"
        )
        lines.append(
            f"| {SCLEROTIC} but no {GLOMERULI} | {_pct_text(result.sclerotic_only)} | {REFERENCE_SCLEROTIC_ONLY} |"
        )
        lines.append(
            f"| (of those mentioning glomeruli) no {SCLEROTIC} | {_pct_text(result.glomeruli_only_of_mentions)} | "
            f"{REFERENCE_GLOMERULI_ONLY_OF_MENTIONS} |"
        )
    lines += ["", "## Requested versus predicted level per class", ""]
    rows = []
    for name in result.judged:
        requested = Counter(r.requested[name] for r in result.rows).most_common(1)[0][0]
        rows.append(
            [
                name,
                LEVEL_LABELS[requested],
                f"{100 * result.exact_level_accuracy(name):.1f}",
                f"{100 * result.presence_accuracy(name):.1f}",
            ]
        )
    lines += markdown_table(
        ["class", "most requested level", "exact-level accuracy (%)", "presence accuracy (%)"], rows, align="llrr"
    ).splitlines()
    match = result.caption_exact_match
    if match is not None:
        lines += ["", f"Predicted caption identical to the generating caption: {100 * match:.1f}% of samples."]
    for name in result.judged:
        confusion = result.confusion(name)
        lines += ["", f"### {name}: requested (rows) x predicted (columns), samples", ""]
        rows = [
            [LEVEL_LABELS[req], *(str(confusion[req][p]) for p in LEVEL_KEYS), str(sum(confusion[req].values()))]
            for req in LEVEL_KEYS
        ]
        col_totals = [sum(confusion[req][p] for req in LEVEL_KEYS) for p in LEVEL_KEYS]
        rows.append(["Total", *(str(t) for t in col_totals), str(sum(col_totals))])
        lines += markdown_table(
            ["requested \\ predicted", *(LEVEL_LABELS[k] for k in LEVEL_KEYS), "Total"], rows, align="lrrrrr"
        ).splitlines()
    return "\n".join(lines) + "\n"


def table_5_1_chart(result: CaptionAccuracy) -> Image.Image:
    """One bar panel per Table 5.1 column: this run's percentages beside the reference's."""
    table = result.table_5_1()
    panels = [
        bar_chart(
            name,
            [LEVEL_LABELS[k] for k in LEVEL_KEYS],
            [
                (f"this run ({result.n})", _RUN_COLOUR, [table[name][k] for k in LEVEL_KEYS]),
                (
                    f"reference ({REFERENCE_SAMPLES})",
                    _REFERENCE_COLOUR,
                    [REFERENCE_TABLE_5_1[name][k] for k in LEVEL_KEYS],
                ),
            ],
            y_label="% of samples",
        )
        for name in result.table_columns
    ]
    return side_by_side(panels)


def level_accuracy_chart(result: CaptionAccuracy) -> Image.Image:
    """Exact-level and presence accuracy per judged class, in percent."""
    return bar_chart(
        f"Requested vs predicted level ({result.n} samples)",
        list(result.judged),
        [
            ("exact level", _RUN_COLOUR, [100 * result.exact_level_accuracy(c) for c in result.judged]),
            ("presence", _PRESENCE_COLOUR, [100 * result.presence_accuracy(c) for c in result.judged]),
        ],
        y_label="% of samples",
    )


# ------------------------------------------------------------------------------------------------ report helpers
# Shared by every evaluation report (caption accuracy, realism tests, the training-mix experiment).


def write_json(path: str | Path, data: Any) -> None:
    """Pretty JSON, written atomically (a reader never sees half a report)."""
    write_file_atomically(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub markdown table; align holds one of l/r/c per column (default: all left)."""
    width = len(header)
    for row in rows:
        if len(row) != width:
            raise ValueError(f"markdown row {list(row)!r} has {len(row)} cells; the header has {width}")
    align = align or "l" * width
    if len(align) != width or set(align) - set("lrc"):
        raise ValueError(f"align {align!r} must give one of l/r/c for each of the {width} columns")
    marks = {"l": ":--", "r": "--:", "c": ":-:"}

    def cells(values) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in values) + " |"

    return "\n".join([cells(header), "|" + "|".join(marks[a] for a in align) + "|", *(cells(r) for r in rows)])


def save_png(image: Image.Image, path: str | Path) -> None:
    """Save a chart through a temporary file beside it (atomic replace)."""
    import os

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_RUN_COLOUR = (60, 110, 180)
_REFERENCE_COLOUR = (190, 190, 190)
_PRESENCE_COLOUR = (240, 160, 60)
_INK = (30, 30, 30)
_GRID = (225, 225, 225)

Series = tuple[str, tuple[int, int, int], Sequence[float | None]]
"""One bar per group: a legend label, a colour, and a value per group (None leaves the bar out)."""


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def bar_chart(
    title: str,
    groups: Sequence[str],
    series: Sequence[Series],
    *,
    y_max: float = 100.0,
    y_label: str = "%",
    height: int = 340,
    value_format: str = "{:.1f}",
) -> Image.Image:
    """A grouped bar chart as an RGB image: one group of bars per label, one bar per series, values above bars."""
    if not groups or not series:
        raise ValueError("a bar chart needs at least one group and one series")
    for label, _, values in series:
        if len(values) != len(groups):
            raise ValueError(f"series {label!r} has {len(values)} values for {len(groups)} groups")
    small, bold, tiny = _font(11), _font(15), _font(9)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    bar = 30
    group_width = max(len(series) * bar + 16, *(int(probe.textlength(g, font=small)) + 12 for g in groups))
    left, right, top, bottom = 58, 16, 76, 40
    plot_w = group_width * len(groups)
    legend_w = sum(int(probe.textlength(label, font=small)) + 34 for label, _, _ in series)
    width = left + max(plot_w, legend_w, int(probe.textlength(title, font=bold))) + right
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 8), title, fill=_INK, font=bold)
    x = left
    for label, colour, _ in series:  # legend under the title
        draw.rectangle([x, 34, x + 12, 46], fill=colour)
        draw.text((x + 16, 33), label, fill=_INK, font=small)
        x += int(probe.textlength(label, font=small)) + 34
    y0, y1 = height - bottom, top + 6
    scale = (y0 - y1) / y_max if y_max > 0 else 0.0
    for k in range(5):  # grid and y ticks at 0, 25, 50, 75, 100 % of y_max
        value = y_max * k / 4
        y = y0 - value * scale
        draw.line([left, y, left + plot_w, y], fill=_GRID)
        text = f"{value:g}"
        draw.text((left - 6 - probe.textlength(text, font=small), y - 7), text, fill=_INK, font=small)
    draw.text((4, 56), y_label, fill=_INK, font=small)
    draw.line([left, y0, left + plot_w, y0], fill=_INK)
    draw.line([left, y1, left, y0], fill=_INK)
    for g, group in enumerate(groups):
        gx = left + g * group_width
        start = gx + (group_width - len(series) * bar) / 2
        for s, (_, colour, values) in enumerate(series):
            value = values[g]
            if value is None or not np.isfinite(value):
                continue
            bx = start + s * bar
            top_y = y0 - min(max(float(value), 0.0), y_max) * scale
            draw.rectangle([bx + 2, top_y, bx + bar - 2, y0], fill=colour)
            text = value_format.format(value)
            tw = probe.textlength(text, font=tiny)
            draw.text((bx + (bar - tw) / 2, top_y - 12), text, fill=_INK, font=tiny)
        tw = probe.textlength(group, font=small)
        draw.text((gx + (group_width - tw) / 2, y0 + 6), group, fill=_INK, font=small)
    return image


def side_by_side(images: Sequence[Image.Image], gap: int = 12) -> Image.Image:
    """Images in one row on white, top-aligned."""
    if not images:
        raise ValueError("nothing to put side by side")
    width = sum(i.width for i in images) + gap * (len(images) - 1)
    height = max(i.height for i in images)
    sheet = Image.new("RGB", (width, height), "white")
    x = 0
    for image in images:
        sheet.paste(image, (x, 0))
        x += image.width + gap
    return sheet
