"""The sampler registry: every entry builds over the training schedule and steps; eta only where it applies."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from renal_ldm.models.build import build_noise_scheduler
from renal_ldm.models.configs import SAMPLING, get_config
from renal_ldm.models.schedulers import (
    SCHEDULERS,
    build_sampling_scheduler,
    check_eta,
    get_scheduler,
    scheduler_label,
    scheduler_names,
    step_kwargs,
)


@pytest.fixture(scope="module")
def train_config():
    return build_noise_scheduler(get_config("tiny")).config


@pytest.mark.parametrize("name", scheduler_names())
def test_every_registered_scheduler_builds_and_steps(name, train_config):
    scheduler = build_sampling_scheduler(name, train_config)
    scheduler.set_timesteps(5)
    assert len(scheduler.timesteps) == 5
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 3, 4, 4, generator=generator) * scheduler.init_noise_sigma
    eta = 0.5 if get_scheduler(name).takes_eta else 0.0
    for t in scheduler.timesteps:
        eps = torch.zeros_like(latents)
        latents = scheduler.step(eps, t, latents, generator=generator, **step_kwargs(name, eta)).prev_sample
    assert latents.shape == (1, 3, 4, 4) and torch.isfinite(latents).all()


def test_the_default_scheduler_is_registered_and_labels_are_user_facing():
    assert SAMPLING.scheduler in SCHEDULERS
    assert [scheduler_label(n) for n in scheduler_names()] == ["DDIM", "DPM-Solver++"]
    assert scheduler_label("euler") == "euler"  # an older sample's name shows as itself


def test_eta_is_refused_where_it_does_not_apply():
    no_eta = [n for n in scheduler_names() if not get_scheduler(n).takes_eta]
    assert no_eta, "expected at least one scheduler without eta"
    for name in no_eta:
        with pytest.raises(ValueError, match=rf"eta applies to the ddim scheduler only; got eta=0.5 with '{name}'"):
            check_eta(name, 0.5)
        check_eta(name, 0.0)  # zero is the same as not giving it
        assert step_kwargs(name, 0.0) == {}
    check_eta("ddim", 0.5)
    assert step_kwargs("ddim", 0.3) == {"eta": 0.3}


def test_an_unknown_name_lists_the_registered_ones(train_config):
    for call in (lambda: get_scheduler("euler"), lambda: build_sampling_scheduler("euler", train_config)):
        with pytest.raises(ValueError, match="unknown scheduler 'euler'; expected one of ddim, dpmpp"):
            call()


def test_reading_names_does_not_import_diffusers():
    code = (
        "import sys, renal_ldm.cli, renal_ldm.models.schedulers as s; renal_ldm.cli.build_parser(); "
        "s.scheduler_names(); s.scheduler_label('ddim'); print('diffusers' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
