"""Architecture of studio-tiny: standard diffusers/transformers classes, tiny sizes."""

from __future__ import annotations

from .dataset import SIZE
from .tokenizer import MAX_LENGTH

LATENT_CHANNELS = 4
LATENT_SIZE = SIZE // 8


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,  # 3 downsamplings: 8x
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=16,
        sample_size=SIZE,
        mid_block_add_attention=False,
        scaling_factor=1.0,  # replaced by 1/std of the latents after training
    )


def build_text_encoder(vocab_size: int, bos_id: int, eos_id: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        projection_dim=128,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        hidden_act="gelu",
    )
    return CLIPTextModel(cfg)


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        # Text enters at 8x8 and 4x4 (and the mid block), where the layout is decided; the
        # 16x16 level is convolutions only, which also halves a training step on the CPU.
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(64, 128, 128),
        layers_per_block=1,
        cross_attention_dim=128,
        attention_head_dim=4,  # diffusers' legacy name: the number of heads
        norm_num_groups=32,
    )


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
