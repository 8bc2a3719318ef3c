"""quant.max_drop: the search by hand on a made-up accuracy curve, and for real on the demo model."""

from pathlib import Path

import pytest

from yolomlu.tasks.budget import search

RANKING = [f"layer{i}" for i in range(10)]


def _curve(scores: dict[int, float]):
    """measure() for a made-up model whose mAP depends only on how many layers are float."""
    asked: list[int] = []

    def measure(layers: list[str]) -> tuple[float, None]:
        assert layers == RANKING[: len(layers)]  # always the most sensitive first
        asked.append(len(layers))
        return scores[len(layers)], None

    return measure, asked


def test_doubling_then_bisection_finds_the_fewest_layers() -> None:
    # float mAP 0.70; each float layer recovers 0.004 of a 0.04 loss: 6 layers bring the drop to 0.016 ...
    scores = {k: 0.66 + 0.004 * k for k in range(11)}
    measure, asked = _curve(scores)
    found = search(0.015, 0.70, RANKING, measure)
    assert found.met and found.layers == RANKING[:7]  # drop 0.012 <= 0.015; 6 layers: 0.016 > 0.015
    assert asked == [0, 1, 2, 4, 8, 6, 7]
    assert list(found.steps["float_layers"]) == asked
    assert found.steps["meets_budget"].tolist() == [False, False, False, False, True, False, True]


def test_quantized_alone_may_already_meet_it_and_an_impossible_budget_says_so() -> None:
    measure, asked = _curve({k: 0.70 for k in range(11)})
    assert search(0.0, 0.70, RANKING, measure).layers == [] and asked == [0]
    measure, asked = _curve({k: 0.60 for k in range(11)})
    found = search(0.01, 0.70, RANKING, measure)
    assert not found.met and found.layers == RANKING and asked == [0, 1, 2, 4, 8, 10]
    with pytest.raises(ValueError, match="quant.max_drop=-0.1 must be >= 0"):
        search(-0.1, 0.70, RANKING, measure)


def test_the_demo_model_meets_its_budget_with_the_list_it_logs(compose_cfg, read_runs, tmp_path: Path) -> None:
    from yolomlu.tasks.evaluate import evaluate

    small = ["model=demo", "img_size=96", "data.n_images=3", "bench.enabled=false", "bench.profile=false", "eval.parity_images=1", "quant.sensitivity.images=1"]
    metrics = evaluate(compose_cfg([*small, "quant=int8", "quant.max_drop=0.02"], tiny=False))
    run = read_runs(tmp_path / "mlflow.db").iloc[0]
    assert run["tags.quant.max_drop.met"] == "true"
    float_map = float(run["tags.quant.max_drop.float_map50_95"])
    assert float_map - metrics["map50_95"] <= 0.02 + 1e-9  # the job ran with the list it found
    listed = run["tags.quant.max_drop.mixed_layer"].strip("[]")
    layers = listed.split(",") if listed else []
    assert len(layers) == int(metrics["quant_float_layers"]) and metrics["quant_layers"] == 62 - len(layers)
    # The list is a ready mixed_layer setting: the same job with it, and no search, scores the same.
    again = evaluate(compose_cfg([*small, "quant=int8", f"quant.mixed_layer=[{listed}]"], tiny=False))
    assert again["map50_95"] == pytest.approx(metrics["map50_95"], abs=1e-9)


def test_calibration_images_never_are_evaluated_ones(compose_cfg, tmp_path: Path) -> None:
    from yolomlu.data.coco import DataError
    from yolomlu.tasks.common import load_dataset
    from yolomlu.tasks.quant_stage import calibration_images, settings_of

    cfg = compose_cfg(["quant=int8", "quant.calib.images=3", "quant.calib.batch_size=3"])
    dataset = load_dataset(cfg)
    images, source = calibration_images(cfg, dataset, settings_of(cfg))
    evaluated = [dataset.load_image(i) for i in dataset.image_ids]
    assert len(images) == 3 and "calib split" in source
    assert not any(a.shape == b.shape and (a == b).all() for a in images for b in evaluated)
    # A dataset folder: the images after the evaluated ones; none left is an error that says what to do.
    root = dataset.ann_file.parents[1]
    folder = ["model=yolov5n_v5", "img_size=64", "data=coco", f"data.root={root}", "quant=int8", "quant.calib.images=2", "quant.calib.batch_size=2"]
    cfg = compose_cfg([*folder, "data.max_images=2"], tiny=False)
    images, source = calibration_images(cfg, load_dataset(cfg), settings_of(cfg))
    assert len(images) == 2 and "after the 2 evaluated ones" in source
    cfg = compose_cfg(folder, tiny=False)
    with pytest.raises(DataError, match=r"all 4 images of .* are evaluated: set data.max_images below 4, quant.calib.root"):
        calibration_images(cfg, load_dataset(cfg), settings_of(cfg))
    cfg = compose_cfg([*folder, f"quant.calib.root={root / 'images'}"], tiny=False)
    assert "of the folder" in calibration_images(cfg, load_dataset(cfg), settings_of(cfg))[1]
    cfg = compose_cfg([*folder, "quant.calib.data=eval"], tiny=False)
    assert "the first 2 evaluated images" in calibration_images(cfg, load_dataset(cfg), settings_of(cfg))[1]
