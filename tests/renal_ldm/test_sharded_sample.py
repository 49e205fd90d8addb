"""Sharded sampling (renal_ldm.sharding): shards of whole batches covering every image once, the merge and its
refusals, and real runs (two processes under `accelerate launch`, shards by hand) pixel for pixel against one
process drawing the same seeds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from renal_ldm.cli import main as cli_main
from renal_ldm.sample import SampleRequest, SampleResult
from renal_ldm.sample_files import MANIFEST_CSV, read_manifest_csv, write_samples
from renal_ldm.sharding import (
    Shard,
    ShardError,
    describe_shard,
    detect_shard,
    draw_shard,
    merge_shards,
    parse_shard,
    shard_device,
    shard_file,
    shard_indices,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RUN = dict(n=4, seed=11, steps=2, batch_size=2)
"""The real runs: 4 images in 2 batches, so each of 2 processes draws one whole batch."""


# --- which images a process draws -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 4, 5, 17])
@pytest.mark.parametrize("batch_size", [1, 2, 4])
@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shards_are_whole_batches_covering_every_image_once_in_order(n, batch_size, world):
    shards = [shard_indices(n, rank, world, batch_size) for rank in range(world)]
    assert [i for s in shards for i in s] == list(range(n))
    assert all(s.start % batch_size == 0 for s in shards if s)  # a shard starts where a one-process batch does
    batch_counts = [-(-len(s) // batch_size) for s in shards]
    assert max(batch_counts) - min(batch_counts) <= 1


def test_shard_indices_examples():
    assert [shard_indices(10, r, 3) for r in range(3)] == [range(0, 4), range(4, 7), range(7, 10)]
    assert [shard_indices(4, r, 2, 2) for r in range(2)] == [range(0, 2), range(2, 4)]
    assert [shard_indices(5, r, 2, 2) for r in range(2)] == [range(0, 4), range(4, 5)]
    assert [shard_indices(4, r, 2, 4) for r in range(2)] == [range(0, 4), range(4, 4)]  # one batch: one process
    with pytest.raises(ValueError):
        shard_indices(4, 2, 2)


def test_describe_shard_names_images_and_seeds():
    request = SampleRequest(caption="x", n=4, seed=11, batch_size=2)
    assert describe_shard(Shard(1, 2), request, "cpu") == "shard 1/2: images 2-3 of 4 (seeds 13-14) on cpu"
    lone = describe_shard(Shard(1, 2), SampleRequest(caption="x", n=4, batch_size=4))
    assert lone.startswith("shard 1/2: no images (4 images make 1 batch(es) of 4; a smaller --batch-size")


def test_parse_shard():
    assert parse_shard("1/2") == Shard(rank=1, world=2)
    assert parse_shard(" 0 / 1 ") == Shard(rank=0, world=1)
    for bad in ("2/2", "1", "a/b", "0/0", "-1/2"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_without_a_launcher_the_process_is_the_whole_run(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert detect_shard("cpu") == Shard()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert detect_shard("cpu") == Shard()
    assert not Shard().merges and Shard(0, 2, launched=True).merges and not Shard(1, 2, launched=True).merges
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        detect_shard("cpu")


def test_shard_device():
    import torch

    assert shard_device("cpu", 1) == torch.device("cpu")
    assert shard_device("cuda:3", 1) == torch.device("cuda", 3)  # an explicit index is taken as given
    if not torch.cuda.is_available():
        assert shard_device(None, 1) == torch.device("cpu")
        with pytest.raises(ShardError, match="local rank 1 has no GPU of its own"):
            shard_device("cuda", 1)


# --- writing shards and merging them (fake images: no model) ----------------------------------------------------


def _fake_sample(request: SampleRequest) -> list[SampleResult]:
    """Images that depend on the seed only, numbered within their request as Sampler.sample does."""
    results = []
    for i in range(request.n):
        seed = request.seed + i
        array = np.full((8, 8, 3), seed % 256, dtype=np.uint8)
        params = {"caption": request.caption, "seed": seed, "steps": request.steps}
        results.append(SampleResult(Image.fromarray(array), array, seed, request.caption, i, params))
    return results


def _request(**kw) -> SampleRequest:
    return SampleRequest(**{"caption": "Glomeruli: high", "n": 5, "seed": 3, "batch_size": 2, **kw})


def _folder(path: Path) -> dict[str, tuple]:
    """Every image of a folder with its pixels and the sidecar's seed and index, by file name."""
    out = {}
    for png in sorted(path.glob("sample_*.png")):
        side = json.loads(png.with_suffix(".json").read_text())
        out[png.name] = (np.asarray(Image.open(png)).tobytes(), side["seed"], side["index"])
    return out


def test_shards_merged_equal_the_one_process_folder(tmp_path):
    request = _request()
    write_samples(_fake_sample(request), tmp_path / "one")
    for rank in (1, 0, 2):  # unlaunched shards, in any order: none of them merges
        draw_shard(Shard(rank, 3), request, tmp_path / "sharded", _fake_sample)
    assert not (tmp_path / "sharded" / MANIFEST_CSV).exists()
    paths = merge_shards(tmp_path / "sharded")
    assert [p.name for p in paths] == [r["image"] for r in read_manifest_csv(tmp_path / "one")]
    assert read_manifest_csv(tmp_path / "sharded") == read_manifest_csv(tmp_path / "one")
    assert _folder(tmp_path / "sharded") == _folder(tmp_path / "one")
    assert [p.name for p in (tmp_path / "sharded").iterdir() if p.name.startswith(".")] == []  # shard files gone


def test_shards_number_after_the_images_already_in_the_folder(tmp_path):
    earlier = _request(n=2, seed=100)
    for folder in ("one", "sharded"):
        write_samples(_fake_sample(earlier), tmp_path / folder)
    request = _request()
    write_samples(_fake_sample(request), tmp_path / "one")
    for rank in range(2):
        draw_shard(Shard(rank, 2), request, tmp_path / "sharded", _fake_sample)
    merge_shards(tmp_path / "sharded", world=2)
    rows = read_manifest_csv(tmp_path / "sharded")
    assert rows == read_manifest_csv(tmp_path / "one") and len(rows) == 7
    assert rows[2]["image"] == "sample_00002_seed3.png"  # numbered after the two images already there
    assert _folder(tmp_path / "sharded") == _folder(tmp_path / "one")


def test_a_missing_shard_is_one_error_and_no_manifest(tmp_path):
    request = _request()
    draw_shard(Shard(0, 3), request, tmp_path, _fake_sample)
    draw_shard(Shard(2, 3), request, tmp_path, _fake_sample)
    with pytest.raises(ShardError, match=r"shard\(s\) 1/3 left no shard file in .*manifest.csv not written"):
        merge_shards(tmp_path)
    assert not (tmp_path / MANIFEST_CSV).exists()
    assert shard_file(tmp_path, 0, 3).exists()  # kept, to merge once the missing shard arrives
    draw_shard(Shard(1, 3), request, tmp_path, _fake_sample)
    assert len(merge_shards(tmp_path)) == 5
    with pytest.raises(ShardError, match="no shard files"):
        merge_shards(tmp_path)  # merged once only


def test_a_shard_still_drawing_or_failed_is_refused(tmp_path):
    def failing(request):
        raise RuntimeError("out of memory")

    draw_shard(Shard(0, 2), _request(), tmp_path, _fake_sample)
    with pytest.raises(RuntimeError):
        draw_shard(Shard(1, 2), _request(), tmp_path, failing)
    assert json.loads(shard_file(tmp_path, 1, 2).read_text())["done"] is False  # written before its images
    with pytest.raises(ShardError, match=r"shard 1/2 has not finished .*still drawing, or it failed"):
        merge_shards(tmp_path)
    draw_shard(Shard(1, 2), _request(), tmp_path, _fake_sample)  # run again: numbered as its sibling was
    assert [p.name for p in merge_shards(tmp_path)] == [f"sample_0000{i}_seed{3 + i}.png" for i in range(5)]


def test_shards_of_different_runs_are_refused(tmp_path):
    draw_shard(Shard(0, 2), _request(), tmp_path, _fake_sample)
    draw_shard(Shard(1, 2), _request(seed=4), tmp_path, _fake_sample)
    with pytest.raises(ShardError, match="are of different runs"):
        merge_shards(tmp_path)
    draw_shard(Shard(1, 2), _request(), tmp_path, _fake_sample, {"model_fingerprint": "another model"})
    with pytest.raises(ShardError, match="are of different runs"):
        merge_shards(tmp_path)
    draw_shard(Shard(1, 2), _request(), tmp_path, _fake_sample)  # redrawn: replaces its own shard file
    draw_shard(Shard(0, 3), _request(), tmp_path, _fake_sample)  # a stale file of a 3-process run
    with pytest.raises(ShardError, match="runs of 2 and 3 shards"):
        merge_shards(tmp_path)
    assert len(merge_shards(tmp_path, world=2)) == 5


def test_an_image_missing_after_its_shard_file_is_refused(tmp_path):
    for rank in range(2):
        draw_shard(Shard(rank, 2), _request(), tmp_path, _fake_sample)
    next(tmp_path.glob("sample_00003_*.png")).unlink()
    with pytest.raises(ShardError, match=r"1 image\(s\) the shard files list are not in .*sample_00003_seed6.png"):
        merge_shards(tmp_path)
    assert not (tmp_path / MANIFEST_CSV).exists()


def test_a_shard_file_short_of_images_is_refused(tmp_path):
    for rank in range(2):
        draw_shard(Shard(rank, 2), _request(), tmp_path, _fake_sample)
    path = shard_file(tmp_path, 1, 2)
    body = json.loads(path.read_text())
    body["rows"] = body["rows"][:-1]
    path.write_text(json.dumps(body))
    with pytest.raises(ShardError, match=r"list 4 images, not images 0..4 once each \(missing 4\)"):
        merge_shards(tmp_path)


# --- real runs on the tiny model --------------------------------------------------------------------------------


def _sample_args(model: Path, out: Path, *extra: str) -> list[str]:
    run = [f"--{k.replace('_', '-')}={v}" for k, v in RUN.items()]
    return ["sample", "--model", str(model), "--out", str(out), *run, "--device", "cpu", "--threads", "1", *extra]


def _pixels(folder: Path) -> list[tuple[str, str, bytes]]:
    """(file name, seed, pixel bytes) of every manifest row, in manifest order."""
    return [
        (row["image"], row["seed"], np.asarray(Image.open(folder / row["image"])).tobytes())
        for row in read_manifest_csv(folder)
    ]


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    """`renal-ldm ARGS` in a fresh process. Every run whose pixels are compared gets one, as the launched shards
    do: a long-lived pytest process carries state from earlier tests that changes the CPU kernels' last bits
    (seen on an Intel AMX machine: the full suite's in-process reference differed from fresh processes, while
    fresh processes always agreed with each other)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-m", "renal_ldm", *args], capture_output=True, text=True, timeout=300, env=env
    )


@pytest.fixture(scope="module")
def one_process(tiny_model_dir, tmp_path_factory) -> Path:
    """The reference: the run drawn by one process (one torch thread, as a launcher gives each process)."""
    out = tmp_path_factory.mktemp("one-process") / "out"
    done = _cli([*_sample_args(tiny_model_dir, out), "--no-progress"])
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_one_process_reference_is_four_distinct_images(one_process):
    rows = _pixels(one_process)
    assert [seed for _, seed, _ in rows] == ["11", "12", "13", "14"]
    assert len({pixels for _, _, pixels in rows}) == 4


def test_shards_by_hand_then_merge_equal_one_process(tiny_model_dir, one_process, tmp_path, capsys):
    out = tmp_path / "out"
    done = _cli([*_sample_args(tiny_model_dir, out), "--shard", "1/2", "--no-progress"])
    assert done.returncode == 0, done.stderr[-3000:]
    err = done.stderr
    assert "shard 1/2: images 2-3 of 4 (seeds 13-14) on cpu" in err and "renal-ldm sample --merge DIR" in err
    assert cli_main(["sample", "--merge", str(out)]) == 2
    assert "shard(s) 0/2 left no shard file" in capsys.readouterr().err
    assert not (out / MANIFEST_CSV).exists()
    done = _cli([*_sample_args(tiny_model_dir, out), "--shard", "0/2", "--no-progress"])
    assert done.returncode == 0, done.stderr[-3000:]
    capsys.readouterr()
    assert cli_main(["sample", "--merge", str(out)]) == 0
    listed = capsys.readouterr().out.split()
    assert _pixels(out) == _pixels(one_process)
    assert [Path(p).name for p in listed] == [row["image"] for row in read_manifest_csv(out)]
    assert _folder(out).keys() == _folder(one_process).keys()
    assert [v[1:] for v in _folder(out).values()] == [v[1:] for v in _folder(one_process).values()]  # seed, index


def test_merge_and_shard_flags_are_checked(tiny_model_dir, tmp_path, capsys):
    assert cli_main(["sample", "--merge", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "--merge DIR takes no --shard or --out" in capsys.readouterr().err
    assert cli_main(["sample", "--model", str(tiny_model_dir), "--shard", "2/2", "--out", str(tmp_path / "o")]) == 2
    assert "--shard 2/2: the rank must be in 0..1" in capsys.readouterr().err
    assert cli_main(["sample", "--model", str(tiny_model_dir)]) == 2
    assert "--out DIR is required" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(target: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`accelerate launch` of two processes on the CPU. `--cpu --num_processes 2` would start only one (accelerate's
    simple launcher spreads CPU processes with mpirun only); --multi_gpu starts them through torchrun, GPUs or not."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes=2",
        "--num_machines=1",
        "--mixed_precision=no",
        "--dynamo_backend=no",
        f"--main_process_port={_free_port()}",
        *target,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def test_two_processes_under_accelerate_draw_the_one_process_pixels(tiny_model_dir, one_process, tmp_path):
    out = tmp_path / "out"
    done = _launch(["-m", "renal_ldm", *_sample_args(tiny_model_dir, out, "--no-progress")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "shard 0/2: images 0-1 of 4 (seeds 11-12) on cpu" in done.stderr
    assert "shard 1/2: images 2-3 of 4 (seeds 13-14) on cpu" in done.stderr
    assert "wrote 4 images to" in done.stderr and "from 2 processes" in done.stderr
    assert [Path(p).name for p in done.stdout.split()] == [row["image"] for row in read_manifest_csv(out)]
    assert _pixels(out) == _pixels(one_process)  # the same file names, seeds and bytes, in index order
    assert _folder(out).keys() == _folder(one_process).keys()
    assert [v[1:] for v in _folder(out).values()] == [v[1:] for v in _folder(one_process).values()]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_a_failing_process_stops_the_run_without_a_manifest(tiny_model_dir, tmp_path):
    script = tmp_path / "fail_in_shard_1.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys
            from renal_ldm.sample import Sampler
            if os.environ.get("RANK") == "1":
                def broken(self, *args, **kwargs):
                    raise RuntimeError("injected failure in shard 1")
                Sampler.sample = broken
            from renal_ldm.cli import main
            sys.exit(main())
            """
        )
    )
    out = tmp_path / "out"
    done = _launch([str(script), *_sample_args(tiny_model_dir, out, "--no-progress")])
    assert done.returncode != 0
    assert "injected failure in shard 1" in done.stderr
    assert not (out / MANIFEST_CSV).exists()
