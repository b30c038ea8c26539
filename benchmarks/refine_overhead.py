"""Overhead of NoiseLevelGuidance.refine over K bare batched UNet calls (issue 2's speed target ≤ 1.05).

Builds a random-weight UNet with Stable Diffusion 1.5's real architecture (860M parameters) and a
CLIP ViT-L-sized text encoder, then times, interleaved round by round in one process:

* ``bare``:   K calls ``unet(cat[n, n], 999, encoder_hidden_states=embeds)`` under inference mode;
* ``refine``: ``NoiseLevelGuidance(refining_steps=K).refine(pipe, prompt, latents=n)``, which also
  encodes the prompt once and does the clipping, noise and renormalisation.

Prints every round, the median ratio refine / bare, and peak resident memory.

    python -m benchmarks.refine_overhead [--steps 10] [--rounds 5] [--latent 32]
"""

from __future__ import annotations

import argparse
import resource
import statistics

import torch

from .common import interleaved, paired_ratios, seconds_of


def sd15_shaped_pipeline(latent: int):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from nlg.testing import SD_SCHEDULE, tiny_clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=latent, cross_attention_dim=768).eval()  # SD 1.5's defaults
    text = CLIPTextModel(
        CLIPTextConfig(vocab_size=514, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                       num_attention_heads=12, max_position_embeddings=77, bos_token_id=512, eos_token_id=513,
                       pad_token_id=513)
    ).eval()
    vae = AutoencoderKL(block_out_channels=[8, 8, 8, 8], norm_num_groups=8,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)
    return StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tiny_clip_tokenizer(),
                                   scheduler=DDIMScheduler(**SD_SCHEDULE), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="refining steps K per timing")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median ratio is reported")
    parser.add_argument("--latent", type=int, default=32, help="latent side (32 = 256x256 images)")
    args = parser.parse_args()

    from nlg import NoiseLevelGuidance

    pipe = sd15_shaped_pipeline(args.latent)
    prompt = "a photograph of an astronaut riding a horse"
    nlg = NoiseLevelGuidance(refining_steps=args.steps)
    n = torch.randn(1, 4, args.latent, args.latent, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        pos, neg = pipe.encode_prompt(prompt, "cpu", 1, True)
        embeds = torch.cat([neg, pos])
        t = torch.tensor(999)

    def bare() -> None:
        with torch.inference_mode():
            for _ in range(args.steps):
                pipe.unet(torch.cat([n, n]), t, encoder_hidden_states=embeds, return_dict=False)

    def refine() -> None:
        out = nlg.refine(pipe, prompt, latents=n, generator=torch.Generator().manual_seed(1))
        assert out.latents.grad_fn is None and not out.latents.requires_grad

    bare()  # warm-up, and the memory baseline
    rss_bare = peak_rss_mb()
    refine()
    rss_refine = peak_rss_mb()

    times = interleaved({"bare": lambda: seconds_of(bare), "refine": lambda: seconds_of(refine)}, args.rounds, alternate=True)
    ratios = paired_ratios(times, "refine", "bare")
    print("ratio refine / bare per round: " + ", ".join(f"{r:.3f}" for r in ratios))
    print(f"UNet: SD 1.5 architecture, {sum(p.numel() for p in pipe.unet.parameters()) / 1e6:.0f}M parameters, "
          f"latent 4x{args.latent}x{args.latent}, K={args.steps}, torch threads={torch.get_num_threads()}")
    print(f"peak RSS after bare calls: {rss_bare:.0f} MB; after refine: {rss_refine:.0f} MB "
          f"(+{rss_refine - rss_bare:.0f} MB)")
    print(f"median ratio refine / bare: {statistics.median(ratios):.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
