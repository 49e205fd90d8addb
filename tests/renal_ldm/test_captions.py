"""Captions must be byte-exact to the reference study: the model was trained on exactly these strings."""

from __future__ import annotations

import numpy as np
import pytest

from renal_ldm import captions
from renal_ldm.captions import (
    GENERATING_CAPTION,
    HEADER,
    caption_to_levels,
    fractions_to_levels,
    level_for_fraction,
    levels_to_caption,
    mask_fractions,
    mask_to_caption,
    parse_levels_spec,
)
from renal_ldm.classes import CAPTIONED_CLASSES, TISSUE_CLASSES, by_name

H = "This image showcases various types of tissue structures found in renal tissue."


def mask_with_counts(counts: dict[int, int], total: int = 100) -> np.ndarray:
    """A 1 x total mask with exactly `counts[label]` pixels per label, the rest background."""
    flat = np.zeros(total, dtype=np.uint8)
    start = 0
    for label, n in counts.items():
        flat[start : start + n] = label
        start += n
    assert start <= total
    return flat.reshape(10, total // 10)


def test_class_table_matches_architecture():
    assert [(c.id, c.name) for c in TISSUE_CLASSES] == [
        (0, "White background, should be ignored"),
        (1, "Arteries"),
        (2, "Atrophic Tubuli"),
        (3, "Tubuli"),
        (4, "Glomeruli"),
        (5, "Sclerotic Glomeruli"),
        (6, "other kidney tissue"),
        (7, "Dilated Tubuli"),
    ]
    assert len({c.color for c in TISSUE_CLASSES}) == 8


def test_generating_caption_of_the_study_is_byte_exact():
    assert GENERATING_CAPTION == (
        f"{H}\nThe prevalence of Tubuli is medium.\nThere is a lot of Glomeruli visible in the image."
    )
    assert levels_to_caption({"Glomeruli": "high", "Tubuli": "medium"}) == GENERATING_CAPTION


def test_thesis_second_example_caption():
    mask = mask_with_counts({2: 10, 3: 45, 5: 5, 6: 30}, total=100)
    assert mask_to_caption(mask) == "\n".join(
        [
            H,
            "The image shows a low amount of Atrophic Tubuli.",
            "There is a lot of Tubuli visible in the image.",
            "The image shows a low amount of Sclerotic Glomeruli.",
            "The prevalence of other kidney tissue is medium.",
        ]
    )


@pytest.mark.parametrize(
    ("count", "level"),
    [(1, "low"), (19, "low"), (20, "medium"), (39, "medium"), (40, "high"), (100, "high")],
)
def test_levels_at_and_around_thresholds(count, level):
    mask = mask_with_counts({4: count}, total=100)
    assert fractions_to_levels(mask_fractions(mask)) == {"Glomeruli": level}


def test_thresholds_are_exact_on_real_patch_sizes():
    # 256 x 256 = 65536 pixels: 0.2 and 0.4 are not integer counts, so check the nearest counts on both sides.
    total = 256 * 256
    assert level_for_fraction(13107 / total) == "low"  # 0.19999...
    assert level_for_fraction(13108 / total) == "medium"
    assert level_for_fraction(26214 / total) == "medium"  # 0.39999...
    assert level_for_fraction(26215 / total) == "high"
    assert level_for_fraction(0.2) == "medium" and level_for_fraction(0.4) == "high"


def test_background_only_mask_is_header_alone():
    assert mask_to_caption(np.zeros((16, 16), np.uint8)) == H
    assert H == captions.HEADER == HEADER


def test_background_counts_in_total_but_is_never_captioned():
    mask = mask_with_counts({0: 70, 4: 30}, total=100)
    assert mask_to_caption(mask) == f"{H}\nThe prevalence of Glomeruli is medium."


def test_all_seven_classes_in_label_order():
    mask = mask_with_counts({7: 5, 1: 5, 6: 40, 3: 20, 2: 5, 5: 5, 4: 20}, total=100)
    assert mask_to_caption(mask) == "\n".join(
        [
            H,
            "The image shows a low amount of Arteries.",
            "The image shows a low amount of Atrophic Tubuli.",
            "The prevalence of Tubuli is medium.",
            "The prevalence of Glomeruli is medium.",
            "The image shows a low amount of Sclerotic Glomeruli.",
            "There is a lot of other kidney tissue visible in the image.",
            "The image shows a low amount of Dilated Tubuli.",
        ]
    )


def test_every_written_caption_parses_back():
    rng = np.random.default_rng(0)
    for _ in range(200):
        levels = {c.name: rng.choice(["none", "low", "medium", "high"]) for c in CAPTIONED_CLASSES}
        caption = levels_to_caption(levels)
        expected = {k: v for k, v in levels.items() if v != "none"}
        assert caption_to_levels(caption) == expected
        assert list(caption_to_levels(caption)) == [c.name for c in CAPTIONED_CLASSES if c.name in expected]


def test_parsing_tolerates_whitespace_and_case():
    messy = (
        "  this IMAGE showcases various types of tissue structures found in renal tissue.   \n\n"
        "THE prevalence of   tubuli is MEDIUM.  there is a lot of glomeruli visible in the image.\r\n"
    )
    assert caption_to_levels(messy) == {"Tubuli": "medium", "Glomeruli": "high"}
    assert caption_to_levels("") == {}


def test_unknown_class_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        caption_to_levels(f"{H}\nThere is a lot of Podocytes visible in the image.")
    # The parser matches lower-cased sentences, so the bad name is quoted lower-cased.
    assert str(err.value) == (
        "unknown tissue class name 'podocytes'; valid names are: 'Arteries', 'Atrophic Tubuli', 'Tubuli', "
        "'Glomeruli', 'Sclerotic Glomeruli', 'other kidney tissue', 'Dilated Tubuli'"
    )
    assert [c.name for c in CAPTIONED_CLASSES] == [
        "Arteries",
        "Atrophic Tubuli",
        "Tubuli",
        "Glomeruli",
        "Sclerotic Glomeruli",
        "other kidney tissue",
        "Dilated Tubuli",
    ]  # every captioned class is offered, in the table's order


def test_unparseable_sentence_and_duplicates_are_errors():
    with pytest.raises(ValueError, match="cannot parse"):
        caption_to_levels("Some glomeruli, I think.")
    with pytest.raises(ValueError, match="twice"):
        caption_to_levels("There is a lot of Tubuli visible in the image. The prevalence of Tubuli is medium.")


def test_levels_to_caption_validates():
    with pytest.raises(ValueError, match="unknown level 'lots'"):
        levels_to_caption({"Glomeruli": "lots"})
    with pytest.raises(ValueError, match="never captioned"):
        levels_to_caption({0: "low"})
    with pytest.raises(ValueError, match="valid names"):
        levels_to_caption({"Glomerulus": "low"})
    assert levels_to_caption({by_name("glomeruli").id: "high", "Tubuli": "none"}) == (
        f"{H}\nThere is a lot of Glomeruli visible in the image."
    )


def test_mask_values_outside_range_are_named():
    mask = np.array([[0, 3], [9, 255]], dtype=np.uint8)
    with pytest.raises(ValueError, match=r"\[9, 255\]"):
        mask_fractions(mask)
    with pytest.raises(ValueError, match="2-D"):
        mask_fractions(np.zeros((2, 2, 3), np.uint8))


def test_levels_spec_for_the_command_line():
    assert parse_levels_spec("glomeruli=HIGH, Tubuli=medium") == {"Glomeruli": "high", "Tubuli": "medium"}
    with pytest.raises(ValueError, match="NAME=LEVEL"):
        parse_levels_spec("Glomeruli")
    with pytest.raises(ValueError, match="unknown level"):
        parse_levels_spec("Glomeruli=huge")
