"""Sharded sampling: one `sample` run split by seed over processes, GPUs or machines, into one sample folder.

    accelerate launch --num_processes 4 -m renal_ldm sample --n 1000 --out out/     # 4 GPUs, one manifest

Guarantees:
- A shard is a contiguous run of whole batches of the one-process run (shard_indices): the process of rank r
  draws images [a, b) as a request for seed + a, n = b - a, so each batch it draws holds the very images, seeds
  and rows of a batch of the one-process run with the same --batch-size. The pixels are therefore those of the
  one-process run, byte for byte, with or without exact_batches, given the same kind of device and, on the CPU,
  the same torch thread count (CPU kernels block their reductions by thread count: 1 grey level apart at 1 and
  2 threads on the tiny test model; launchers give each process OMP_NUM_THREADS=1).
- The files are those of the one-process run: image i is sample_{first + i}_seed{seed + i}.png with sidecar
  "index" i and "seed" seed + i, first being the folder's next free number when the run started. Every process
  reads it before any process writes (a barrier), and each writes its shard file .shard-R-of-W.json (marked
  drawing, with first) before its first image: a shard started later in that folder, by hand, takes first from
  a shard file of the same request instead of counting the images of its sibling shards.
- Each process writes its images, then its shard file again, done, with its manifest rows (each write renamed
  into place). After a second barrier the main process checks that all W shard files are there, done, of one
  request, and list every image 0..n-1 once with its file present; only then does it append the rows to
  manifest.csv in index order (one atomic rewrite) and remove the shard files. Anything missing is one
  ShardError naming it, and manifest.csv is left as it was: never a silently short manifest.
- A process that fails exits non-zero; the launcher (torchrun's elastic agent, under `accelerate launch` too)
  then stops the others, so the second barrier is never passed and no manifest rows are written.
- Without a launcher, `sample --shard R/W` draws one shard (on separate machines, say) and `sample --merge DIR`
  merges the shard files later, once they are all in DIR, with the same checks.

No streamlit or database imports; torch and accelerate only where a launched run needs them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from renal_ldm.sample_files import append_manifest, next_sample_id, write_sample_files

if TYPE_CHECKING:
    import torch

    from renal_ldm.sample import SampleRequest, SampleResult

SHARD_FILE = ".shard-{rank:05d}-of-{world:05d}.json"
SHARD_FILE_PATTERN = re.compile(r"^\.shard-(\d+)-of-(\d+)\.json$")
BARRIER_TIMEOUT = dt.timedelta(hours=24)
"""How long a finished process waits at the barrier for the slowest shard (torch.distributed's default of 30
minutes would fail a long run whose shards finish minutes apart)."""


class ShardError(Exception):
    """A sharded run or merge that cannot give a complete manifest; the message names what is missing."""


def _no_barrier() -> None:
    return None


@dataclass(frozen=True)
class Shard:
    """Which part of a run this process draws: rank of world, local_rank the process's number on its machine.

    launched: started by a launcher (accelerate, torchrun), whose processes meet at barrier() and whose main
    process (rank 0) merges; otherwise a lone shard (--shard R/W) or the whole run (world 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    launched: bool = False
    barrier: Callable[[], None] = field(default=_no_barrier, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"shard {self.rank}/{self.world}: expected a rank in 0..world-1 and a world >= 1")

    @property
    def label(self) -> str:
        return f"{self.rank}/{self.world}"

    @property
    def merges(self) -> bool:
        """Whether this process writes the merged manifest at the end of the run."""
        return self.launched and self.rank == 0


def launched_world() -> int:
    """The process count a launcher (accelerate launch, torchrun) announced in WORLD_SIZE; 1 without one."""
    value = os.environ.get("WORLD_SIZE", "1").strip() or "1"
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"WORLD_SIZE={value!r} in the environment is not a process count") from None


def detect_shard(device: str | None = None) -> Shard:
    """This process's shard: under a launcher with WORLD_SIZE > 1, its rank from accelerate's PartialState (which
    joins the process group: NCCL between GPUs, gloo between CPU processes); otherwise the whole run."""
    world = launched_world()
    if world <= 1:
        return Shard()
    from accelerate import PartialState

    state = PartialState(cpu=not uses_cuda(device), timeout=BARRIER_TIMEOUT)
    if state.num_processes != world:  # pragma: no cover - a launcher that set WORLD_SIZE but no process group
        raise ShardError(f"WORLD_SIZE is {world} but the process group has {state.num_processes} processes")
    return Shard(
        rank=state.process_index,
        world=state.num_processes,
        local_rank=state.local_process_index,
        launched=True,
        barrier=state.wait_for_everyone,
    )


def parse_shard(text: str) -> Shard:
    """--shard R/W (rank R of W, counted from 0) as a lone, unlaunched shard."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"--shard {text!r}: expected RANK/WORLD, e.g. 0/2 for the first of two shards")
    rank, world = int(match.group(1)), int(match.group(2))
    if world < 1 or rank >= world:
        raise ValueError(f"--shard {text}: the rank must be in 0..{max(world - 1, 0)} (counted from 0)")
    return Shard(rank=rank, world=world)


def uses_cuda(device: str | None) -> bool:
    """Whether a --device value (None: CUDA when present) means a GPU."""
    if device is None:
        import torch

        return torch.cuda.is_available()
    return str(device).startswith("cuda")


def shard_device(device: str | None, local_rank: int) -> torch.device:
    """The device of the process with this local rank: GPU number local_rank for None (where CUDA is present) and
    for a bare "cuda", the CPU without CUDA; a device with an index is taken as given."""
    import torch

    if not uses_cuda(device):
        return torch.device(device or "cpu")
    if device not in (None, "cuda"):
        return torch.device(device)
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ShardError(
            f"the process of local rank {local_rank} has no GPU of its own (this machine has {count}); launch at "
            "most one process per GPU on each machine, or pass --device cpu"
        )
    return torch.device("cuda", local_rank)


def shard_indices(n: int, rank: int, world: int, batch_size: int = 1) -> range:
    """The image indices process `rank` of `world` draws from a run of n images in batches of batch_size: a
    contiguous run of whole batches, the batches spread as evenly as they go (the first n_batches % world ranks
    one more); ranks beyond the batch count draw nothing. In rank order the shards are 0..n-1, once each."""
    if n < 0 or batch_size < 1 or world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard {rank}/{world} of {n} images in batches of {batch_size}: bad arguments")
    batches = -(-n // batch_size)
    per, extra = divmod(batches, world)
    first = rank * per + min(rank, extra)
    last = first + per + (rank < extra)
    return range(min(first * batch_size, n), min(last * batch_size, n))


def describe_shard(shard: Shard, request: SampleRequest, device: Any = None) -> str:
    """One line saying which images (and seeds) this process draws, for the user to see the split."""
    indices = shard_indices(request.n, shard.rank, shard.world, request.batch_size)
    where = f" on {device}" if device is not None else ""
    if not indices:
        batches = -(-request.n // request.batch_size)
        return (
            f"shard {shard.label}: no images{where} ({request.n} images make {batches} batch(es) of "
            f"{request.batch_size}; a smaller --batch-size keeps all {shard.world} processes busy)"
        )
    seeds = request.seed + indices.start, request.seed + indices.stop - 1
    return (
        f"shard {shard.label}: images {indices.start}-{indices.stop - 1} of {request.n} "
        f"(seeds {seeds[0]}-{seeds[1]}){where}"
    )


def shard_file(out_dir: str | Path, rank: int, world: int) -> Path:
    return Path(out_dir) / SHARD_FILE.format(rank=rank, world=world)


def run_key(request: SampleRequest, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """What every shard of one run has in common: the validated request (n and seed of the whole run) and the
    sampler settings that change pixels (model fingerprint, precision, exact batches), as JSON gives them back."""
    return json.loads(json.dumps({"request": dataclasses.asdict(request), **(settings or {})}))


def draw_shard(
    shard: Shard,
    request: SampleRequest,
    out_dir: str | Path,
    sample: Callable[[SampleRequest], list[SampleResult]],
    settings: dict[str, Any] | None = None,
) -> list[Path]:
    """Draw and write this process's shard of a validated request; the merging process then merges all shards
    into manifest.csv. sample(request) draws a request (a Sampler's sample with progress, say); settings are the
    sampler's (see run_key), which every shard must share. Returns the images of the whole run in index order for
    the merging process, else this shard's images."""
    key = run_key(request, settings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    indices = shard_indices(request.n, shard.rank, shard.world, request.batch_size)
    first = first_sample_id(out_dir, key)
    shard.barrier()  # every process has read the next free number before any process writes an image
    write_shard_file(out_dir, shard, key, first, None)
    results: list[SampleResult] = []
    if indices:
        part = dataclasses.replace(request, seed=request.seed + indices.start, n=len(indices))
        results = sample(part)
        for result in results:  # the index in the whole run, as a one-process run numbers it
            result.index += indices.start
    rows = write_sample_files(results, out_dir, [first + r.index for r in results])
    for row, result in zip(rows, results, strict=True):
        row["index"] = result.index
    write_shard_file(out_dir, shard, key, first, rows)
    shard.barrier()  # every shard file is in place (or a process failed and the launcher stops this one)
    if shard.merges:
        return merge_shards(out_dir, world=shard.world)
    return [out_dir / row["image"] for row in rows]


def first_sample_id(out_dir: Path, key: dict[str, Any]) -> int:
    """The number of image 0 of the run `key` (run_key): that of a shard file of the same run already in out_dir
    (a sibling shard started earlier), else the folder's next free number."""
    for world, ranks in sorted(find_shard_files(out_dir).items()):
        for rank in sorted(ranks):
            body = _read_shard_file(shard_file(out_dir, rank, world))
            if body is not None and body["run"] == key:
                return int(body["first_id"])
    return next_sample_id(out_dir)


def write_shard_file(
    out_dir: Path, shard: Shard, key: dict[str, Any], first: int, rows: list[dict[str, Any]] | None
) -> Path:
    """The shard's part of the manifest (with each row's index; None while drawing), renamed into place."""
    path = shard_file(out_dir, shard.rank, shard.world)
    body = {
        "rank": shard.rank,
        "world": shard.world,
        "first_id": first,
        "run": key,
        "done": rows is not None,
        "rows": rows or [],
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def _read_shard_file(path: Path) -> dict[str, Any] | None:
    """A shard file's contents; None for one that cannot be read as one (cut short, say)."""
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) and {"first_id", "run", "rows"} <= body.keys() else None


def find_shard_files(out_dir: Path) -> dict[int, set[int]]:
    """{world: {ranks}} of the shard files in out_dir."""
    found: dict[int, set[int]] = {}
    for path in out_dir.iterdir() if out_dir.is_dir() else ():
        match = SHARD_FILE_PATTERN.match(path.name)
        if match:
            found.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    return found


def merge_shards(out_dir: str | Path, world: int | None = None) -> list[Path]:
    """Append the rows of all `world` shard files in out_dir (None: the one process count found there) to
    manifest.csv in index order, then remove the shard files; returns the images in index order. A missing shard
    file, shards of different requests, an index missing or twice, or a listed image absent: a ShardError, and
    manifest.csv and the shard files are left as they were."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"sample folder not found: {out_dir}")
    found = find_shard_files(out_dir)
    if world is None:
        if not found:
            raise ShardError(f"no shard files (.shard-R-of-W.json) in {out_dir}: nothing to merge")
        if len(found) > 1:
            raise ShardError(
                f"{out_dir} holds shard files of runs of {' and '.join(map(str, sorted(found)))} shards; "
                "remove the stale ones and merge again"
            )
        (world,) = found
    missing = sorted(set(range(world)) - found.get(world, set()))
    if missing:
        raise ShardError(
            f"shard(s) {', '.join(f'{r}/{world}' for r in missing)} left no shard file in {out_dir} (failed, still "
            "running, or run where this folder is not shared: copy its images and shard file here); "
            "manifest.csv not written"
        )
    shards = []
    for rank in range(world):
        body = _read_shard_file(shard_file(out_dir, rank, world))
        if body is None or not body.get("done"):
            raise ShardError(
                f"shard {rank}/{world} has not finished ({shard_file(out_dir, rank, world).name} in {out_dir} "
                "says it is still drawing, or it failed: run it again); manifest.csv not written"
            )
        shards.append(body)
    key, first = shards[0]["run"], shards[0]["first_id"]
    for body in shards[1:]:
        if body["run"] != key or body["first_id"] != first:
            raise ShardError(
                f"shard files {shard_file(out_dir, 0, world).name} and "
                f"{shard_file(out_dir, body['rank'], world).name} in {out_dir} are of different runs "
                "(another request, model or sampler setting, or a folder that held other images when the shard started)"
            )
    rows = sorted((row for body in shards for row in body["rows"]), key=lambda row: row["index"])
    n = key["request"]["n"]
    if [row["index"] for row in rows] != list(range(n)):
        have = {row["index"] for row in rows}
        lost = sorted(set(range(n)) - have)
        raise ShardError(
            f"the {world} shard files in {out_dir} list {len(rows)} images, not images 0..{n - 1} once each"
            + (f" (missing {', '.join(map(str, lost[:10]))}{'...' if len(lost) > 10 else ''})" if lost else "")
        )
    absent = [row["image"] for row in rows if not (out_dir / row["image"]).is_file()]
    if absent:
        raise ShardError(
            f"{len(absent)} image(s) the shard files list are not in {out_dir}, e.g. {absent[0]}; "
            "manifest.csv not written"
        )
    append_manifest(out_dir, rows)
    for rank in range(world):
        shard_file(out_dir, rank, world).unlink()
    return [out_dir / row["image"] for row in rows]
