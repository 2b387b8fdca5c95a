"""Tiny SD-shaped pipelines: standard diffusers/transformers classes, tiny sizes.

One set of builders for both tiny models we make: studio-tiny (trained by train.py; the keyword
defaults below are its architecture) and the random demo model (demo_model.py passes its own
smaller sizes).
"""

from __future__ import annotations

from .dataset import SIZE
from .tokenizer import MAX_LENGTH

LATENT_CHANNELS = 4
LATENT_SIZE = SIZE // 8


def build_vae(*, channels=(32, 32, 64, 64), norm_groups: int = 16, sample_size: int = SIZE,
              scaling_factor: float = 1.0):
    """An AutoencoderKL with 3 downsamplings (8x). scaling_factor 1.0: train.py replaces it by 1/std
    of the latents after training."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,  # 3 downsamplings: 8x
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=tuple(channels),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=norm_groups,
        sample_size=sample_size,
        mid_block_add_attention=False,
        scaling_factor=scaling_factor,
    )


def build_text_encoder(vocab_size: int, bos_id: int, eos_id: int, *, width: int = 128,
                       intermediate: int = 512, layers: int = 3, heads: int = 4, max_length: int = MAX_LENGTH,
                       activation: str = "gelu"):
    """A CLIP text encoder; the end-of-text token pads, as in CLIP."""
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=max_length,
        projection_dim=width,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        hidden_act=activation,
    )
    return CLIPTextModel(cfg)


# Text enters at 8x8 and 4x4 (and the mid block), where the layout is decided; the 16x16 level is
# convolutions only, which also halves a training step on the CPU.
STUDIO_TINY_DOWN_BLOCKS = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
STUDIO_TINY_UP_BLOCKS = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")


def build_unet(*, sample_size: int = LATENT_SIZE, down_blocks=STUDIO_TINY_DOWN_BLOCKS,
               up_blocks=STUDIO_TINY_UP_BLOCKS, channels=(64, 128, 128), cross_attention_dim: int = 128,
               heads: int = 4, norm_groups: int = 32):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=tuple(down_blocks),
        up_block_types=tuple(up_blocks),
        block_out_channels=tuple(channels),
        layers_per_block=1,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=heads,  # diffusers' legacy name: the number of heads
        norm_num_groups=norm_groups,
    )


def assemble_pipeline(*, vae, text_encoder, tokenizer, unet, scheduler):
    """The parts as a StableDiffusionPipeline without a safety checker (what save_pretrained writes)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def scheduler_kwargs() -> dict:
    """Training/inference noise schedule: SD's betas rescaled to zero terminal SNR.

    v-prediction + zero terminal SNR + "trailing" spacing (Lin et al. 2023) lets
    the model produce any mean colour (black or white backgrounds); Euler,
    DPM++ (DPMSolverMultistep), DDIM and UniPC all read these keys.
    """
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
    )
