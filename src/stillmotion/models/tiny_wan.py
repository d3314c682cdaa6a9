"""Tiny, random-weight Wan image-to-video models, built from code and fully offline.

Every component is the class the real Wan repos ship (WanTransformer3DModel,
AutoencoderKLWan, UMT5EncoderModel, CLIPVisionModel +
CLIPImageProcessor, UniPCMultistepScheduler in flow mode), at toy width, seeded
before each module so the weights are the same on every machine. The output
is noise: these models exist to exercise every code path of
`WanImageToVideoPipeline` (loading, text/image encoding, the two-expert switch,
the TI2V timestep mask, decoding) in seconds on a CPU with no download.

Variants (the layout of the real model each one mimics):

- ``"wan2.1"``: Wan 2.1 I2V 14B. One transformer with ``image_dim`` (takes CLIP
  image embeddings through added K/V), ``in_channels = 2 * z_dim + 4`` (noise +
  mask + encoded condition video), the 2.1 VAE (8x spatial, 4x temporal).
- ``"wan2.1-flf2v"``: Wan 2.1 FLF2V (first-last-frame). As ``"wan2.1"`` plus
  ``pos_embed_seq_len = 2 * image tokens`` so the transformer takes the CLIP
  embeddings of the first and the last image: the only 2.1 layout that accepts
  ``last_image=``.
- ``"wan2.2-a14b"``: Wan 2.2 I2V A14B. Two experts (``transformer`` for high
  noise, ``transformer_2`` for low noise, different seeds), ``boundary_ratio``
  0.9, no image encoder, the 2.1 VAE.
- ``"wan2.2-ti2v-5b"``: Wan 2.2 TI2V 5B. One transformer with ``in_channels =
  z_dim`` (nothing concatenated), ``expand_timesteps=True`` (per-token timesteps
  with the first latent frame masked to t=0), no image encoder, the 2.2 VAE
  (``is_residual``, ``patch_size=2``, 16x spatial, 4x temporal, 48 latent
  channels).

The tokenizer is a small Unigram model over a few hundred pieces (the
``tokenizers`` library only: no sentencepiece, no hub download), wrapped as
transformers' T5 tokenizer so ``save_pretrained`` / ``from_pretrained``
round-trip offline.

Note: ``WanImageToVideoPipeline`` cleans prompts with ``ftfy``, which must be
installed for any call with a text prompt.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

VARIANTS = ("wan2.1", "wan2.1-flf2v", "wan2.2-a14b", "wan2.2-ti2v-5b")

# Text stack (shared by every variant). The pipeline pads prompts to 512 tokens, and
# the transformer's image/text split assumes exactly 512 text tokens (hard-coded in
# diffusers' WanAttnProcessor), so keep max_sequence_length at its default.
TEXT_DIM = 32
TEXT_VOCAB_SIZE = 384

# Transformer: 2 heads x 12 channels (12 splits into rope t/h/w = 4/4/4), 2 blocks.
HEADS = 2
HEAD_DIM = 12
INNER_DIM = HEADS * HEAD_DIM

# CLIP vision tower (Wan 2.1 only): 32 px input, 8 px patches -> 16 + 1 tokens.
CLIP_SIZE = 32
CLIP_PATCH = 8
CLIP_DIM = 16
CLIP_TOKENS = (CLIP_SIZE // CLIP_PATCH) ** 2 + 1

# UniPC flow_shift: 3.0 as the Wan 2.1 480P diffusers repos ship it; 5.0 for the 720P / 2.2
# layouts (from memory of the Wan-AI repos, not checked offline; it only moves the timesteps).
FLOW_SHIFT = {"wan2.1": 3.0, "wan2.1-flf2v": 5.0, "wan2.2-a14b": 5.0, "wan2.2-ti2v-5b": 5.0}

# Smallest height/width each variant accepts: lcm(16, vae_scale_factor_spatial * patch 2).
# (The pipeline refuses sizes not divisible by 16 and rounds down to the patch multiple.)
SIZE_MULTIPLE = {"wan2.1": 16, "wan2.1-flf2v": 16, "wan2.2-a14b": 16, "wan2.2-ti2v-5b": 32}

_WORDS = (
    "a an the of in on at to and or with from by for is are it this that "
    "boat ship sea ocean water wave river lake sky cloud sun moon star light night day "
    "cat dog bird horse fish man woman child people person face hand eye hair "
    "car street city house building tree forest flower grass mountain snow rain fire "
    "red blue green white black yellow gold dark bright "
    "walk run fly swim move turn look smile camera slow fast zoom pan "
    "blurry blur low quality static still worst ugly bad noise overexposed deformed "
    "video image photo picture frame scene motion cinematic detailed high"
).split()


def _vocab() -> list[tuple[str, float]]:
    """Unigram pieces with log-probabilities: T5 specials first (<pad>=0, </s>=1, <unk>=2)."""
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    seen = {p for p, _ in pieces}

    def add(piece: str, score: float) -> None:
        if piece not in seen:
            seen.add(piece)
            pieces.append((piece, score))

    for w in _WORDS:
        add("\u2581" + w, -3.0)
    for c in string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation:
        add("\u2581" + c, -6.0)
        add(c, -5.0)
    assert len(pieces) <= TEXT_VOCAB_SIZE, len(pieces)
    return pieces


def tiny_tokenizer():
    """A T5-compatible tokenizer built in memory (tokenizers' Unigram; no sentencepiece, no download)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    tok = Tokenizer(models.Unigram(_vocab(), unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=512,
    )


def tiny_text_encoder():
    """A UMT5 encoder (umt5-xxl's structure: gated-gelu, per-layer relative bias) at toy width."""
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=TEXT_VOCAB_SIZE,
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return UMT5EncoderModel(config).eval()


def tiny_image_encoder():
    """A CLIP vision tower (Wan 2.1 reads hidden_states[-2], so it needs >= 2 layers).

    CLIPVisionModel, as the Wan-AI 2.1 I2V repos ship it and the pipeline's type hint
    expects (a CLIPVisionModelWithProjection works too but logs a type warning on load).
    """
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(
        hidden_size=CLIP_DIM,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=CLIP_SIZE,
        patch_size=CLIP_PATCH,
    )
    return CLIPVisionModel(config).eval()


def tiny_image_processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": CLIP_SIZE},
        crop_size={"height": CLIP_SIZE, "width": CLIP_SIZE},
    )


def tiny_vae_21():
    """Wan 2.1's VAE layout (z_dim 16, 3 spatial downsamples = 8x, 2 temporal = 4x) at base width 4."""
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(
        base_dim=4,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * 16,
        latents_std=[1.0] * 16,
    ).eval()


def tiny_vae_22():
    """Wan 2.2's VAE layout: residual blocks, 2x2 pixel patchify (12 channels in/out),
    z_dim 48, separate decoder width, 16x spatial, 4x temporal."""
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(
        base_dim=4,
        decoder_base_dim=8,
        z_dim=48,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * 48,
        latents_std=[1.0] * 48,
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_spatial=16,
        scale_factor_temporal=4,
    ).eval()


def tiny_transformer(
    in_channels: int,
    out_channels: int,
    *,
    image_dim: int | None = None,
    pos_embed_seq_len: int | None = None,
    heads: int = HEADS,
    head_dim: int = HEAD_DIM,
):
    """heads x head_dim: 2 x 12 by default; ComfyUI's files assume 128-wide heads (tests of them use 1 x 128)."""
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2),  # the TI2V timestep mask in the pipeline hard-codes 2x2
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=in_channels,
        out_channels=out_channels,
        text_dim=TEXT_DIM,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        image_dim=image_dim,
        # the real I2V 14B has added_kv_proj_dim = inner dim (image K/V projections)
        added_kv_proj_dim=heads * head_dim if image_dim is not None else None,
        rope_max_seq_len=1024,
        pos_embed_seq_len=pos_embed_seq_len,
    ).eval()


def wan_scheduler(flow_shift: float):
    """UniPC in flow mode, as the Wan-AI diffusers repos ship it."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(
        num_train_timesteps=1000,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=flow_shift,
        solver_order=2,
        solver_type="bh2",
        lower_order_final=True,
        final_sigmas_type="zero",
    )


def tiny_wan_components(variant: str, seed: int = 0) -> dict:
    """The keyword arguments of `WanImageToVideoPipeline` for a tiny `variant` (fp32, CPU, deterministic)."""
    import torch

    if variant not in VARIANTS:
        raise ValueError(f"unknown tiny Wan variant {variant!r}; choose from {', '.join(VARIANTS)}")

    components: dict = {
        "transformer_2": None,
        "image_encoder": None,
        "image_processor": None,
        "boundary_ratio": None,
        "expand_timesteps": False,
    }
    torch.manual_seed(seed)
    components["vae"] = tiny_vae_22() if variant == "wan2.2-ti2v-5b" else tiny_vae_21()
    z = components["vae"].config.z_dim
    torch.manual_seed(seed + 1)
    components["text_encoder"] = tiny_text_encoder()
    components["tokenizer"] = tiny_tokenizer()
    components["scheduler"] = wan_scheduler(FLOW_SHIFT[variant])

    if variant in ("wan2.1", "wan2.1-flf2v"):
        torch.manual_seed(seed + 2)
        components["image_encoder"] = tiny_image_encoder()
        components["image_processor"] = tiny_image_processor()
        torch.manual_seed(seed + 3)
        components["transformer"] = tiny_transformer(
            2 * z + 4,
            z,
            image_dim=CLIP_DIM,
            pos_embed_seq_len=2 * CLIP_TOKENS if variant == "wan2.1-flf2v" else None,
        )
    elif variant == "wan2.2-a14b":
        torch.manual_seed(seed + 3)
        components["transformer"] = tiny_transformer(2 * z + 4, z)
        torch.manual_seed(seed + 4)
        components["transformer_2"] = tiny_transformer(2 * z + 4, z)
        components["boundary_ratio"] = 0.9
    else:  # wan2.2-ti2v-5b
        torch.manual_seed(seed + 3)
        components["transformer"] = tiny_transformer(z, z)
        components["expand_timesteps"] = True
    return components


def build_tiny_wan_pipeline(variant: str, seed: int = 0):
    from diffusers import WanImageToVideoPipeline

    return WanImageToVideoPipeline(**tiny_wan_components(variant, seed))


def build_tiny_wan(folder: str | os.PathLike, variant: str, seed: int = 0) -> Path:
    """Save a tiny `variant` as a diffusers folder (fp32 safetensors) that
    `WanImageToVideoPipeline.from_pretrained(folder)` loads offline."""
    folder = Path(folder)
    build_tiny_wan_pipeline(variant, seed).save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_wan_lora(folder: str | os.PathLike, base: str, variant: str = "wan2.2-a14b", *, rank: int = 4,
                        seed: int = 7, layout: str = "diffusers", file_name: str = "lora.safetensors",
                        defaults: dict | None = None, strength: float = 4.0) -> Path:
    """A random LoRA for a tiny `variant`'s transformers, saved as a stillmotion LoRA folder over `base` (a
    name such as "tiny-wan" or a folder): the file plus stillmotion.json {"base", "lora"[, "defaults"]}.

    Built as diffusers' own Wan LoRA tests build theirs: peft's LoraConfig on the attention projections
    (to_q, to_k, to_v, to_out.0 of attn1 and attn2), random A and B (init_lora_weights=False), the adapter's
    state dict saved by WanImageToVideoPipeline.save_lora_weights ("transformer.blocks.0.attn1.to_q.lora_A.weight").
    layout="comfy" writes the same tensors under ComfyUI / Kijai keys ("diffusion_model.blocks.0.self_attn.q.
    lora_down.weight"), which diffusers' loader converts back. `strength` scales B, so that the tiny
    model's frames change by more than rounding."""
    import json

    import torch
    from diffusers import WanImageToVideoPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    transformer = tiny_wan_components(variant)["transformer"]
    torch.manual_seed(seed)
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                       target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    state = {k: v * strength if ".lora_B." in k else v for k, v in get_peft_model_state_dict(transformer).items()}
    if layout == "diffusers":
        WanImageToVideoPipeline.save_lora_weights(folder, transformer_lora_layers=state, weight_name=file_name)
    elif layout == "comfy":
        from safetensors.torch import save_file

        names = {"attn1": "self_attn", "attn2": "cross_attn", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o",
                 "lora_A": "lora_down", "lora_B": "lora_up"}
        comfy = {}
        for key, value in state.items():
            for ours, theirs in names.items():
                key = key.replace(f".{ours}.", f".{theirs}.")
            comfy[f"diffusion_model.{key}"] = value.contiguous()
        save_file(comfy, str(folder / file_name))
    else:
        raise ValueError(f"unknown LoRA layout {layout!r}: diffusers or comfy")
    info = {"base": str(base), "lora": file_name, **({"defaults": defaults} if defaults else {})}
    (folder / "stillmotion.json").write_text(json.dumps(info, indent=2))
    return folder
