"""Tiny, random-weight LTX models, built from code and fully offline.

Two layouts, each with the classes the real repos ship, at toy width and seeded before each module so the
weights are the same on every machine (the output is noise, and so is the sound):

- ``"ltx2"``: LTX-2 (``LTX2ImageToVideoPipeline``): the audio-video transformer (``LTX2VideoTransformer3DModel``),
  the text connectors, the video VAE (``AutoencoderKLLTX2Video``), the audio VAE (``AutoencoderKLLTX2Audio``, mel
  spectrograms) and the vocoder (``LTX2Vocoder``), a Gemma-3 text encoder (``Gemma3ForConditionalGeneration``) with a
  Gemma tokenizer built in memory. The shapes follow diffusers' own LTX-2 tests; the video VAE keeps the real
  compression (32x spatial, 8x temporal: 8k+1 frames at multiples of 32) and the vocoder the real one (160 samples per
  mel frame at 16 kHz), so a clip's soundtrack lasts as long as its picture.
- ``"ltx"``: LTX-Video 0.9.x (``LTXImageToVideoPipeline`` / ``LTXConditionPipeline``): ``LTXVideoTransformer3DModel``,
  ``AutoencoderKLLTXVideo`` with timestep conditioning (as 0.9.1 and later have it), a T5 encoder and tokenizer
  (models/tiny_wan.py's).

Every tokenizer is built with the ``tokenizers`` library alone (no sentencepiece, no hub download), wrapped as
transformers' tokenizer class so ``save_pretrained`` / ``from_pretrained`` round-trip offline.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

VARIANTS = ("ltx2", "ltx")

TEXT_DIM = 32  # Gemma-3's hidden size here; the connectors' width (heads x head dim) must equal it
TEXT_LAYERS = 2  # the connectors take every hidden state: TEXT_LAYERS + 1 (the embeddings) of them
SAMPLE_RATE = 16000  # the audio VAE's and the vocoder's rate, as LTX-2 ships them
MEL_HOP = 160

_WORDS = (
    "a an the of in on at to and with is it boat ship sea water wave sky cloud sun light night day cat dog bird "
    "man woman face hand car street city tree forest flower mountain snow rain fire red blue green white black "
    "walk run fly swim move turn look camera slow fast zoom pan sound music wind voice quiet loud video scene"
).split()


def tiny_gemma_tokenizer():
    """A Gemma tokenizer built in memory: <pad>=0, <eos>=1, <bos>=2, <unk>=3, whole words and single characters
    (WordPiece with no continuation prefix over Metaspace pieces, so any text tokenizes); <bos> first, as Gemma's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import GemmaTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<image>": 4, "\u2581": 5}
    for w in _WORDS:
        vocab.setdefault("\u2581" + w, len(vocab))
    for c in string.ascii_letters + string.digits + string.punctuation:
        vocab.setdefault("\u2581" + c, len(vocab))
        vocab.setdefault(c, len(vocab))
    tok = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", continuing_subword_prefix="",
                                     max_input_chars_per_word=100))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B",
                                                       special_tokens=[("<bos>", 2)])
    return GemmaTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                              unk_token="<unk>", padding_side="left", model_max_length=1024)


def tiny_gemma3(vocab_size: int, hidden_size: int = TEXT_DIM):
    """Gemma-3 (text model plus its SigLIP vision tower, as the LTX-2 repos ship it) at toy width (`hidden_size`: the
    connectors' width, TEXT_DIM here; 128 for a model laid out as ComfyUI's files, tests/ltx_comfy_layout.py)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    text = Gemma3TextConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=32,
                            num_hidden_layers=TEXT_LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                            max_position_embeddings=1024, sliding_window=64, pad_token_id=0, eos_token_id=1,
                            bos_token_id=2)
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                image_size=16, patch_size=8)
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4, boi_token_index=4,
                          eoi_token_index=4, image_token_index=4)
    return Gemma3ForConditionalGeneration(config).eval()


def tiny_ltx2_components(seed: int = 0, *, heads: int = 2, head_dim: int = 8, layers: int = 2) -> dict:
    """The keyword arguments of `LTX2ImageToVideoPipeline` for a tiny LTX-2 (fp32, CPU, deterministic). `heads`,
    `head_dim` and `layers` of the transformer make a mid-size one for benchmarks (bench/bench_ltx.py)."""
    import torch
    from diffusers import (AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler,
                           LTX2VideoTransformer3DModel)
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    tokenizer = tiny_gemma_tokenizer()
    torch.manual_seed(seed)
    text_encoder = tiny_gemma3(len(tokenizer))
    torch.manual_seed(seed + 1)
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=heads,
        attention_head_dim=head_dim, cross_attention_dim=heads * head_dim, audio_in_channels=4, audio_out_channels=4,
        audio_num_attention_heads=heads, audio_attention_head_dim=max(4, head_dim // 2),
        audio_cross_attention_dim=heads * max(4, head_dim // 2),
        num_layers=layers, qk_norm="rms_norm_across_heads", caption_channels=TEXT_DIM, rope_double_precision=False,
        rope_type="split").eval()
    torch.manual_seed(seed + 2)
    connectors = LTX2TextConnectors(
        caption_channels=TEXT_DIM, text_proj_in_factor=TEXT_LAYERS + 1, video_connector_num_attention_heads=4,
        video_connector_attention_head_dim=TEXT_DIM // 4, video_connector_num_layers=1,
        video_connector_num_learnable_registers=None, audio_connector_num_attention_heads=4,
        audio_connector_attention_head_dim=TEXT_DIM // 4, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32, rope_theta=10000.0,
        rope_double_precision=False, causal_temporal_positioning=False, rope_type="split").eval()
    torch.manual_seed(seed + 3)
    vae = AutoencoderKLLTX2Video(  # 4x4 patches and three 2x spatio-temporal stages: 32x spatial, 8x temporal
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8),
        decoder_block_out_channels=(8, 8, 8), layers_per_block=(1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True), decoder_spatio_temporal_scaling=(True, True, True),
        decoder_inject_noise=(False, False, False, False), downsample_type=("spatiotemporal",) * 3,
        upsample_type=("spatiotemporal",) * 3, upsample_residual=(False, False, False), upsample_factor=(1, 1, 1),
        timestep_conditioning=False, patch_size=4, patch_size_t=1, encoder_causal=True, decoder_causal=False).eval()
    torch.manual_seed(seed + 4)
    audio_vae = AutoencoderKLLTX2Audio(  # LTX-2's three levels: its encoder compresses time and mel bins 4x, as the
        # pipeline's latent sizes assume (a soundtrack given to follow, --audio, is encoded to the transformer's length)
        base_channels=4, output_channels=2, ch_mult=(1, 2, 4), num_res_blocks=1, attn_resolutions=None, in_channels=2,
        resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height", dropout=0.0,
        mid_block_add_attention=False, sample_rate=SAMPLE_RATE, mel_hop_length=MEL_HOP, is_causal=True,
        mel_bins=8).eval()
    torch.manual_seed(seed + 5)
    vocoder = LTX2Vocoder(  # 4 * 4 * 10 = 160 samples per mel frame: the hop, so the rate is SAMPLE_RATE
        in_channels=2 * 8, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[8, 8, 20],
        upsample_factors=[4, 4, 10], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
        leaky_relu_negative_slope=0.1, output_sampling_rate=SAMPLE_RATE).eval()
    return {"scheduler": FlowMatchEulerDiscreteScheduler(), "vae": vae, "audio_vae": audio_vae,
            "text_encoder": text_encoder, "tokenizer": tokenizer, "connectors": connectors,
            "transformer": transformer, "vocoder": vocoder}


def tiny_t5_encoder():
    from transformers import T5Config, T5EncoderModel

    from .tiny_wan import TEXT_VOCAB_SIZE

    config = T5Config(vocab_size=TEXT_VOCAB_SIZE, d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0,
                      feed_forward_proj="relu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5EncoderModel(config).eval()


def tiny_ltx_components(seed: int = 0) -> dict:
    """The keyword arguments of `LTXImageToVideoPipeline` (and `LTXConditionPipeline`) for a tiny LTX-Video 0.9.x."""
    import torch
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel

    from .tiny_wan import tiny_tokenizer

    torch.manual_seed(seed)
    text_encoder = tiny_t5_encoder()
    torch.manual_seed(seed + 1)
    transformer = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
                                             num_attention_heads=4, attention_head_dim=8, cross_attention_dim=32,
                                             num_layers=2, caption_channels=TEXT_DIM).eval()
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLLTXVideo(  # 4x4 patches and three 2x spatio-temporal stages: 32x spatial, 8x temporal
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False), decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=True, patch_size=4,
        patch_size_t=1, encoder_causal=True, decoder_causal=False).eval()
    return {"scheduler": FlowMatchEulerDiscreteScheduler(), "vae": vae, "text_encoder": text_encoder,
            "tokenizer": tiny_tokenizer(), "transformer": transformer}


def build_tiny_ltx_pipeline(variant: str = "ltx2", seed: int = 0):
    """The tiny pipeline of a layout: LTX2ImageToVideoPipeline ("ltx2") or LTXImageToVideoPipeline ("ltx")."""
    if variant == "ltx2":
        from diffusers import LTX2ImageToVideoPipeline

        return LTX2ImageToVideoPipeline(**tiny_ltx2_components(seed))
    if variant == "ltx":
        from diffusers import LTXImageToVideoPipeline

        return LTXImageToVideoPipeline(**tiny_ltx_components(seed))
    raise ValueError(f"unknown tiny LTX variant {variant!r}; choose from {', '.join(VARIANTS)}")


def build_tiny_ltx(folder: str | os.PathLike, variant: str = "ltx2", seed: int = 0) -> Path:
    """Save a tiny layout as a diffusers folder (fp32 safetensors) that from_pretrained loads offline."""
    folder = Path(folder)
    build_tiny_ltx_pipeline(variant, seed).save_pretrained(folder, safe_serialization=True)
    return folder


def write_distilled_lora(folder: str | os.PathLike, name: str, transformer=None, rank: int = 4, seed: int = 1) -> Path:
    """A random LoRA over every linear layer of an LTX-2 transformer's blocks (default: the one saved in `folder`), in
    Lightricks' own layout ("diffusion_model.<module>.lora_A/B.weight", as ltx-2-19b-distilled-lora-384.safetensors
    is), written to folder/name: tiny-ltx2's stand-in for LTX-2's distilled LoRA, so `--speed fast` runs its whole
    path offline (diffusers converts the layout on load). Written atomically (a model folder built before it had
    one gets it on first use)."""
    import torch
    from safetensors.torch import save_file

    from ..util import atomic_path

    if transformer is None:
        from diffusers import LTX2VideoTransformer3DModel

        transformer = LTX2VideoTransformer3DModel.from_pretrained(Path(folder) / "transformer")
    g = torch.Generator().manual_seed(seed)
    state = {}
    for module_name, module in transformer.named_modules():
        if module_name.startswith("transformer_blocks.") and isinstance(module, torch.nn.Linear):
            key = f"diffusion_model.{module_name}"
            state[f"{key}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=g) * 0.2
            state[f"{key}.lora_B.weight"] = torch.randn(module.out_features, rank, generator=g) * 0.2
    path = Path(folder) / name
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    return path
