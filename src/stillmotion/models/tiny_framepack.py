"""Tiny, random-weight FramePack models (diffusers' HunyuanVideoFramepackPipeline), built from code, fully offline.

Every component is the class the real FramePack assembles (HunyuanVideoFramepackTransformer3DModel with its
clean-latent and 2x/4x history embedders and SigLIP image projection, AutoencoderKLHunyuanVideo, a Llama text
encoder, a CLIP text encoder, SiglipVisionModel + SiglipImageProcessor, FlowMatchEulerDiscreteScheduler), at the
toy widths of diffusers' own FramePack pipeline test (get_dummy_components), seeded before each module so the
weights are the same on every machine. The output is noise: these models exercise every code path of the
pipeline (both sampling types, the last image, section after section) in seconds on a CPU.

The tokenizers are word-level vocabularies made in memory with the `tokenizers` library (no hub download, no
sentencepiece), wrapped as transformers' LlamaTokenizer and CLIPTokenizer, so save_pretrained / from_pretrained
round-trip offline. The pipeline pads the Llama prompt to its template's 95 tokens plus 256.

The sampling type is a property of the trained model (FramePack's inverted anti-drifting, F1's vanilla), not of the
weights' layout: the folder's stillmotion.json says which (registry.ModelDefaults.sampling_type).
"""

from __future__ import annotations

import os
import string
from pathlib import Path

SAMPLING_TYPES = ("inverted_anti_drifting", "vanilla")

LLAMA_DIM = 16  # text_embed_dim
CLIP_TEXT_DIM = 8  # pooled_projection_dim
SIGLIP_DIM = 32  # image_proj_dim
VOCAB_SIZE = 256

_WORDS = (
    "a an the of in on at to and or with from by for is are it this that describe video image "
    "boat sea water sky cloud sun cat dog bird man woman person face hand tree flower snow rain "
    "red blue green white dark bright walk run fly dance move turn look camera slow fast zoom pan"
).split()


def _vocab(specials: list[str]) -> dict[str, int]:
    pieces = list(specials)
    for piece in _WORDS + list(string.ascii_letters + string.digits + string.punctuation):
        if piece not in pieces:
            pieces.append(piece)
    assert len(pieces) <= VOCAB_SIZE, len(pieces)
    return {p: i for i, p in enumerate(pieces)}


def _word_level(specials: list[str], unk: str, lowercase: bool = False):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.WordLevel(_vocab(specials), unk_token=unk))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), *([normalizers.Lowercase()] if lowercase else [])])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return tok


def tiny_llama_tokenizer():
    """A Llama tokenizer made in memory (word level; <s> first, </s> pads as Llama 3's end-of-text token does)."""
    from tokenizers import processors
    from transformers import LlamaTokenizer

    tok = _word_level(["<unk>", "<s>", "</s>"], "<unk>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    return LlamaTokenizer(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                          pad_token="</s>", model_max_length=1024)


def tiny_clip_tokenizer():
    """A CLIP tokenizer made in memory: CLIP's byte-level BPE over single characters (each also with CLIP's
    end-of-word "</w>"), no merges, so every word spells out in known tokens."""
    from transformers import CLIPTokenizer

    pieces = ["<|endoftext|>", "<|startoftext|>"]
    for c in string.ascii_lowercase + string.digits + string.punctuation:
        pieces += [c, c + "</w>"]
    assert len(pieces) <= VOCAB_SIZE, len(pieces)
    return CLIPTokenizer(vocab={p: i for i, p in enumerate(pieces)}, merges=[], model_max_length=77)


def tiny_framepack_components(seed: int = 0) -> dict:
    """The keyword arguments of HunyuanVideoFramepackPipeline at toy width (fp32, deterministic for a seed)."""
    import torch
    from diffusers import (AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler,
                           HunyuanVideoFramepackTransformer3DModel)
    from transformers import (CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel, SiglipImageProcessor,
                              SiglipVisionConfig, SiglipVisionModel)

    torch.manual_seed(seed)
    transformer = HunyuanVideoFramepackTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1,
        num_single_layers=2, num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=LLAMA_DIM, pooled_projection_dim=CLIP_TEXT_DIM, rope_axes_dim=(2, 4, 4),
        image_condition_type=None, has_image_proj=True, image_proj_dim=SIGLIP_DIM, has_clean_x_embedder=True)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        act_fn="silu", norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8,
        temporal_compression_ratio=4, mid_block_add_attention=True)
    torch.manual_seed(seed + 2)
    text_encoder = LlamaModel(LlamaConfig(
        bos_token_id=1, eos_token_id=2, pad_token_id=2, hidden_size=LLAMA_DIM, intermediate_size=37,
        num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=3, vocab_size=VOCAB_SIZE,
        max_position_embeddings=512, hidden_act="silu")).eval()
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModel(CLIPTextConfig(
        bos_token_id=1, eos_token_id=0, pad_token_id=0, hidden_size=CLIP_TEXT_DIM, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=VOCAB_SIZE, projection_dim=32,
        max_position_embeddings=77, hidden_act="gelu")).eval()
    torch.manual_seed(seed + 4)
    image_encoder = SiglipVisionModel(SiglipVisionConfig(
        hidden_size=SIGLIP_DIM, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=8)).eval()
    return {
        "transformer": transformer.eval(),
        "vae": vae.eval(),
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),  # as diffusers' test and HunyuanVideo's repo
        "text_encoder": text_encoder,
        "tokenizer": tiny_llama_tokenizer(),
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": tiny_clip_tokenizer(),
        "image_encoder": image_encoder,
        "feature_extractor": SiglipImageProcessor(size={"height": 32, "width": 32}),
    }


def build_tiny_framepack_pipeline(seed: int = 0):
    from diffusers import HunyuanVideoFramepackPipeline

    return HunyuanVideoFramepackPipeline(**tiny_framepack_components(seed))


def build_tiny_framepack(folder: str | os.PathLike, seed: int = 0, sampling_type: str | None = None) -> Path:
    """Save a tiny FramePack as a diffusers folder (fp32 safetensors); with `sampling_type` (F1's "vanilla") its
    stillmotion.json says how the model samples, with the tiny-framepack registry defaults."""
    import dataclasses

    from .folder_info import write_folder_info
    from .registry import REGISTRY

    if sampling_type is not None and sampling_type not in SAMPLING_TYPES:
        raise ValueError(f"unknown sampling type {sampling_type!r}: {', '.join(SAMPLING_TYPES)}")
    folder = Path(folder)
    build_tiny_framepack_pipeline(seed).save_pretrained(folder, safe_serialization=True)
    if sampling_type is not None:
        defaults = REGISTRY["tiny-framepack"].defaults
        write_folder_info(folder, dataclasses.replace(defaults, sampling_type=sampling_type,
                                                      end_image=sampling_type == "inverted_anti_drifting"))
    return folder
