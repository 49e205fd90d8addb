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


# Widget keys of the Compose page, so presets (and other pages) can set what it shows.
MODE_KEY = "compose_mode"
FREE_TEXT_KEY = "free_text"
LEVELS_MODE = "Levels per tissue class"
FREE_TEXT_MODE = "Free text"
MODES = [LEVELS_MODE, FREE_TEXT_MODE]


def level_key(class_id: int) -> str:
    return f"level_{class_id}"


def widget_state_for_caption(caption: str) -> dict[str, object]:
    """Compose-page widget values that show a caption: levels when it is a product caption, else free text."""
    from renal_ldm.classes import CAPTIONED_CLASSES

    try:
        levels = caption_to_levels(caption)
    except ValueError:
        return {MODE_KEY: FREE_TEXT_MODE, FREE_TEXT_KEY: caption}
    values: dict[str, object] = {level_key(c.id): levels.get(c.name, NONE) for c in CAPTIONED_CLASSES}
    return {MODE_KEY: LEVELS_MODE, FREE_TEXT_KEY: caption, **values}
