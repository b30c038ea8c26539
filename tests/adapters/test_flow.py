"""NLG for flow-matching pipelines: the direction's formula, σ checks, and a tiny SD3-shaped pipeline end to end."""

from __future__ import annotations

import math

import pytest
import torch

from nlg import NoiseLevelGuidance
from nlg.adapters.flow import DEFAULT_REFERENCE_SIGMA, FlowMatchingAdapter, check_reference_sigma, flow_direction, flow_epsilon
from nlg.adapters import get_adapter
from nlg.testing import tiny_clip_tokenizer


def tiny_t5_tokenizer():
    """A T5 (Unigram) tokenizer over printable ASCII, built offline from a vocabulary list."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)] + [(chr(c), -2.0) for c in range(33, 127)]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def tiny_sd3_pipeline(seed: int = 0):
    """A seeded SD3-shaped pipeline: two CLIP encoders with projection, a T5 encoder, an MMDiT, flow matching."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    clip_config = CLIPTextConfig(
        bos_token_id=512, eos_token_id=513, pad_token_id=513, hidden_size=32, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, vocab_size=514, max_position_embeddings=77, projection_dim=32, hidden_act="gelu",
    )
    t5_tokenizer = tiny_t5_tokenizer()
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer), d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
                                 relative_attention_num_buckets=8))
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=4,
        caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64, out_channels=4,
    )
    vae = AutoencoderKL(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(4, 8), layers_per_block=1, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=1,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer.eval(), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae.eval(),
        text_encoder=CLIPTextModelWithProjection(clip_config).eval(), tokenizer=tiny_clip_tokenizer(),
        text_encoder_2=CLIPTextModelWithProjection(clip_config).eval(), tokenizer_2=tiny_clip_tokenizer(),
        text_encoder_3=t5.eval(), tokenizer_3=t5_tokenizer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sd3():
    return tiny_sd3_pipeline()


CALL = dict(num_inference_steps=2, height=16, width=16, output_type="pt", max_sequence_length=16)


def test_flow_epsilon_is_the_noise_of_the_linear_path():
    # x_σ = (1−σ)x₀ + σε and v = ε − x₀  ⇒  x + (1−σ)v = ε exactly.
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    for sigma in (0.1, 0.5, 0.94):
        x = (1 - sigma) * x0 + sigma * eps
        torch.testing.assert_close(flow_epsilon(eps - x0, x, sigma), eps)


def test_epsilon_difference_vanishes_as_sigma_reaches_one():
    g = torch.Generator().manual_seed(1)
    v_c, v_u, x = (torch.randn(2, 4, 3, 3, generator=g) for _ in range(3))
    norms = [flow_direction(v_c, v_u, x, s).norm() for s in (0.5, 0.9, 0.99, 0.999)]
    assert all(a > b for a, b in zip(norms, norms[1:]))
    torch.testing.assert_close(flow_direction(v_c, v_u, x, 0.999), 0.001 * (v_c - v_u))
    torch.testing.assert_close(flow_direction(v_c, v_u, x, 0.9, target="velocity"), v_c - v_u)
    torch.testing.assert_close(flow_direction(v_c, v_u, x, 0.9, gamma=3.0), x + 0.1 * (3 * v_c - 2 * v_u), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sigma", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_reference_sigma_outside_open_unit_interval_is_refused(sigma):
    with pytest.raises(ValueError, match="open interval"):
        check_reference_sigma(sigma)


def test_sd3_dispatches_to_flow_adapter_and_bad_sigma_errors(sd3):
    assert isinstance(get_adapter(sd3), FlowMatchingAdapter)
    with pytest.raises(ValueError, match="open interval"):
        FlowMatchingAdapter(sd3, reference_sigma=1.0)
    with pytest.raises(ValueError, match="identically zero"):
        NoiseLevelGuidance(refining_steps=1, reference_timestep=1000).refine(sd3, "a cat", height=16, width=16)
    with pytest.raises(ValueError, match="target"):
        FlowMatchingAdapter(sd3, target="sample")


def test_sd3_direction_matches_a_direct_transformer_call(sd3):
    adapter = FlowMatchingAdapter(sd3)
    _, cond = adapter.encode(["a cat", "a dog"], max_sequence_length=16)
    n = torch.randn(2, 4, 2, 2, generator=torch.Generator().manual_seed(3))
    got = adapter.direction_fn(cond, gamma=None, reference_timestep=None)(n)
    s = DEFAULT_REFERENCE_SIGMA
    with torch.no_grad():
        def velocity(embeds, pooled):
            return sd3.transformer(hidden_states=s * n, timestep=torch.full((2,), s * 1000.0),
                                   encoder_hidden_states=embeds, pooled_projections=pooled).sample
        v_c = velocity(cond["prompt_embeds"], cond["pooled_prompt_embeds"])
        v_u = velocity(cond["negative_prompt_embeds"], cond["negative_pooled_prompt_embeds"])
    torch.testing.assert_close(got, (1 - s) * (v_c - v_u), rtol=1e-4, atol=1e-6)
    assert got.abs().max() > 0
    # Only the second image still refining: its rows of the conditioning are used.
    part = adapter.direction_fn(cond, gamma=None, reference_timestep=None)(n[1:], index=torch.tensor([1]))
    torch.testing.assert_close(part, got[1:], rtol=1e-4, atol=1e-6)
    # reference_timestep t means σ_r = t / 1000.
    at_500 = adapter.direction_fn(cond, gamma=None, reference_timestep=500)(n)
    with torch.no_grad():
        v_c = sd3.transformer(hidden_states=0.5 * n, timestep=torch.full((2,), 500.0), encoder_hidden_states=cond["prompt_embeds"],
                              pooled_projections=cond["pooled_prompt_embeds"]).sample
        v_u = sd3.transformer(hidden_states=0.5 * n, timestep=torch.full((2,), 500.0),
                              encoder_hidden_states=cond["negative_prompt_embeds"],
                              pooled_projections=cond["negative_pooled_prompt_embeds"]).sample
    torch.testing.assert_close(at_500, 0.5 * (v_c - v_u), rtol=1e-4, atol=1e-6)


def test_sd3_nlg_zero_steps_is_the_plain_pipeline_and_refinement_changes_it(sd3):
    plain = sd3("a cat", generator=torch.Generator().manual_seed(0), **CALL).images
    same = NoiseLevelGuidance(refining_steps=0)(sd3, "a cat", generator=torch.Generator().manual_seed(0), **CALL).images
    torch.testing.assert_close(same, plain, rtol=0, atol=0)
    nlg = NoiseLevelGuidance(refining_steps=3, clip_threshold=None, step_size=5.0)
    out, ref = nlg(sd3, "a cat", generator=torch.Generator().manual_seed(0), return_refinement=True, **CALL)
    assert not torch.equal(out.images, plain)
    assert ref.latents.shape == (1, 4, 8, 8) and ref.evaluations.tolist() == [3]
    # The refinement is NLG's published update, written out here on the transformer (not refine_noise, not
    # the adapter): d = (1−σ)(v_c − v_u) at σ_r n; n ← n − η d + √λ z; n ← √D n/‖n‖, with n and z drawn
    # from the image's generator in that order, as the pipeline draws its initial noise.
    s, lam = DEFAULT_REFERENCE_SIGMA, 0.001
    with torch.no_grad():
        pe, npe, pooled, npooled = sd3.encode_prompt(prompt="a cat", prompt_2=None, prompt_3=None, device=torch.device("cpu"),
                                                     num_images_per_prompt=1, do_classifier_free_guidance=True,
                                                     max_sequence_length=16)
        gen = torch.Generator().manual_seed(0)
        n = torch.randn((1, 4, 8, 8), generator=gen)
        norms = []
        for _ in range(3):
            def velocity(embeds, pooled_embeds):
                return sd3.transformer(hidden_states=s * n, timestep=torch.full((1,), s * 1000.0),
                                       encoder_hidden_states=embeds, pooled_projections=pooled_embeds).sample
            d = (1 - s) * (velocity(pe, pooled) - velocity(npe, npooled))
            norms.append(float(d.norm()))
            n = n - 5.0 * d + math.sqrt(lam) * torch.randn((4, 8, 8), generator=gen)
            n = n / n.norm() * math.sqrt(n.numel())
    torch.testing.assert_close(ref.latents, n, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ref.step_norms[:, 0], torch.tensor(norms), rtol=1e-4, atol=1e-6)


def test_sd3_refuses_embeddings_and_cross_attention_kwargs_by_name(sd3):
    """The flow adapter encodes prompts only: precomputed embeddings would otherwise be dropped silently."""
    nlg = NoiseLevelGuidance(refining_steps=1)
    with pytest.raises(TypeError, match="prompt_embeds"):
        nlg.refine(sd3, None, prompt_embeds=torch.zeros(1, 4, 32), pooled_prompt_embeds=torch.zeros(1, 64))
    with pytest.raises(TypeError, match="cross_attention_kwargs"):
        nlg.refine(sd3, "a cat", cross_attention_kwargs={"scale": 0.5})
    with pytest.raises(ValueError, match="ip_adapter_image"):
        nlg(sd3, "a cat", ip_adapter_image=torch.zeros(1, 3, 8, 8), **CALL)


def test_sd3_joint_attention_kwargs_scale_a_transformer_lora_in_the_refinement_and_the_pipeline():
    """SD3's LoRA scale travels in ``joint_attention_kwargs``: NLG must apply it in every refinement call, as the
    pipeline does in its own.  Scale 0 must therefore give what the transformer without its LoRA gives."""
    from peft import LoraConfig

    pipe = tiny_sd3_pipeline(seed=1)
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                            target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    nlg = NoiseLevelGuidance(refining_steps=2, clip_threshold=None, step_size=5.0)

    def run(**kwargs):
        return nlg(pipe, "a cat", generator=torch.Generator().manual_seed(0), return_refinement=True, **CALL, **kwargs)

    off, off_ref = run(joint_attention_kwargs={"scale": 0.0})
    on, on_ref = run(joint_attention_kwargs={"scale": 1.0})
    pipe.transformer.disable_adapters()
    try:
        base, base_ref = run()
    finally:
        pipe.transformer.enable_adapters()
    torch.testing.assert_close(off_ref.latents, base_ref.latents, rtol=0, atol=0)  # the refinement saw scale 0
    torch.testing.assert_close(off.images, base.images, rtol=0, atol=0)  # and so did the pipeline
    assert not torch.allclose(on_ref.latents, base_ref.latents)  # the LoRA does act at scale 1
    assert off_ref.conditioning["joint_attention_kwargs"] == {"scale": 0.0}
    with pytest.raises(TypeError, match="joint_attention_kwargs"):
        nlg.refine(pipe, "a cat", joint_attention_kwargs=0.5)
