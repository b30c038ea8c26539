"""``nlg.finetune``: LoRA fine-tuning of Stable Diffusion 1.x/2.x pipelines with noise-level control.

    python -m nlg.finetune --model shapes --data_dir my_images --output_dir my_lora \\
        --timestep_type sigmoid --offset_noise 0.1 --min_snr_gamma 5 --steps 500

Built on ``peft`` (LoRA on the UNet's attention) and ``accelerate`` (device, mixed precision, backward), with
the optimisation in the one shared loop (:func:`nlg.training.loop.train_loop`) and every noise and timestep
option in :func:`nlg.training.training_batch`.  The result loads with ``pipe.load_lora_weights(output_dir)``.
See the fine-tuning guide (docs/guides/finetuning.md).
"""

from .config import MIXED_PRECISION, QUICK_OVERRIDES, FinetuneBatch, FinetuneConfig, batch_options, draw_batch
from .data import IMAGE_EXTENSIONS, load_images, read_image_folder
from .train import LORA_WEIGHTS, TEXT_ENCODER_TARGETS, UNET_TARGETS, Prepared, finetune, load_base_pipeline, prepare, training_scheduler

__all__ = [
    "FinetuneConfig",
    "finetune",
    "prepare",
    "Prepared",
    "load_base_pipeline",
    "training_scheduler",
    "batch_options",
    "draw_batch",
    "FinetuneBatch",
    "read_image_folder",
    "load_images",
]
