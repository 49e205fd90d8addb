"""Captions of the reference study: mask -> class fractions -> levels -> caption, and caption -> levels back.

The text conditions the diffusion model, so it must be byte-exact to what the model was trained on:
header sentence first, then one sentence per present class (ids 1..7, in id order), joined by "\\n".
Background (label 0) counts in the pixel total but is never captioned.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from renal_ldm.classes import BACKGROUND_ID, CAPTIONED_CLASSES, MAX_LABEL, NUM_CLASSES, by_id, by_name

HEADER = "This image showcases various types of tissue structures found in renal tissue."

LOW, MEDIUM, HIGH = "low", "medium", "high"
LEVELS: tuple[str, ...] = (LOW, MEDIUM, HIGH)
NONE = "none"
"""Composer choice for an absent class; never appears in a caption or a levels dict."""

MEDIUM_THRESHOLD = 0.2
HIGH_THRESHOLD = 0.4

SENTENCE_TEMPLATES: dict[str, str] = {
    LOW: "The image shows a low amount of {name}.",
    MEDIUM: "The prevalence of {name} is medium.",
    HIGH: "There is a lot of {name} visible in the image.",
}

GENERATING_CAPTION = "\n".join(
    [HEADER, SENTENCE_TEMPLATES[MEDIUM].format(name="Tubuli"), SENTENCE_TEMPLATES[HIGH].format(name="Glomeruli")]
)
"""The caption the reference study sampled its 400 evaluation images (and its synthetic slide) with."""


def mask_fractions(mask: np.ndarray) -> dict[int, float]:
    """Fraction of all mask pixels per label id 0..7 (background included in the total)."""
    labels = np.asarray(mask)
    if labels.ndim != 2:
        raise ValueError(f"a label mask must be 2-D (H, W); got shape {labels.shape}")
    if labels.size == 0:
        raise ValueError("the mask is empty (0 pixels)")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"a label mask must hold integers 0..{MAX_LABEL}; got dtype {labels.dtype}")
    flat = labels.ravel()
    bad = np.unique(flat[(flat < 0) | (flat > MAX_LABEL)])
    if bad.size:
        raise ValueError(f"mask holds label values {bad[:10].tolist()} outside the valid range 0..{MAX_LABEL}")
    counts = np.bincount(flat.astype(np.int64), minlength=NUM_CLASSES)
    total = flat.size
    return {label: counts[label] / total for label in range(NUM_CLASSES)}


def level_for_fraction(fraction: float) -> str:
    """low below 0.2, medium from 0.2 up to (not incl.) 0.4, high from 0.4; exact at the thresholds."""
    if fraction >= HIGH_THRESHOLD:
        return HIGH
    if fraction >= MEDIUM_THRESHOLD:
        return MEDIUM
    return LOW


def fractions_to_levels(fractions: Mapping[int | str, float]) -> dict[str, str]:
    """Class name -> level for every captioned class with a fraction above 0, in label-id order."""
    by_label: dict[int, float] = {}
    for key, value in fractions.items():
        cls = _resolve_class(key)
        by_label[cls.id] = float(value)
    return {c.name: level_for_fraction(by_label[c.id]) for c in CAPTIONED_CLASSES if by_label.get(c.id, 0.0) > 0.0}


def levels_to_caption(levels: Mapping[int | str, str]) -> str:
    """The caption for a class -> level mapping (names or ids as keys; "none" omits a class)."""
    by_label: dict[int, str] = {}
    for key, level in levels.items():
        cls = _resolve_class(key)
        if cls.id == BACKGROUND_ID:
            raise ValueError(f"{cls.name!r} (label 0) is never captioned; remove it from the levels")
        level_key = str(level).strip().lower()
        if level_key == NONE:
            continue
        if level_key not in SENTENCE_TEMPLATES:
            raise ValueError(f"unknown level {level!r} for {cls.name!r}; expected one of {', '.join((NONE,) + LEVELS)}")
        by_label[cls.id] = level_key
    lines = [HEADER]
    lines += [SENTENCE_TEMPLATES[by_label[c.id]].format(name=c.name) for c in CAPTIONED_CLASSES if c.id in by_label]
    return "\n".join(lines)


def mask_to_caption(mask: np.ndarray) -> str:
    """Caption of a label mask, exactly as the training data captions were written."""
    return levels_to_caption(fractions_to_levels(mask_fractions(mask)))


_SENTENCE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (
        re.compile("^" + re.escape(template.lower()).replace(re.escape("{name}"), r"(?P<name>.+?)") + "$"),
        level,
    )
    for level, template in SENTENCE_TEMPLATES.items()
)


def caption_to_levels(caption: str) -> dict[str, str]:
    """Class name -> level parsed from a caption this module writes (any whitespace, any case).

    The header sentence is optional. A sentence that matches no template, an unknown class name, or a class
    mentioned twice is a ValueError naming it.
    """
    text = " ".join(str(caption).split())
    sentences = [s.strip() for s in re.split(r"(?<=\.)\s*", text) if s.strip()]
    parsed: dict[int, str] = {}
    for sentence in sentences:
        lowered = " ".join(sentence.lower().split())
        if lowered == HEADER.lower():
            continue
        for pattern, level in _SENTENCE_PATTERNS:
            match = pattern.match(lowered)
            if match:
                cls = by_name(match.group("name"))
                if cls.id == BACKGROUND_ID:
                    raise ValueError(f"{cls.name!r} (label 0) is never captioned: {sentence!r}")
                if cls.id in parsed:
                    raise ValueError(f"class {cls.name!r} is mentioned twice in the caption")
                parsed[cls.id] = level
                break
        else:
            examples = " | ".join(t.format(name="<class>") for t in SENTENCE_TEMPLATES.values())
            raise ValueError(f"cannot parse caption sentence {sentence!r}; expected the header or one of: {examples}")
    return {by_id(label).name: parsed[label] for label in sorted(parsed)}


def parse_levels_spec(spec: str) -> dict[str, str]:
    """Levels from a command-line spec like "Glomeruli=high,Tubuli=medium" (names case-insensitive)."""
    levels: dict[str, str] = {}
    for part in (p.strip() for p in str(spec).split(",")):
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"bad levels entry {part!r}; expected NAME=LEVEL, e.g. Glomeruli=high")
        name, level = (s.strip() for s in part.split("=", 1))
        cls = by_name(name)
        level_key = level.lower()
        if level_key not in LEVELS and level_key != NONE:
            raise ValueError(f"unknown level {level!r} for {cls.name!r}; expected one of {', '.join((NONE,) + LEVELS)}")
        levels[cls.name] = level_key
    return levels


def _resolve_class(key: int | str):
    if isinstance(key, (int, np.integer)):
        return by_id(int(key))
    return by_name(key)
