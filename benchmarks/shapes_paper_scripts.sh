#!/usr/bin/env bash
# The paper's experiment scripts, end to end and offline, on the shipped shapes model (issue 11):
# mini-GenEval prompts as a COCO captions file, 336 images (84 prompts x 4) with and without NLG
# (the reference's flags, --refining_steps 20), then FID / IS on the shapes scorer's features and the
# mini-GenEval accuracy.  Both scripts resume, so a killed run is finished by running this again.
#
#     bash benchmarks/shapes_paper_scripts.sh         # -> benchmarks/results/shapes_paper_scripts/*.json
#
# Run from the repository root with the project's Python first on PATH (make's .venv/bin/python).
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
RUN=${RUN:-outputs/shapes_paper_scripts}
OUT=benchmarks/results/shapes_paper_scripts
TOTAL=${TOTAL:-336}
SCALE=$($PY -c "from nlg.shapes import DEFAULT_GUIDANCE_SCALE as s; print(s)")
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$RUN" "$OUT"
$PY -c "from nlg.eval.datasets import write_geneval_captions; from nlg.shapes.geneval import load_prompts; write_geneval_captions('$RUN/captions.json', load_prompts(), images_per_prompt=4)"
$PY -c "
from pathlib import Path
from PIL import Image
from nlg.shapes import render, scene_from_seed
d = Path('$RUN/real'); d.mkdir(parents=True, exist_ok=True)
for s in range(1000):
    if not (d / f'{s:05d}.png').exists():
        Image.fromarray(render(scene_from_seed(10_000 + s).objects)).save(d / f'{s:05d}.png')
"
for steps in 0 20; do
  $PY core_experiments/generate_images.py --output_dir "$RUN" --prompts_path "$RUN/captions.json" \
    --stable_diffusion_path shapes --total_images "$TOTAL" --scheduler ddim --inference_steps 20 --guidance_level "$SCALE" \
    --refining_steps "$steps" --clip_grads --clip_threshold 0.5 --normalize_latents --add_noise --noise_level 0.001
  folder="$RUN/images-guidance_${SCALE}-inf_steps_20-ref_steps_${steps}-step_size_1-norm_True-clip_True-clip_thresh_0.5-guid_form_False-noise_0.001-bound_False"
  $PY core_experiments/calculate_metrics.py --real_image_dir "$RUN/real" --real_image_glob '*.png' \
    --fake_image_dir "$folder" --prompts_path "$RUN/captions.json" --feature_extractor shapes --clip_model none \
    --geneval --output_json "$OUT/metrics_ref_steps_${steps}.json"
done
