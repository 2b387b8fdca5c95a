"""Plain data that crosses the fine-tuning trainer's boundary, and its validation.

Torch-free on purpose, like ``engine.contracts``: the web process imports this module to validate
the training form and price a run; only the worker imports the trainer (``finetune.py``).

One trainer serves both methods (docs/fine-tuning.md):

* ``lora``: LoRA adapters on the UNet's attention (and optionally the text encoder), trained on
  the user's images with their captions.
* ``dreambooth``: the same, plus an instance prompt with a rare token and prior preservation: the
  base model first generates ``num_class_images`` images of the class prompt, and every step also
  learns to keep producing those (weighted by ``prior_loss_weight``). It yields a LoRA by default;
  ``full_finetune`` trains the whole UNet instead (a private model variant, staff-allowed only).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..contracts import InvalidRequest

METHODS: dict[str, str] = {"lora": "LoRA", "dreambooth": "DreamBooth"}
MIN_IMAGES, MAX_IMAGES = 3, 50
MIN_RANK, MAX_RANK = 1, 128
MIN_STEPS, MAX_STEPS = 10, 5000
MIN_LEARNING_RATE, MAX_LEARNING_RATE = 1e-6, 1e-2
MAX_CLASS_IMAGES = 200
MIN_PRIOR_LOSS_WEIGHT, MAX_PRIOR_LOSS_WEIGHT = 0.1, 10.0  # 0 would pay for class images it ignores
MAX_CAPTION_CHARS = 300
MAX_CLASS_PROMPTS = 50

# Where the LoRA adapters go in the UNet (TrainingSpec.lora_targets; "" = the method's default,
# DEFAULT_LORA_TARGETS). "attention": every attention projection, self- and cross-attention
# (to_q/to_k/to_v/to_out.0); "cross_attention": only the cross-attention's to_k/to_v (attn2, as
# Custom Diffusion), which see only the text, so what changes is what the words mean rather than
# how every image is drawn; "all": the transformer blocks' every projection and the ResNet blocks'
# convolutions too (LoCon-style), so the UNet can learn to draw something new for the token while
# the prior keeps the rest (docs/fine-tuning.md, "Teaching the demo model a new shape").
LORA_TARGETS: dict[str, str] = {"attention": "all attention projections",
                                "cross_attention": "cross-attention keys and values",
                                "all": "attention, feed-forward and convolution layers"}
# DreamBooth: "all" with the token's embeddings is the only setting that drew the demo model's new
# shape and kept its old ones (runs G1-G23); attention alone could not do both (runs C, D).
DEFAULT_LORA_TARGETS: dict[str, str] = {"lora": "attention", "dreambooth": "all"}
# Whether a method trains the instance token's input embeddings by default (TrainingSpec.
# train_token_embeddings None); only DreamBooth has an instance token.
DEFAULT_TRAIN_TOKEN_EMBEDDINGS: dict[str, bool] = {"lora": False, "dreambooth": True}

# name -> (steps, rank, learning rate): what "quick / standard / thorough" mean, at the batch size
# of 1 the studio trains with. Measured on the demo model (benchmarks/finetune_shape.py, a new shape
# from 20 images; docs/fine-tuning.md "Teaching the demo model a new shape"): "standard" (800 steps,
# rank 8, 1e-3) drew the new shape in 70% of held-out images, where 400 steps of batch 4 at 5e-4
# reached 60% and 1500 steps at 1e-3 45%. "quick" is a first look (not measured; other tests pin its
# values); "thorough" trades a lower rate for more steps and rank (not measured).
PRESETS: dict[str, dict] = {
    "quick": {"steps": 150, "rank": 4, "learning_rate": 1e-3},
    "standard": {"steps": 800, "rank": 8, "learning_rate": 1e-3},
    "thorough": {"steps": 1600, "rank": 16, "learning_rate": 5e-4},
}


@dataclass(frozen=True)
class TrainingImage:
    png: bytes  # checked, re-encoded PNG bytes (the upload service made them)
    caption: str


@dataclass(frozen=True)
class TrainingSpec:
    """Everything one run needs. The images arrive as bytes; the base model as a local folder."""

    base_model_path: str
    images: tuple[TrainingImage, ...]
    method: str = "lora"  # key of METHODS
    steps: int = 400
    rank: int = 8
    alpha: float | None = None  # LoRA alpha; None: equal to the rank (scale 1)
    learning_rate: float = 5e-4
    resolution: int = 512  # training images are resized (and centre-cropped) to this square
    batch_size: int = 1
    train_text_encoder: bool = False
    seed: int = 0
    lora_targets: str = ""  # key of LORA_TARGETS; "": DEFAULT_LORA_TARGETS[method]
    # DreamBooth: also train the input embeddings of the instance token's own tokens (textual
    # inversion beside the LoRA); prompts without those tokens encode exactly as before. None: the
    # method's default (DEFAULT_TRAIN_TOKEN_EMBEDDINGS).
    train_token_embeddings: bool | None = None
    # DreamBooth
    instance_prompt: str = ""  # e.g. "a photo of zwx dog"; must contain instance_token
    instance_token: str = ""  # the rare token, e.g. "zwx"
    class_prompt: str = ""  # e.g. "a photo of a dog"
    # several class prompts (used instead of class_prompt when given): class image i is made from
    # class_prompts[i % len(class_prompts)], so the prior covers every one of them
    class_prompts: tuple[str, ...] = ()
    prior_preservation: bool = True
    num_class_images: int = 0
    prior_loss_weight: float = 1.0
    full_finetune: bool = False
    # Checkpoints and samples
    checkpoint_every: int = 50  # steps; 0: only at the end
    sample_every: int = 100  # steps; 0: no samples
    validation_prompts: tuple[str, ...] = ()
    validation_seeds: tuple[int, ...] = (0,)
    sample_steps: int = 20  # denoising steps of a sample image


@dataclass(frozen=True)
class TrainingUpdate:
    """Sent to ``on_step`` after every optimisation step."""

    step: int  # steps done, 1-based
    total_steps: int
    loss: float
    learning_rate: float
    phase: str = "train"  # "class_images" while DreamBooth makes its prior images, then "train"
    samples: tuple[bytes, ...] = ()  # PNGs of the validation prompts/seeds at this step, if due


@dataclass(frozen=True)
class TrainingCheckpoint:
    """A resumable state: everything needed to continue exactly where it stopped (adapter and
    optimizer tensors, step, random states) in one safetensors blob, plus the LoRA as it stands
    (kohya/A1111 format), usable on its own if the run never finishes."""

    step: int
    state: bytes
    lora: bytes


@dataclass(frozen=True)
class TrainingResult:
    lora: bytes  # the final adapter as a kohya/A1111 `.safetensors` (b"" for a full fine-tune)
    steps_done: int
    interrupted: bool  # should_cancel stopped it (the last checkpoint is what the user keeps)
    losses: tuple[float, ...] = field(default=())
    model_dir: str = ""  # full fine-tune only: a diffusers folder of the new model variant
    seconds: float = 0.0


def lora_targets_of(spec: TrainingSpec) -> str:
    """The LoRA targets a spec trains: its own, or its method's default."""
    return spec.lora_targets or DEFAULT_LORA_TARGETS.get(spec.method, "attention")


def token_embeddings_of(spec: TrainingSpec) -> bool:
    """Whether a spec trains the instance token's input embeddings: its own setting, or its
    method's default (never without an instance token, never for a full fine-tune)."""
    if spec.method != "dreambooth" or spec.full_finetune or not spec.instance_token.strip():
        return False
    if spec.train_token_embeddings is None:
        return DEFAULT_TRAIN_TOKEN_EMBEDDINGS.get(spec.method, False)
    return bool(spec.train_token_embeddings)


def class_prompt_fields(text: str) -> dict:
    """TrainingSpec's ``class_prompt`` and ``class_prompts`` from a class prompt written as one or
    more lines (the form's and the API's field): several lines are several class prompts."""
    lines = tuple(line.strip() for line in text.splitlines() if line.strip())
    return {"class_prompt": lines[0] if lines else "", "class_prompts": lines if len(lines) > 1 else ()}


def class_prompts_of(spec: TrainingSpec) -> tuple[str, ...]:
    """DreamBooth's class prompts: ``class_prompts`` when given, else the one ``class_prompt``."""
    return tuple(spec.class_prompts) if spec.class_prompts else (spec.class_prompt,)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_spec(spec: TrainingSpec) -> None:
    """Raise InvalidRequest (``field``, message) for the first problem; nothing is charged then."""
    if spec.method not in METHODS:
        raise InvalidRequest("method", f"unknown method {spec.method!r}; one of {', '.join(METHODS)}")
    count = len(spec.images)
    if not MIN_IMAGES <= count <= MAX_IMAGES:
        raise InvalidRequest("images", f"{count} images: a training takes {MIN_IMAGES} to {MAX_IMAGES}")
    for number, image in enumerate(spec.images, 1):
        if not isinstance(image.caption, str) or not image.caption.strip():
            raise InvalidRequest("images", f"image {number} has no caption")
        if len(image.caption) > MAX_CAPTION_CHARS:
            raise InvalidRequest("images", f"the caption of image {number} is over {MAX_CAPTION_CHARS} characters")
    if not _is_int(spec.steps) or not MIN_STEPS <= spec.steps <= MAX_STEPS:
        raise InvalidRequest("steps", f"must be a whole number from {MIN_STEPS} to {MAX_STEPS}")
    if not _is_int(spec.rank) or not MIN_RANK <= spec.rank <= MAX_RANK:
        raise InvalidRequest("rank", f"must be a whole number from {MIN_RANK} to {MAX_RANK}")
    lr = spec.learning_rate
    if not isinstance(lr, (int, float)) or lr != lr or not MIN_LEARNING_RATE <= lr <= MAX_LEARNING_RATE:
        raise InvalidRequest("learning_rate", f"must be from {MIN_LEARNING_RATE:g} to {MAX_LEARNING_RATE:g}")
    if not _is_int(spec.resolution) or spec.resolution < 64 or spec.resolution % 8:
        raise InvalidRequest("resolution", "must be a multiple of 8, at least 64")
    if spec.lora_targets and spec.lora_targets not in LORA_TARGETS:
        raise InvalidRequest("lora_targets", f"unknown LoRA targets {spec.lora_targets!r}; "
                                             f"one of {', '.join(LORA_TARGETS)}")
    if spec.train_token_embeddings not in (None, True, False):
        raise InvalidRequest("train_token_embeddings", "must be true, false or left out")
    if spec.train_token_embeddings and spec.method != "dreambooth":
        raise InvalidRequest("train_token_embeddings", "needs DreamBooth's instance token")
    if spec.method == "dreambooth":
        _validate_dreambooth(spec)


def _validate_dreambooth(spec: TrainingSpec) -> None:
    token = spec.instance_token.strip()
    if not token or len(token.split()) != 1:
        raise InvalidRequest("instance_token", "give one rare word, for example zwx")
    if token not in spec.instance_prompt.split():
        raise InvalidRequest("instance_prompt", f"must contain the instance token {token!r}")
    if spec.prior_preservation:
        if spec.class_prompts:
            _validate_class_prompts(spec, token)
        else:
            if not spec.class_prompt.strip():
                raise InvalidRequest("class_prompt", "prior preservation needs a class prompt, e.g. 'a photo of a dog'")
            if token in spec.class_prompt.split():
                raise InvalidRequest("class_prompt", "must not contain the instance token")
        weight = spec.prior_loss_weight
        if (not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight != weight
                or not MIN_PRIOR_LOSS_WEIGHT <= weight <= MAX_PRIOR_LOSS_WEIGHT):
            raise InvalidRequest("prior_loss_weight", f"must be a number from {MIN_PRIOR_LOSS_WEIGHT:g} to "
                                                      f"{MAX_PRIOR_LOSS_WEIGHT:g}")
        if not _is_int(spec.num_class_images) or not 1 <= spec.num_class_images <= MAX_CLASS_IMAGES:
            raise InvalidRequest("num_class_images", f"must be a whole number from 1 to {MAX_CLASS_IMAGES}")
        if spec.num_class_images < len(spec.class_prompts):
            raise InvalidRequest("num_class_images", f"{spec.num_class_images} class images cannot cover "
                                                     f"{len(spec.class_prompts)} class prompts")


def _validate_class_prompts(spec: TrainingSpec, token: str) -> None:
    prompts = spec.class_prompts
    if isinstance(prompts, str) or not isinstance(prompts, (tuple, list)):
        raise InvalidRequest("class_prompts", "must be a list of prompts")
    if len(prompts) > MAX_CLASS_PROMPTS:
        raise InvalidRequest("class_prompts", f"{len(prompts)} class prompts: at most {MAX_CLASS_PROMPTS}")
    for number, prompt in enumerate(prompts, 1):
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidRequest("class_prompts", f"class prompt {number} is empty")
        if len(prompt) > MAX_CAPTION_CHARS:
            raise InvalidRequest("class_prompts", f"class prompt {number} is over {MAX_CAPTION_CHARS} characters")
        if token in prompt.split():
            raise InvalidRequest("class_prompts", f"class prompt {number} must not contain the instance token")
