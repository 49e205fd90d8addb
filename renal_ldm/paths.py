"""Where the product keeps its files: one data directory (RENAL_LDM_HOME, default ./var) and the shipped model.

Paths the database stores are relative to the data directory; `resolve_in_home` is the one way back to a file,
so a tampered or damaged row ("../../etc/passwd", "/etc/passwd", a symbolic link pointing out) is refused
before anything is read or deleted.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "RENAL_LDM_HOME"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL_ENV = "RENAL_LDM_DEMO_MODEL"
SHIPPED_DEMO_MODEL = REPO_ROOT / "models" / "demo"
SHIPPED_PHANTOM_SEGMENTER = REPO_ROOT / "models" / "segmenter-phantom"
"""The eight-class segmenter trained on phantom tissue: the default judge of samples and feature extractor."""
SHIPPED_GLOMERULI_SEGMENTER = REPO_ROOT / "models" / "segmenter-glomeruli-pas"
"""The glomerulus segmenter trained on real PAS tissue (../shared/data/kidney-pas)."""


def demo_model_dir() -> Path:
    """The default model of the app and the CLI: the shipped checkpoint, or another folder named by
    RENAL_LDM_DEMO_MODEL. Read when asked (not at import), so a test or a deployment sets the variable."""
    return Path(os.environ.get(DEMO_MODEL_ENV) or SHIPPED_DEMO_MODEL).expanduser()


def shipped_segmenters() -> list[Path]:
    """The shipped segmenter folders that are installed (a clone without models/ has none)."""
    return [p for p in (SHIPPED_PHANTOM_SEGMENTER, SHIPPED_GLOMERULI_SEGMENTER) if p.is_dir()]


def data_home() -> Path:
    """The data directory (created on first use): database, samples, slides, survey images, registered files."""
    home = Path(os.environ.get(HOME_ENV) or "var").expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def data_subdir(name: str) -> Path:
    """A product-named folder under the data directory (never a name taken from user input)."""
    path = data_home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_in_home(relative: str | os.PathLike, home: str | os.PathLike | None = None) -> Path:
    """The file a stored (data-directory relative) path names, symbolic links followed; ValueError naming the
    path when it is empty, absolute, or leads outside the data directory (`home`, default data_home())."""
    base = Path(home).expanduser().resolve() if home is not None else data_home()
    text = os.fspath(relative)
    expected = f"expected a path relative to the data directory {str(base)!r}, such as 'samples/run/0001.png'"
    if not str(text).strip():
        raise ValueError(f"stored file path {text!r} is empty; {expected}")
    if Path(text).is_absolute() or str(text).startswith(("/", "\\")):
        raise ValueError(f"stored file path {text!r} is absolute: refused, nothing read or deleted; {expected}")
    path = (base / text).resolve()
    if path == base:
        raise ValueError(f"stored file path {text!r} names the data directory itself: refused; {expected}")
    if not path.is_relative_to(base):
        raise ValueError(
            f"stored file path {text!r} leads outside the data directory (to {str(path)!r}): refused, "
            f"nothing read or deleted; {expected}"
        )
    return path
