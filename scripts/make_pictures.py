#!/usr/bin/env python
"""Make the README's pictures again: docs/demo-frames.png and docs/web-ui.png (CPU, offline).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/make_pictures.py            # both
    OMP_NUM_THREADS=1 .venv/bin/python scripts/make_pictures.py --only frames

demo-frames.png: the built-in `demo` model on examples/harbour.jpg (Python API, a fixed
seed): the input, then the first, middle and last frames, upscaled so they can be read.

web-ui.png: `stillmotion serve --model demo` in a subprocess (a temporary --data-dir, a
free loopback port), Debian's chromium driven by Playwright as tests/test_server_ui.py
does: upload examples/harbour.jpg, fixed seed, Generate, wait for the finished video,
screenshot the viewport. Needs /usr/bin/chromium (`apt-get install chromium`).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "examples" / "harbour.jpg"
DOCS = REPO / "docs"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SEED = 42

# size caps for the committed PNGs; a bigger one is downscaled until it fits
FRAMES_MAX_BYTES = 150_000
WEB_MAX_BYTES = 300_000


def _font(size: int):
    from PIL import ImageFont

    for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                 "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf"):
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def _save_small(im, out: Path, max_bytes: int, palette: bool) -> int:
    """Save an optimised PNG: full colour, else (if `palette`) 256 colours, else downscaled by 10% steps,
    until it is under max_bytes."""
    from PIL import Image

    while True:
        im.save(out, optimize=True)  # full colour when it fits
        size = out.stat().st_size
        if size <= max_bytes:
            return size
        if palette:
            im.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.FLOYDSTEINBERG).save(out, optimize=True)
            size = out.stat().st_size
            if size <= max_bytes:
                return size
        if im.width < 400:
            return size
        im = im.resize((round(im.width * 0.9), round(im.height * 0.9)), Image.LANCZOS)


def make_frames(out: Path, seed: int = SEED, scale: int = 3) -> Path:
    """The input, then frames 1, N/2 and N of the demo model's video, side by side with labels."""
    from PIL import Image, ImageDraw

    from stillmotion import Engine, GenerationSpec

    result = Engine("demo", device="cpu").generate(str(IMAGE), GenerationSpec(seed=seed))
    frames = result.frames  # (T, H, W, 3) uint8
    n, h, w = frames.shape[:3]
    picks = [(0, "frame 1"), (n // 2 - 1, f"frame {n // 2}"), (n - 1, f"frame {n}")]
    fh, fw = h * scale, w * scale

    src = Image.open(IMAGE).convert("RGB")
    panels = [(src.resize((round(src.width * fh / src.height), fh), Image.LANCZOS),
               f"input ({src.width}x{src.height})")]
    for i, label in picks:
        panels.append((Image.fromarray(frames[i]).resize((fw, fh), Image.NEAREST), label))  # its real pixels

    gap, pad, label_h = 10, 10, 26
    total_w = sum(p.width for p, _ in panels) + gap * (len(panels) - 1) + 2 * pad
    strip = Image.new("RGB", (total_w, pad + fh + label_h + pad), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    font = _font(15)
    x = pad
    for pic, label in panels:
        strip.paste(pic, (x, pad))
        draw.text((x + pic.width / 2, pad + fh + label_h / 2 + 2), label, fill=(40, 40, 40), font=font, anchor="mm")
        x += pic.width + gap
    note = f"demo model, seed {seed}: {n} frames of {w}x{h}, shown {scale}x"
    out.parent.mkdir(parents=True, exist_ok=True)
    size = _save_small(strip, out, FRAMES_MAX_BYTES, palette=True)
    print(f"{out.relative_to(REPO)}: {strip.width}x{strip.height}, {size} bytes ({note})")
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"the server was not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def make_web_ui(out: Path, seed: int = SEED, viewport=(1200, 800)) -> Path:
    """Screenshot of the web page (demo model) after it has made a video from examples/harbour.jpg."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        raise SystemExit(f"{CHROMIUM} not found: apt-get install chromium")
    cmd = [sys.executable, "-c", "from stillmotion.cli import main; main()"]  # `stillmotion` of this Python
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="stillmotion-pictures-") as tmp:
        log_path = Path(tmp) / "server.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [*cmd, "serve", "--model", "demo", "--device", "cpu", "--host", "127.0.0.1", "--port", str(port),
                 "--data-dir", str(Path(tmp) / "data"), "--threads", "1"],
                stdout=log, stderr=subprocess.STDOUT)
            try:
                _wait_ready(proc, url, log_path)
                with sync_playwright() as p:
                    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                    try:
                        page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
                        page.goto(url + "/", wait_until="domcontentloaded", timeout=120_000)
                        page.locator("#sm-image input[type=file]").set_input_files(str(IMAGE), timeout=120_000)
                        page.locator("#sm-crop img").wait_for(timeout=60_000)  # the crop preview appears
                        page.get_by_label("Random seed").uncheck()
                        seed_box = page.get_by_label("Seed", exact=True)
                        seed_box.fill(str(seed))
                        seed_box.press("Enter")
                        page.locator("#sm-generate").click()
                        page.wait_for_function(
                            "() => { const v = document.querySelector('#sm-video video');"
                            " return v && v.getAttribute('src') && v.readyState >= 2 && v.duration > 0; }",
                            timeout=300_000)
                        page.wait_for_function(
                            "() => document.querySelector('#sm-info').innerText.includes('Seed used')",
                            timeout=60_000)
                        # a still screenshot: stop the looping video on its middle frame
                        page.evaluate(
                            "() => new Promise(done => { const v = document.querySelector('#sm-video video');"
                            " v.pause(); v.addEventListener('seeked', () => done(), {once: true});"
                            " v.currentTime = v.duration / 2; })")
                        page.wait_for_timeout(1500)  # the gallery refresh after the job settles
                        page.evaluate("() => window.scrollTo(0, 0)")
                        shot = Path(tmp) / "shot.png"
                        page.screenshot(path=str(shot))
                    finally:
                        browser.close()
            finally:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(60)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
        im = Image.open(shot).convert("RGB")
        out.parent.mkdir(parents=True, exist_ok=True)
        size = _save_small(im, out, WEB_MAX_BYTES, palette=True)
    print(f"{out.relative_to(REPO)}: {Image.open(out).width}x{Image.open(out).height}, {size} bytes")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["frames", "web"], help="make one picture only")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--out-dir", type=Path, default=DOCS)
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    if args.only in (None, "frames"):
        make_frames(args.out_dir / "demo-frames.png", seed=args.seed)
    if args.only in (None, "web"):
        make_web_ui(args.out_dir / "web-ui.png", seed=args.seed)
    print(f"done in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
