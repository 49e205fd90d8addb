"""The samplers offered over the training noise schedule, in one table: name, label, eta, how to build it.

The CLI, the app and SampleRequest read names and labels from here without importing diffusers (each build
function imports it when called), so `renal-ldm --help` and the app's pages stay quick to start.

    entry = get_scheduler("ddim")          # a ValueError lists the registered names
    sampler = entry.build(ddpm.config)     # a diffusers scheduler over that training schedule
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _ddim(train_config: Any):
    """The reference's DDIM: uniform timesteps 1, 21, ..., 981 for 50 steps; the first step's previous alpha is
    alpha_0, not 1."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(
        train_config,
        timestep_spacing="leading",
        steps_offset=1,
        set_alpha_to_one=False,
        clip_sample=False,
    )


def _dpmpp(train_config: Any):
    """DPM-Solver++ (2nd order): good images in about 20 steps."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler.from_config(
        train_config,
        algorithm_type="dpmsolver++",
        solver_order=2,
        timestep_spacing="linspace",
        final_sigmas_type="zero",
    )


@dataclass(frozen=True)
class SchedulerEntry:
    """One sampler: its name (stored with every sample), the label users see, whether it takes DDIM's eta
    (the share of fresh noise per step), and build(train_scheduler_config) -> a diffusers scheduler."""

    name: str
    label: str
    takes_eta: bool
    build: Callable[[Any], Any]


SCHEDULERS: dict[str, SchedulerEntry] = {
    entry.name: entry
    for entry in (
        SchedulerEntry("ddim", "DDIM", takes_eta=True, build=_ddim),
        SchedulerEntry("dpmpp", "DPM-Solver++", takes_eta=False, build=_dpmpp),
    )
}


def scheduler_names() -> tuple[str, ...]:
    """The registered names, in the order they are offered."""
    return tuple(SCHEDULERS)


def get_scheduler(name: str) -> SchedulerEntry:
    """The entry for a name; a ValueError names it and lists the registered ones."""
    try:
        return SCHEDULERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown scheduler {name!r}; expected one of {', '.join(SCHEDULERS)}") from None


def scheduler_label(name: str) -> str:
    """The label users see; an unregistered name (a sample from an older version) shows as itself."""
    entry = SCHEDULERS.get(name)
    return entry.label if entry is not None else str(name)


def build_sampling_scheduler(name: str, train_scheduler_config: Any):
    """A diffusers sampler of the named kind over the training schedule's config."""
    return get_scheduler(name).build(train_scheduler_config)


def check_eta(name: str, eta: float) -> None:
    """A ValueError when eta is non-zero for a scheduler that does not take it (it would be silently ignored)."""
    if eta != 0 and not get_scheduler(name).takes_eta:
        takers = " or ".join(e.name for e in SCHEDULERS.values() if e.takes_eta)
        raise ValueError(f"eta applies to the {takers} scheduler only; got eta={eta} with {name!r}")


def step_kwargs(name: str, eta: float) -> dict[str, Any]:
    """Extra keyword arguments of scheduler.step for this scheduler (eta only where it applies)."""
    return {"eta": eta} if get_scheduler(name).takes_eta else {}
