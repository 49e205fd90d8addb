"""Which models the Generate page offers: the shipped demo checkpoint (default) and registered directories.

No Streamlit here, and no torch: a checkpoint is recognised and described from its manifest alone
(renal_ldm.models.manifest) and its ModelConfig (renal_ldm.models.configs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db import repository as repo
from renal_ldm.models.configs import ModelConfig
from renal_ldm.models.manifest import MANIFEST, is_checkpoint, locate_checkpoint, read_manifest, recommended_guidance
from renal_ldm.paths import demo_model_dir

DEMO_NAME = "demo"

NO_MODEL_HELP = f"""\
There is no model to sample from yet. Either:

- **use the shipped demo checkpoint**: it lives in `models/demo/` of a full clone of the repository
  (`git clone` the project with its `models/` folder, then restart the app), or
- **train one** on your own patches (or on phantom tissue from `renal-ldm phantom --out data --n 512`):

  ```bash
  renal-ldm train-vae --data DATA --config demo --out runs/vae
  renal-ldm train --data DATA --config demo --vae runs/vae --out runs/ldm
  ```

  then register the checkpoint directory `train` wrote (the folder holding `{MANIFEST}`) below.
"""


@dataclass(frozen=True)
class ModelChoice:
    """A model the app can sample from. path is an absolute checkpoint directory."""

    name: str
    path: str
    kind: str  # "shipped" (models/demo of the repository) or the registry's kind ("demo", "user")
    image_size: int | None = None  # the size it was trained at, None if its manifest is unreadable
    size_multiple: int | None = None
    fingerprint: str | None = None
    problem: str | None = None  # why it cannot be used right now (folder gone, not a checkpoint)
    guidance: float | None = None  # the guidance scale its manifest recommends (train --guidance), if any

    @property
    def label(self) -> str:
        where = "shipped demo" if self.kind == "shipped" else self.path
        size = f", {self.image_size} px" if self.image_size else ""
        flag = " — unavailable" if self.problem else ""
        return f"{self.name} ({where}{size}){flag}"


def _manifest(path: Path) -> dict[str, Any]:
    """read_manifest with every failure as a ValueError whose message says what is wrong."""
    try:
        return read_manifest(path)
    except (OSError, ValueError) as exc:
        raise ValueError(str(exc)) from None


def _size_facts(manifest: dict[str, Any]) -> tuple[int | None, int | None]:
    """(trained image size, multiple every sampled size must be) from a manifest's model config."""
    try:
        config = ModelConfig.from_dict(manifest["config"])
    except (KeyError, TypeError, ValueError):
        return None, None
    return config.image_size, config.size_multiple


def describe(name: str, path: str | Path, kind: str) -> ModelChoice:
    """A ModelChoice with its size facts read from the manifest (or the reason it is unusable)."""
    path = Path(path).expanduser().resolve()
    try:
        manifest = _manifest(path)
    except ValueError as exc:
        return ModelChoice(name, str(path), kind, problem=str(exc))
    image_size, multiple = _size_facts(manifest)
    problem, guidance = None, None
    if manifest.get("kind") != "ldm":
        problem = f"{path} holds a {manifest.get('kind')!r} checkpoint, not a latent diffusion model"
    try:
        guidance = recommended_guidance(manifest)
    except ValueError as exc:
        problem = f"{path / MANIFEST}: {exc}"
    return ModelChoice(name, str(path), kind, image_size, multiple, manifest.get("fingerprint"), problem, guidance)


def available_models(*, url: str | None = None, include_unusable: bool = False) -> list[ModelChoice]:
    """The shipped demo (when present; first, so it is the default), then registered models by the registry's
    order. A registered entry pointing at the demo folder, or reusing a name already listed, is skipped."""
    choices: list[ModelChoice] = []
    demo = demo_model_dir()
    if is_checkpoint(demo):
        choices.append(describe(DEMO_NAME, demo, "shipped"))
    for entry in repo.list_models(url=url):
        if any(c.name == entry.name or c.path == str(Path(entry.path).resolve()) for c in choices):
            continue
        choices.append(describe(entry.name, entry.path, entry.kind))
    return choices if include_unusable else [c for c in choices if c.problem is None]


def unusable_models(*, url: str | None = None) -> list[ModelChoice]:
    """Registered models that cannot be sampled from now, with the reason (to tell the user)."""
    return [c for c in available_models(url=url, include_unusable=True) if c.problem is not None]


def find_model(name: str | None, *, url: str | None = None) -> ModelChoice | None:
    return next((c for c in available_models(url=url) if c.name == name), None)


def register_checkpoint(name: str, path: str, *, url: str | None = None) -> ModelChoice:
    """Validate a checkpoint directory with read_manifest and register it; a ValueError says what is wrong."""
    name = (name or "").strip()
    if not name:
        raise ValueError("give the model a name (it is stored with every sample drawn from it)")
    if name == DEMO_NAME and is_checkpoint(demo_model_dir()):
        raise ValueError(f"the name {DEMO_NAME!r} belongs to the shipped demo model; choose another name")
    raw = (path or "").strip()
    if not raw:
        raise ValueError(f"give the checkpoint directory (the folder that holds {MANIFEST})")
    try:
        directory, _ = locate_checkpoint(raw)  # a training run directory registers its model
    except (OSError, ValueError) as exc:
        raise ValueError(str(exc)) from None
    manifest = _manifest(directory)
    if manifest.get("kind") != "ldm":
        raise ValueError(
            f"{directory} holds a {manifest.get('kind')!r} checkpoint (an autoencoder alone cannot sample); "
            "register the directory written by `renal-ldm train`"
        )
    entry = repo.register_model(name, directory, kind="user", url=url)
    return describe(entry.name, entry.path, entry.kind)


def size_options(choice: ModelChoice) -> list[int]:
    """Image sizes to offer: half, the trained size and double (a 256-trained model samples 512 too)."""
    native = choice.image_size or 256
    multiple = choice.size_multiple or 8
    sizes = {s for s in (native // 2, native, native * 2) if s >= multiple and s % multiple == 0}
    return sorted(sizes | {native})
