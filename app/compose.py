"""Caption composer logic for the Compose page: level choices <-> caption, and checks on free text."""

from __future__ import annotations

from renal_ldm.captions import LEVELS, NONE, caption_to_levels, levels_to_caption

LEVEL_CHOICES: list[str] = [NONE, *LEVELS]


def caption_from_choices(choices: dict[str, str]) -> str:
    """The exact caption for the composer's per-class choices ("none" leaves a class out)."""
    return levels_to_caption(choices)


def choices_from_caption(caption: str) -> dict[str, str]:
    """Composer choices that reproduce a caption; empty when it is not a product caption."""
    try:
        return caption_to_levels(caption)
    except ValueError:
        return {}


def caption_warning(caption: str) -> str | None:
    """A note when free text is not in the trained caption form (allowed, but the model never saw it)."""
    if not caption.strip():
        return "An empty caption samples unconditionally (no guidance towards any tissue)."
    try:
        caption_to_levels(caption)
    except ValueError as exc:
        return f"This text is not in the trained caption form, so guidance may be weak: {exc}"
    return None
