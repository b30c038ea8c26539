"""Does the shapes model read the relation word of a position prompt?  Three probes (issue 19: position at chance).

1. **Layout.**  For each ordered pair of shapes (A, B) and each relation, ``--images`` images of ``a photo of a A
   {relation} a B`` from the same seeds (seed ``SEED + i`` for image i, whatever the relation), at the shipped
   defaults.  Where exactly one A and one B are detected, the offset of A's box centre from B's: if the model
   followed the word, A would be left of B (dx < 0) for ``left of`` far more often than for ``right of``, and
   likewise for dy with ``above`` and ``below``.
2. **Text encoder.**  For each prompt the relative change ‖h' − h‖ / ‖h‖ of the text encoder's last hidden state at
   the relation word and at the end-of-text token (what the UNet's pooled embedding reads) when ``left of`` is
   replaced by each other relation, and, for scale, when A and B swap; the same for the encoder as training starts
   (:func:`~nlg.shapes.train.initial_text_encoder` of training seed 0), to see what training did to it.
3. **Image.**  How much the relation word changes a seed's image, against how much a new seed does
   (:func:`image_change`), and a picture of the first seeds under each relation.
4. **Colours** (``--coloured``).  The layout probe on ``a photo of a {c1} A {relation} a {c2} B``, the training-only
   template of ``--coloured-position``, where the word decides which side each colour goes: the offset of the
   ``c1`` object from the ``c2`` one, whatever their shapes (:data:`COLOUR_PAIRS`, one per shape pair).  And, the
   most sensitive test, the same prompts' **first prediction**: the clean image the model predicts at the sampler's
   first timestep (t = 999) from ``--images`` noises, averaged, against the mean of training scenes of that
   relation in those colours (:func:`colour_contrast`).  There the layout is not yet drawn, so the prediction is the
   model's estimate of the data's mean image given the prompt; the data's mean has the first colour on the named
   side.

    python -m benchmarks.shapes_relation_probe            # -> benchmarks/results/shapes_relation_probe.{md,csv,png}
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from benchmarks.common import RESULTS, command, sample_sheet, write_results
from nlg.shapes import DEFAULT_GUIDANCE_SCALE, DEFAULT_INFERENCE_STEPS, load_pipeline
from nlg.shapes.data import PALETTE, RELATIONS, SHAPES, render, scene_from_seed
from nlg.shapes.train import DEFAULT_TRAINING, initial_text_encoder
from nlg.shapes.scorer import detect_objects

SEED = 600_000
#: The colours named by the coloured probe, one pair per ordered shape pair (in ``SHAPES`` order).
COLOUR_PAIRS = (("red", "blue"), ("green", "yellow"), ("purple", "cyan"), ("blue", "red"), ("yellow", "green"), ("cyan", "purple"))


def centre(box: Sequence[float]) -> np.ndarray:
    """Centre ``((x1 + x2)/2, (y1 + y2)/2)`` of a box."""
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], dtype=np.float64)


def relation_images(pipe: Any, a: str, b: str, relation: str, images: int,
                    colours: Optional[Tuple[str, str]] = None) -> np.ndarray:
    """``images`` images of ``a photo of a {a} {relation} a {b}`` (``a {c1} {a} {relation} a {c2} {b}`` with
    ``colours``), image i from seed ``SEED + i`` whatever the relation."""
    named_a, named_b = (a, b) if colours is None else (f"{colours[0]} {a}", f"{colours[1]} {b}")
    generators = [torch.Generator().manual_seed(SEED + i) for i in range(images)]
    return np.stack(pipe([f"a photo of a {named_a} {relation} a {named_b}"] * images, generator=generators, output_type="np",
                         guidance_scale=DEFAULT_GUIDANCE_SCALE, num_inference_steps=DEFAULT_INFERENCE_STEPS).images)


def layout_offsets(batch: np.ndarray, a: str, b: str, by: str = "shape") -> List[np.ndarray]:
    """Centre of A minus centre of B in each image of ``batch`` (floats in [0, 1]) that shows one A and one B;
    A and B are shapes, or colours with ``by="colour"``."""
    if by not in ("shape", "colour"):
        raise ValueError(f"by must be 'shape' or 'colour', got {by!r}")
    found = []
    for image in batch:
        objects, _ = detect_objects((image * 255).round().astype(np.uint8))
        of_a, of_b = [o for o in objects if getattr(o, by) == a], [o for o in objects if getattr(o, by) == b]
        if len(of_a) == 1 and len(of_b) == 1:
            found.append(centre(of_a[0].box) - centre(of_b[0].box))
    return found


def image_change(by_relation: Dict[str, np.ndarray]) -> Dict[str, float]:
    """How much each relation word changes the image of a seed, against how much the seed changes it.

    Mean absolute pixel difference between the images of the same seed under ``left of`` and under each other
    relation, divided by that between consecutive seeds under ``left of``: 0 if the word changes nothing, about 1 or
    more if it changes the image as much as a new seed does.  Needs at least 2 seeds.
    """
    base = by_relation["left of"]
    if len(base) < 2:
        raise ValueError("image_change needs at least 2 images per relation")
    seed_change = float(np.abs(base[1:] - base[:-1]).mean())
    return {r: float(np.abs(batch - base).mean()) / seed_change for r, batch in by_relation.items() if r != "left of"}


def colour_contrast(images: np.ndarray, first: str, second: str, relation: str) -> float:
    """How much more of colour ``first`` than of ``second`` the images hold on the relation's side.

    Each pixel p (RGB in [0, 1]) scores ⟨p − white, a − b⟩ / ‖a − b‖² for the palette colours a of ``first`` and
    b of ``second``; the contrast is the mean score over the half the relation puts ``first`` in (left half for
    ``left of``, right for ``right of``, top for ``above``, bottom for ``below``) minus that over the other half,
    averaged over the images ``(N, H, W, 3)``.  Positive when ``first`` is on the named side.
    """
    a, b = (np.asarray(PALETTE[c], dtype=np.float64) / 255 for c in (first, second))
    score = ((images - 1.0) @ (a - b)) / float((a - b) @ (a - b))  # (N, H, W)
    axis = 2 if relation in ("left of", "right of") else 1
    half = score.shape[axis] // 2
    near, far = np.split(score, [half], axis=axis)
    sign = 1.0 if relation in ("left of", "above") else -1.0
    return float(sign * (near.mean() - far.mean()))


def first_predictions(pipe: Any, prompt: str, images: int) -> np.ndarray:
    """The decoded clean image the pipeline's UNet predicts at its scheduler's first timestep (t = 999 with
    trailing spacing), from ``images`` seeded noises (seed ``SEED + i``), as ``(N, H, W, 3)`` floats in [0, 1]."""
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(DEFAULT_INFERENCE_STEPS)
    t = scheduler.timesteps[0]
    shape = (pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(SEED + i)) for i in range(images)])
    latents = noise * scheduler.init_noise_sigma
    ids = pipe.tokenizer([prompt] * images, padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt")
    with torch.no_grad():
        output = pipe.unet(latents, t, encoder_hidden_states=pipe.text_encoder(ids.input_ids)[0]).sample
        clean = scheduler.step(output, t, latents).pred_original_sample
        decoded = pipe.vae.decode(clean / pipe.vae.config.scaling_factor).sample
    return (decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def training_means(first: str, second: str, relation: str, images: int, start: int = 10_000_000) -> np.ndarray:
    """``images`` position scenes of the relation (:func:`~nlg.shapes.data.scene_from_seed` from seed ``start`` on,
    the other relations skipped), the first object recoloured ``first`` and the second ``second``, rendered as
    ``(N, H, W, 3)`` floats in [0, 1]: what the training data shows for that coloured prompt, shapes aside."""
    found, seed = [], start
    while len(found) < images:
        scene = scene_from_seed(seed, "position")
        seed += 1
        if f" {relation} " in scene.caption:
            objects = [dataclasses.replace(o, colour=c) for o, c in zip(scene.objects, (first, second))]
            found.append(render(objects).astype(np.float64) / 255)
    return np.stack(found)


def hidden(pipe: Any, prompt: str) -> Tuple[torch.Tensor, int]:
    """The text encoder's last hidden state ``(tokens, width)`` of ``prompt`` and the end-of-text token's index."""
    ids = pipe.tokenizer([prompt], padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt")
    with torch.no_grad():
        states = pipe.text_encoder(ids.input_ids)[0][0]
    return states, int(ids.attention_mask[0].sum()) - 1


def encoder_sensitivity(pipe: Any, a: str, b: str) -> Dict[str, Dict[str, float]]:
    """Relative change of the hidden state at the relation word and at the end-of-text token against ``left of``."""
    base, end = hidden(pipe, f"a photo of a {a} left of a {b}")
    word = 6  # <start> a photo of a A [relation]
    out = {}
    for name, prompt in [(r, f"a photo of a {a} {r} a {b}") for r in RELATIONS[1:]] + [("A and B swapped", f"a photo of a {b} left of a {a}")]:
        other, other_end = hidden(pipe, prompt)
        out[name] = {"word": float((other[word] - base[word]).norm() / base[word].norm()),
                     "end": float((other[other_end] - base[end]).norm() / base[end].norm())}
    return out


def layout_row(relation: str, found: List[np.ndarray], probe: str = "layout") -> Dict[str, Any]:
    """The layout table's row: how many images, mean offsets and the shares with A left of / above B (blank if none)."""
    row: Dict[str, Any] = dict(probe=probe, relation=relation, n=len(found))
    if found:
        d = np.array(found)
        row.update(mean_dx=float(d[:, 0].mean()), mean_dy=float(d[:, 1].mean()),
                   share_A_left=float(np.mean(d[:, 0] < 0)), share_A_above=float(np.mean(d[:, 1] < 0)))
    return row


def main(argv: Optional[Sequence[str]] = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="images per (pair, relation) (default 16)")
    parser.add_argument("--pipeline", type=Path, default=None, help="pipeline folder (default: the shipped model)")
    parser.add_argument("--coloured", action="store_true",
                        help="also probe prompts naming both colours (the --coloured-position training template)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error(f"--images must be >= 1, got {args.images}")
    pipe = load_pipeline(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    pairs = [(a, b) for a in SHAPES for b in SHAPES if a != b]
    generated = {(a, b, r): relation_images(pipe, a, b, r, args.images) for a, b in pairs for r in RELATIONS}
    rows: List[Dict[str, Any]] = []
    for relation in RELATIONS:
        rows.append(layout_row(relation, [d for a, b in pairs for d in layout_offsets(generated[a, b, relation], a, b)]))
    if args.coloured:
        for relation in RELATIONS:
            found = [d for (a, b), colours in zip(pairs, COLOUR_PAIRS)
                     for d in layout_offsets(relation_images(pipe, a, b, relation, args.images, colours), *colours, by="colour")]
            rows.append(layout_row(relation, found, probe="coloured layout"))
        for relation in RELATIONS:
            model, data = [], []
            for (a, b), colours in zip(pairs, COLOUR_PAIRS):
                prompt = f"a photo of a {colours[0]} {a} {relation} a {colours[1]} {b}"
                model.append(colour_contrast(first_predictions(pipe, prompt, args.images), *colours, relation))
                data.append(colour_contrast(training_means(*colours, relation, args.images), *colours, relation))
            rows.append(dict(probe="coloured first prediction", relation=relation, n=args.images * len(pairs),
                             model_contrast=float(np.mean(model)), data_contrast=float(np.mean(data))))
    if args.images >= 2:
        changes_by_pair = [image_change({r: generated[a, b, r] for r in RELATIONS}) for a, b in pairs]
        for relation in RELATIONS[1:]:
            rows.append(dict(probe="image vs 'left of'", relation=relation,
                             image_change=float(np.mean([c[relation] for c in changes_by_pair]))))
    shown = min(args.images, 8)
    sample_sheet({r: generated["circle", "square", r][:shown] for r in RELATIONS}, [f"seed {SEED + i}" for i in range(shown)],
                 args.out_dir / "shapes_relation_probe.png")
    layers = pipe.text_encoder.config.num_hidden_layers
    initial = SimpleNamespace(tokenizer=pipe.tokenizer, text_encoder=initial_text_encoder(
        dataclasses.replace(DEFAULT_TRAINING, text_layers=layers)).eval())
    for probe, model in (("text encoder vs 'left of'", pipe), ("initial text encoder vs 'left of'", initial)):
        changes = [encoder_sensitivity(model, a, b) for a, b in pairs]
        for name in changes[0]:
            rows.append(dict(probe=probe, relation=name,
                             change_at_word=float(np.mean([c[name]["word"] for c in changes])),
                             change_at_end=float(np.mean([c[name]["end"] for c in changes]))))
    notes = [f"Command: `{command('shapes_relation_probe', argv)}`", "",
             f"Layout: {len(pairs)} ordered shape pairs × {args.images} seeds per relation, CFG {DEFAULT_GUIDANCE_SCALE}, "
             f"DDIM {DEFAULT_INFERENCE_STEPS}; n images with exactly one A and one B; offsets of A's centre from B's in "
             "pixels (x right, y down). A model that read the word would put A left of B far more often for "
             "`left of` than for `right of`. Text encoder: mean over the pairs of ‖h′ − h‖/‖h‖ at the relation "
             "word and at the end-of-text token, against `left of`; swapping A and B is the scale of a change the "
             "encoder does represent; the initial text encoder is the one training starts from (training "
             "seed 0, the model's depth). Image: mean absolute pixel change of a seed's image when `left of` is replaced, "
             "over that between consecutive seeds (0: the word changes nothing; 1: as much as a new seed). "
             + (f"Coloured layout (`--coloured`): the same on `a photo of a C1 A REL a C2 B`, colours {list(COLOUR_PAIRS)} "
                "for the pairs in turn; n images with exactly one object of each colour; offsets of the C1 object "
                "from the C2 one, whatever their shapes. Coloured first prediction: the clean image the model predicts "
                "at the first timestep (t = 999) from n noises, and the same number of training scenes of the relation "
                "recoloured C1/C2; contrast = C1-against-C2 colour score on the half the relation names minus the other "
                "half (`colour_contrast`; the data's is what a model that read the word would approach, 0 is none). "
                if args.coloured else "")
             + f"Picture: `shapes_relation_probe.png`, `a photo of a circle REL a square`, one row per relation, "
             f"the first {shown} seeds."]
    columns = ["probe", "relation", "n", "mean_dx", "mean_dy", "share_A_left", "share_A_above", "change_at_word", "change_at_end",
               "image_change", "model_contrast", "data_contrast"]
    return write_results("shapes_relation_probe", rows, notes, columns, out_dir=args.out_dir)


if __name__ == "__main__":
    main()
