"""`stillmotion batch`: mixed folders, resume after kill -9, seeds, manifests (tiny model, 64x64, 2 frames, 2 steps)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import batch_killed_at_first_video, run_cli
from stillmotion import InvalidInput
from stillmotion.batch import derive_seed, plan_batch, run_batch
from stillmotion.engine.config import EngineConfig

FAST = ["--model", "tiny", "--device", "cpu", "--width", "64", "--height", "64", "--frames", "2", "--steps", "2"]
SPEC = {"width": 64, "height": 64, "num_frames": 2, "num_inference_steps": 2}
TINY = EngineConfig(model="tiny")  # what the CLI builds from --model tiny


def _img(path: Path, seed: int, mode: str = "RGB", size=(96, 80)) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    if mode == "RGBA":
        im = Image.fromarray(np.dstack([arr, np.full(arr.shape[:2], 120, np.uint8)]), "RGBA")
    elif mode == "CMYK":
        im = im.convert("CMYK")
    im.save(path)
    return path


def _report(out: Path) -> dict:
    return json.loads((out / "batch-report.json").read_text())


def _by_output(report: dict) -> dict:
    return {Path(i["output"]).relative_to(report["output"]).as_posix(): i for i in report["items"]}


@pytest.fixture()
def mixed_tree(tmp_path) -> Path:
    root = tmp_path / "images"
    _img(root / "top.jpg", 1)
    _img(root / "a" / "b" / "cat.jpg", 2)
    _img(root / "a" / "rgba.png", 3, "RGBA")
    _img(root / "a" / "cmyk.jpg", 4, "CMYK")
    (root / "a" / "notes.txt").write_text("not an image")
    good = (root / "top.jpg").read_bytes()
    (root / "a" / "broken.jpg").write_bytes(good[: len(good) // 2])  # a corrupt JPEG
    _img(root / ".hidden" / "h.jpg", 5)
    _img(root / ".dotfile.jpg", 6)
    return root


# --------------------------------------------------------------------------- runs


def test_mixed_tree_outputs_report_exit_code_then_resume(mixed_tree, tmp_path):
    import av

    out = tmp_path / "videos"
    code, stdout, err = run_cli("batch", str(mixed_tree), str(out), "--recursive", "--seed", "11", *FAST)
    assert code == 1, err  # one item failed
    videos = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4"))
    assert videos == ["a/b/cat.mp4", "a/cmyk.mp4", "a/rgba.mp4", "top.mp4"]
    assert not [p for p in out.rglob(".*")], "no temp or hidden files left behind"

    report = _report(out)
    items = _by_output(report)
    assert set(items) == {"a/b/cat.mp4", "a/cmyk.mp4", "a/rgba.mp4", "top.mp4", "a/broken.mp4"}
    assert report["counts"] == {"done": 4, "skipped": 0, "failed": 1, "not_run": 0, "total": 5}
    assert report["ignored"] == ["a/notes.txt"]
    broken = items["a/broken.mp4"]
    assert broken["status"] == "failed" and "corrupt" in broken["error"]
    for name in ("a/b/cat.mp4", "a/cmyk.mp4", "a/rgba.mp4", "top.mp4"):
        row = items[name]
        assert row["status"] == "done" and row["error"] is None and row["seconds"] > 0
        key = Path(row["input"]).relative_to(mixed_tree).as_posix()
        assert row["seed"] == derive_seed(11, key)
        side = json.loads((out / name).with_suffix(".json").read_text())
        assert side["seed"] == row["seed"] and side["model"]["name"] == "tiny"
        with av.open(str(out / name)) as c:
            assert c.streams.video[0].width == 64 and sum(1 for _ in c.decode(video=0)) == 2
    assert "done" in stdout and "failed: a/broken.jpg" in stdout

    # Same command again, once the broken image is gone: everything is up to date, nothing loads or runs.
    (mixed_tree / "a" / "broken.jpg").unlink()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}
    code, _, err = run_cli("batch", str(mixed_tree), str(out), "--recursive", "--seed", "11", *FAST)
    assert code == 0, err
    assert _report(out)["counts"] == {"done": 0, "skipped": 4, "failed": 0, "not_run": 0, "total": 4}
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")} == before
    # A changed spec redoes them
    code, dry, _ = run_cli("batch", str(mixed_tree), str(out), "--recursive", "--seed", "11", *FAST, "--dry-run")
    assert "0 to make, 4 up to date" in dry
    code, dry, _ = run_cli("batch", str(mixed_tree), str(out), "--recursive", "--seed", "12", *FAST, "--dry-run")
    assert "4 to make, 0 up to date" in dry
    # An image replaced under the same name is made again; the others stay
    _img(mixed_tree / "a" / "b" / "cat.jpg", 99)
    code, dry, _ = run_cli("batch", str(mixed_tree), str(out), "--recursive", "--seed", "11", *FAST, "--dry-run")
    assert "1 to make, 3 up to date" in dry and "cat" in dry


def test_resume_after_sigkill_is_byte_identical(tmp_path, tiny_engine):
    src = tmp_path / "images"
    for n in range(2):
        _img(src / f"img{n}.png", 20 + n)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    # 1. A run killed with SIGKILL as soon as its first video appears
    killed = tmp_path / "killed"
    batch_killed_at_first_video([str(src), str(killed), *FAST, "-q"], killed, env=env)
    first = {p.name for p in killed.glob("*.mp4")}
    assert len(first) == 1
    assert not [p for p in killed.iterdir() if ".tmp-" in p.name and p.suffix == ".mp4"], "no partial video under the real name"

    # 2. The same command again does only what is missing (in-process, on the session's engine, pipelined)
    plan = plan_batch(src, killed, model="tiny", fields=SPEC)
    assert run_batch(plan, TINY, engine=tiny_engine, pipeline=True).count("failed") == 0
    report = _report(killed)
    statuses = {Path(i["output"]).name: i["status"] for i in report["items"]}
    with_sidecar = {n for n in first if (killed / n).with_suffix(".json").exists()}
    assert {n for n, s in statuses.items() if s == "skipped"} == with_sidecar
    assert report["counts"]["done"] == 2 - len(with_sidecar)
    assert not [p for p in killed.iterdir() if p.name.startswith(".")], "stale temp files are cleaned up"

    # 3. Byte-identical to a run that was never interrupted (the session's engine, not pipelined)
    clean = tmp_path / "clean"
    plan = plan_batch(src, clean, model="tiny", fields=SPEC)
    assert run_batch(plan, TINY, engine=tiny_engine, pipeline=False).count("done") == 2
    names = sorted(p.name for p in clean.glob("*.mp4"))
    assert names == ["img0.mp4", "img1.mp4"]
    for name in names:
        assert (killed / name).read_bytes() == (clean / name).read_bytes(), name


def test_manifest_overrides_per_row(tmp_path, tiny_engine):
    from stillmotion.video import read_sidecar, read_video

    _img(tmp_path / "pics" / "one.jpg", 31)
    _img(tmp_path / "pics" / "two.png", 32)
    manifest = tmp_path / "list.csv"
    manifest.write_text("image,frames,fps,seed,output\npics/one.jpg,,,,\npics/two.png,3,5,77,special/two.mp4\n")
    out = tmp_path / "out"
    plan = plan_batch(manifest, out, model="tiny", fields={**SPEC, "fps": 6})  # what the CLI does, on the session's engine
    assert run_batch(plan, TINY, engine=tiny_engine, pipeline=True).count("done") == 2
    frames1, fps1 = read_video(out / "pics" / "one.mp4")
    frames2, fps2 = read_video(out / "special" / "two.mp4")
    assert (len(frames1), fps1) == (2, 6)  # flags
    assert (len(frames2), fps2) == (3, 5)  # the row's overrides
    side1 = read_sidecar(out / "pics" / "one.json")
    assert side1["spec"]["seed"] == derive_seed(0, "pics/one.jpg")
    assert read_sidecar(out / "special" / "two.json")["spec"]["seed"] == 77


# --------------------------------------------------------------------------- plans (no model)


def test_seed_depends_on_path_not_order_or_other_files(tmp_path):
    a = tmp_path / "a"
    _img(a / "x" / "cat.jpg", 1)
    _img(a / "dog.jpg", 2)
    b = tmp_path / "b"  # the same image among many others, created in another order
    for n in range(5):
        _img(b / f"z{n}.jpg", 40 + n)
    _img(b / "x" / "cat.jpg", 9)
    _img(b / "aardvark.png", 3)

    def seeds(root):
        plan = plan_batch(root, tmp_path / "o", model="tiny", seed=5, recursive=True)
        return {i.key: i.seed for i in plan.items}

    sa, sb = seeds(a), seeds(b)
    assert sa["x/cat.jpg"] == sb["x/cat.jpg"] == derive_seed(5, "x/cat.jpg")
    assert len(set(sb.values())) == len(sb)  # different images, different seeds
    assert derive_seed(6, "x/cat.jpg") != sa["x/cat.jpg"]


def test_plan_folder_rules_and_variants(mixed_tree, tmp_path):
    out = tmp_path / "v"
    flat = plan_batch(mixed_tree, out, model="tiny")
    assert [i.key for i in flat.items] == ["top.jpg"]  # not recursive; hidden files skipped
    only_png = plan_batch(mixed_tree, out, model="tiny", recursive=True, patterns=["*.png"])
    assert [i.key for i in only_png.items] == ["a/rgba.png"]

    plan = plan_batch(mixed_tree, out, model="tiny", recursive=True, variants=2, seed=3)
    cats = [i for i in plan.items if i.key == "a/b/cat.jpg"]
    assert [i.output for i in cats] == [out / "a" / "b" / f"cat.s{i.seed}.mp4" for i in cats]
    assert cats[0].seed != cats[1].seed and cats[1].seed == derive_seed(3, "a/b/cat.jpg", 1)
    assert all(not i.key.startswith(".") and "/." not in i.key for i in plan.items)

    gif = plan_batch(mixed_tree, out, model="tiny", fields={"format": "gif"})
    assert gif.items[0].output == out / "top.gif" and gif.items[0].sidecar == out / "top.json"


def test_name_clash_reported_before_work(tmp_path):
    _img(tmp_path / "in" / "cat.jpg", 1)
    _img(tmp_path / "in" / "cat.png", 2)
    with pytest.raises(InvalidInput, match="clash.*cat.jpg and cat.png"):
        plan_batch(tmp_path / "in", tmp_path / "out", model="tiny")
    code, _, err = run_cli("batch", str(tmp_path / "in"), str(tmp_path / "out"), *FAST)
    assert code == 2 and "clash" in err
    assert not (tmp_path / "out").exists()


def test_manifest_invalid_rows_reported_with_line_numbers(tmp_path):
    _img(tmp_path / "ok.jpg", 1)
    csv_file = tmp_path / "m.csv"
    csv_file.write_text("image,num_frames,motion\nok.jpg,4,\nok.jpg,999,\n\nmissing.jpg,,\nok.jpg,,5000\n")
    with pytest.raises(InvalidInput) as e:
        plan_batch(csv_file, tmp_path / "out", model="tiny")
    msg = e.value.message
    assert "line 3: Invalid spec: num_frames" in msg and "999" in msg
    assert "line 5: image 'missing.jpg' not found" in msg
    assert "line 6: Invalid spec: motion_bucket_id" in msg
    assert "line 2" not in msg

    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text('{"image": "ok.jpg", "fps": 9}\n{"image": "ok.jpg", "output": "b.mp4", "bogus": 1}\nnot json\n')
    code, _, err = run_cli("batch", str(jsonl), str(tmp_path / "out"), *FAST)
    assert code == 2
    assert "line 2: unknown field(s) bogus" in err and "line 3: not valid JSON" in err
    assert not (tmp_path / "out").exists()  # nothing ran

    good = tmp_path / "good.jsonl"
    good.write_text('{"image": "ok.jpg", "fps": 9}\n{"image": "ok.jpg", "output": "again.mp4", "num_frames": 3}\n')
    plan = plan_batch(good, tmp_path / "out", model="tiny", fields={"num_frames": 2})
    assert [i.requested.get("fps") for i in plan.items] == [9, None]
    assert [i.requested["num_frames"] for i in plan.items] == [2, 3]
    assert [i.output.name for i in plan.items] == ["ok.mp4", "again.mp4"]


def test_dry_run_lists_and_estimates_without_loading(mixed_tree, tmp_path):
    code, out, err = run_cli("batch", str(mixed_tree), str(tmp_path / "o"), "-r", *FAST, "--dry-run")
    assert code == 0, err
    assert "make  a/b/cat.jpg" in out and "ignore  a/notes.txt" in out
    assert "5 to make, 0 up to date, 1 ignored; about" in out
    assert not (tmp_path / "o").exists()


def test_max_failures_stops_early(tmp_path, tiny_engine):
    for n in range(4):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f"bad{n}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    plan = plan_batch(tmp_path / "in", tmp_path / "out", model="tiny", fields=SPEC)
    ctl = run_batch(plan, TINY, engine=tiny_engine, max_failures=2)
    report = _report(tmp_path / "out")
    assert report["status"] == "stopped: too many failures"
    assert report["counts"]["failed"] == 2 and report["counts"]["not_run"] == 2
    assert ctl.count("done") == 0


def test_out_of_memory_is_retried_with_lower_memory_settings(tmp_path, tiny_engine, monkeypatch):
    from stillmotion import OutOfMemory
    from stillmotion.video import read_sidecar

    _img(tmp_path / "in" / "big.jpg", 1)
    real = tiny_engine.generate
    calls = []

    def flaky(image, spec, **kw):
        calls.append(spec.decode_chunk_size)
        if len(calls) == 1:
            raise OutOfMemory("Out of memory while denoising (simulated).")
        return real(image, spec, **kw)

    monkeypatch.setattr(tiny_engine, "generate", flaky)
    plan = plan_batch(tmp_path / "in", tmp_path / "out", model="tiny", fields=SPEC)
    assert run_batch(plan, TINY, engine=tiny_engine).count("done") == 1
    assert calls == [None, 1]
    fallback = read_sidecar(tmp_path / "out" / "big.json")["fallbacks"][-1]
    assert fallback["stage"] == "batch" and fallback["to"] == "decode_chunk_size=1" and "simulated" in fallback["error"]


def test_manifest_prompts_on_a_wan_model_and_rows_it_cannot_honour(tmp_path):
    """A Wan model (the built-in tiny-wan) takes `prompt` and `negative_prompt` columns: each row's prompt is in its
    sidecar. A row with an SVD knob is refused before any work, with its line, as other invalid rows are."""
    from stillmotion.video import read_sidecar

    _img(tmp_path / "a.jpg", 1, size=(64, 64))
    _img(tmp_path / "b.png", 2, size=(64, 64))
    wan = ["--model", "tiny-wan", "--device", "cpu", "--width", "64", "--height", "64", "--frames", "5", "--steps", "2"]
    manifest = tmp_path / "m.csv"
    manifest.write_text('image,prompt,negative_prompt\na.jpg,waves roll in,\nb.png,"a boat, sailing",blurry\n')
    out = tmp_path / "out"
    code, _, err = run_cli("batch", str(manifest), str(out), *wan)
    assert code == 0, err
    a, b = read_sidecar(out / "a.json"), read_sidecar(out / "b.json")
    assert a["model"]["name"] == b["model"]["name"] == "tiny-wan"
    assert a["spec"]["prompt"] == "waves roll in" and a["spec"]["negative_prompt"]  # the model's own
    assert (b["spec"]["prompt"], b["spec"]["negative_prompt"]) == ("a boat, sailing", "blurry")

    bad = tmp_path / "bad.csv"
    bad.write_text("image,prompt,motion\na.jpg,waves,\nb.png,a boat,100\n")
    code, _, err = run_cli("batch", str(bad), str(tmp_path / "out2"), *wan)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "1 invalid row(s), nothing was run: line 3: --motion (motion_bucket_id) is a setting of svd models; " \
           "tiny-wan is a Wan model" in err
    assert not (tmp_path / "out2").exists()
    # a flag for every row: refused by the plan, one line; a prompt on an SVD model likewise
    code, _, err = run_cli("batch", str(tmp_path), str(tmp_path / "out3"), *wan, "--noise-aug", "0.1")
    assert code == 2 and "--noise-aug (noise_aug_strength) is a setting of svd models" in err, err
    with pytest.raises(InvalidInput, match="line 2: --prompt \\(prompt\\) is a setting of framepack, ltx, ltx2 and wan models"):
        plan_batch(manifest, tmp_path / "out4", model="tiny")
