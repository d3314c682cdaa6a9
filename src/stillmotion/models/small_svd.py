"""SVD's pipeline components at small sizes, for the built-in models (tiny, demo) and the benches.

Every component is the diffusers / transformers class the real SVD uses; only
the sizes differ. Callers seed torch before each one, so the weights are the
same on every machine.
"""

from __future__ import annotations


def unet_block_types(attention) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The video UNet's down and up block types from whether each down level has cross-attention (up mirrors down)."""
    down = tuple("CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal" for a in attention)
    up = tuple("CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal" for a in reversed(attention))
    return down, up


def small_unet(
    *,
    widths: tuple[int, int, int, int],
    heads: tuple[int, int, int, int],
    attention: tuple[bool, bool, bool, bool],
    cross_attention_dim: int,
    time_embed_dim: int,
    sample_size: int,
):
    """A UNetSpatioTemporalConditionModel with SVD's four levels at the given widths.

    attention[i]: whether level i of the down path has cross-attention (the up
    path mirrors it). SVD adds three time ids (fps, motion bucket, noise
    augmentation), so the added embedding takes 3 * time_embed_dim.
    """
    from diffusers import UNetSpatioTemporalConditionModel

    down, up = unet_block_types(attention)
    return UNetSpatioTemporalConditionModel(
        sample_size=sample_size,
        in_channels=8,
        out_channels=4,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(widths),
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=3 * time_embed_dim,
        layers_per_block=1,
        cross_attention_dim=cross_attention_dim,
        transformer_layers_per_block=1,
        num_attention_heads=tuple(heads),
        num_frames=8,
    )


def small_image_encoder(width: int = 32):
    """A CLIP vision tower with CLIP ViT's structure at small width (224 px input, as SVD feeds it)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=width,
            projection_dim=width,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=2 * width,
            image_size=224,
            patch_size=32,
        )
    ).eval()


def svd_scheduler():
    """EulerDiscreteScheduler with the settings of SVD's own scheduler config (v-prediction, Karras sigmas)."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        interpolation_type="linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )


def clip_feature_extractor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224})
