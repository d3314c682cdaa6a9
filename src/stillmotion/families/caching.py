"""What `--speed fast` runs with on the transformer families: diffusers' First Block Cache (Wan, LTX).

diffusers registers each transformer block class it can cache (hooks._helpers.TransformerBlockRegistry: which
argument and output are the hidden states). LTX-2's audio-video block (LTX2VideoTransformerBlock) is not registered in
diffusers 0.42, and its second stream is the audio, not the text: `register_block` registers it with the audio
stream where diffusers' hook reads "encoder_hidden_states", so a skipped pass adds the cached video and audio
residuals and a block that does not run hands both streams on unchanged.
"""

from __future__ import annotations


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
    """diffusers' First Block Cache on a list of transformers (Wan's experts, LTX's), with the engine's cache protocol:
    attach() enables it on each (CacheMixin.enable_cache), detach() disables it (idempotent, safe after a
    failed attach), stats() says what ran: the threshold and how many transformer passes ran every block
    ("full_passes") or only the first ("cached_passes"); with CFG a step is two passes (cond, uncond), each
    with its own cache, and A14B's experts each start with a full pass."""

    def __init__(self, denoisers, threshold: float):
        self.denoisers = list(denoisers)
        self.threshold = float(threshold)
        self.full_passes = 0
        self.cached_passes = 0
        self.counted = False  # whether the passes could be counted (a diffusers hook internal; see _count)
        self._enabled: list = []

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

    def detach(self) -> None:
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
