"""images.py and sources.py: safe loading (paths, bytes, real HTTP on loopback), every colour
mode to RGB, EXIF orientation, the bad-input table, and prepare() sizing."""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import warnings
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from stillmotion import images, sources
from stillmotion.errors import ImageFetchError, ImageTooLarge, InvalidImage, InvalidInput, NotFound

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def close(a, b, tol=3) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and a valid IHDR claiming width x height (RGB, 8 bit), no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    iend = b"IEND"
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", 0) + iend + struct.pack(">I", zlib.crc32(iend))
    )


def noise_jpeg(size=(64, 64)) -> bytes:
    rng = np.random.default_rng(0)
    return encode(Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)), "JPEG")


# --------------------------------------------------------------------------- a real HTTP server


class Handler(BaseHTTPRequestHandler):
    routes: dict = {}

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        try:
            self.routes[self.path](self)
        except (BrokenPipeError, ConnectionResetError):
            pass


def send(handler, status=200, body=b"", ctype="image/png", length=True):
    handler.send_response(status)
    handler.send_header("Content-Type", ctype)
    if length:
        handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


RED_PNG = encode(Image.new("RGB", (32, 32), RED), "PNG")


def _slow(h):
    time.sleep(2)
    send(h, body=RED_PNG)


def _trickle(h):
    h.send_response(200)
    h.send_header("Content-Type", "image/png")
    h.end_headers()
    for _ in range(40):
        h.wfile.write(b"x")
        h.wfile.flush()
        time.sleep(0.1)


def _redirect(h):
    h.send_response(302)
    h.send_header("Location", "/ok.png")
    h.send_header("Content-Length", "0")
    h.end_headers()


Handler.routes = {
    "/ok.png": lambda h: send(h, body=RED_PNG),
    "/missing.png": lambda h: send(h, 404, b"no such thing", "text/plain"),
    "/slow.png": _slow,
    "/big.png": lambda h: send(h, body=b"\x00" * 5000),
    "/big-unsized.png": lambda h: send(h, body=b"\x00" * 5000, length=False),
    "/trickle.png": _trickle,
    "/page.html": lambda h: send(h, body=b"<!DOCTYPE html><html><body>hi</body></html>", ctype="text/html"),
    "/redirect": _redirect,
}


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_url_success_and_redirect(server):
    for path in ("/ok.png", "/redirect"):
        im = images.load_image(server + path, timeout=5.0)
        assert im.mode == "RGB" and im.size == (32, 32) and im.getpixel((5, 5)) == RED
    data, origin = sources.read_source_bytes(server + "/ok.png")
    assert data == RED_PNG and origin == server + "/ok.png"


def test_url_credentials_are_not_recorded(server):
    url = server.replace("http://", "http://user:secret@") + "/ok.png"
    _, origin = sources.read_source_bytes(url)
    assert origin == server + "/ok.png"


def test_url_404(server):
    with pytest.raises(ImageFetchError, match="HTTP 404") as exc:
        images.load_image(server + "/missing.png")
    assert "/missing.png" in exc.value.message and "\n" not in exc.value.message


def test_url_timeout(server):
    started = time.monotonic()
    with pytest.raises(ImageFetchError, match="Timed out"):
        images.load_image(server + "/slow.png", timeout=(1.0, 0.3))
    assert time.monotonic() - started < 1.5


def test_url_trickle_hits_total_deadline(server):
    started = time.monotonic()
    with pytest.raises(ImageFetchError, match="took longer than"):
        images.load_image(server + "/trickle.png", timeout=(0.3, 0.3))
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("path", ["/big.png", "/big-unsized.png"])
def test_url_over_byte_limit(server, path):
    with pytest.raises(ImageTooLarge, match="over the"):
        images.load_image(server + path, max_bytes=1000)


def test_url_html_page(server):
    with pytest.raises(InvalidImage, match="HTML page"):
        images.load_image(server + "/page.html")


def test_url_unreachable_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ImageFetchError, match="Could not connect"):
        images.load_image(f"http://127.0.0.1:{port}/x.png", timeout=(1.0, 1.0))


# --------------------------------------------------------------------------- colour modes


def _rgba():
    im = Image.new("RGBA", (32, 32), (255, 0, 0, 255))
    im.putpixel((0, 0), (255, 0, 0, 0))
    im.putpixel((1, 0), (255, 0, 0, 128))
    return im


def _la():
    alpha = Image.new("L", (32, 32), 255)
    alpha.putpixel((0, 0), 0)
    return Image.merge("LA", [Image.new("L", (32, 32), 40), alpha])


def _palette(transparent: bool):
    im = Image.new("P", (32, 32), 1)
    im.putpalette([0, 255, 0] + [255, 0, 0] + [0, 0, 0] * 254)
    im.putpixel((0, 0), 0)  # index 0 is green, made transparent below
    return im, ({"transparency": 0} if transparent else {})


def _gif_animated():
    frames = [Image.new("RGB", (32, 32), c) for c in (BLUE, RED, GREEN)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50)
    return buf.getvalue()


CASES = {
    # name: (bytes, {pixel: expected RGB}, tolerance)
    "rgb-jpeg": (encode(Image.new("RGB", (32, 32), RED), "JPEG", quality=95), {(8, 8): RED}, 6),
    "rgba-png": (encode(_rgba(), "PNG"), {(0, 0): WHITE, (1, 0): (255, 127, 127), (8, 8): RED}, 1),
    "la-png": (encode(_la(), "PNG"), {(0, 0): WHITE, (8, 8): (40, 40, 40)}, 0),
    "p-transparent-png": (encode(_palette(True)[0], "PNG", transparency=0), {(0, 0): WHITE, (5, 5): RED}, 0),
    "p-transparent-gif": (encode(_palette(True)[0], "GIF", transparency=0), {(0, 0): WHITE, (5, 5): RED}, 0),
    "p-opaque-png": (encode(_palette(False)[0], "PNG"), {(0, 0): GREEN, (5, 5): RED}, 0),
    "cmyk-jpeg": (encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95), {(8, 8): RED}, 8),
    "cmyk-tiff": (encode(Image.new("CMYK", (32, 32), (0, 0, 255, 0)), "TIFF"), {(8, 8): (255, 255, 0)}, 0),
    "l-png": (encode(Image.new("L", (32, 32), 77), "PNG"), {(8, 8): (77, 77, 77)}, 0),
    "1-png": (encode(Image.new("1", (32, 32), 1), "PNG"), {(8, 8): WHITE}, 0),
    "i16-png": (encode(Image.fromarray(np.full((32, 32), 40000, np.uint16)), "PNG"), {(8, 8): (156,) * 3}, 0),
    "i16-png-range": (
        encode(Image.fromarray(np.array([[0, 128 * 257, 65535] * 11] * 32, np.uint16)[:, :32]), "PNG"),
        {(0, 0): BLACK, (1, 0): (128,) * 3, (2, 0): WHITE},
        0,
    ),
    "i32-tiff": (encode(Image.new("I", (32, 32), 40000), "TIFF"), {(8, 8): (156,) * 3}, 0),
    "i32-tiff-8bit-range": (encode(Image.new("I", (32, 32), 100), "TIFF"), {(8, 8): (100,) * 3}, 0),
    "f-tiff": (encode(Image.new("F", (32, 32), 0.5), "TIFF"), {(8, 8): (128,) * 3}, 0),
    "webp": (encode(Image.new("RGB", (32, 32), BLUE), "WEBP", lossless=True), {(8, 8): BLUE}, 0),
    "bmp": (encode(Image.new("RGB", (32, 32), GREEN), "BMP"), {(8, 8): GREEN}, 0),
    "gif-first-frame": (_gif_animated(), {(8, 8): BLUE}, 0),
    "png-broken-icc": (encode(Image.new("RGB", (32, 32), RED), "PNG", icc_profile=b"not a profile"), {(8, 8): RED}, 0),
}


@pytest.mark.parametrize("name", list(CASES))
def test_mode_becomes_rgb(tmp_path, name):
    data, expected, tol = CASES[name]
    im = images.load_image(write(tmp_path / "in.img", data))
    assert im.mode == "RGB" and im.size == (32, 32)
    for xy, colour in expected.items():
        assert close(im.getpixel(xy), colour, tol), (name, xy, im.getpixel(xy), colour)


def test_background_colour_is_used_for_transparency():
    im = images.load_image(encode(_rgba(), "PNG"), background=(0, 0, 255))
    assert im.getpixel((0, 0)) == BLUE and im.getpixel((8, 8)) == RED


def test_srgb_icc_profile_keeps_colours():
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    im = images.load_image(encode(Image.new("RGB", (32, 32), (200, 100, 50)), "PNG", icc_profile=srgb))
    assert close(im.getpixel((8, 8)), (200, 100, 50), 2)


def test_exif_orientation_is_applied():
    src = Image.new("RGB", (40, 20), BLUE)
    src.paste(RED, (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im = images.load_image(encode(src, "JPEG", exif=exif.tobytes(), quality=95))
    assert im.size == (20, 40)
    assert close(im.getpixel((10, 5)), RED, 8) and close(im.getpixel((10, 35)), BLUE, 8)


# --------------------------------------------------------------------------- bad input


def _text_png(tmp):
    return write(tmp / "notes.png", b"These are my holiday notes, not a picture.\n" * 20)


def _truncated_jpeg(tmp):
    data = noise_jpeg()
    return write(tmp / "cut.jpg", data[: len(data) // 2])


def _empty(tmp):
    return write(tmp / "empty.png", b"")


def _dir(tmp):
    (tmp / "folder").mkdir()
    return tmp / "folder"


BAD = {
    "missing file": (lambda tmp: tmp / "nope.png", NotFound, "check the path"),
    "directory": (_dir, InvalidImage, "is a folder"),
    "empty file": (_empty, InvalidImage, "empty"),
    "text renamed .png": (_text_png, InvalidImage, "not an image"),
    "truncated jpeg": (_truncated_jpeg, InvalidImage, "truncated"),
    "header claims 100000x100000": (lambda tmp: png_header_only(100_000, 100_000), ImageTooLarge, "too large"),
    "1x1 image": (lambda tmp: encode(Image.new("RGB", (1, 1)), "PNG"), InvalidImage, "at least 16x16"),
    "file:// url": (lambda tmp: "file:///etc/passwd", ImageFetchError, "file:"),
    "data: url": (lambda tmp: "data:image/png;base64,iVBORw0KGgo=", ImageFetchError, "data:"),
    "ftp:// url": (lambda tmp: "ftp://example.com/a.png", ImageFetchError, "http"),
    "svg": (lambda tmp: b'<svg xmlns="http://www.w3.org/2000/svg"/>' + b" " * 40, InvalidImage, "SVG"),
    "heic": (lambda tmp: b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64, InvalidImage, "HEIC"),
    "psd (not whitelisted)": (lambda tmp: b"8BPS\x00\x01" + b"\x00" * 64, InvalidImage, "not an image"),
    "not a source type": (lambda tmp: 12345, InvalidInput, "file path"),
    "empty string": (lambda tmp: "  ", InvalidInput, "No image"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(tmp_path, case):
    make, error, text = BAD[case]
    source = make(tmp_path)
    with pytest.raises(error) as exc:
        images.load_image(source)
    message = exc.value.message
    assert text in message and "\n" not in message, message
    if case == "missing file":
        assert str(source) in message


def test_pixel_limit_is_checked_from_header_before_decoding():
    # 9000x9000 is past our limit but below Pillow's own warning; the file has no
    # pixel data, so only a header check can tell "too large" (not "truncated").
    with pytest.raises(ImageTooLarge, match="9000x9000"):
        images.load_image(png_header_only(9000, 9000))
    with pytest.raises(ImageTooLarge):
        images.load_image(encode(Image.new("RGB", (20, 20)), "PNG"), max_pixels=399)
    assert images.load_image(encode(Image.new("RGB", (20, 20)), "PNG"), max_pixels=400).size == (20, 20)


def test_pillow_bomb_warning_as_error_becomes_image_too_large():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageTooLarge):
            images.load_image(png_header_only(10_000, 10_000))


def test_truncated_refused_even_if_someone_enabled_load_truncated(monkeypatch):
    data = noise_jpeg()
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(InvalidImage, match="truncated"):
        images.load_image(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # put back as found


def test_importing_does_not_enable_load_truncated():
    assert not ImageFile.LOAD_TRUNCATED_IMAGES


def test_byte_limits(tmp_path):
    data = noise_jpeg()
    with pytest.raises(ImageTooLarge, match="limit"):
        images.load_image(write(tmp_path / "a.jpg", data), max_bytes=len(data) - 1)
    with pytest.raises(ImageTooLarge, match="limit"):
        images.load_image(data, max_bytes=len(data) - 1)
    assert images.load_image(data, max_bytes=len(data)).size == (64, 64)


def test_read_source_bytes_origin(tmp_path, monkeypatch):
    path = write(tmp_path / "a.png", RED_PNG)
    monkeypatch.chdir(tmp_path)
    assert sources.read_source_bytes("a.png") == (RED_PNG, str(path))
    assert sources.read_source_bytes(path) == (RED_PNG, str(path))
    assert sources.read_source_bytes(bytearray(RED_PNG)) == (RED_PNG, None)


def test_sha256_of():
    assert sources.sha256_of(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# --------------------------------------------------------------------------- prepare()


def bands(width, height):
    """Left quarter red, middle half green, right quarter blue."""
    im = Image.new("RGB", (width, height), GREEN)
    im.paste(RED, (0, 0, width // 4, height))
    im.paste(BLUE, (width - width // 4, 0, width, height))
    return im


def test_crop_covers_and_centers():
    src = bands(200, 100)
    assert images.crop_box(src.size, 64, 64, "crop") == {"mode": "crop", "box": (50, 0, 150, 100)}
    out = images.prepare(src, 64, 64, "crop")
    assert out.size == (64, 64) and out.mode == "RGB"
    assert close(out.getpixel((2, 32)), GREEN, 4) and close(out.getpixel((61, 32)), GREEN, 4)
    assert images.crop_box((100, 200), 64, 64, "crop") == {"mode": "crop", "box": (0, 50, 100, 150)}


def test_pad_fits_and_centers():
    src = Image.new("RGB", (200, 100), RED)
    plan = images.crop_box(src.size, 64, 64, "pad")
    assert plan == {"mode": "pad", "paste": (0, 16, 64, 32)}
    out = images.prepare(src, 64, 64, "pad", background=WHITE)
    assert out.size == (64, 64)
    assert out.getpixel((32, 5)) == WHITE and out.getpixel((32, 58)) == WHITE
    assert close(out.getpixel((32, 32)), RED, 2) and close(out.getpixel((0, 20)), RED, 2)


def test_stretch_keeps_everything():
    assert images.crop_box((200, 100), 64, 64, "stretch") == {"mode": "stretch"}
    out = images.prepare(bands(200, 100), 64, 64, "stretch")
    assert out.size == (64, 64)
    assert close(out.getpixel((2, 32)), RED, 4) and close(out.getpixel((61, 32)), BLUE, 4)


@pytest.mark.parametrize("resize", images.RESIZE_MODES)
@pytest.mark.parametrize("src_size,target", [((333, 101), (64, 48)), ((17, 999), (1024, 576)), ((640, 360), (64, 64))])
def test_prepare_output_is_exact_size(resize, src_size, target):
    out = images.prepare(Image.new("RGB", src_size, RED), *target, resize=resize)
    assert out.size == target and out.mode == "RGB"


def test_prepare_converts_other_modes():
    out = images.prepare(_rgba(), 32, 32, "crop", background=(0, 0, 0))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == BLACK


def test_prepare_rejects_bad_arguments():
    im = Image.new("RGB", (32, 32))
    with pytest.raises(InvalidInput, match="resize mode"):
        images.prepare(im, 16, 16, "zoom")
    with pytest.raises(InvalidInput, match="width"):
        images.prepare(im, 0, 16)
    with pytest.raises(InvalidInput, match="colour"):
        images.prepare(im, 16, 16, "pad", background=(300, 0, 0))
