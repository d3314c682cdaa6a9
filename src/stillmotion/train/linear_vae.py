"""A VAE that needs no VAE training: a small linear autoencoder written into SVD's VAE classes.

Training AutoencoderKLTemporalDecoder from scratch on a CPU is slow (after 100
steps it had not even learned the mean colour). But the architecture can carry
a *linear* autoencoder exactly, and a linear autoencoder with a 4x
downsampling to 4 channels reconstructs these scenes at ~30 dB:

  * every residual branch (ResNet convs, attention output) is zeroed, so each
    ResNet, attention and spatio-temporal block is the identity;
  * the down/upsampling convolutions, conv_in/conv_out and the 1x1 shortcuts
    where the width changes carry the linear maps of a small `Proxy`
    autoencoder trained in seconds;
  * the one non-linearity left on the main path, GroupNorm -> SiLU before each
    conv_out, is made exact: a feature s travels as the group (s, -s, K, -K),
    whose mean is 0 and whose spread is ~K/sqrt(2) whatever s is, and
    SiLU(a) - SiLU(-a) = a for every a, so conv_out reads s back exactly;
  * the temporal decoder's time_conv_out is the identity in time.

`build_linear_vae(proxy)` returns an AutoencoderKLTemporalDecoder whose
encode/decode match the proxy to ~1e-4; the proxy's encoder is what the demo's
training loop uses to compute latents quickly (the same function, 50x cheaper).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

K = 100.0  # the constant that pins each GroupNorm group's mean and spread
WIDE, NARROW = 128, 32  # VAE widths: 128 where a GroupNorm sits on the main path (32 groups of 4)
BLOCK_OUT = (WIDE, NARROW, WIDE)


class Proxy(nn.Module):
    """Linear autoencoder: 3 -> 64x64 ... 4 x 16x16 latent ... -> 3, with the VAE's padding conventions."""

    def __init__(self, latent: int = 4, width: int = 16):
        super().__init__()
        w = width
        self.e_in = nn.Conv2d(3, w, 3, padding=1)
        self.down1 = nn.Conv2d(w, w, 3, stride=2)
        self.down2 = nn.Conv2d(w, w, 3, stride=2)
        self.e_out = nn.Conv2d(w, latent, 3, padding=1)
        self.d_in = nn.Conv2d(latent, w, 3, padding=1)
        self.up1 = nn.Conv2d(w, w, 3, padding=1)
        self.up2 = nn.Conv2d(w, w, 3, padding=1)
        self.d_out = nn.Conv2d(w, 3, 3, padding=1)

    def encode(self, x):
        x = self.e_in(x)
        x = self.down1(F.pad(x, (0, 1, 0, 1)))
        x = self.down2(F.pad(x, (0, 1, 0, 1)))
        return self.e_out(x)

    def decode(self, z):
        z = self.d_in(z)
        z = self.up1(F.interpolate(z, scale_factor=2.0, mode="nearest"))
        z = self.up2(F.interpolate(z, scale_factor=2.0, mode="nearest"))
        return self.d_out(z)

    def forward(self, x):
        return self.decode(self.encode(x))


def train_proxy(steps: int = 400, seed: int = 0, size: int = 64, batch: int = 16, log=print) -> tuple[Proxy, dict]:
    from .synthetic import make_clip

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 7)
    proxy = Proxy()
    opt = torch.optim.Adam(proxy.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for step in range(steps):
        frames = np.stack([make_clip(rng, size, size, 1, objects=rng.random() < 0.3)[0] for _ in range(batch)])
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
        loss = F.mse_loss(proxy(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"proxy step {step}/{steps}: {10 * math.log10(4 / loss.item()):.2f} dB")
    with torch.no_grad():
        frames = np.stack([make_clip(rng, size, size, 1)[0] for _ in range(64)])
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
        z = proxy.encode(x)
        val = 10 * math.log10(4 / F.mse_loss(proxy.decode(z), x.clamp(-1, 1)).item())
    return proxy, {"val_psnr_db": round(val, 2), "latent_std": round(float(z.std()), 4)}


# --------------------------------------------------------------------------- embedding
def _zero_all(module: nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
        for m in module.modules():
            if isinstance(m, nn.GroupNorm) and m.weight is not None:
                m.weight.fill_(1.0)


def _put(conv: nn.Conv2d, w: torch.Tensor, b: torch.Tensor | None, src: str, dst: str, read_scale: float = 1.0) -> None:
    """Write proxy weights w (out, in, kh, kw) into conv, mapping layouts 'pm' (s, -s, K, -K per feature) / 'plain'."""
    o, i = w.shape[:2]
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        ins = [4 * j for j in range(i)] if src == "pm" else list(range(i))
        for oo in range(o):
            for jj, ci in enumerate(ins):
                k = w[oo, jj] * read_scale
                if dst == "pm":
                    conv.weight[4 * oo, ci] = k
                    conv.weight[4 * oo + 1, ci] = -k
                else:
                    conv.weight[oo, ci] = k
                if src == "pm" and read_scale != 1.0:  # reading after GroupNorm+SiLU: use s and -s
                    col = 4 * oo if dst == "pm" else oo
                    conv.weight[col, ci + 1] = -k
                    if dst == "pm":
                        conv.weight[4 * oo + 1, ci + 1] = k
        bias = b if b is not None else torch.zeros(o)
        for oo in range(o):
            if dst == "pm":
                conv.bias[4 * oo] = bias[oo]
                conv.bias[4 * oo + 1] = -bias[oo]
                conv.bias[4 * oo + 2] = K
                conv.bias[4 * oo + 3] = -K
            else:
                conv.bias[oo] = bias[oo]


def _eye(n: int) -> torch.Tensor:
    return torch.eye(n).view(n, n, 1, 1)


def build_linear_vae(proxy: Proxy, scaling_factor: float = 1.0):
    """An AutoencoderKLTemporalDecoder computing exactly the proxy (see the module doc)."""
    from diffusers import AutoencoderKLTemporalDecoder

    lat = proxy.e_out.out_channels
    w = proxy.e_in.out_channels
    vae = AutoencoderKLTemporalDecoder(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        block_out_channels=BLOCK_OUT,
        layers_per_block=1,
        latent_channels=lat,
        sample_size=64,
        scaling_factor=scaling_factor,
    )
    _zero_all(vae)
    sigma0 = math.sqrt((2 * K * K) / 4 + 1e-6)  # spread of a (s, -s, K, -K) group when s << K
    enc, dec = vae.encoder, vae.decoder
    p = proxy
    with torch.no_grad():
        # encoder: 64x64 pm -> down -> 32x32 pm -> (shortcut) plain -> down -> 16x16 plain -> (shortcut) pm
        _put(enc.conv_in, p.e_in.weight, p.e_in.bias, "plain", "pm")
        _put(enc.down_blocks[0].downsamplers[0].conv, p.down1.weight, p.down1.bias, "pm", "pm")
        _put(enc.down_blocks[1].resnets[0].conv_shortcut, _eye(w), None, "pm", "plain")
        _put(enc.down_blocks[1].downsamplers[0].conv, p.down2.weight, p.down2.bias, "plain", "plain")
        sc = enc.down_blocks[2].resnets[0].conv_shortcut
        _put(sc, _eye(w), None, "plain", "pm")
        # conv_out reads SiLU(GN(s)) - SiLU(GN(-s)) = s / sigma0; logvar channels: bias -30 (std ~ 3e-7)
        _put(enc.conv_out, p.e_out.weight, p.e_out.bias, "pm", "plain", read_scale=sigma0)
        enc.conv_out.bias[lat:] = -30.0
        vae.quant_conv.weight.copy_(_eye(2 * lat))
        # decoder: 16x16 pm -> up -> 32x32 pm -> (shortcut) plain -> up -> 64x64 plain -> (shortcut) pm
        _put(dec.conv_in, p.d_in.weight, p.d_in.bias, "plain", "pm")
        _put(dec.up_blocks[0].upsamplers[0].conv, p.up1.weight, p.up1.bias, "pm", "pm")
        _put(dec.up_blocks[1].resnets[0].spatial_res_block.conv_shortcut, _eye(w), None, "pm", "plain")
        _put(dec.up_blocks[1].upsamplers[0].conv, p.up2.weight, p.up2.bias, "plain", "plain")
        _put(dec.up_blocks[2].resnets[0].spatial_res_block.conv_shortcut, _eye(w), None, "plain", "pm")
        _put(dec.conv_out, p.d_out.weight, p.d_out.bias, "pm", "plain", read_scale=sigma0)
        dec.time_conv_out.weight.zero_()
        for c in range(3):
            dec.time_conv_out.weight[c, c, 1, 0, 0] = 1.0
    return vae.eval()
