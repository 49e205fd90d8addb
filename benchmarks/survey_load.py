"""Survey under load: N participants answer every image at once, each in its own browser session, on loopback.

    .venv/bin/python benchmarks/survey_load.py [--participants 20] [--images 40] [--database-url URL]
        [--think 0.5] [--timeout 900]

What it does, all with the product's own code and nothing off this machine:
- creates an open phantom-only demo survey of --images images (`renal-ldm survey-demo --phantom-only`) in a
  fresh data directory, in a fresh SQLite file or in the database --database-url names (PostgreSQL: the survey
  is new, other rows are left alone);
- starts the app (`streamlit run app/main.py`, survey-only mode, as a survey is hosted) on a free 127.0.0.1
  port, and one headless Debian Chromium (/usr/bin/chromium) through Playwright;
- baseline: one participant takes the survey alone; then --participants participants take it at once, each in
  its own browser context: experience question, every image (Real or Synthetic, seeded), the strategy;
- click-to-next-image latency: from the click until the next image's "n / N" progress text (or the strategy
  question after the last image) is on the page. A participant waits --think seconds before each click
  (the page ignores clicks within 0.4 s of drawing an image: its double-click guard); the wait is not counted;
- afterwards reads the database: answers stored of participants x images (must be all), lost (the page showed
  the next image but the answer has no row, must be 0), duplicates (more than one answer of one participant to
  one image, must be 0), participants not finished; answers never given because a browser failed are counted
  apart and make the run fail too.
Prints p50 / p95 / max latency, answers per second, the app server's CPU time (how many cores it kept
busy), the 1-minute load average before and after, and the ratio of the concurrent p50 to the baseline p50
(same process, same server). Exit status 1 when an answer is lost or duplicated or a participant did not finish.

The latency includes the browser's own work: on a small machine the N Chromium renderers share the cores with
the server, so read the figures beside the load printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))

from helpers import CHROMIUM, CHROMIUM_ARGS, start_app_server, stop_app_server  # noqa: E402  (path set above)

MAX_PARTICIPANTS = 60
CLICK_TIMEOUT_S = 20.0  # a click that did not advance the page by then is repeated (at most CLICK_TRIES times)
CLICK_TRIES = 3
APP_IDLE_JS = """() => {
  const app = document.querySelector("[data-testid='stApp']");
  return app !== null && app.getAttribute('data-test-script-state') === 'notRunning'
    && app.getAttribute('data-test-connection-state') === 'CONNECTED';
}"""


@dataclass
class Run:
    """One participant's browser session and what it measured."""

    index: int
    resume_token: str | None = None
    latencies: list[float] = field(default_factory=list)  # one per answer the page confirmed
    repeated_clicks: int = 0
    error: str | None = None


def create_survey(images: int, env: dict[str, str]) -> str:
    """An open phantom-only demo survey of `images` images, through the CLI; returns its token."""
    if images < 2 or images % 2:
        raise SystemExit(f"--images must be an even number >= 2 (half real, half synthetic), got {images}")
    done = subprocess.run(
        [sys.executable, "-m", "renal_ldm", "survey-demo", "--phantom-only", "--n", str(images // 2), "--no-progress"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"participant link: \?survey=(\S+)", done.stdout)
    if done.returncode != 0 or match is None:
        raise SystemExit(f"survey-demo failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return match.group(1)


async def take_survey(browser, link: str, images: int, think: float, run: Run) -> None:
    """One participant, start to finish, in a browser context of its own."""
    rng = random.Random(run.index)
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(60_000)
    try:
        page = await context.new_page()
        await page.goto(link)
        await page.wait_for_function(APP_IDLE_JS)
        await page.locator("[data-testid='stRadio'] label").filter(has_text=re.compile(r"^3\b")).first.click()
        await page.get_by_role("button", name="Start the survey").click()
        await page.get_by_text(f"1 / {images}", exact=True).wait_for()
        run.resume_token = parse_qs(urlsplit(page.url).query)["resume"][0]
        for number in range(1, images + 1):
            label = rng.choice(["Real", "Synthetic"])
            after = (
                page.get_by_text(f"{number + 1} / {images}", exact=True)
                if number < images
                else page.get_by_text("did you notice any patterns", exact=False)
            )
            for attempt in range(CLICK_TRIES):
                # A person clicks a settled page: mid-redraw Streamlit still shows the previous image's buttons.
                await page.wait_for_function(APP_IDLE_JS)
                await asyncio.sleep(think)
                start = time.perf_counter()
                await page.get_by_role("button", name=label, exact=True).click()
                try:
                    await after.wait_for(timeout=CLICK_TIMEOUT_S * 1000)
                except Exception:
                    if attempt == CLICK_TRIES - 1:
                        raise
                    run.repeated_clicks += 1
                    continue
                run.latencies.append(time.perf_counter() - start)
                break
        await page.get_by_label(re.compile("did you notice any patterns")).fill(f"participant {run.index}")
        await page.get_by_role("button", name="Finish").click()
        await page.get_by_text("Thank you for taking part", exact=False).wait_for()
    except Exception as exc:  # noqa: BLE001 - reported per participant; the database check still runs
        run.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        await context.close()


async def run_phase(browser, link: str, images: int, think: float, first: int, count: int) -> tuple[list[Run], float]:
    runs = [Run(first + i) for i in range(count)]
    start = time.perf_counter()
    await asyncio.gather(*(take_survey(browser, link, images, think, r) for r in runs))
    return runs, time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(link: str, images: int, participants: int, think: float, server_pid: int) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            cpu_start = cpu_seconds(server_pid)
            alone = await run_phase(browser, link, images, think, 0, 1)
            load_before, cpu_between = os.getloadavg()[0], cpu_seconds(server_pid)
            together = await run_phase(browser, link, images, think, 1, participants)
            load_after, cpu_end = os.getloadavg()[0], cpu_seconds(server_pid)
        finally:
            await browser.close()
    return {
        "alone": alone,
        "together": together,
        "load": (load_before, load_after),
        "server_cpu": (cpu_between - cpu_start, cpu_end - cpu_between),
    }


def database_check(token: str, url: str, runs: list[Run], images: int) -> dict[str, int]:
    """From the database itself: answers stored, lost (the page moved on but no row), duplicated, unfinished."""
    from db import repository as repo

    survey = repo.get_survey_by_token(token, url=url)
    pairs = [(r.participant_id, r.item_public_id) for r in repo.survey_answers(survey.id, url=url)]
    stored: dict[int, int] = {}
    for participant_id, _item in set(pairs):
        stored[participant_id] = stored.get(participant_id, 0) + 1
    lost = 0
    for run in runs:
        if run.resume_token is not None:
            participant_id = repo.get_participant(run.resume_token, url=url).id
            lost += max(0, len(run.latencies) - stored.get(participant_id, 0))
    survey = repo.get_survey(survey.id, url=url)
    return {
        "expected": len(runs) * images,
        "stored": len(set(pairs)),
        "lost": lost,
        "unanswered": len(runs) * images - sum(len(r.latencies) for r in runs),
        "duplicates": len(pairs) - len(set(pairs)),
        "not_finished": survey.participant_count - survey.finished_count,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--participants", type=int, default=20, help=f"at once (default 20, at most {MAX_PARTICIPANTS})"
    )
    parser.add_argument("--images", type=int, default=40, help="images in the survey (even; default 40)")
    parser.add_argument("--database-url", help="database (default: a fresh SQLite file in a temporary data dir)")
    parser.add_argument("--think", type=float, default=0.5, help="seconds a participant looks before clicking")
    parser.add_argument("--timeout", type=float, default=900, help="give up after this many seconds (default 900)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory (server log)")
    args = parser.parse_args()
    if not 1 <= args.participants <= MAX_PARTICIPANTS:
        parser.error(f"--participants must be 1..{MAX_PARTICIPANTS}, got {args.participants}")
    if not Path(CHROMIUM).exists():
        parser.error(f"Debian chromium not found at {CHROMIUM}: apt-get install chromium")

    from db.session import database_url, masked_url

    home = Path(tempfile.mkdtemp(prefix="renal_ldm_survey_load_"))
    url = database_url(args.database_url or f"sqlite:///{home / 'renal_ldm.sqlite3'}")
    env = {**os.environ, "RENAL_LDM_HOME": str(home), "DATABASE_URL": url, "HF_HUB_OFFLINE": "1"}
    print(f"database: {masked_url(url)}; data dir: {home}")
    print(f"machine: {os.cpu_count()} CPUs, 1-min load {os.getloadavg()[0]:.2f} at start")
    token = create_survey(args.images, env)
    server = start_app_server(home, extra_env={"DATABASE_URL": url, "RENAL_LDM_SURVEY_ONLY": "1"})
    try:
        link = f"{server.url}/?survey={token}"
        result = asyncio.run(
            asyncio.wait_for(drive(link, args.images, args.participants, args.think, server.process.pid), args.timeout)
        )
    finally:
        stop_app_server(server)
    check = database_check(token, url, result["alone"][0] + result["together"][0], args.images)
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)

    (alone, alone_s), (together, together_s) = result["alone"], result["together"]
    base = [x for r in alone for x in r.latencies]
    all_ = [x for r in together for x in r.latencies]
    errors = [f"participant {r.index}: {r.error}" for r in alone + together if r.error]
    print(f"\n{args.participants} participants x {args.images} images at once (think {args.think} s per image)")
    print(f"1-min load: {result['load'][0]:.2f} before, {result['load'][1]:.2f} after the concurrent phase")
    phases = (
        ("alone", base, alone_s, alone, result["server_cpu"][0]),
        ("at once", all_, together_s, together, result["server_cpu"][1]),
    )
    for name, values, seconds, runs, server_cpu in phases:
        if values:
            print(
                f"{name:>8}: click-to-next p50 {statistics.median(values) * 1000:.0f} ms, "
                f"p95 {percentile(values, 0.95) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms; "
                f"{len(values)} answers in {seconds:.1f} s (start to finish) = {len(values) / seconds:.1f} answers/s; "
                f"repeated clicks {sum(r.repeated_clicks for r in runs)}; "
                f"server CPU {server_cpu:.1f} s ({server_cpu / seconds:.2f} cores, "
                f"{server_cpu / len(values) * 1000:.0f} ms per answer)"
            )
    if base and all_:
        print(
            f"   ratio: p50 at once / p50 alone = {statistics.median(all_) / statistics.median(base):.2f}x, "
            f"p95 = {percentile(all_, 0.95) / percentile(base, 0.95):.2f}x"
        )
    print(
        f"database: {check['stored']} of {check['expected']} answers stored (baseline included); lost "
        f"{check['lost']} (the page went on, no row), duplicates {check['duplicates']}, participants not finished "
        f"{check['not_finished']}, never answered {check['unanswered']} (browser errors below)"
    )
    for line in errors:
        print(f"error: {line}")
    clean = check["stored"] == check["expected"] and not check["duplicates"] and not check["not_finished"]
    return 0 if clean and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
