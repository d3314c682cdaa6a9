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
                if len(_MEMO) > 200_000:  # a bound on what many models' dry runs in one process keep
                    _MEMO.clear()
                self.memo = _MEMO

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
                key = _memo_key(func, args, kwargs)
                hit = self.memo.get(key) if key is not None else None
                if hit is not None:  # the same op on the same shapes before: its outputs' shapes, fresh storage
                    template, flops = hit
                    out = pytree.tree_map(_fresh, template)
                else:
                    out = func(*args, **kwargs)
                    flops = _op_flops(func, args, kwargs, out, flop_registry)
                    if key is not None and (template := _template(out, args, kwargs)) is not None:
                        self.memo[key] = (template, flops)
                self.flops += flops
                self._sweep()
                for t in pytree.tree_leaves(out):
                    self.add(t)
                return out

        return Mode()


# A transformer's blocks, a VAE's per-frame decode loop: a dry run makes the same op on the same shapes
# thousands of times, and on meta each call runs PyTorch's Python shape functions (most of a 121-frame
# estimate's time). An op whose outputs are new tensors (no view, no in-place write) gives outputs whose
# shapes, strides and dtypes depend only on its inputs' and its other arguments, so the second call on
# the same signature makes them directly; the bytes and FLOPs counted are those of the first call (the
# same op again in another stage, or the same stages again with tiling, counts the same).
_MEMO: dict = {}  # op signature -> (outputs' template, FLOPs): shared by every dry run in the process


class _Out:
    """An output tensor in a memo: what torch.empty_strided needs to make it again."""

    __slots__ = ("shape", "stride", "dtype")

    def __init__(self, t):
        self.shape, self.stride, self.dtype = tuple(t.shape), t.stride(), t.dtype


def _sig(x):
    """A hashable signature of one argument (None: an argument the memo does not handle)."""
    import torch

    if isinstance(x, torch.Tensor):  # on the CPU its values count, and a model makes a few small ones there
        return (tuple(x.shape), x.stride(), x.storage_offset(), x.dtype) if x.is_meta else None
    if isinstance(x, (list, tuple)):
        parts = tuple(_sig(v) for v in x)
        return None if any(p is None for p in parts) else (type(x).__name__, parts)
    if x is None or isinstance(x, (bool, int, float, str, torch.dtype, torch.device, torch.memory_format,
                                   torch.layout)):
        return (type(x).__name__, x)
    return None


def _memo_key(func, args, kwargs):
    """The op and its arguments' signatures, or None for an op that may alias or write its inputs."""
    import torch

    schema = func._schema
    if any(a.alias_info is not None for a in schema.arguments) or \
            any(r.alias_info is not None for r in schema.returns):
        return None
    sig = _sig((args, tuple(sorted(kwargs.items()))))
    return None if sig is None else (func, sig, torch.get_default_dtype())  # a factory op's dtype by default


def _template(out, args, kwargs):
    """`out` with its tensors as _Out, or None where a fresh tensor would not match one (an input's storage,
    two outputs on one storage, a storage offset, a larger storage than its shape needs)."""
    import torch
    import torch.utils._pytree as pytree

    leaves = pytree.tree_leaves(out)
    tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
    storages = {t.untyped_storage()._cdata for t in tensors}
    inputs = {t.untyped_storage()._cdata for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
    if len(storages) < len(tensors) or storages & inputs:
        return None
    for t in tensors:
        need = 0 if t.numel() == 0 else (1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))) * t.element_size()
        if not t.is_meta or t.storage_offset() != 0 or t.untyped_storage().nbytes() != need or \
                t.layout != torch.strided:
            return None
    if any(not isinstance(v, (torch.Tensor, bool, int, float, type(None))) for v in leaves):
        return None
    return pytree.tree_map(lambda v: _Out(v) if isinstance(v, torch.Tensor) else v, out)


def _fresh(v):
    import torch

    return torch.empty_strided(v.shape, v.stride, dtype=v.dtype, device="meta") if isinstance(v, _Out) else v


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
