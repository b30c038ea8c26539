"""Every ``pipe(...)`` keyword is honoured or refused by name, compared with diffusers' own behaviour on tiny pipelines.

* precomputed embeddings (``prompt_embeds``, ``negative_prompt_embeds`` and SDXL's pooled ones) give what the
  matching prompt gives, in the refinement and in the sampling; prompt + embeddings raises as diffusers does;
* ``cross_attention_kwargs`` (the LoRA ``scale``) reaches the text encoder and every refinement UNet call;
* IP-Adapter inputs, ControlNet / T2I-Adapter / img2img / inpainting pipelines and unknown keywords are refused
  by name, before any model call.
"""

from __future__ import annotations

import pytest
import torch

from nlg import NoiseLevelGuidance
from nlg.testing import tiny_sd_pipeline, tiny_sdxl_pipeline

K = 3
SETTINGS = dict(num_inference_steps=2, output_type="np", guidance_scale=5.0)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def sd15():
    return tiny_sd_pipeline("epsilon")


@pytest.fixture(scope="module")
def sdxl():
    return tiny_sdxl_pipeline()


class UNetCalls:
    """Records the keyword arguments of every UNet call (a forward pre-hook)."""

    def __init__(self, unet):
        self.kwargs = []
        self.handle = unet.register_forward_pre_hook(lambda m, a, kw: self.kwargs.append(dict(kw)), with_kwargs=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def encode(pipe, text, sdxl):
    """The embeddings of ``text`` from diffusers' own encode_prompt, without classifier-free guidance."""
    with torch.no_grad():
        out = pipe.encode_prompt(text, device=torch.device("cpu"), num_images_per_prompt=1, do_classifier_free_guidance=False)
    return dict(prompt_embeds=out[0], pooled_prompt_embeds=out[2]) if sdxl else dict(prompt_embeds=out[0])


def negative_of(embeds):
    return {"negative_" + name: value for name, value in embeds.items()}


# -- precomputed embeddings ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_embeddings_of_a_prompt_give_what_the_prompt_gives(kind, request):
    pipe = request.getfixturevalue(kind)
    sdxl = kind == "sdxl"
    nlg = NoiseLevelGuidance(refining_steps=K)
    gens = lambda: [seeded(3), seeded(4)]  # noqa: E731
    by_prompt, ref_p = nlg(pipe, "a dog", generator=gens(), num_images_per_prompt=2, return_refinement=True, **SETTINGS)
    embeds = encode(pipe, "a dog", sdxl)
    by_embeds, ref_e = nlg(pipe, None, generator=gens(), num_images_per_prompt=2, return_refinement=True,
                           **embeds, **SETTINGS)
    torch.testing.assert_close(ref_e.latents, ref_p.latents, rtol=1e-5, atol=1e-6)
    assert abs(by_embeds.images - by_prompt.images).max() < 1e-5
    # and they are not the images of another prompt: the embeddings, not a fallback, drive the sampling
    other = nlg(pipe, "a cat", generator=gens(), num_images_per_prompt=2, **SETTINGS)
    assert abs(other.images - by_embeds.images).max() > 1e-3

    # negative embeddings give what the negative prompt gives
    with_negative = nlg(pipe, "a dog", negative_prompt="blurry", generator=gens(), num_images_per_prompt=2, **SETTINGS)
    embedded = nlg(pipe, None, generator=gens(), num_images_per_prompt=2, **embeds,
                   **negative_of(encode(pipe, "blurry", sdxl)), **SETTINGS)
    assert abs(embedded.images - with_negative.images).max() < 1e-5
    assert abs(embedded.images - by_prompt.images).max() > 1e-3


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_no_refinement_with_embeddings_is_the_pipeline_with_embeddings(kind, request):
    """refining_steps=0 with embeddings equals diffusers' own pipe(prompt_embeds=...) pixel for pixel."""
    pipe = request.getfixturevalue(kind)
    embeds = encode(pipe, "a red cube", kind == "sdxl")
    plain = pipe(generator=seeded(1), **embeds, **SETTINGS).images
    nlg = NoiseLevelGuidance(refining_steps=0)(pipe, generator=seeded(1), **embeds, **SETTINGS).images
    assert abs(plain - nlg).max() == 0


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_prompt_and_embeddings_together_raise_as_diffusers_does(kind, request):
    pipe = request.getfixturevalue(kind)
    sdxl = kind == "sdxl"
    embeds = encode(pipe, "a dog", sdxl)
    with pytest.raises(ValueError, match="prompt_embeds"):
        pipe("a dog", **embeds, **SETTINGS)  # diffusers' own rule
    nlg = NoiseLevelGuidance(refining_steps=1)
    with UNetCalls(pipe.unet) as calls:
        with pytest.raises(ValueError, match="both `prompt` and `prompt_embeds`"):
            nlg(pipe, "a dog", **embeds, **SETTINGS)
        with pytest.raises(ValueError, match="both `negative_prompt` and `negative_prompt_embeds`"):
            nlg(pipe, None, negative_prompt="x", **embeds, **negative_of(embeds), **SETTINGS)
        with pytest.raises(ValueError, match="Provide either `prompt` or `prompt_embeds`"):
            nlg(pipe, **SETTINGS)
        with pytest.raises(ValueError, match="same shape"):
            nlg.refine(pipe, None, **embeds, **negative_of({k: v[:, :5] for k, v in embeds.items()}))
    assert calls.kwargs == []  # refused before any model call
    if sdxl:
        with pytest.raises(ValueError, match="pooled_prompt_embeds"):
            nlg.refine(pipe, None, prompt_embeds=embeds["prompt_embeds"])
    else:
        with pytest.raises(TypeError, match="pooled"):
            nlg.refine(pipe, None, **embeds, pooled_prompt_embeds=torch.zeros(1, 32))


# -- cross_attention_kwargs and LoRA ---------------------------------------------------------------------


def add_lora(module, target_modules, seed):
    """A LoRA adapter with nonzero, seeded weights (peft's init_lora_weights=False), injected in place."""
    from peft import LoraConfig, inject_adapter_in_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = LoraConfig(r=4, lora_alpha=4, target_modules=target_modules, init_lora_weights=False)
        inject_adapter_in_model(config, module)
    return module


def test_lora_scale_reaches_every_refinement_unet_call():
    plain = tiny_sd_pipeline("epsilon")
    lora = tiny_sd_pipeline("epsilon")
    add_lora(lora.unet, ["to_q", "to_k", "to_v", "to_out.0"], seed=7)
    nlg = NoiseLevelGuidance(refining_steps=K)

    def refine(pipe, **kwargs):
        return nlg.refine(pipe, "a dog", generator=seeded(0), **kwargs)

    with UNetCalls(lora.unet) as calls:
        full = refine(lora, cross_attention_kwargs={"scale": 1.0})
    assert len(calls.kwargs) == K and all(kw["cross_attention_kwargs"] == {"scale": 1.0} for kw in calls.kwargs)
    off = refine(lora, cross_attention_kwargs={"scale": 0.0})
    default = refine(lora)
    torch.testing.assert_close(off.latents, refine(plain).latents)  # scale 0 is the model without LoRA
    torch.testing.assert_close(default.latents, full.latents)  # diffusers' default scale is 1
    assert (off.latents - full.latents).abs().max() > 1e-4
    half = refine(lora, cross_attention_kwargs={"scale": 0.5})
    assert (half.latents - full.latents).abs().max() > 1e-5 and (half.latents - off.latents).abs().max() > 1e-5
    assert half.conditioning["cross_attention_kwargs"] == {"scale": 0.5}

    # the pipeline samples with the same scale: refining_steps=0 equals diffusers' own call
    kwargs = dict(cross_attention_kwargs={"scale": 0.5}, **SETTINGS)
    expected = lora("a dog", generator=seeded(2), **kwargs).images
    got = NoiseLevelGuidance(refining_steps=0)(lora, "a dog", generator=seeded(2), **kwargs).images
    assert abs(expected - got).max() == 0


def test_lora_scale_reaches_the_text_encoder():
    plain = tiny_sd_pipeline("epsilon")
    lora = tiny_sd_pipeline("epsilon")
    add_lora(lora.text_encoder, ["q_proj", "k_proj", "v_proj", "out_proj"], seed=8)
    nlg = NoiseLevelGuidance(refining_steps=1)

    def embeds(pipe, **kwargs):
        return nlg.refine(pipe, "a dog", generator=seeded(0), **kwargs).conditioning["prompt_embeds"]

    without = embeds(plain)
    torch.testing.assert_close(embeds(lora, cross_attention_kwargs={"scale": 0.0}), without)
    assert (embeds(lora, cross_attention_kwargs={"scale": 1.0}) - without).abs().max() > 1e-4
    # diffusers' encode_prompt with the same lora_scale gives the same embeddings
    with torch.no_grad():
        reference, _ = lora.encode_prompt("a dog", torch.device("cpu"), 1, True, lora_scale=0.5)
    torch.testing.assert_close(embeds(lora, cross_attention_kwargs={"scale": 0.5}), reference)


# -- refused keywords and pipeline classes ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["ip_adapter_image", "ip_adapter_image_embeds"])
def test_ip_adapter_inputs_are_refused_by_name(sd15, name):
    with UNetCalls(sd15.unet) as calls, pytest.raises(ValueError, match=name):
        NoiseLevelGuidance(refining_steps=1)(sd15, "a", **{name: [torch.zeros(2, 1, 32)]})
    assert calls.kwargs == []


def test_unknown_keywords_are_refused_by_name_before_any_model_call(sd15):
    import inspect

    assert "guidance_scal" not in inspect.signature(sd15.__call__).parameters
    sd15("a", guidance_scal=3.0, **SETTINGS)  # diffusers' **kwargs swallows a misspelt option silently
    with UNetCalls(sd15.unet) as calls, pytest.raises(TypeError, match="guidance_scal"):
        NoiseLevelGuidance(refining_steps=1)(sd15, "a", guidance_scal=3.0, **SETTINGS)
    assert calls.kwargs == []
    with pytest.raises(TypeError, match="prompt_3"):
        NoiseLevelGuidance(refining_steps=1)(sd15, "a", prompt_3="b", **SETTINGS)
    with pytest.raises(TypeError, match="joint_attention_kwargs"):  # SD3's; SD's LoRA scale is cross_attention_kwargs
        NoiseLevelGuidance(refining_steps=1)(sd15, "a", joint_attention_kwargs={"scale": 0.5}, **SETTINGS)
    # a keyword the pipeline names is passed on: guidance_rescale changes the sampling as in diffusers
    kwargs = dict(guidance_rescale=0.7, **SETTINGS)
    expected = sd15("a", generator=seeded(0), **kwargs).images
    got = NoiseLevelGuidance(refining_steps=0)(sd15, "a", generator=seeded(0), **kwargs).images
    assert abs(expected - got).max() == 0
    assert abs(sd15("a", generator=seeded(0), **SETTINGS).images - got).max() > 1e-4


def _tiny_controlnet(unet):
    from diffusers import ControlNetModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16))


def _tiny_t2i_adapter():
    from diffusers import T2IAdapter

    return T2IAdapter(in_channels=3, channels=[8, 16], num_res_blocks=1, downscale_factor=2, adapter_type="full_adapter")


@pytest.mark.parametrize("kind", ["controlnet", "t2i_adapter"])
def test_control_pipelines_are_refused_by_class(sd15, kind):
    """The direction would come from the bare UNet while the pipeline samples with control residuals."""
    import diffusers

    parts = {k: v for k, v in sd15.components.items() if k not in ("image_encoder",)}
    if kind == "controlnet":
        pipe = diffusers.StableDiffusionControlNetPipeline(**parts, controlnet=_tiny_controlnet(sd15.unet))
        match = "StableDiffusionControlNetPipeline is not supported: its ControlNet"
    else:
        pipe = diffusers.StableDiffusionAdapterPipeline(**parts, adapter=_tiny_t2i_adapter())
        match = "StableDiffusionAdapterPipeline is not supported: its T2I-Adapter"
    with UNetCalls(sd15.unet) as calls, pytest.raises(TypeError, match=match):
        NoiseLevelGuidance(refining_steps=1)(pipe, "a", image=torch.zeros(1, 3, 32, 32), **SETTINGS)
    assert calls.kwargs == []


@pytest.mark.parametrize("cls", ["StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline"])
def test_img2img_and_inpainting_pipelines_point_to_nlg_img2img(sd15, cls):
    import diffusers

    pipe = getattr(diffusers, cls)(**sd15.components)
    with pytest.raises(TypeError, match=f"{cls} is an image-conditioned.*nlg.img2img.NoiseLevelImg2Img"):
        NoiseLevelGuidance(refining_steps=1)(pipe, "a", image=torch.zeros(1, 3, 32, 32))


def test_an_inpainting_unet_in_a_text_to_image_pipeline_is_refused_by_its_channels(sd15):
    """An inpainting checkpoint (9 input channels: latents, mask, masked image) loaded into the plain pipeline."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    unet = UNet2DConditionModel(**dict(sd15.unet.config, in_channels=9))
    pipe = StableDiffusionPipeline(**dict(sd15.components, unet=unet))
    with pytest.raises(TypeError, match="takes 9 input channels but predicts 4: an inpainting"):
        NoiseLevelGuidance(refining_steps=1)(pipe, "a", **SETTINGS)


def test_sdxl_img2img_is_refused_too(sdxl):
    import diffusers

    pipe = diffusers.StableDiffusionXLImg2ImgPipeline(**{k: v for k, v in sdxl.components.items()})
    with pytest.raises(TypeError, match="StableDiffusionXLImg2ImgPipeline is an image-conditioned"):
        NoiseLevelGuidance(refining_steps=1).refine(pipe, "a")


# -- model CPU offload ------------------------------------------------------------------------------------


def test_model_cpu_offload_gives_the_same_images_as_the_plain_pipeline():
    """Under enable_model_cpu_offload() the adapter works on pipe._execution_device and the offload hooks move the
    UNet there for each refinement call; on this CPU-only machine the execution device is the CPU itself."""
    from nlg import get_adapter

    plain = tiny_sd_pipeline("epsilon")
    offloaded = tiny_sd_pipeline("epsilon")
    offloaded.enable_model_cpu_offload(device="cpu")
    assert get_adapter(offloaded).device == offloaded._execution_device
    nlg = NoiseLevelGuidance(refining_steps=K)
    expected, ref_plain = nlg(plain, "a dog", generator=seeded(5), return_refinement=True, **SETTINGS)
    got, ref_off = nlg(offloaded, "a dog", generator=seeded(5), return_refinement=True, **SETTINGS)
    torch.testing.assert_close(ref_off.latents, ref_plain.latents)
    assert abs(expected.images - got.images).max() < 1e-6


# -- schedulers ---------------------------------------------------------------------------------------------


def test_edm_schedulers_are_refused_and_karras_sigmas_do_not_change_the_refinement():
    """NLG reads ᾱ at the last training timestep from scheduler.alphas_cumprod; EDM-style schedulers have no
    discrete DDPM schedule (only σ_min…σ_max), so they are refused; Karras σ spacing is a sampling choice only."""
    import diffusers

    from nlg.testing import make_scheduler

    pipe = tiny_sd_pipeline("epsilon", scheduler="euler")
    nlg = NoiseLevelGuidance(refining_steps=K)
    plain = nlg.refine(pipe, "a dog", generator=seeded(0)).latents
    pipe.scheduler = make_scheduler("euler", use_karras_sigmas=True)
    torch.testing.assert_close(nlg.refine(pipe, "a dog", generator=seeded(0)).latents, plain)
    pipe.scheduler = diffusers.EDMEulerScheduler()
    with pytest.raises(ValueError, match="EDMEulerScheduler has no alphas_cumprod"):
        nlg.refine(pipe, "a dog", generator=seeded(0))


@pytest.mark.slow  # dynamo traces the UNet: seconds even with the eager backend
def test_a_compiled_unet_refines_and_samples_as_the_plain_one():
    """pipe.unet = torch.compile(pipe.unet): NLG reaches the UNet's config and dtype through the compiled wrapper
    (the eager backend keeps this CPU test free of a C++ toolchain; inductor compiles the same module)."""
    plain = tiny_sd_pipeline("epsilon")
    compiled = tiny_sd_pipeline("epsilon")
    compiled.unet = torch.compile(compiled.unet, backend="eager")
    assert type(compiled.unet).__name__ == "OptimizedModule"
    nlg = NoiseLevelGuidance(refining_steps=K)
    expected, ref_plain = nlg(plain, "a dog", generator=seeded(6), return_refinement=True, **SETTINGS)
    got, ref_compiled = nlg(compiled, "a dog", generator=seeded(6), return_refinement=True, **SETTINGS)
    torch.testing.assert_close(ref_compiled.latents, ref_plain.latents)
    assert abs(expected.images - got.images).max() < 1e-5
