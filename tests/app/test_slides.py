"""Slides: registering a slide file, stitching Library samples in the background (progress, cancel), the page's
listing, overview, regions and download, and who may change what. One test per guarantee of app/slides.py."""

from __future__ import annotations

import threading

import pytest
from app_helpers import MAIN, RUN_TIMEOUT, page_path, shown
from slide_samples import PATCH, stitched_slide, write_sample_folder

from app import slides as sl
from db import models
from db import repository as repo
from db.session import session_scope
from renal_ldm.slides.info import SlideFileError
from renal_ldm.slides.stitch import provenance_path

pytest.importorskip("openslide")

SLIDES = page_path("slides.py")
JOB_TIMEOUT_S = 120
MARKDOWN_NAME = "**bold** [click](http://evil.example) :red[x]"


@pytest.fixture
def run_folder(app_home):
    """A Library run: 4 samples of 64 px under <data home>/samples/<run>/."""
    return write_sample_folder(app_home / "samples" / "20260101-000000-abcd0123", n=4)


@pytest.fixture
def outside_slide(tmp_path):
    """A stitched slide outside the data directory (a file on the server), 2 levels."""
    return stitched_slide(tmp_path / "server")


def _finished(started: sl.StitchJob):
    assert started.job.wait(JOB_TIMEOUT_S), "the stitch never finished"
    return started.job


def _images(at) -> list[str]:
    """The captions of the images the page shows, in order."""
    return [caption for element in at.get("image") for caption in element.captions]


def _texts(at) -> list[str]:
    return [
        shown(str(e.value))
        for kind in ("markdown", "caption", "info", "warning", "success", "error")
        for e in getattr(at, kind)
    ]


# --------------------------------------------------------------------------------------------- register


def test_a_slide_file_is_registered_with_what_openslide_reads(app_home, outside_slide):
    slide = sl.register_slide(str(outside_slide), created_by="ada")
    assert (slide.name, slide.kind, slide.width, slide.height, slide.levels) == ("slide", "stitched", 128, 128, 2)
    assert slide.mpp == pytest.approx(0.25) and slide.patch_size == PATCH and slide.created_by == "ada"
    assert slide.path == str(outside_slide.resolve())
    assert slide.provenance["grid"] == {"cols": 2, "rows": 2}


def test_a_symbolic_link_to_a_listed_file_is_the_same_slide(app_home, outside_slide, tmp_path):
    first = sl.register_slide(outside_slide, name="first")
    link = tmp_path / "link.tif"
    link.symlink_to(outside_slide)
    with pytest.raises(ValueError, match=rf"is already listed, as slide #{first.id} 'first'"):
        sl.register_slide(link)
    assert [s.name for s in repo.list_slides()] == ["first"]


@pytest.mark.parametrize(
    "given,message",
    [
        ("", "give the path of a slide file on the server"),
        ("relative/slide.tif", "slide path 'relative/slide.tif' must be absolute"),
        ("/no/such/slide.tif", "slide file /no/such/slide.tif does not exist; expected a whole-slide image"),
    ],
)
def test_bad_paths_are_refused_and_saved_rows_stay(app_home, outside_slide, given, message):
    kept = sl.register_slide(outside_slide)
    with pytest.raises(ValueError, match=message):
        sl.register_slide(given)
    assert repo.list_slides() == [kept]


def test_a_file_that_is_not_a_slide_is_refused(app_home, tmp_path):
    text = tmp_path / "notes.tif"
    text.write_text("not a slide")
    with pytest.raises(SlideFileError, match=f"{text} is not a slide OpenSlide recognises"):
        sl.register_slide(text)
    assert repo.list_slides() == []


def test_provenance_is_summarised_for_stitched_and_generated_slides(outside_slide):
    import json

    stitched = dict(sl.provenance_summary(json.loads(provenance_path(outside_slide).read_text())))
    assert stitched["grid"] == "2 x 2 patches of 64x64 px"
    assert stitched["samples folder"].endswith("samples")
    assert stitched["captions"] == "caption 0 | caption 1 | caption 2 | caption 3"
    assert stitched["seeds"] == "100-103 (4 seeds)"
    generated = dict(
        sl.provenance_summary(
            {
                "format": "renal-ldm generated slide",
                "model": "demo",
                "captions": [{"caption": "glomeruli here"}, "tubuli there"],
                "seed": 7,
                "steps": 20,
                "guidance": 7.0,
            }
        )
    )
    assert generated == {
        "format": "renal-ldm generated slide",
        "model": "demo",
        "captions": "glomeruli here | tubuli there",
        "seed": "7",
        "steps": "20",
        "guidance": "7.0",
    }
    assert sl.provenance_summary(None) == []


# ----------------------------------------------------------------------------------------------- stitch


def test_library_runs_are_offered_and_a_stitch_is_written_and_listed(app_home, run_folder):
    assert [f.label for f in sl.sample_folders()] == [f"samples/{run_folder.name} (4 images)"]
    started = sl.start_stitch(run_folder, "2x2", tile=64, compression="deflate", created_by="ada")
    job = _finished(started)
    assert job.error is None, job.error
    slide = job.result
    assert started.out.parent == app_home / "slides" and started.out.is_file()
    assert (slide.kind, slide.width, slide.levels, slide.name, slide.created_by) == (
        "stitched",
        128,
        2,
        f"{run_folder.name} 2x2",
        "ada",
    )
    assert slide.path == str(started.out) and slide.provenance["samples"] == str(run_folder)
    assert [s.id for s in repo.list_slides()] == [slide.id]


def test_a_blank_grid_is_the_largest_square_the_samples_fill(app_home):
    folder = write_sample_folder(app_home / "samples" / "run", n=5)
    assert sl.plan_stitch(folder, "").grid == (2, 2)
    assert sl.plan_stitch("samples/run", None).size == (128, 128)


@pytest.mark.parametrize(
    "grid,message",
    [
        ("3x2", "grid 3x2 needs 6 samples; .* holds 4"),
        ("2by2", "grid must be COLSxROWS with integers >= 1"),
    ],
)
def test_stitch_errors_are_named_before_anything_runs(app_home, run_folder, outside_slide, grid, message):
    kept = sl.register_slide(outside_slide)
    with pytest.raises(ValueError, match=message):
        sl.start_stitch(run_folder, grid)
    assert repo.list_slides() == [kept]
    assert not (app_home / "slides").exists() or list((app_home / "slides").iterdir()) == []


def test_only_folders_inside_the_data_directory_are_stitched(app_home, tmp_path):
    outside = write_sample_folder(tmp_path / "elsewhere", n=4)
    with pytest.raises(ValueError, match="is outside the data directory"):
        sl.start_stitch(outside, "2x2")
    with pytest.raises(ValueError, match="leads outside the data directory"):
        sl.start_stitch("../elsewhere", "2x2")
    with pytest.raises(ValueError, match="samples folder 'samples/none' is not a folder in the data directory"):
        sl.start_stitch("samples/none", "2x2")
    with pytest.raises(ValueError, match="order must be manifest or shuffle:SEED"):
        sl.start_stitch(write_sample_folder(app_home / "samples" / "r", n=4), "2x2", order="random")


def test_a_stitch_that_fails_leaves_no_file_and_no_row(app_home, run_folder, outside_slide, monkeypatch):
    kept = sl.register_slide(outside_slide)
    done = _finished(sl.start_stitch(run_folder, "2x2", tile=64))
    assert done.error is None, done.error
    real = sl.stitch_slide

    def disk_full(*args, progress, **kwargs):
        def tick(done_tiles, total):
            if done_tiles == 2:
                raise OSError("No space left on device")
            progress(done_tiles, total)

        return real(*args, progress=tick, **kwargs)

    monkeypatch.setattr(sl, "stitch_slide", disk_full)
    failed = _finished(sl.start_stitch(run_folder, "2x2", tile=64))
    assert failed.error == "OSError: No space left on device"
    assert [s.id for s in repo.list_slides()] == [done.result.id, kept.id]
    first = sl.Path(done.result.path)
    assert sorted(p.name for p in (app_home / "slides").iterdir()) == sorted([first.name, provenance_path(first).name])


def test_samples_of_mixed_sizes_are_refused_before_the_job(app_home, run_folder):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(sorted(run_folder.glob("*.png"))[0])
    with pytest.raises(ValueError, match="samples must all be the same size; found 64x64 px: 3"):
        sl.start_stitch(run_folder, "2x2")
    assert repo.list_slides() == []


def test_a_cancelled_stitch_writes_nothing(app_home, run_folder, monkeypatch):
    real = sl.stitch_slide
    first_tile, go_on = threading.Event(), threading.Event()

    def paused(*args, progress, **kwargs):
        def tick(done, total):
            first_tile.set()
            go_on.wait(JOB_TIMEOUT_S)
            progress(done, total)

        return real(*args, progress=tick, **kwargs)

    monkeypatch.setattr(sl, "stitch_slide", paused)
    started = sl.start_stitch(run_folder, "2x2", tile=64)
    assert first_tile.wait(JOB_TIMEOUT_S)
    started.job.cancel.set()
    go_on.set()
    job = _finished(started)
    assert job.error == "StitchCancelled: the stitch was cancelled; no slide was written"
    assert list((app_home / "slides").iterdir()) == []  # neither the slide nor a temporary file
    assert repo.list_slides() == []


# ------------------------------------------------------------------------------------------------ viewer


def test_regions_cover_every_level_and_edge_cells_are_cut(outside_slide):
    from renal_ldm.slides.info import describe_slide

    described = describe_slide(outside_slide)
    assert sl.region_grid(described, 0, 256) == (1, 1)
    assert sl.region_grid(described, 0, 48) == (3, 3)
    assert sl.region_at(described, 0, 48, 2, 1) == sl.Region(0, 96, 48, 32, 48)
    region = sl.region_at(described, 1, 48, 1, 0)
    assert region == sl.Region(1, 48, 0, 16, 48) and sl.level0_box(described, region) == (96, 0, 32, 96)
    with pytest.raises(ValueError, match=r"cell \(3, 0\) is outside the 3x3 grid of level 0"):
        sl.region_at(described, 0, 48, 3, 0)
    marked = sl.marked_overview(sl.slide_info.overview(outside_slide), described, region, 48)
    assert marked.size == (128, 128) and marked.getpixel((127, 0)) == sl.BOX_COLOUR


def test_downloads_are_bounded_and_name_the_path(app_home, outside_slide):
    slide = sl.register_slide(outside_slide)
    offer = sl.download(slide)
    assert offer.allowed and sl.tiff_bytes(slide) == outside_slide.read_bytes()
    small = sl.download(slide, limit=100)
    assert not small.allowed and str(outside_slide.resolve()) in small.reason
    with pytest.raises(ValueError, match="more than the 0 MiB offered"):
        sl.tiff_bytes(slide, limit=100)
    assert sl.download_name(slide) == f"slide_{slide.id}.tif"


def test_removing_deletes_only_the_products_own_files(app_home, run_folder, outside_slide):
    registered = sl.register_slide(outside_slide)
    stitched = _finished(sl.start_stitch(run_folder, "2x2", tile=64)).result
    with session_scope() as s:
        s.add(models.SlideAnnotation(slide_id=registered.id, mask_path="masks/1.png", author="ann"))
    with pytest.raises(ValueError, match="has 1 annotation"):
        sl.remove_slide(registered.id)
    assert sl.remove_slide(stitched.id) == f"Removed slide #{stitched.id} and its file."
    assert list((app_home / "slides").iterdir()) == [] and outside_slide.is_file()
    with session_scope() as s:
        s.query(models.SlideAnnotation).delete()
    assert "its file" in sl.remove_slide(registered.id) and outside_slide.is_file()
    assert repo.list_slides() == []


def test_only_researchers_and_open_mode_change_slides():
    assert sl.can_change(None) and sl.can_change("researcher") and not sl.can_change("annotator")


# ------------------------------------------------------------------------------------------------- page


def test_the_empty_page_says_how_to_add_a_slide(app):
    app.switch_page(SLIDES).run()
    assert not app.exception, [e.message for e in app.exception]
    assert app.title[0].value == "Slides"
    assert any("No slide yet" in i.value for i in app.info)


def test_the_page_shows_a_slide_its_overview_and_any_region(app, outside_slide):
    slide = sl.register_slide(outside_slide, name=MARKDOWN_NAME)
    app.switch_page(SLIDES).run()
    assert not app.exception, [e.message for e in app.exception]
    assert any(f"#{slide.id} {MARKDOWN_NAME}" == shown(h.value) for h in app.subheader)
    texts = _texts(app)
    assert "**seeds**: 100\\-103 \\(4 seeds\\)" in [m.value for m in app.markdown]
    assert any("2 x 2 patches of 64x64 px" in t for t in texts)
    captions = _images(app)
    assert captions[0].startswith("Overview")
    assert captions[1].startswith("Level 0, x 0-128, y 0-128")
    app.selectbox(key=f"slides.level_{slide.id}").set_value(1).run()
    assert _images(app)[1].startswith("Level 1, x 0-64, y 0-64")
    assert any(b.label.startswith("Download the TIFF") for b in app.get("download_button"))


def test_choosing_a_cell_opens_that_region(app, app_home):
    big = stitched_slide(app_home.parent / "big", grid="6x6")  # 384 px: 2x2 cells of 256 px at level 0
    slide = sl.register_slide(big)
    app.switch_page(SLIDES).run()
    app.selectbox(key=f"slides.side_{slide.id}").set_value(256).run()
    app.number_input(key=f"slides.col_{slide.id}_0_256").set_value(1).run()
    app.number_input(key=f"slides.row_{slide.id}_0_256").set_value(1).run()
    assert not app.exception, [e.message for e in app.exception]
    assert _images(app)[1].startswith("Level 0, x 256-384, y 256-384 (128x128 px")


def test_a_slide_whose_file_has_gone_is_shown_as_missing(app, app_home, outside_slide):
    kept = sl.register_slide(outside_slide)
    lost_file = stitched_slide(app_home.parent / "lost")
    lost = sl.register_slide(lost_file, name="lost")
    lost_file.unlink()
    app.switch_page(SLIDES).run()
    assert not app.exception, [e.message for e in app.exception]
    assert any("This slide is missing: file missing" in shown(w.value) for w in app.warning)
    assert [r for r in sl.table_rows(sl.list_slides())] and sl.list_slides()[0].missing
    assert any("No download: the file" in shown(i.value) for i in app.info)
    app.selectbox(key="slides.pick").set_value(kept.id).run()
    assert not app.exception and len(_images(app)) == 2
    assert {s.id for s in repo.list_slides()} == {kept.id, lost.id}


def test_the_page_stitches_a_library_run_with_progress_and_lists_it(app, run_folder, monkeypatch):
    app.switch_page(SLIDES).run()
    form = {w.label: w for w in app.text_input}
    form["Grid (columns x rows)"].input("2x2")
    next(s for s in app.selectbox if s.label == "Tile side (px)").set_value(64)
    next(s for s in app.selectbox if s.label == "Compression").set_value("deflate")
    next(b for b in app.button if b.label == "Stitch").click().run()
    assert not app.exception, [e.message for e in app.exception]
    job = sl.background.get(app.session_state["slides.job"])
    assert job is not None and job.wait(JOB_TIMEOUT_S) and job.error is None, job and job.error
    app.run()
    assert not app.exception, [e.message for e in app.exception]
    assert any(f"Stitched slide #{job.result.id}" in shown(s.value) for s in app.success)
    assert app.selectbox(key="slides.pick").value == job.result.id
    assert len(_images(app)) == 2


def test_the_page_names_a_bad_stitch_and_a_bad_registration(app, outside_slide):
    kept = sl.register_slide(outside_slide)
    app.switch_page(SLIDES).run()
    next(s for s in app.selectbox if s.label == "Samples").set_value("Another folder in the data directory")
    next(w for w in app.text_input if w.label == "Folder in the data directory").input("samples/none")
    next(b for b in app.button if b.label == "Stitch").click().run()
    assert [shown(e.value) for e in app.error] == [
        f"samples folder 'samples/none' is not a folder in the data directory '{sl.data_home()}'"
    ]
    next(w for w in app.text_input if w.label == "Slide file on the server").input(str(outside_slide))
    next(b for b in app.button if b.label == "Register").click().run()
    assert [shown(e.value) for e in app.error] == [
        f"slide file {outside_slide.resolve()} is already listed, as slide #{kept.id} 'slide'"
    ]
    assert repo.list_slides() == [kept]


def test_the_page_registers_a_slide_file(app, outside_slide):
    app.switch_page(SLIDES).run()
    next(w for w in app.text_input if w.label == "Slide file on the server").input(str(outside_slide))
    next(w for w in app.text_input if w.label == "Name" and w.key == "slides.reg_name").input("server slide")
    next(b for b in app.button if b.label == "Register").click().run()
    assert not app.exception, [e.message for e in app.exception]
    slide = repo.list_slides()[0]
    assert slide.name == "server slide"
    assert any(f"Registered slide #{slide.id} server slide." == shown(s.value) for s in app.success)


def test_an_annotator_sees_slides_but_cannot_change_them(app_home, outside_slide, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app import accounts

    monkeypatch.delenv(accounts.ADMIN_PASSWORD_ENV, raising=False)
    sl.register_slide(outside_slide)
    accounts.add_account("ann", "annotator", "a long enough password")
    at = AppTest.from_file(MAIN, default_timeout=RUN_TIMEOUT)
    at.run()
    at.text_input(key="sign_in_name").input("ann")
    at.text_input(key="sign_in_password").input("a long enough password")
    at.button[0].click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert [t.value for t in at.title] == ["Slides"]
    assert len(_images(at)) == 2
    assert not [b for b in at.button if b.label in ("Stitch", "Register", "Remove from the list")]


def test_the_page_shows_the_stitch_progress_and_cancels_it(app, app_home, run_folder, monkeypatch):
    real = sl.stitch_slide
    first_tile, go_on = threading.Event(), threading.Event()

    def paused(*args, progress, **kwargs):
        def tick(done, total):
            progress(done, total)
            first_tile.set()
            go_on.wait(JOB_TIMEOUT_S)

        return real(*args, progress=tick, **kwargs)

    monkeypatch.setattr(sl, "stitch_slide", paused)
    app.switch_page(SLIDES).run()
    next(w for w in app.text_input if w.label == "Grid (columns x rows)").input("2x2")
    next(s for s in app.selectbox if s.label == "Tile side (px)").set_value(64)
    next(b for b in app.button if b.label == "Stitch").click().run()
    job = sl.background.get(app.session_state["slides.job"])
    try:
        assert first_tile.wait(JOB_TIMEOUT_S)
        app.run()
        (bar,) = app.get("progress")
        assert bar.proto.text == "stitching: 1 of 5 tiles" and bar.proto.value == 20
        next(b for b in app.button if b.label == "Cancel the stitch").click().run()
        assert job.cancel.is_set()
    finally:
        go_on.set()
    assert job.wait(JOB_TIMEOUT_S)
    app.run()
    assert not app.exception, [e.message for e in app.exception]
    assert [shown(i.value) for i in app.info][0] == "The stitch was cancelled; no slide was written."
    assert repo.list_slides() == [] and list((app_home / "slides").iterdir()) == []
    assert "slides.job" not in app.session_state


# --------------------------------------------------------------------------------------------- generate


def _tiny_sampler(path):
    from renal_ldm.sample import Sampler

    return Sampler.from_dir(path, device="cpu", window_batch=16)


def _choice(tiny_model):
    from app.model_choices import describe

    return describe(tiny_model.name, tiny_model.path, tiny_model.kind)


def test_a_seamless_slide_is_generated_in_the_background_and_listed(app_home, tiny_model):
    layout = b'{"default": "a lot of Tubuli", "regions": [{"levels": "Glomeruli=high", "box": [0, 0, 0.5, 1]}]}'
    started = sl.start_generation(
        _choice(tiny_model), _tiny_sampler, width=256, height=256, layout=layout, steps=1, seed=4, name="two regions"
    )
    job = _finished(started)
    assert job.error is None, job.error
    slide = job.result
    assert (slide.kind, slide.name, slide.width, slide.height) == ("generated", "two regions", 256, 256)
    assert slide.provenance["seed"] == 4 and len(slide.provenance["captions"]) == 2
    assert started.out.parent == app_home / "slides" and started.out.is_file()
    assert [s.id for s in repo.list_slides()] == [slide.id]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"width": 260}, "slide width must be a multiple of 8 px up to 2048 px"),
        ({"height": 4096}, "slide height must be a multiple of 8 px up to 2048 px"),
        ({"caption": "  "}, "give a caption for the slide"),
        ({"steps": 0}, "steps must be an integer in 1.."),
        ({"layout": b"{oops"}, "the layout file is not JSON"),
        ({"layout": b'{"labels": "ids.png", "captions": {"0": "a"}}'}, "a label-image layout names an image file"),
        ({"layout": b'{"regions": [{"caption": "a", "box": [0, 0, 0.5, 1]}]}'}, "without a caption"),
        ({"layout": b" " * (2 * 2**20 + 1)}, "a layout is at most"),
    ],
)
def test_generation_errors_are_named_before_the_job(app_home, tiny_model, kwargs, message):
    options = {"caption": "a lot of Glomeruli", "width": 256, "height": 256, **kwargs}
    with pytest.raises(ValueError, match=message):
        sl.start_generation(_choice(tiny_model), _tiny_sampler, **options)
    assert not (app_home / "slides").exists() or list((app_home / "slides").iterdir()) == []
    assert repo.list_slides() == []


def test_a_model_that_cannot_be_used_is_refused(app_home, tmp_path):
    from app.model_choices import describe

    gone = describe("gone", tmp_path / "nowhere", "user")
    with pytest.raises(ValueError, match="model 'gone' cannot be used"):
        sl.start_generation(gone, _tiny_sampler, caption="a")


def test_a_cancelled_generation_writes_nothing(app_home, tiny_model):
    seen = threading.Event()

    def sampler_for(path):
        sampler = _tiny_sampler(path)
        real = sampler.sample_canvas

        def cancelling(*args, **kwargs):
            started.job.cancel.set()
            seen.set()
            return real(*args, **kwargs)

        sampler.sample_canvas = cancelling
        return sampler

    started = sl.start_generation(_choice(tiny_model), sampler_for, caption="a lot of Glomeruli", steps=2)
    job = _finished(started)
    assert seen.is_set() and job.error == "GenerationCancelled: the generation was cancelled; no slide was written"
    assert repo.list_slides() == [] and list((app_home / "slides").iterdir()) == []


def test_the_page_generates_a_seamless_slide_and_lists_it(app, tiny_model, monkeypatch):
    from app import resources

    monkeypatch.setattr(resources.generation_service(), "sampler", _tiny_sampler)
    app.switch_page(SLIDES).run()
    next(w for w in app.number_input if w.label == "Steps").set_value(1)
    next(s for s in app.selectbox if s.label == "Width (px)").set_value(256)
    next(s for s in app.selectbox if s.label == "Height (px)").set_value(256)
    next(b for b in app.button if b.label == "Generate").click().run()
    assert not app.exception, [e.message for e in app.exception]
    assert app.session_state["slides.job_what"] == "generation"
    job = sl.background.get(app.session_state["slides.job"])
    assert job is not None and job.wait(JOB_TIMEOUT_S) and job.error is None, job and job.error
    app.run()
    assert not app.exception, [e.message for e in app.exception]
    assert any(f"Generated slide #{job.result.id}" in shown(s.value) for s in app.success)
    assert app.selectbox(key="slides.pick").value == job.result.id


def test_the_page_names_a_bad_layout(app, tiny_model):
    app.switch_page(SLIDES).run()
    next(w for w in app.text_area if w.label == "Caption for the whole slide").input(" ")
    next(b for b in app.button if b.label == "Generate").click().run()
    assert any("give a caption for the slide" in shown(e.value) for e in app.error)
    assert repo.list_slides() == []
