"""The dry run: the model's own calls on PyTorch's `meta` device, counted, not computed.

Under `DryRun()` every op runs on shapes only (no data, no compute) through a
dispatch mode that counts the bytes of every tensor created and watches when
each storage is freed (the peak of live bytes is the call's working memory),
and counts matmul/convolution FLOPs with torch's own formulas. Attention is
counted as a fused kernel (PyTorch SDPA: output only, no N x N score matrix),
which is what SDPA runs on CUDA and on the CPU for these shapes; a UNet set to
`--attention math` (engine/speed.set_attention, as shapes.model_shape does)
builds its score matrices, and they are counted like any other tensor.
"""

from __future__ import annotations

import math


class _LiveBytes:
    """A TorchDispatchMode that follows every storage created under it and records the peak of live bytes
    (and counts matmul/convolution FLOPs with torch's own formulas)."""

    def __new__(cls):
        from torch.multiprocessing.reductions import StorageWeakRef
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        class Mode(TorchDispatchMode):
            def __init__(self):
                super().__init__()
                self.live: dict[int, tuple] = {}
                self.now = 0
                self.peak = 0
                self.flops = 0

            def _sweep(self):
                dead = [k for k, (ref, _) in self.live.items() if ref.expired()]
                for k in dead:
                    self.now -= self.live.pop(k)[1]

            def add(self, t):
                import torch

                if not isinstance(t, torch.Tensor):
                    return
                st = t.untyped_storage()
                ref = StorageWeakRef(st)
                key = ref.cdata
                if key in self.live and not self.live[key][0].expired():
                    return
                n = st.nbytes()
                self.live[key] = (ref, n)
                self.now += n
                self.peak = max(self.peak, self.now)

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                import torch.utils._pytree as pytree

                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                self.flops += _op_flops(func, args, kwargs, out, flop_registry)
                self._sweep()
                for t in pytree.tree_leaves(out):
                    self.add(t)
                return out

        return Mode()


def _op_flops(func, args, kwargs, out, registry) -> int:
    """FLOPs of one op: linear and convolutions here (on meta they arrive undecomposed), the rest from torch's registry."""
    name = func._overloadpacket.__name__
    if name == "linear":
        return 2 * out.numel() * args[1].shape[1]
    if name in ("conv1d", "conv2d", "conv3d", "convolution", "_convolution"):
        w = args[1]
        return 2 * out.numel() * math.prod(w.shape[1:])
    if name == "matmul":
        return 2 * out.numel() * args[0].shape[-1]
    count = registry.get(func._overloadpacket)
    return int(count(*args, **kwargs, out_val=out)) if count is not None else 0


def _fused_sdpa(counter: list):
    """A stand-in for F.scaled_dot_product_attention on meta tensors: a fused kernel's memory (output only) and FLOPs."""
    import torch

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        nq, d = query.shape[-2], query.shape[-1]
        nk = key.shape[-2]
        lead = math.prod(query.shape[:-2])
        counter[0] += 4 * lead * nq * nk * d
        return torch.empty(*query.shape[:-1], value.shape[-1], dtype=query.dtype, device=query.device)

    return sdpa


class DryRun:
    """Context: meta dry run with the fused-attention stand-in; `.mode` tracks live bytes and FLOPs."""

    def __enter__(self):
        import torch
        import torch.nn.functional as F

        self._sdpa_flops = [0]
        self._orig = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = _fused_sdpa(self._sdpa_flops)
        self._inf = torch.inference_mode()
        self._inf.__enter__()
        self.mode = _LiveBytes()
        self.mode.__enter__()
        return self

    def stage_flops(self) -> int:
        return int(self.mode.flops + self._sdpa_flops[0])

    def __exit__(self, *exc):
        import torch.nn.functional as F

        self.mode.__exit__(*exc)
        self._inf.__exit__(*exc)
        F.scaled_dot_product_attention = self._orig
        return False
