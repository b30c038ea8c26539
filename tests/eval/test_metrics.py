"""``nlg.eval.metrics`` / ``nlg.eval.datasets``: the library side of the metrics script (CPU, offline).

The Inception stand-in has non-identity batch norms; CLIP scores are checked against a direct cosine of
the CLIP model's own features; the torchmetrics internals ``nlg.eval._torchmetrics`` relies on are each
pinned by a ``test_torchmetrics_contract_*`` test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import pytest
import torch
from torchmetrics.image.fid import NoTrainInceptionV3

from nlg.eval.captions import Caption
from nlg.eval.metrics import GenerationMetrics, InceptionFeatures, bottom_k_mean, generation_metrics
from nlg.eval.datasets import read_clip_scores, write_clip_scores
from nlg.testing import save_random_inception_weights, save_tiny_clip


@pytest.fixture(scope="module")
def nets(tmp_path_factory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("nets")
    return {
        "inception": save_random_inception_weights(root / "inception.pt", generator=torch.Generator().manual_seed(3)),
        "clip": save_tiny_clip(root / "clip", generator=torch.Generator().manual_seed(4)),
    }


def _images(count: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 3, 3, generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (255 * (0.7 * smooth + 0.3 * torch.rand(count, 3, size, size, generator=g))).round().to(torch.uint8)


def test_one_pass_features_equal_torchmetrics_inception(nets):
    state = torch.load(nets["inception"])
    assert (state["Mixed_7c.branch1x1.bn.running_var"] != 1).all() and (state["Conv2d_1a_3x3.bn.running_mean"] != 0).all()
    images = _images(2, 299, seed=0)
    with torch.inference_mode():
        pool, logits = InceptionFeatures(nets["inception"])(images)
        for name, ours in (("2048", pool), ("logits_unbiased", logits)):
            reference = NoTrainInceptionV3(name="inception-v3-compat", features_list=[name],
                                           feature_extractor_weights_path=str(nets["inception"]))(images)
            torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_figures_do_not_depend_on_batching_or_order(nets):
    fake299, fake224, real299 = _images(4, 299, seed=1), _images(4, 224, seed=1), _images(3, 299, seed=2)
    captions, ids = ["a", "b ü", "c 東京", "d " * 60], torch.tensor([40, 10, 30, 20])
    options = dict(inception_weights=nets["inception"], clip_model=str(nets["clip"]), local_files_only=True, is_splits=2)
    metrics = GenerationMetrics(**options)
    metrics.update_fake(fake299, fake224, captions, ids)
    metrics.update_real(real299)
    whole = metrics.compute()
    reverse = [3, 2, 1, 0]
    one_by_one = generation_metrics(
        ({"inception": fake299[[i]], "clip": fake224[[i]], "caption": [captions[i]], "id": ids[[i]]} for i in reverse),
        ({"inception": real299[[i]]} for i in range(3)),
        **options,
    )
    for key, value in whole.figures().items():
        assert getattr(one_by_one, key) == pytest.approx(value, rel=1e-4, abs=1e-4), key
    assert sorted(whole.clip_scores) == [10, 20, 30, 40]
    for caption_id, score in whole.clip_scores.items():
        assert one_by_one.clip_scores[caption_id] == pytest.approx(score, rel=1e-4, abs=1e-4)
    assert whole.num_fake == 4 and whole.num_real == 3


def _direct_clip_scores(clip_path: Path, images: torch.Tensor, captions) -> List[float]:
    """100·cos(image features, text features) of the CLIP model, one image and one caption at a time;
    captions cut to CLIP's 77 positions."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(clip_path, local_files_only=True).eval()
    processor = CLIPProcessor.from_pretrained(clip_path, local_files_only=True)
    scores = []
    with torch.no_grad():
        for image, caption in zip(images, captions):
            pixels = processor(images=[image], return_tensors="pt")["pixel_values"]
            tokens = processor(text=[caption], return_tensors="pt")
            i = model.get_image_features(pixel_values=pixels)
            t = model.get_text_features(input_ids=tokens["input_ids"][:, :77], attention_mask=tokens["attention_mask"][:, :77])
            i, t = (x if isinstance(x, torch.Tensor) else x.pooler_output for x in (i, t))
            scores.append(100 * float((i @ t.T).squeeze() / (i.norm() * t.norm())))
    return scores


def test_clip_score_equals_a_direct_cosine(nets):
    """Per image 100·cos (unclamped, as torchmetrics' CLIPScore sums it); the score is max(mean, 0)."""
    images, captions = _images(5, 224, seed=6), ["a cat", "ein Hund 🐕", "東京の夜", "x " * 80, "a bowl of fruit"]
    ids = torch.tensor([5, 1, 4, 2, 3])
    metrics = GenerationMetrics(inception_weights=nets["inception"], clip_model=str(nets["clip"]), local_files_only=True,
                                is_splits=1)
    metrics.update_fake(_images(5, 299, seed=6), images, captions, ids)
    metrics.update_real(_images(2, 299, seed=7))
    result = metrics.compute()
    direct = _direct_clip_scores(nets["clip"], images, captions)
    for caption_id, score in zip(ids.tolist(), direct):
        assert result.clip_scores[caption_id] == pytest.approx(score, rel=1e-4, abs=1e-4)
    assert len({round(s, 3) for s in direct}) == 5, "distinct scores, or the id bookkeeping is untested"
    assert result.clip_score == pytest.approx(max(sum(direct) / 5, 0.0), rel=1e-4, abs=1e-4)


def test_torchmetrics_contract_one_pass_returns_every_feature(nets):
    """``_torch_fidelity_forward`` returns each requested feature, as the public forward does one at a time."""
    from nlg.eval._torchmetrics import inception_features

    images = _images(2, 299, seed=8)
    path = str(nets["inception"])
    both = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048", "logits_unbiased"],
                              feature_extractor_weights_path=path)
    with torch.inference_mode():
        pool, logits = inception_features(both, images)
        for name, got in (("2048", pool), ("logits_unbiased", logits)):
            alone = NoTrainInceptionV3(name="inception-v3-compat", features_list=[name], feature_extractor_weights_path=path)
            torch.testing.assert_close(got.reshape(2, -1), alone(images), rtol=1e-5, atol=1e-5)


def test_torchmetrics_contract_private_names_and_signatures(nets):
    """The private function and state names nlg.eval._torchmetrics uses exist with the expected shape."""
    import inspect

    from torchmetrics.functional.multimodal.clip_score import _clip_score_update
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore

    from nlg.eval._torchmetrics import INCEPTION_SCORE_FEATURES
    from nlg.eval.metrics import PerImageCLIPScore, _Precomputed

    assert list(inspect.signature(_clip_score_update).parameters) == ["source", "target", "model", "processor"]
    fid = FrechetInceptionDistance(feature=_Precomputed(2048))
    assert {"real_features_num_samples", "fake_features_num_samples"} <= set(fid.metric_state)
    assert INCEPTION_SCORE_FEATURES in InceptionScore(feature=_Precomputed(1008)).metric_state
    assert {"score", "n_samples"} <= set(PerImageCLIPScore(str(nets["clip"]), local_files_only=True).metric_state)


def test_too_many_inception_score_splits_is_refused(nets):
    metrics = GenerationMetrics(inception_weights=nets["inception"], clip_model=str(nets["clip"]),
                                local_files_only=True, is_splits=3)
    metrics.inception_score.update(torch.randn(2, 1008, generator=torch.Generator().manual_seed(0)), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="is_splits"):
        metrics.inception_score.compute()
    with pytest.raises(ValueError, match="is_splits"):
        GenerationMetrics(inception_weights=nets["inception"], clip_model=str(nets["clip"]), is_splits=0)


def test_missing_local_models_are_named(tmp_path, nets):
    with pytest.raises(ValueError, match="inception_weights"):
        InceptionFeatures(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="clip_model"):
        GenerationMetrics(inception_weights=nets["inception"], clip_model=str(tmp_path / "no_clip"), local_files_only=True)


def test_bottom_k_mean():
    scores = {1: 30.0, 2: 10.0, 3: 20.0, 4: 10.0, 5: -5.0}
    mean, ids = bottom_k_mean(scores, 3)
    assert ids == [5, 2, 4]  # ties broken by id
    assert mean == pytest.approx((-5 + 10 + 10) / 3)
    assert bottom_k_mean(scores, 1)[0] == 0.0  # CLIPScore's max(mean, 0)
    assert bottom_k_mean(scores, 2, ids=[1, 3])[0] == pytest.approx(25.0)
    with pytest.raises(ValueError, match="no score for ids \\[9\\]"):
        bottom_k_mean(scores, 2, ids=[1, 9])


def test_clip_score_files_round_trip_and_read_reference_files(tmp_path):
    path = tmp_path / "scores.csv"
    captions = {7: Caption(7, 'a "quoted", comma caption\nover two lines', 70), 8: Caption(8, "東京 🐕", None)}
    write_clip_scores(path, {8: 12.5, 7: -0.25}, captions)
    assert read_clip_scores(path) == {7: -0.25, 8: 12.5}
    # The reference writes its whole shuffled prompt table, NaN where it scored nothing, ids as floats.
    reference = tmp_path / "reference.csv"
    reference.write_text("id,image_id,caption,clip_score\n3.0,1,a,31.5\n4,2,b,nan\n5,3,c,\n", encoding="utf-8")
    assert read_clip_scores(reference) == {3: 31.5}
    reference.write_text("id,image_id,caption,clip_score\n3,1,a,high\n", encoding="utf-8")
    with pytest.raises(ValueError, match="clip_scores_load_path.*line 2"):
        read_clip_scores(reference)


@pytest.mark.parametrize("order", ["id", "reference"])
def test_torchmetrics_contract_inception_score_split_and_feeding_order(nets, order):
    """torchmetrics permutes with torch.randperm from the global generator, which the metric sets up.

    ``id``: logits by id, ``torch.manual_seed(0)``.  ``reference``: as the reference script, logits in
    the order of their file names sorted as strings ("10.png" < "100.png" < "2.png"), and the generator
    at seed 0 after FID's and IS's InceptionV3 were built (torchmetrics' own classes here).
    """
    from nlg.eval.metrics import _OrderedInceptionScore

    logits = 3 * torch.randn(6, 1008, generator=torch.Generator().manual_seed(5))
    ids = torch.tensor([5, 3, 10, 4, 100, 2])
    metric = _OrderedInceptionScore(splits=2, seed=0, order=order)
    metric.update(logits[:3], ids[:3])
    metric.compute()  # a compute in between must not disturb the states
    metric.update(logits[3:], ids[3:])
    mean, std = metric.compute()
    # By hand: ordered logits, permuted by randperm, two splits, exp(mean KL(p(y|x) || p(y))).
    if order == "id":
        ordered = logits[ids.argsort()]
        torch.manual_seed(0)
    else:
        names = [f"{i}.png" for i in ids.tolist()]
        ordered = logits[[names.index(n) for n in sorted(names)]]
        torch.manual_seed(0)
        for _ in range(2):
            NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                               feature_extractor_weights_path=str(nets["inception"]))
    ordered = ordered[torch.randperm(6)]
    scores = []
    for part in ordered.chunk(2):
        p = part.softmax(dim=1)
        marginal = p.mean(dim=0, keepdim=True)
        scores.append(torch.exp((p * (p.log() - marginal.log())).sum(dim=1).mean()))
    assert float(mean) == pytest.approx(float(torch.stack(scores).mean()), rel=1e-5)
    assert float(std) == pytest.approx(float(torch.stack(scores).std()), rel=1e-4, abs=1e-6)
    assert float(mean) > 1.05


def test_inception_score_synced_across_processes_equals_one_process(nets):
    """Two processes with two batches each (a fake all-gather between two metric objects) score as one process.

    Each process's ``_sync_dist`` gathers its states in the same call sequence; the second process's
    tensors are recorded first, then handed to the first process's gathers in that order.
    """
    from nlg.eval.metrics import _OrderedInceptionScore

    logits = 3 * torch.randn(8, 1008, generator=torch.Generator().manual_seed(6))
    ids = torch.tensor([1, 2, 3, 4, 101, 102, 103, 104])
    processes = [_OrderedInceptionScore(splits=2, seed=0, order="id") for _ in range(2)]
    for rank, metric in enumerate(processes):
        for batch in (slice(4 * rank, 4 * rank + 2), slice(4 * rank + 2, 4 * rank + 4)):
            metric.update(logits[batch], ids[batch])
    sent = []
    processes[1]._sync_dist(dist_sync_fn=lambda x, group=None: sent.append(x.clone()) or [x])
    processes[0]._sync_dist(dist_sync_fn=lambda x, group=None: [x, sent.pop(0)])
    assert not sent
    single = _OrderedInceptionScore(splits=2, seed=0, order="id")
    single.update(logits, ids)
    assert torch.allclose(torch.stack(processes[0].compute()), torch.stack(single.compute()))


def test_the_two_split_orders_differ(nets):
    """Otherwise the test above could not tell them apart."""
    from nlg.eval.metrics import _OrderedInceptionScore

    logits = 3 * torch.randn(6, 1008, generator=torch.Generator().manual_seed(5))
    ids = torch.tensor([5, 3, 10, 4, 100, 2])
    results = []
    for order in ("id", "reference"):
        metric = _OrderedInceptionScore(splits=2, seed=0, order=order)
        metric.update(logits, ids)
        results.append(float(metric.compute()[0]))
    assert abs(results[0] - results[1]) > 1e-3 * results[0]


def test_real_image_subset_equals_the_reference(tmp_path):
    """The FID subset is the reference's: sorted *.jpg shuffled by Python's random after the captions."""
    import json

    from nlg.eval.datasets import real_images
    from tests.helpers.reference_fixture import reference_fid_real_files

    real = tmp_path / "val2014"
    real.mkdir()
    for i in range(25):
        (real / f"COCO_val2014_{(i * 7919) % 1000:012d}.jpg").write_bytes(b"")  # only names matter here
    (real / "other.png").write_bytes(b"")
    (real / "upper.JPG").write_bytes(b"")  # the reference's glob is case-sensitive
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"annotations": [{"id": 3 * i, "caption": str(i)} for i in range(13)]}))
    for count in (1, 7, 25):
        ours = real_images(real, count, num_captions=13, seed=0)
        assert [p.name for p in ours] == reference_fid_real_files(captions, real, count)
    # The captions' shuffle comes first: with another caption count the subset changes.
    assert [p.name for p in real_images(real, 7, num_captions=100)] != reference_fid_real_files(captions, real, 7)
