"""Windowed sampling above the training size (MultiDiffusion) and tiled decoding: geometry, blending, seeds,
bounded UNet batches, progress and cancel, and seams a user would see."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from renal_ldm.captions import GENERATING_CAPTION
from renal_ldm.models.checkpoint import load_model
from renal_ldm.models.configs import WHOLE_LATENT_FACTOR
from renal_ldm.sample import Sampler, SampleRequest, SamplingCancelled
from renal_ldm.windows import EDGE_WEIGHT, Blender, Window, grid, taper, window_starts

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = 3


@pytest.fixture(scope="module")
def sampler(tiny_model_dir):
    return Sampler(load_model(tiny_model_dir), device="cpu", window_batch=4)


def _request(**kw) -> SampleRequest:
    base = dict(
        caption=GENERATING_CAPTION, n=2, seed=5, steps=STEPS, batch_size=2, size=64, guidance=2.0, windows="always"
    )
    base.update(kw)
    return SampleRequest(**base)


@pytest.mark.parametrize(
    "length,window,stride,expected",
    [(8, 8, 4, [0]), (5, 8, 4, [0]), (16, 8, 4, [0, 4, 8]), (18, 8, 4, [0, 4, 8, 10]), (24, 8, 8, [0, 8, 16])],
)
def test_window_starts_cover_the_canvas_and_end_at_its_edge(length, window, stride, expected):
    assert window_starts(length, window, stride) == expected


def test_a_stride_larger_than_the_window_is_refused():
    with pytest.raises(ValueError, match="stride 9 is larger than the window 8"):
        window_starts(32, 8, 9)


def test_every_cell_is_covered_by_some_window():
    covered = np.zeros((18, 26), bool)
    for w in grid(18, 26, 8, 4):
        covered[w.rows, w.cols] = True
    assert covered.all()


def test_the_taper_is_one_inside_and_small_but_positive_at_the_edges():
    assert taper(16, 4)[4:12, 4:12].eq(1.0).all()  # a plateau inside the overlaps
    weights = taper(8, 4)  # half-window overlap: a tent, highest in the middle
    assert weights[3:5, 3:5].min() == weights.max() and weights[0, 0] == pytest.approx(EDGE_WEIGHT**2)
    assert (weights > 0).all() and torch.equal(weights, weights.T) and torch.equal(weights, weights.flip(0))
    assert torch.equal(taper(8, 0), torch.ones(8, 8))


def test_blending_a_constant_field_gives_the_constant_back():
    blend = Blender((2, 3, 18, 18), taper(8, 4), dtype=torch.float64, device="cpu")
    for w in grid(18, 18, 8, 4):
        blend.add(w, torch.full((2, 3, 8, 8), 0.25, dtype=torch.float64))
    torch.testing.assert_close(blend.result(), torch.full((2, 3, 18, 18), 0.25, dtype=torch.float64))


def test_above_the_training_size_images_come_out_at_the_asked_size_and_follow_their_seeds(sampler):
    a = sampler.sample(_request())
    b = sampler.sample(_request())
    assert a[0].array.shape == (64, 64, 3)
    np.testing.assert_array_equal(a[0].array, b[0].array)
    assert not np.array_equal(a[0].array, a[1].array)
    alone = sampler.sample(_request(n=1, seed=6))[0]
    diff = np.abs(alone.array.astype(int) - a[1].array.astype(int))
    assert diff.max() <= 1  # the same seed drawn alone: the same image, to CPU rounding


def _unet_rows(sampler, monkeypatch) -> list[tuple[int, ...]]:
    """The input shape of every UNet call from now on."""
    shapes: list[tuple[int, ...]] = []
    unet = sampler.model.unet
    real = unet.forward

    def counting(x, *args, **kwargs):
        shapes.append(tuple(x.shape))
        return real(x, *args, **kwargs)

    monkeypatch.setattr(unet, "forward", counting)
    return shapes


def test_unet_calls_stay_within_the_window_batch_whatever_the_size(sampler, monkeypatch):
    shapes = _unet_rows(sampler, monkeypatch)
    sampler.sample(_request(size=96, n=2, steps=1))  # 24 x 24 latents: 25 windows x 2 branches x 2 images
    assert len(shapes) == 100 // 4 and max(s[0] for s in shapes) == 4


def test_auto_denoises_up_to_twice_the_training_size_whole_and_windows_above(sampler, monkeypatch):
    assert sampler.model.config.image_size == 32 and WHOLE_LATENT_FACTOR == 2
    shapes = _unet_rows(sampler, monkeypatch)
    whole = sampler.sample(_request(windows="auto", n=2))  # 64 px: 16 x 16 latents in one call per step
    assert shapes == [(4, 3, 16, 16)] * STEPS  # 2 guidance branches x 2 images, the whole 3-channel latent
    assert whole[0].array.shape == (64, 64, 3)
    assert whole[0].params["windows"] == "auto" and whole[0].params["windowed"] is False
    shapes.clear()
    windowed = sampler.sample(_request(windows="auto", n=1, size=96))  # 3x: 24 x 24 latents in 8 x 8 windows
    assert shapes and {s[-2:] for s in shapes} == {(8, 8)}
    assert windowed[0].array.shape == (96, 96, 3) and windowed[0].params["windowed"] is True


def test_a_whole_latent_image_follows_its_seed_whatever_batch_it_was_drawn_in(sampler):
    batch = sampler.sample(_request(windows="auto", n=2))
    alone = sampler.sample(_request(windows="auto", n=1, seed=6))[0]
    assert np.abs(alone.array.astype(int) - batch[1].array.astype(int)).max() <= 1
    assert not np.array_equal(batch[0].array, batch[1].array)


def test_an_unknown_window_mode_is_refused_with_the_modes(sampler):
    with pytest.raises(ValueError, match=r"windows must be one of auto, always; got 'tiles'"):
        sampler.sample(_request(windows="tiles"))


def test_windowed_sampling_reports_progress_and_can_be_cancelled(sampler):
    seen: list[tuple[int, int]] = []
    sampler.sample(_request(n=1), progress=lambda done, total: seen.append((done, total)))
    assert seen == [(k, STEPS) for k in range(1, STEPS + 1)]
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(SamplingCancelled):
        sampler.sample(_request(n=1), cancel=cancel)


def test_tiled_decoding_of_the_shipped_autoencoder_reconstructs_as_well_as_decoding_whole():
    """A 512 px phantom through the shipped VQ autoencoder: decoded in 256 px tiles (decode_tile 64) it must be
    as close to the phantom as decoded whole (each tile has its own GroupNorm statistics and edge padding)."""
    from renal_ldm.paths import SHIPPED_DEMO_MODEL
    from renal_ldm.phantom import generate_phantom
    from renal_ldm.sample import to_uint8

    demo = Sampler(load_model(SHIPPED_DEMO_MODEL), device="cpu", decode_tile=64)
    original = np.asarray(generate_phantom(512, seed=3).image).astype(float)
    image = torch.from_numpy(original.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    with torch.inference_mode():
        latents = demo.model.vae.encode(image).latents * demo.model.config.autoencoder.scaling_factor
        tiled = demo.decode(latents)[0].astype(float)
        whole = to_uint8(demo._decode(latents / demo.model.config.autoencoder.scaling_factor))[0].astype(float)

    def psnr(x: np.ndarray) -> float:
        return float(10 * np.log10(255**2 / ((x - original) ** 2).mean()))

    assert tiled.shape == (512, 512, 3)
    assert psnr(tiled) > psnr(whole) - 0.5, (psnr(tiled), psnr(whole))
    assert Sampler(demo.model, device="cpu").decode_tile * 4 >= 512  # by default 512 px images decode whole


def test_a_window_maps_to_its_pixels():
    w = Window(2, 3, 4)
    assert (w.rows, w.cols) == (slice(2, 6), slice(3, 7))


def test_a_margin_is_denoised_and_cropped_off_leaving_the_asked_size(sampler, monkeypatch):
    shapes = _unet_rows(sampler, monkeypatch)
    framed = sampler.sample(_request(windows="auto", n=1, size=32, margin=8))[0]
    assert shapes[0][-2:] == (12, 12)  # (32 + 2 x 8) px / 4: the margin is denoised too
    assert framed.array.shape == (32, 32, 3) and framed.params["margin"] == 8
    larger = sampler.sample(_request(windows="auto", n=1, size=48))[0]
    np.testing.assert_array_equal(framed.array, larger.array[8:-8, 8:-8])  # the centre of the larger image


def test_a_late_margin_joins_for_the_last_steps_only_and_is_cropped_off_the_latent(sampler, monkeypatch):
    shapes = _unet_rows(sampler, monkeypatch)
    request = _request(windows="auto", n=1, size=32, margin=4, margin_late=True, steps=10)
    late = sampler.sample(request)[0]
    # DDIM 10 steps: t = 901, 801, ..., 101, 1; below 0.2 x 1000 the latent gains one mirrored cell per side
    assert shapes == [(2, 3, 8, 8)] * 8 + [(2, 3, 10, 10)] * 2
    assert late.array.shape == (32, 32, 3) and late.params["margin_late"] is True
    plain = sampler.sample(_request(windows="auto", n=1, size=32, steps=10))[0]
    assert not np.array_equal(late.array, plain.array)  # the last steps saw the margin
    again = sampler.sample(SampleRequest(**{**_request().__dict__, **_regenerate(late.params)}))[0]
    np.testing.assert_array_equal(again.array, late.array)  # the sidecar's parameters draw it again


def _regenerate(params: dict) -> dict:
    keys = ("caption", "seed", "steps", "guidance", "scheduler", "eta", "size", "windows", "margin", "margin_late")
    return {**{k: params[k] for k in keys}, "n": 1}


@pytest.mark.parametrize("scheduler,steps,windows,size", [("dpmpp", 6, "auto", 32), ("ddim", 4, "always", 64)])
def test_a_late_margin_works_with_a_multistep_scheduler_and_with_windows(sampler, scheduler, steps, windows, size):
    request = _request(scheduler=scheduler, steps=steps, windows=windows, size=size, margin=4, margin_late=True)
    results = sampler.sample(request)
    assert [r.array.shape for r in results] == [(size, size, 3)] * 2
    assert all(np.isfinite(r.array).all() and r.array.std() > 0 for r in results)


def test_a_late_margin_without_a_margin_is_refused(sampler):
    with pytest.raises(ValueError, match="True only with a margin > 0; got True with margin 0"):
        sampler.sample(_request(size=32, margin_late=True))


@pytest.mark.parametrize("margin", [3, -4, 40])
def test_a_margin_that_breaks_the_size_multiple_or_exceeds_the_image_is_refused(sampler, margin):
    with pytest.raises(ValueError, match=rf"margin {margin} px: expected a whole multiple of 4 px"):
        sampler.sample(_request(size=32, margin=margin))


def test_a_margin_does_not_tip_an_image_of_twice_the_training_size_into_windows(sampler, monkeypatch):
    shapes = _unet_rows(sampler, monkeypatch)
    result = sampler.sample(_request(windows="auto", n=1, size=64, margin=4, steps=1))[0]
    assert shapes == [(2, 3, 18, 18)] and result.params["windowed"] is False
    assert result.array.shape == (64, 64, 3)
