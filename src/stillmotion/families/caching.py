"""What `--speed fast` runs with on the transformer families: diffusers' First Block Cache (Wan, LTX, FramePack).

Each transformer pass runs its first block; when that block's residual changed by less than the threshold (relative
mean absolute difference) since the last full pass, the other blocks are skipped and their cached residual is added.
The hooks keep their state per cache context (`model.cache_context(name)`): Wan's and LTX's pipelines open one around
each pass ("cond", "uncond"); a pipeline that opens none (FramePack's) gets its transformer's forward wrapped in one
here (`contexts`: the names its passes take in turn, e.g. cond then uncond with true CFG).

diffusers registers each transformer block class it can cache (hooks._helpers.TransformerBlockRegistry: which
argument and output are the hidden states). LTX-2's audio-video block (LTX2VideoTransformerBlock) is not registered in
diffusers 0.42, and its second stream is the audio, not the text: `register_block` registers it with the audio
stream where diffusers' hook reads "encoder_hidden_states", so a skipped pass adds the cached video and audio
residuals and a block that does not run hands both streams on unchanged.
"""

from __future__ import annotations

from typing import Optional, Sequence


def register_block(model) -> None:
    """Register `model`'s transformer block class with diffusers' TransformerBlockRegistry where diffusers has not
    (LTX-2's audio-video block; see the module's docstring). A no-op for the blocks diffusers knows."""
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
    from diffusers.models.transformers.transformer_ltx2 import LTX2VideoTransformerBlock

    blocks = getattr(model, "transformer_blocks", None)
    cls = type(blocks[0]) if blocks else None
    if cls is not LTX2VideoTransformerBlock:
        return  # a block diffusers registers itself (or whose missing registration diffusers names on enable)
    try:
        TransformerBlockRegistry.get(cls)
        return  # a later diffusers registers it: theirs is used
    except ValueError:
        pass

    class AudioStreamMetadata(TransformerBlockMetadata):
        """The hook asks for "encoder_hidden_states" as the block's second stream: LTX-2's is the audio."""

        def _get_parameter_from_args_kwargs(self, identifier, args=(), kwargs=None):
            if identifier == "encoder_hidden_states":
                identifier = "audio_hidden_states"
            return super()._get_parameter_from_args_kwargs(identifier, args, kwargs)

    TransformerBlockRegistry.register(cls, AudioStreamMetadata(return_hidden_states_index=0,
                                                               return_encoder_hidden_states_index=1))


class FirstBlockCache:
    """diffusers' First Block Cache on a list of transformers (Wan's experts, LTX's, FramePack's), with the engine's
    cache protocol: attach() enables it on each (CacheMixin.enable_cache), detach() disables it (idempotent, safe
    after a failed attach), stats() says what ran: the threshold and how many transformer passes ran every block
    ("full_passes") or only the first ("cached_passes"); with CFG a step is two passes (cond, uncond), each
    with its own cache, and A14B's experts each start with a full pass.

    `contexts`: for a pipeline that opens no cache context, the context names its transformer passes take in turn
    (("cond",) for one pass a step, ("cond", "uncond") for two); the forward is wrapped in that context while
    attached. None: the pipeline opens its own. `reset_every`: with `contexts`, the cache is emptied after so many
    passes (FramePack: each section starts from fresh noise, so its first pass runs every block)."""

    def __init__(self, denoisers, threshold: float, contexts: Optional[Sequence[str]] = None,
                 reset_every: Optional[int] = None):
        self.denoisers = list(denoisers)
        self.threshold = float(threshold)
        self.contexts = tuple(contexts) if contexts else None
        self.reset_every = reset_every  # with `contexts`: passes after which the cache starts afresh (a section)
        self.full_passes = 0
        self.cached_passes = 0
        self.counted = False  # whether the passes could be counted (a diffusers hook internal; see _count)
        self._enabled: list = []
        self._wrapped: list = []  # (model, the forward it had as an instance attribute, or None)

    def attach(self) -> None:
        if self._enabled:
            return
        from diffusers.hooks import FirstBlockCacheConfig

        self.full_passes = self.cached_passes = 0
        self.counted = True
        for model in self.denoisers:
            register_block(model)
            model.enable_cache(FirstBlockCacheConfig(threshold=self.threshold))
            self._enabled.append(model)
            self.counted = self._count(model) and self.counted
            if self.contexts:
                self._wrap(model)

    def detach(self) -> None:
        while self._wrapped:
            model, own = self._wrapped.pop()
            if own is None:
                del model.forward  # back to the class's forward
            else:
                model.forward = own  # a hook's wrapper that was there before (e.g. group offload)
        while self._enabled:
            model = self._enabled.pop()
            if model.is_cache_enabled:
                model.disable_cache()

    def stats(self) -> dict:
        out = {"cache": "first-block", "threshold": self.threshold}
        if self.counted:
            out |= {"full_passes": self.full_passes, "cached_passes": self.cached_passes}
        return out

    def _count(self, model) -> bool:
        """Count full and cached passes by wrapping the head block hook's decision (FBCHeadBlockHook.
        _should_compute_remaining_blocks, diffusers 0.35-0.42); False where that hook is not found."""
        from diffusers.hooks.first_block_cache import _FBC_LEADER_BLOCK_HOOK

        for module in model.modules():
            registry = getattr(module, "_diffusers_hook", None)
            hook = registry.get_hook(_FBC_LEADER_BLOCK_HOOK) if registry is not None else None
            decide = getattr(hook, "_should_compute_remaining_blocks", None)
            if decide is None:
                continue

            def counted(residual, decide=decide):
                full = decide(residual)
                if full:
                    self.full_passes += 1
                else:
                    self.cached_passes += 1
                return full

            hook._should_compute_remaining_blocks = counted
            return True
        return False

    def _wrap(self, model) -> None:
        """Every forward of `model` inside `model.cache_context(name)`, the names taken in turn from `contexts`."""
        own = model.__dict__.get("forward")
        forward = model.forward
        names, turn, every = self.contexts, [0], self.reset_every

        def in_context(*args, **kwargs):
            if every and turn[0] and turn[0] % every == 0:
                model._reset_stateful_cache()  # a new section: new noise, nothing to reuse from the last one
            name = names[turn[0] % len(names)]
            turn[0] += 1
            with model.cache_context(name):
                return forward(*args, **kwargs)

        model.forward = in_context
        self._wrapped.append((model, own))
