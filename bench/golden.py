"""The byte-identity check: seven runs whose decoded frames must not change across a refactor.

    python bench/golden.py            # prints one line per case: name, sha256 of the decoded pixels
    python bench/golden.py --check F  # compares against a file written by an earlier run (exit 1 on a change)

Each case runs `stillmotion generate examples/harbour.jpg --device cpu --format png --seed 1` with its
own flags in a fresh process and hashes the PNG frames' RGB pixels in order.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
CASES = {
    "demo": ["--model", "demo"],
    "demo-fast": ["--model", "demo", "--speed", "fast"],
    "demo-segments2": ["--model", "demo", "--segments", "2"],
    "demo-interp2-blend": ["--model", "demo", "--interpolate", "2", "--loop", "blend"],
    "tiny": ["--model", "tiny", "--width", "64", "--height", "64"],
    "tiny-planned": ["--model", "tiny", "--width", "64", "--height", "64", "--max-memory", "1GB", "--decode-chunk", "2"],
    "tiny-pad": ["--model", "tiny", "--width", "64", "--height", "64", "--resize", "pad"],
}


def run(name: str, flags: list[str], tmp: Path) -> str:
    out = tmp / name
    cmd = [sys.executable, "-c", "from stillmotion.cli import main; main()", "generate", str(REPO / "examples/harbour.jpg"),
           "--device", "cpu", "--format", "png", "--seed", "1", "-o", str(out), *flags]
    subprocess.run(cmd, check=True, capture_output=True)
    h = hashlib.sha256()
    for f in sorted(out.glob("*.png")):
        h.update(np.asarray(Image.open(f).convert("RGB")).tobytes())
    return h.hexdigest()


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        got = {name: run(name, flags, Path(tmp)) for name, flags in CASES.items()}
    lines = [f"{k} {v}" for k, v in got.items()]
    print("\n".join(lines))
    if len(argv) == 2 and argv[0] == "--check":
        want = dict(line.split() for line in Path(argv[1]).read_text().splitlines() if line.strip())
        bad = [k for k in got if want.get(k) != got[k]]
        if bad:
            print("changed: " + ", ".join(bad), file=sys.stderr)
            return 1
        print("all unchanged", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
