"""Sampling: seeds, batch independence, fused CFG, save/load, captions from levels, sizes, cancel, bad input."""

from __future__ import annotations

import json
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from renal_ldm.captions import GENERATING_CAPTION, levels_to_caption, parse_levels_spec
from renal_ldm.cli import main as cli_main
from renal_ldm.models.checkpoint import load_model, save_model
from renal_ldm.sample import (
    MAX_STEPS,
    Sampler,
    SampleRequest,
    SamplingCancelled,
    read_manifest_csv,
    resolve_model_dir,
    write_samples,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


STEPS = 4


@pytest.fixture(scope="module")
def sampler(tiny_model_dir):
    return Sampler(load_model(tiny_model_dir), device="cpu", exact_batches=True)


def _request(**kw) -> SampleRequest:
    base = dict(caption=GENERATING_CAPTION, n=2, seed=3, steps=STEPS, batch_size=2)
    base.update(kw)
    return SampleRequest(**base)


def test_same_seed_same_images_and_different_seeds_differ(sampler):
    a = sampler.sample(_request())
    b = sampler.sample(_request())
    c = sampler.sample(_request(seed=100))
    assert [r.seed for r in a] == [3, 4]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.array, y.array)
    assert not np.array_equal(a[0].array, a[1].array)
    assert not np.array_equal(a[0].array, c[0].array)
    assert a[0].array.dtype == np.uint8 and a[0].array.shape == (32, 32, 3)
    assert a[0].image.size == (32, 32)


@pytest.mark.parametrize("scheduler,eta", [("ddim", 0.0), ("ddim", 0.7), ("dpmpp", 0.0)])
def test_image_regenerated_alone_equals_its_batch_version(sampler, scheduler, eta):
    batch = sampler.sample(_request(n=5, batch_size=4, scheduler=scheduler, eta=eta))
    for i in (0, 2, 4):
        alone = sampler.sample(_request(n=1, seed=3 + i, scheduler=scheduler, eta=eta))[0]
        assert alone.seed == batch[i].seed
        np.testing.assert_array_equal(alone.array, batch[i].array)


def test_regenerated_alone_equals_batch_at_the_default_thread_count(sampler, one_torch_thread):
    torch.set_num_threads(one_torch_thread)  # the count users run with (kernels differ by thread count)
    try:
        batch = sampler.sample(_request(n=3, batch_size=3))
        alone = sampler.sample(_request(n=1, seed=5))[0]
    finally:
        torch.set_num_threads(1)
    np.testing.assert_array_equal(alone.array, batch[2].array)


def test_eta_noise_changes_the_images(sampler):
    a = sampler.sample(_request(n=1))[0]
    b = sampler.sample(_request(n=1, eta=1.0))[0]
    assert not np.array_equal(a.array, b.array)


def test_batched_cfg_equals_two_separate_passes(sampler):
    request = _request(n=3, batch_size=3, guidance=2.5).validated(sampler.model)
    cond, uncond = sampler.encode_captions(request.caption)
    with torch.inference_mode():
        fused = sampler.denoise(request, [0, 1, 2], cond, uncond)
    # Reference: the same loop with the conditional and unconditional passes as two UNet calls.
    from renal_ldm.models.build import build_sampling_scheduler

    unet, g = sampler.model.unet, request.guidance
    gens = [torch.Generator().manual_seed(request.seed + i) for i in range(3)]
    latents = torch.cat([torch.randn((1, 3, 8, 8), generator=x) for x in gens])
    sched = build_sampling_scheduler("ddim", sampler.model.noise_scheduler.config)
    sched.set_timesteps(request.steps)
    with torch.no_grad():
        for t in sched.timesteps:
            eps_c = unet(latents, t, encoder_hidden_states=cond.context.expand(3, -1, -1)).sample
            eps_u = unet(latents, t, encoder_hidden_states=uncond.context.expand(3, -1, -1)).sample
            latents = sched.step(eps_u + g * (eps_c - eps_u), t, latents, eta=0.0).prev_sample
    scale = max(1.0, latents.abs().max().item())  # random weights give latents of order 10
    assert (fused - latents).abs().max().item() < 1e-5 * scale


def test_text_kv_cache_leaves_pixels_unchanged(sampler, tiny_model_dir):
    plain = Sampler(load_model(tiny_model_dir), device="cpu", cache_context=False, exact_batches=True)
    for x, y in zip(sampler.sample(_request(n=3)), plain.sample(_request(n=3)), strict=True):
        np.testing.assert_array_equal(x.array, y.array)
    # Layouts differ in float rounding only (oneDNN picks other kernels for NCHW).
    nchw = Sampler(load_model(tiny_model_dir), device="cpu", channels_last=False, exact_batches=True)
    for x, y in zip(sampler.sample(_request(n=3)), nchw.sample(_request(n=3)), strict=True):
        assert np.abs(x.array.astype(int) - y.array).max() <= 1


def test_guidance_one_runs_only_the_conditional_half(sampler):
    calls = []
    handle = sampler.model.unet.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    try:
        sampler.sample(_request(n=4, batch_size=4, guidance=1.0))
        assert calls == [4] * STEPS
        calls.clear()
        sampler.sample(_request(n=4, batch_size=4, guidance=1.5))
        assert calls == [8] * STEPS  # one fused call per step
    finally:
        handle.remove()


def test_save_load_gives_identical_samples(sampler, tiny_model_dir, tmp_path):
    again = save_model(tmp_path / "copy", load_model(tiny_model_dir))
    other = Sampler(load_model(again), device="cpu", exact_batches=True)
    for x, y in zip(sampler.sample(_request()), other.sample(_request()), strict=True):
        np.testing.assert_array_equal(x.array, y.array)


def test_double_size_from_a_model_trained_smaller(sampler):
    result = sampler.sample(_request(n=1, size=64))[0]
    assert result.array.shape == (64, 64, 3)
    assert result.params["size"] == 64


def test_every_allowed_step_count_stays_inside_the_training_schedule(sampler):
    from renal_ldm.models.build import build_sampling_scheduler

    train = sampler.model.noise_scheduler.config
    for name in ("ddim", "dpmpp"):
        scheduler = build_sampling_scheduler(name, train)
        scheduler.set_timesteps(MAX_STEPS)
        assert 0 <= int(scheduler.timesteps.min()) and int(scheduler.timesteps.max()) < train.num_train_timesteps, name


def test_cancel_raises_promptly_and_progress_is_monotonic(sampler):
    cancel = threading.Event()
    seen: list[tuple[int, int]] = []

    def progress(done, total):
        seen.append((done, total))
        if done == 2:
            cancel.set()

    with pytest.raises(SamplingCancelled):
        sampler.sample(_request(n=4, batch_size=2, steps=10), progress=progress, cancel=cancel)
    assert seen == [(1, 20), (2, 20)]  # stopped at the next step check

    seen.clear()
    sampler.sample(_request(n=3, batch_size=2), progress=lambda d, t: seen.append((d, t)))
    assert [d for d, _ in seen] == list(range(1, 2 * STEPS + 1))
    assert {t for _, t in seen} == {2 * STEPS}


def test_write_samples_sidecars_and_manifest(sampler, tiny_model_dir, tmp_path):
    results = sampler.sample(_request())
    paths = write_samples(results, tmp_path)
    more = write_samples(results[:1], tmp_path)  # appends, never overwrites
    assert len({p.name for p in paths + more}) == 3
    side = json.loads(paths[1].with_suffix(".json").read_text())
    assert side["seed"] == 4 and side["caption"] == GENERATING_CAPTION and side["steps"] == STEPS
    assert side["scheduler"] == "ddim" and side["guidance"] == 1.5 and side["eta"] == 0.0 and side["size"] == 32
    assert side["model"] == str(tiny_model_dir) and side["model_fingerprint"]
    assert "renal_ldm_version" in side
    rows = read_manifest_csv(tmp_path)
    assert [r["seed"] for r in rows] == ["3", "4", "3"]
    assert rows[0]["caption"] == GENERATING_CAPTION


def test_cli_levels_give_exactly_the_captions_module_caption(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli_main(
        [
            "sample",
            "--model",
            str(tiny_model_dir),
            "--levels",
            "glomeruli=high,Tubuli=medium",
            "--n",
            "2",
            "--steps",
            "2",
            "--seed",
            "5",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    expected = levels_to_caption(parse_levels_spec("Glomeruli=high,Tubuli=medium"))
    assert expected == GENERATING_CAPTION
    rows = read_manifest_csv(out)
    assert [r["caption"] for r in rows] == [expected, expected]
    assert [r["seed"] for r in rows] == ["5", "6"]
    side = json.loads((out / rows[0]["image"]).with_suffix(".json").read_text())
    assert side["caption"] == expected and side["steps"] == 2


def test_cli_margin_and_window_mode_give_the_asked_size_and_are_recorded(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    args = ["sample", "--model", str(tiny_model_dir), "--size", "64", "--margin", "4", "--windows", "always"]
    assert cli_main([*args, "--n", "1", "--steps", "1", "--out", str(out), "--no-progress"]) == 0
    row = read_manifest_csv(out)[0]
    assert Image.open(out / row["image"]).size == (64, 64)
    side = json.loads((out / row["image"]).with_suffix(".json").read_text())
    assert (side["margin"], side["windows"], side["windowed"]) == (4, "always", True)


def test_cli_late_margin_is_recorded(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    args = ["sample", "--model", str(tiny_model_dir), "--size", "32", "--margin", "4", "--late-margin"]
    assert cli_main([*args, "--n", "1", "--steps", "2", "--out", str(out), "--no-progress"]) == 0
    row = read_manifest_csv(out)[0]
    assert Image.open(out / row["image"]).size == (32, 32)
    side = json.loads((out / row["image"]).with_suffix(".json").read_text())
    assert (side["margin"], side["margin_late"]) == (4, True)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--caption", "x", "--levels", "Glomeruli=high"], "not allowed with"),
        (["--windows", "tiles"], "invalid choice: 'tiles' (choose from"),
        (["--margin", "5"], "margin 5 px: expected a whole multiple of 4 px"),
        (["--late-margin"], "True only with a margin > 0; got True with margin 0"),
        (["--levels", "Glomerulus=high"], "Glomerulus"),
        (["--levels", "Glomeruli=huge"], "huge"),
        (["--size", "36"], "multiple of 8"),
        (["--n", "0"], "n (number of images) must be an integer >= 1"),
        (["--scheduler", "euler"], "unknown scheduler 'euler'"),
        (["--guidance", "-1"], "guidance scale must be"),
        (["--steps", "0"], "steps must be"),
        (["--scheduler", "dpmpp", "--eta", "0.5"], "eta applies to the ddim scheduler only"),
    ],
)
def test_cli_bad_inputs_give_clear_errors(tiny_model_dir, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) if "not allowed" in message or "invalid choice" in message else _no_raise():
        code = cli_main(["sample", "--model", str(tiny_model_dir), "--out", str(tmp_path / "o"), *args])
        assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_cli_missing_model_dir(tmp_path, capsys):
    assert cli_main(["sample", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "model directory not found" in capsys.readouterr().err


def test_missing_demo_model_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setenv("RENAL_LDM_DEMO_MODEL", str(tmp_path / "models" / "demo"))
    with pytest.raises(FileNotFoundError, match="demo model is missing.*renal-ldm train"):
        resolve_model_dir(None)


def test_autoencoder_only_checkpoint_is_refused(tiny_model_dir, tmp_path):
    ae = load_model(tiny_model_dir)
    ae.unet = None
    save_model(tmp_path / "ae", ae)
    with pytest.raises(ValueError, match="no denoising UNet"):
        Sampler.from_dir(tmp_path / "ae", device="cpu")


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_by_default_an_image_drawn_alone_matches_its_batch_version_to_one_grey_level(tiny_model_dir):
    fast = Sampler(load_model(tiny_model_dir), device="cpu")  # no padding rows: a lone image costs 2 rows
    batch = fast.sample(_request(n=4, batch_size=4))
    alone = fast.sample(_request(n=1, seed=3 + 2))[0]
    assert np.abs(alone.array.astype(int) - batch[2].array.astype(int)).max() <= 1


def test_bf16_sampling_stays_close_to_fp32_where_the_cpu_has_native_bf16(tiny_model_dir):
    from renal_ldm.sample import bf16_supported

    if not bf16_supported(torch.device("cpu")):
        with pytest.raises(ValueError, match="precision bf16 needs native bf16"):
            Sampler(load_model(tiny_model_dir), device="cpu", precision="bf16")
        pytest.skip("this CPU has no native bf16 (avx512_bf16 or AMX)")
    fp32 = Sampler(load_model(tiny_model_dir), device="cpu").sample(_request(n=1))[0].array.astype(float)
    sampler = Sampler(load_model(tiny_model_dir), device="cpu", precision="bf16")
    dtypes: set[torch.dtype] = set()
    sampler.model.unet.register_forward_hook(lambda module, args, out: dtypes.add(out.sample.dtype))
    bf16 = sampler.sample(_request(n=1))[0]
    assert dtypes == {torch.bfloat16}  # the UNet really ran in bf16 (its uint8 image may still equal fp32's)
    assert bf16.array.dtype == np.uint8
    mse = ((bf16.array.astype(float) - fp32) ** 2).mean()
    # the random tiny model; the demo model's figure is in its README
    assert mse == 0 or 10 * np.log10(255**2 / mse) > 25


def test_an_unknown_precision_is_named():
    with pytest.raises(ValueError, match="unknown precision 'fp8'; expected one of fp32, bf16"):
        from renal_ldm.sample import check_precision

        check_precision("fp8", torch.device("cpu"))


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_native_and_each_image_records_what_it_ran_in(
    tiny_model_dir, monkeypatch, native
):
    import renal_ldm.sample as sample_module

    monkeypatch.setattr(sample_module, "bf16_supported", lambda device: native)
    sampler = Sampler(load_model(tiny_model_dir), device="cpu", precision="auto")
    dtypes: set[torch.dtype] = set()
    sampler.model.unet.register_forward_hook(lambda module, args, out: dtypes.add(out.sample.dtype))
    result = sampler.sample(_request(n=1, steps=2))[0]
    expected = "bf16" if native else "fp32"
    assert sampler.precision == expected and result.params["precision"] == expected
    assert dtypes == {torch.bfloat16 if native else torch.float32}


def test_a_request_may_name_its_own_precision_over_the_samplers(tiny_model_dir, monkeypatch):
    """The app draws a Library sample again in the precision it was made in, whatever its own setting."""
    import renal_ldm.sample as sample_module

    monkeypatch.setattr(sample_module, "bf16_supported", lambda device: True)
    sampler = Sampler(load_model(tiny_model_dir), device="cpu")  # fp32, the library's default
    dtypes: set[torch.dtype] = set()
    sampler.model.unet.register_forward_hook(lambda module, args, out: dtypes.add(out.sample.dtype))
    own = sampler.sample(replace(_request(n=1, steps=2), precision="BF16"))[0]
    assert own.params["precision"] == "bf16" and dtypes == {torch.bfloat16}
    dtypes.clear()
    assert sampler.sample(_request(n=1, steps=2))[0].params["precision"] == "fp32" and dtypes == {torch.float32}


def test_a_bf16_request_where_bf16_is_not_native_is_refused_before_any_work(tiny_model_dir, monkeypatch):
    import renal_ldm.sample as sample_module

    monkeypatch.setattr(sample_module, "bf16_supported", lambda device: False)
    sampler = Sampler(load_model(tiny_model_dir), device="cpu")
    calls = []
    sampler.model.unet.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError, match="precision bf16 needs native bf16 on cpu"):
        sampler.sample(replace(_request(n=1, steps=2), precision="bf16"))
    with pytest.raises(ValueError, match="unknown precision 'fp8'; expected one of fp32, bf16, auto"):
        sampler.sample(replace(_request(n=1, steps=2), precision="fp8"))
    assert calls == []
