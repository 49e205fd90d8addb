"""Phantom data set speed: pairs per second writing image/mask PNGs and captions.jsonl, against baselines.

Target (issue): 1000 pairs of 256 px in at most 60 s on a 2-core machine, PNG writing included.

Baselines run in the same process, so the ratios hold on any machine: writing the same number of blank
image/mask pairs with the same PNG settings (the I/O floor), and a single-worker run on a subset (what the
worker processes buy). Peak RSS is reported for this process and for the largest worker.

    .venv/bin/python benchmarks/phantom_speed.py                 # 1000 pairs, 256 px, one worker per core
    .venv/bin/python benchmarks/phantom_speed.py --n 200 --single-n 50
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from renal_ldm.cli.phantom_cmd import default_workers
from renal_ldm.data.layout import IMAGE_PNG_LEVEL, IMAGES_DIR, MASK_PNG_LEVEL, MASKS_DIR
from renal_ldm.phantom import file_name, generate_dataset

TARGET_SECONDS, TARGET_PAIRS = 60.0, 1000


def cpu_seconds() -> float:
    """CPU time used so far by this process and its finished children (the workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_dataset(out: Path, n: int, size: int, workers: int) -> tuple[float, float]:
    """Wall and CPU seconds to write a data set of n pairs."""
    start, cpu = time.perf_counter(), cpu_seconds()
    generate_dataset(out, n, size, seed=0, workers=workers)
    return time.perf_counter() - start, cpu_seconds() - cpu


def timed_blank_pairs(out: Path, n: int, size: int) -> float:
    """Write n blank image/mask pairs with the data set's PNG settings: the cost of the files alone."""
    (out / IMAGES_DIR).mkdir(parents=True)
    (out / MASKS_DIR).mkdir(parents=True)
    image = np.full((size, size, 3), 245, dtype=np.uint8)
    mask = np.zeros((size, size), dtype=np.uint8)
    start = time.perf_counter()
    for i in range(n):
        Image.fromarray(image).save(out / IMAGES_DIR / file_name(i), compress_level=IMAGE_PNG_LEVEL)
        Image.fromarray(mask).save(out / MASKS_DIR / file_name(i), compress_level=MASK_PNG_LEVEL)
    return time.perf_counter() - start


def peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # kB on Linux


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=TARGET_PAIRS, help="pairs in the timed data set (default 1000)")
    parser.add_argument("--size", type=int, default=256, help="patch side in pixels (default 256)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="worker processes (default: cores)")
    parser.add_argument("--single-n", type=int, default=100, help="pairs in the single-worker baseline (0: skip)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="phantom-bench-") as tmp:
        tmp = Path(tmp)
        load = os.getloadavg()[0]
        seconds, cpu = timed_dataset(tmp / "multi", args.n, args.size, args.workers)
        blank = timed_blank_pairs(tmp / "blank", args.n, args.size)
        single = timed_dataset(tmp / "single", args.single_n, args.size, 1)[0] if args.single_n > 0 else None
        size_mb = folder_mb(tmp / "multi")

    rate = args.n / seconds
    print(
        f"phantom data set: {args.n} pairs of {args.size} px, {args.workers} worker(s): "
        f"{seconds:.1f} s, {rate:.1f} pairs/s, {size_mb:.0f} MiB written"
    )
    print(
        f"CPU: {1000 * cpu / args.n:.0f} ms per pair (all processes); {cpu / args.workers:.1f} s of wall time "
        f"if {args.workers} cores were free (1-min load average at start: {load:.1f} on {os.cpu_count()} cores)"
    )
    projected = TARGET_PAIRS / rate
    if args.size == 256:
        verdict = "PASS" if projected <= TARGET_SECONDS else "FAIL"
        print(f"target: {TARGET_PAIRS} pairs of 256 px in <= {TARGET_SECONDS:.0f} s -> {projected:.1f} s ({verdict})")
    print(
        f"baseline, {args.n} blank pairs with the same PNG settings: {blank:.2f} s -> "
        f"phantom / blank = {seconds / blank:.1f}x"
    )
    if single is not None:
        single_rate = args.single_n / single
        print(
            f"baseline, single worker on {args.single_n} pairs: {single:.1f} s, {single_rate:.1f} pairs/s -> "
            f"{args.workers}-worker speed-up = {rate / single_rate:.2f}x"
        )
    print(
        f"peak RSS: this process {peak_rss_mb(resource.RUSAGE_SELF):.0f} MiB, "
        f"largest worker {peak_rss_mb(resource.RUSAGE_CHILDREN):.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
