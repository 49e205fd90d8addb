"""The real/synthetic training-mix experiment of the reference study (thesis 4.2.3 and 5.3, Tables 4.1 and 5.2).

Six segmenters learn the same task from different training data: 100_0, 75_25, 50_50, 25_75 and 0_100 are the
real/synthetic shares of one patch count (`patches`, 198 in the reference), 100_100 supplements the real patches
with as many synthetic ones. Everything else is identical: the training loop (`renal_ldm.segment.train_segmenter`,
early stopping on validation loss), the one real validation set, and the seeds. Seed s picks the same real
patches in every mix that uses them (and the same synthetic ones): the patches of a set are ranked by
sha256(s, set, name) and a mix takes the first n, so 25_75's real patches lie inside 50_50's, inside 75_25's,
inside 100_0's. Seed s is also the segmenter's init and data-order seed. The reference ran one seed; this runs
`seeds` (0 .. seeds-1) and reports mean and sample standard deviation.

Results (the reference's Table 5.2 plus what it left out):

- final validation loss and final Dice: those of the last epoch trained ("at end of training", as the reference);
- best Dice: the highest validation Dice of any epoch;
- mis-segmented area against 100_0: (1 - Dice_mix) / (1 - Dice_100_0) on final Dice, per seed (the mixes of a
  seed share its patches), then mean and standard deviation; 1.0 for 100_0, and 0.659 (34% less) for the
  reference's 100_100.

Output folder:

    OUT/experiment.json              parameters and data fingerprints (a resumed run must match them)
    OUT/runs/<mix>_seed<s>/model/    train_segmenter's folder (best weights, manifest, metrics.jsonl, train_state.pt)
    OUT/runs/<mix>_seed<s>/result.json   written last: a run that has it is finished and is not rerun on resume;
                                     a run without it continues from its last finished epoch (exact resume)
    OUT/table.md, OUT/table.json     the table (rewritten after every run, so it grows as runs finish)
    OUT/val_loss.png, OUT/dice.png   curves per epoch, one line per mix (mean over the seeds reaching that epoch)

This module imports torch and the segmenter only inside the functions that train, so its names (MIXES,
MixExperimentSettings) can be used where torch is not loaded; segmenter names and defaults come from the
torch-free renal_ldm.segmentation.config.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from renal_ldm.fsutil import write_file_atomically
from renal_ldm.segmentation.config import CLASS_MODES

EXPERIMENT_FILE = "experiment.json"
RUNS_DIR = "runs"
RESULT_FILE = "result.json"
MODEL_DIR = "model"
TABLE_MD = "table.md"
TABLE_JSON = "table.json"
LOSS_PNG = "val_loss.png"
DICE_PNG = "dice.png"
OUTPUT_ENTRIES = (EXPERIMENT_FILE, RUNS_DIR, TABLE_MD, TABLE_JSON, LOSS_PNG, DICE_PNG)
"""What the experiment writes into OUT; --overwrite removes these and nothing else."""
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Mix:
    """One row of Table 4.1: the share of `patches` taken from the real and from the synthetic set."""

    name: str
    real_share: float
    synthetic_share: float

    @property
    def supplemented(self) -> bool:
        """True for 100_100: both sets in full, twice the patch count."""
        return self.real_share + self.synthetic_share > 1

    def counts(self, patches: int) -> tuple[int, int]:
        """(real, synthetic) patch counts of this mix for a patch count of `patches`."""
        if self.supplemented:
            return _round_half_up(patches * self.real_share), _round_half_up(patches * self.synthetic_share)
        real = _round_half_up(patches * self.real_share)
        return real, patches - real


MIXES: tuple[Mix, ...] = (
    Mix("100_0", 1.0, 0.0),
    Mix("75_25", 0.75, 0.25),
    Mix("50_50", 0.5, 0.5),
    Mix("25_75", 0.25, 0.75),
    Mix("0_100", 0.0, 1.0),
    Mix("100_100", 1.0, 1.0),
)
BASELINE = "100_0"
"""The mix every other is compared with: real data only."""

REFERENCE_TABLE = {  # thesis Table 5.2 (one seed): final validation loss, final Dice
    "100_0": (0.094, 0.956),
    "75_25": (0.064, 0.970),
    "50_50": (0.060, 0.972),
    "25_75": (0.068, 0.965),
    "0_100": (0.137, 0.927),
    "100_100": (0.055, 0.971),
}


@dataclass(frozen=True)
class MixExperimentSettings:
    """What the experiment runs. None for a training option means the segmenter's own default."""

    patches: int = 198
    seeds: int = 3
    classes: str = "glomeruli"
    config: str = "small"
    epochs: int | None = None
    patience: int | None = None
    batch_size: int | None = None
    crop: int | None = None
    lr: float | None = None

    def __post_init__(self) -> None:
        for name in ("patches", "seeds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
        if self.classes not in CLASS_MODES:
            raise ValueError(f"classes must be one of {', '.join(CLASS_MODES)}; got {self.classes!r}")
        for name in ("epochs", "patience", "batch_size", "crop"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1 (or None for the segmenter's default); got {value!r}")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MixExperimentSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class RunEvent:
    """Progress of the experiment: run `index` (1-based) of `total` starts (done=False) or ends (done=True).

    skipped: the run was finished before (resume) and is not trained again.
    """

    index: int
    total: int
    mix: str
    seed: int
    done: bool
    skipped: bool = False
    result: dict | None = None


@dataclass
class MixExperimentReport:
    out_dir: Path
    table: dict
    markdown: str
    runs_trained: int
    runs_skipped: int
    files: dict[str, Path] = field(default_factory=dict)


def run_name(mix: str, seed: int) -> str:
    return f"{mix}_seed{seed}"


# ------------------------------------------------------------------------------------------------ inputs


def open_sets(real: str | Path, synthetic: str | Path, val: str | Path, patches: int):
    """(real, synthetic, val) PatchDatasets with masks, after the checks a user's input can fail.

    One error each: a folder without masks (or one that is no data set), fewer patch-mask pairs than `patches`
    in the real or synthetic folder, real and synthetic patches of different sizes.
    """
    sets = {
        "--real": _open_set(real, "--real"),
        "--synthetic": _open_set(synthetic, "--synthetic"),
        "--val": _open_set(val, "--val"),
    }
    for option in ("--real", "--synthetic"):
        n = len(sets[option])
        if n < patches:
            raise ValueError(
                f"{option} {sets[option].root} holds {n} patch-mask pairs, fewer than --patches {patches}; "
                f"expected at least {patches} (or pass --patches {n} or less)"
            )
    sizes = {option: _set_size(dataset, option) for option, dataset in sets.items()}
    if sizes["--real"][0] != sizes["--synthetic"][0]:
        (rw, rh), real_file = sizes["--real"]
        (sw, sh), synthetic_file = sizes["--synthetic"]
        raise ValueError(
            f"real patches are {rw}x{rh} ({real_file}) but synthetic patches are {sw}x{sh} ({synthetic_file}); "
            "expected one patch size for both training sets"
        )
    return sets["--real"], sets["--synthetic"], sets["--val"]


def _open_set(path: str | Path, option: str):
    from renal_ldm.data.layout import IMAGES_DIR, MASKS_DIR
    from renal_ldm.data.patches import PatchDataset

    path = Path(path)
    if path.is_dir() and (path / IMAGES_DIR).is_dir() and not (path / MASKS_DIR).is_dir():
        raise FileNotFoundError(
            f"{option} {path} has {IMAGES_DIR}/ but no {MASKS_DIR}/; the experiment trains segmenters and needs "
            "patch-mask pairs (label synthetic samples with `renal-ldm segment` first)"
        )
    try:
        # Flips are the training loop's (seeded there); the data set's own would draw from the global RNG.
        return PatchDataset(path, return_mask=True, flips=False)
    except (FileNotFoundError, ValueError) as exc:
        raise type(exc)(f"{option}: {exc}") from None


def _set_size(dataset, option: str) -> tuple[tuple[int, int], str]:
    """The one (width, height) of a set's images and the first file; a clear error for mixed sizes."""
    from PIL import Image

    first_size, first_file = None, None
    for record in dataset.records:
        with Image.open(record.image) as img:
            size = img.size
        if first_size is None:
            first_size, first_file = size, record.image.name
        elif size != first_size:
            raise ValueError(
                f"{option} {dataset.root} mixes patch sizes: {first_file} is {first_size[0]}x{first_size[1]} but "
                f"{record.image.name} is {size[0]}x{size[1]}; expected one size"
            )
    return first_size, first_file


def ranked_indices(dataset, seed: int, which: str) -> list[int]:
    """Indices of `dataset` in the order seed `seed` draws them: by sha256(seed, which, name), not listing order."""
    names = [r.name for r in dataset.records]
    return sorted(range(len(names)), key=lambda i: hashlib.sha256(f"{seed}:{which}:{names[i]}".encode()).hexdigest())


def select_patches(real_set, synthetic_set, mix: Mix, patches: int, seed: int) -> tuple[list[int], list[int]]:
    """(real indices, synthetic indices) of `mix` for `seed`, each sorted; nested across mixes of one seed."""
    n_real, n_synthetic = mix.counts(patches)
    real = sorted(ranked_indices(real_set, seed, "real")[:n_real])
    synthetic = sorted(ranked_indices(synthetic_set, seed, "synthetic")[:n_synthetic])
    return real, synthetic


# ----------------------------------------------------------------------------------------------- running


def run_mix_experiment(
    real: str | Path,
    synthetic: str | Path,
    val: str | Path,
    out_dir: str | Path,
    settings: MixExperimentSettings | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    mixes: Sequence[Mix] = MIXES,
    on_run: Callable[[RunEvent], None] | None = None,
    epoch_progress: bool = False,
    log: Callable[[str], None] = print,
) -> MixExperimentReport:
    """Train every mix x seed (skipping finished runs when resuming), write the table and curves; see the module.

    on_run gets a RunEvent as each run starts and ends; log gets the segmenter's line per epoch. Either may raise
    to stop the experiment (a caller's cancel): what finished is kept, and resume=True continues from there, also
    with a different number of seeds (the runs of the seeds both share are kept). epoch_progress turns on the
    segmenter's own per-epoch progress bar (tqdm) inside each run.
    """
    settings = settings or MixExperimentSettings()
    out = Path(out_dir)
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other; pass one of them")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder; expected a folder for the experiment")
    real_set, synthetic_set, val_set = open_sets(real, synthetic, val, settings.patches)
    config, make_settings, training = _segmenter_setup(settings, epoch_progress)  # bad names fail before any work
    parameters = _parameters(settings, real_set, synthetic_set, val_set, mixes)
    parameters["segmenter"] = {"config": config.to_dict(), "training": training}
    _prepare_out(out, parameters, resume=resume, overwrite=overwrite)

    from renal_ldm.segment import TRAIN_STATE, train_segmenter

    jobs = [(mix, seed) for seed in settings.seed_list for mix in mixes]
    results: dict[tuple[str, int], dict] = {}
    trained = skipped = 0
    for index, (mix, seed) in enumerate(jobs, 1):
        run_dir = out / RUNS_DIR / run_name(mix.name, seed)
        finished = _read_result(run_dir)
        if finished is not None:
            results[(mix.name, seed)] = finished
            skipped += 1
            if on_run:
                on_run(RunEvent(index, len(jobs), mix.name, seed, done=True, skipped=True, result=finished))
            continue
        if on_run:
            on_run(RunEvent(index, len(jobs), mix.name, seed, done=False))
        real_idx, synthetic_idx = select_patches(real_set, synthetic_set, mix, settings.patches, seed)
        train_set = _train_set(real_set, synthetic_set, real_idx, synthetic_idx)
        # An interrupted run continues from its last epoch (train_segmenter restores weights, optimizer and RNG
        # states exactly); one that never finished an epoch starts again from scratch.
        interrupted = (run_dir / MODEL_DIR / TRAIN_STATE).is_file()
        if run_dir.exists() and not interrupted:
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        what = "continuing" if interrupted else "training"
        log(f"{run_name(mix.name, seed)}: {what} on {len(real_idx)} real + {len(synthetic_idx)} synthetic patches")
        start = time.perf_counter()
        outcome = train_segmenter(
            train_set,
            val_set,
            run_dir / MODEL_DIR,
            config=config,
            settings=make_settings(seed, resume=interrupted),
            log=log,
        )
        result = _result_record(
            mix, seed, outcome, real_set, synthetic_set, real_idx, synthetic_idx, time.perf_counter() - start
        )
        write_file_atomically(run_dir / RESULT_FILE, json.dumps(result, indent=2) + "\n")
        results[(mix.name, seed)] = result
        trained += 1
        _write_outputs(out, parameters, results, mixes, settings.seed_list, charts=False)
        if on_run:
            on_run(RunEvent(index, len(jobs), mix.name, seed, done=True, result=result))
    table, markdown, files = _write_outputs(out, parameters, results, mixes, settings.seed_list, charts=True)
    return MixExperimentReport(out, table, markdown, trained, skipped, files)


def _segmenter_setup(settings: MixExperimentSettings, epoch_progress: bool):
    """(segmenter config, seed -> SegmenterTrainSettings, the settings as recorded); None fields take defaults."""
    from renal_ldm.segmentation.config import SegmenterTrainSettings, named_config

    config = named_config(settings.config, settings.classes)
    chosen = {
        name: getattr(settings, name)
        for name in ("epochs", "patience", "batch_size", "crop", "lr")
        if getattr(settings, name) is not None
    }
    chosen["monitor"] = "val_loss"  # the reference's EarlyStopping watched the validation loss

    def make(seed: int, resume: bool = False) -> SegmenterTrainSettings:
        return SegmenterTrainSettings(**chosen, seed=seed, progress=epoch_progress, resume=resume)

    recorded = {k: v for k, v in asdict(make(0)).items() if k not in ("seed", "progress", "resume")}
    return config, make, recorded


def _train_set(real_set, synthetic_set, real_idx: list[int], synthetic_idx: list[int]):
    from torch.utils.data import ConcatDataset, Subset

    parts = [Subset(real_set, real_idx)] if real_idx else []
    if synthetic_idx:
        parts.append(Subset(synthetic_set, synthetic_idx))
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def _parameters(settings, real_set, synthetic_set, val_set, mixes: Sequence[Mix]) -> dict:
    from renal_ldm.data.patches import data_fingerprint

    def describe(dataset) -> dict:
        path = str(Path(dataset.root).resolve())
        return {"path": path, "pairs": len(dataset), "fingerprint": data_fingerprint(dataset)}

    return {
        "format": FORMAT_VERSION,
        "settings": settings.to_dict(),
        "mixes": [asdict(m) | {"counts": list(m.counts(settings.patches))} for m in mixes],
        "real": describe(real_set),
        "synthetic": describe(synthetic_set),
        "val": describe(val_set),
    }


def _prepare_out(out: Path, parameters: dict, *, resume: bool, overwrite: bool) -> None:
    """The rule for an existing OUT: refused unless resume (same parameters) or overwrite (our entries go)."""
    existing = [name for name in OUTPUT_ENTRIES if (out / name).exists()]
    has_files = out.is_dir() and any(out.iterdir())
    if has_files and not (resume or overwrite):
        what = f"a mix experiment ({', '.join(existing)})" if existing else "files"
        raise FileExistsError(
            f"--out {out} already holds {what}; pass --resume to continue it, --overwrite to start again, "
            "or choose an empty folder"
        )
    if resume and (out / EXPERIMENT_FILE).is_file():
        saved = json.loads((out / EXPERIMENT_FILE).read_text(encoding="utf-8"))
        differences = [d for d in _differences(saved, parameters) if not d.startswith("settings.seeds:")]
        if differences:
            raise ValueError(
                f"--resume: {out} was started with other parameters ({'; '.join(differences)}); "
                "pass the same options and data (only --seeds may change), or --overwrite to start again"
            )
        if saved != parameters:  # more (or fewer) seeds: the runs of the seeds kept stay valid
            write_file_atomically(out / EXPERIMENT_FILE, json.dumps(parameters, indent=2) + "\n")
        return
    if resume and existing:
        raise ValueError(f"--resume: {out} has {', '.join(existing)} but no {EXPERIMENT_FILE}; pass --overwrite")
    if overwrite:
        for name in existing:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_file_atomically(out / EXPERIMENT_FILE, json.dumps(parameters, indent=2) + "\n")


def _differences(saved: dict, now: dict, prefix: str = "") -> list[str]:
    found = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            shown = (
                "changed" if key == "fingerprint" or isinstance(a, list) or isinstance(b, list) else f"{a!r} -> {b!r}"
            )
            found.append(f"{prefix}{key}: {shown}")
    return found


def _read_result(run_dir: Path) -> dict | None:
    path = run_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None  # a damaged record: the run is trained again
    return result if isinstance(result, dict) and result.get("history") else None


def _result_record(mix, seed, outcome, real_set, synthetic_set, real_idx, synthetic_idx, seconds: float) -> dict:
    history = [
        {
            "epoch": int(m.epoch),
            "train_loss": float(m.train_loss),
            "val_loss": float(m.val_loss),
            "val_dice": float(m.val_dice),
        }
        for m in outcome.history
    ]
    if not history:
        raise RuntimeError(f"{run_name(mix.name, seed)}: the segmenter reported no epoch")
    return {
        "mix": mix.name,
        "seed": seed,
        "n_real": len(real_idx),
        "n_synthetic": len(synthetic_idx),
        "real_patches": [real_set.records[i].name for i in real_idx],
        "synthetic_patches": [synthetic_set.records[i].name for i in synthetic_idx],
        "epochs_trained": len(history),
        "final_val_loss": history[-1]["val_loss"],
        "final_dice": history[-1]["val_dice"],
        "best_dice": max(h["val_dice"] for h in history),
        "best_epoch": int(outcome.best_epoch),
        "best_epoch_dice": float(outcome.best_val_dice),
        "seconds": round(seconds, 2),
        "history": history,
    }


# ------------------------------------------------------------------------------------------------ tables


def summarize(results: dict[tuple[str, int], dict], mixes: Sequence[Mix], seeds: Sequence[int]) -> list[dict]:
    """Per mix: counts and mean/std over the finished seeds of every reported quantity (see the module)."""
    rows = []
    for mix in mixes:
        done = [s for s in seeds if (mix.name, s) in results]
        runs = [results[(mix.name, s)] for s in done]
        row = {
            "mix": mix.name,
            "real_share": mix.real_share,
            "synthetic_share": mix.synthetic_share,
            "n_real": runs[0]["n_real"] if runs else None,
            "n_synthetic": runs[0]["n_synthetic"] if runs else None,
            "seeds": done,
        }
        for key in ("final_val_loss", "final_dice", "best_dice", "epochs_trained"):
            row[key] = _stats([r[key] for r in runs])
        ratios = []
        for s in done:
            base = results.get((BASELINE, s))
            if base is not None and 1 - base["final_dice"] > 0:
                ratios.append((1 - results[(mix.name, s)]["final_dice"]) / (1 - base["final_dice"]))
        row["missegmented_ratio"] = _stats(ratios)
        reference = REFERENCE_TABLE.get(mix.name)
        row["reference"] = {"final_val_loss": reference[0], "final_dice": reference[1]} if reference else None
        rows.append(row)
    return rows


def _stats(values: Sequence[float]) -> dict:
    values = [float(v) for v in values]
    return {
        "mean": statistics.fmean(values) if values else None,
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
        "values": values,
    }


def _fmt(stat: dict, digits: int = 3) -> str:
    if stat["mean"] is None:
        return "-"
    text = f"{stat['mean']:.{digits}f}"
    return text if stat["std"] is None else f"{text} ± {stat['std']:.{digits}f}"


def markdown_table(table: dict) -> str:
    settings = table["parameters"]["settings"]
    seeds = settings["seeds"]
    lines = [
        "# Training-mix experiment (thesis Table 5.2)",
        "",
        f"Real: `{table['parameters']['real']['path']}` ({table['parameters']['real']['pairs']} pairs); "
        f"synthetic: `{table['parameters']['synthetic']['path']}` ({table['parameters']['synthetic']['pairs']} "
        f"pairs); validation: `{table['parameters']['val']['path']}` ({table['parameters']['val']['pairs']} pairs).",
        f"Segmenter `{settings['config']}`, classes `{settings['classes']}`, {settings['patches']} patches per "
        f"mix; mean ± sample standard deviation over {seeds} seed{'s' if seeds != 1 else ''} "
        f"({table['runs_finished']} of {table['runs_total']} runs finished).",
        "Final = last epoch trained (early stopping on validation loss); best Dice = highest validation Dice of any "
        f"epoch; mis-segmented area = (1 - final Dice) / (1 - final Dice of {BASELINE}), per seed.",
        "",
        "| Experiment | Real | Synthetic | Patches | Validation loss (final) | Dice (final) | Dice (best) | Epochs "
        f"| Mis-segmented area vs {BASELINE} | Reference loss / Dice |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in table["mixes"]:
        ratio = row["missegmented_ratio"]
        ratio_text = _fmt(ratio)
        if ratio["mean"] is not None:
            ratio_text += f" ({ratio['mean'] - 1:+.0%})"
        n_real, n_synthetic = row["n_real"], row["n_synthetic"]
        patches = "-" if n_real is None else str(n_real + n_synthetic)
        reference = row["reference"]
        ref_text = f"{reference['final_val_loss']:.3f} / {reference['final_dice']:.3f}" if reference else "-"
        lines.append(
            f"| {row['mix']} | {'-' if n_real is None else n_real} | {'-' if n_synthetic is None else n_synthetic} "
            f"| {patches} | {_fmt(row['final_val_loss'])} | {_fmt(row['final_dice'])} | {_fmt(row['best_dice'])} "
            f"| {_fmt(row['epochs_trained'], 1)} | {ratio_text} | {ref_text} |"
        )
    lines += ["", "Reference (thesis Table 5.2): one seed, 198 training patches of 512 px, real rat PAS tissue."]
    return "\n".join(lines) + "\n"


def _write_outputs(out: Path, parameters: dict, results, mixes, seeds, *, charts: bool):
    table = {
        "parameters": parameters,
        "baseline": BASELINE,
        "runs_total": len(mixes) * len(seeds),
        "runs_finished": len(results),
        "mixes": summarize(results, mixes, seeds),
    }
    markdown = markdown_table(table)
    write_file_atomically(out / TABLE_JSON, json.dumps(table, indent=2) + "\n")
    write_file_atomically(out / TABLE_MD, markdown)
    files = {"table_md": out / TABLE_MD, "table_json": out / TABLE_JSON}
    if charts:
        for key, filename, title, label in (
            ("val_loss", LOSS_PNG, "Validation loss per epoch", "validation loss"),
            ("val_dice", DICE_PNG, "Validation Dice per epoch", "Dice"),
        ):
            series = [(mix.name, _mean_curve(results, mix.name, seeds, key)) for mix in mixes]
            line_chart(out / filename, title, label, [(name, pts) for name, pts in series if pts])
            files[key] = out / filename
    return table, markdown, files


def _mean_curve(results, mix: str, seeds, key: str) -> list[tuple[int, float]]:
    """(epoch, mean over the seeds that reached it) for one mix."""
    by_epoch: dict[int, list[float]] = {}
    for s in seeds:
        for h in results.get((mix, s), {}).get("history", []):
            by_epoch.setdefault(int(h["epoch"]), []).append(float(h[key]))
    return [(e, statistics.fmean(v)) for e, v in sorted(by_epoch.items())]


# ------------------------------------------------------------------------------------------------ charts

SERIES_COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (23, 190, 207))


def line_chart(path: str | Path, title: str, y_label: str, series: list[tuple[str, list[tuple[float, float]]]]):
    """A PNG line chart (PIL only): one coloured line with markers per (label, points), axes, ticks and legend."""
    from PIL import Image, ImageDraw, ImageFont

    def font(size):
        try:
            return ImageFont.load_default(size=size)
        except TypeError:  # Pillow without FreeType
            return ImageFont.load_default()

    width, height = 900, 560
    left, right, top, bottom = 80, 170, 50, 60
    small, big = font(13), font(17)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((left, 8), title, fill="black", font=big)
    points = [p for _, pts in series for p in pts]
    xs = [p[0] for p in points] or [1]
    ys = [p[1] for p in points if math.isfinite(p[1])] or [0.0, 1.0]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    y_ticks = _nice_ticks(min(ys), max(ys))
    y0, y1 = y_ticks[0], y_ticks[-1]
    plot_w, plot_h = width - left - right, height - top - bottom

    def to_px(x, y):
        return left + (x - x0) / (x1 - x0) * plot_w, top + (1 - (y - y0) / (y1 - y0)) * plot_h

    for y in y_ticks:
        _, py = to_px(x0, y)
        draw.line([(left, py), (left + plot_w, py)], fill=(225, 225, 225))
        draw.text((left - 8, py), f"{y:g}", fill="black", font=small, anchor="rm")
    for x in _nice_ticks(x0, x1, integer=True):
        if x0 <= x <= x1:
            px, _ = to_px(x, y0)
            draw.line([(px, top + plot_h), (px, top + plot_h + 5)], fill="black")
            draw.text((px, top + plot_h + 8), f"{x:g}", fill="black", font=small, anchor="mt")
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    draw.text((left + plot_w / 2, height - 22), "epoch", fill="black", font=small, anchor="mm")
    draw.text((left - 70, top - 18), y_label, fill="black", font=small)
    for i, (label, pts) in enumerate(series):
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        pixels = [to_px(x, y) for x, y in pts if math.isfinite(y)]
        if len(pixels) > 1:
            draw.line(pixels, fill=color, width=2)
        for px, py in pixels:
            draw.ellipse([px - 2.5, py - 2.5, px + 2.5, py + 2.5], fill=color)
        ly = top + 10 + 22 * i
        draw.line([(left + plot_w + 15, ly), (left + plot_w + 45, ly)], fill=color, width=3)
        draw.text((left + plot_w + 52, ly), label, fill="black", font=small, anchor="lm")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, format="PNG")
    tmp.replace(path)
    return path


def _nice_ticks(lo: float, hi: float, count: int = 6, integer: bool = False) -> list[float]:
    """Round tick values covering [lo, hi] (at least two)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        lo, hi = lo - (abs(lo) * 0.1 or 0.5), hi + (abs(hi) * 0.1 or 0.5)
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1, round(step))
    start = math.floor(lo / step) * step
    ticks = [start]
    while ticks[-1] < hi - step * 1e-9 or len(ticks) < 2:
        ticks.append(start + len(ticks) * step)
    return [round(t, 10) for t in ticks]


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))
