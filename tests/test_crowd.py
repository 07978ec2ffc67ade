"""Crowd counting: density maps keep the count, readers take the official formats, metrics reduce exactly
under DDP, and the task runs fit -> test -> predict -> report -> Fig. 7 through the CLI."""

import csv
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from acda_lightning.cli import main
from acda_lightning.data import CrowdDataModule, ShanghaiTech, UCFQNRF, gaussian_density
from acda_lightning.data.crowd import TrainTransform, WholeImageTransform, pad_collate, synth_crowd
from acda_lightning.data.density import cached_density, density_key, sum_pool
from acda_lightning.metrics import CountMAE, CountRMSE
from acda_lightning.models import create_model
from acda_lightning.studies import build_reports
from acda_lightning.tasks.crowd import CrowdCounting, load_pretrained_trunk

from crowd_metric_ranks import PREDICTED, TRUE, run_rank
from helpers import free_port

# --- density maps ---------------------------------------------------------------------------------


@pytest.mark.parametrize("adaptive", [False, True])
def test_density_sums_to_the_heads_inside_the_image(adaptive):
    height, width = 40, 56
    corners = [[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]]
    borders = [[0, 20], [width - 1, 13.4], [30, 0], [7.6, height - 1]]
    cluster = np.random.default_rng(0).normal([20, 20], 1.0, (60, 2))  # many heads within a few pixels
    outside = [[-1, 5], [width, 5], [5, -0.6], [5, height - 0.4]]
    points = np.array(corners + borders + outside + cluster.tolist())
    density = gaussian_density(points, (height, width), sigma=4.0, adaptive=adaptive)
    assert density.shape == (height, width) and density.dtype == np.float32
    assert abs(density.sum() - (len(points) - len(outside))) < 1e-3
    assert density.min() >= 0


def test_one_head_is_a_gaussian_of_the_given_width():
    density = gaussian_density(np.array([[30.0, 20.0]]), (41, 61), sigma=3.0)
    row = density[20] / density[20].max()
    assert np.argmax(density) == 20 * 61 + 30
    assert abs(row[33] - np.exp(-0.5)) < 1e-3  # one sigma away


def test_crop_flip_and_downsampling_keep_the_count():
    rng = np.random.default_rng(1)
    inner = rng.uniform(30, 50, (25, 2))  # wholly inside any 64-px crop around them
    density = gaussian_density(inner, (80, 96), sigma=2.0)[None]
    sample = {"image": np.zeros((3, 80, 96), np.float32), "density": density, "count": 25.0, "name": "x"}
    for seed in range(6):
        transform = TrainTransform(crop_size=64, downsample=4, rng=np.random.default_rng(seed))
        out = transform(dict(sample))
        assert out["image"].shape == (3, 64, 64) and out["density"].shape == (1, 16, 16)
        assert abs(out["density"].sum() - out["count"]) < 1e-3
    jittered = TrainTransform(crop_size=64, downsample=2, scale_range=(0.8, 1.25), rng=np.random.default_rng(0))(dict(sample))
    assert abs(jittered["density"].sum() - jittered["count"]) < 1e-3
    whole = WholeImageTransform(size_divisor=32, downsample=8)(dict(sample))
    assert whole["density"].shape == (1, 12, 12) and abs(whole["density"].sum() - 25) < 1e-3
    assert abs(sum_pool(density, 4).sum() - 25) < 1e-3
    # a crop holding every head counts them all; a crop beside them counts none
    window = {**sample, "density": density[:, 10:74, 16:80]}
    assert abs(window["density"].sum() - 25) < 1e-3


def test_small_images_are_kept_whole_and_padded_to_the_batch():
    transform = TrainTransform(crop_size=64, downsample=2, rng=np.random.default_rng(0))
    samples = []
    for height, width, heads in ((23, 30, [[5.0, 5.0], [20.0, 10.0]]), (80, 40, [[30.0, 60.0]])):
        density = gaussian_density(np.array(heads), (height, width))[None]
        sample = transform({"image": np.ones((3, height, width), np.float32), "density": density, "count": 0.0, "name": "x"})
        samples.append({**sample, "image": torch.from_numpy(sample["image"]), "density": torch.from_numpy(sample["density"])})
    assert samples[0]["image"].shape == (3, 24, 30) and abs(samples[0]["count"] - 2) < 1e-3
    assert samples[1]["image"].shape == (3, 64, 40)  # the long side cropped, the short one kept
    batch = pad_collate(samples)
    assert batch["image"].shape == (2, 3, 64, 40) and batch["density"].shape == (2, 1, 32, 20)
    assert batch["image"][0].sum() == 3 * 23 * 30  # zero padding adds nothing
    assert torch.allclose(batch["density"].sum(dim=(1, 2, 3)), batch["count"].float(), atol=1e-3)


# --- readers on the official formats -------------------------------------------------------------


def _jpeg(path: Path, height: int, width: int, grayscale: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 255, (height, width) if grayscale else (height, width, 3))
    Image.fromarray(pixels.astype(np.uint8)).save(path, format="JPEG")
    return path


def _matlab_shanghaitech_mat(path: Path, points) -> None:
    """As the dataset ships it: image_info, a 1x1 cell holding a struct with location and number."""
    path.parent.mkdir(parents=True, exist_ok=True)
    struct = {"location": np.asarray(points, np.float64), "number": float(len(points))}
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = struct
    savemat(path, {"image_info": cell})


@pytest.mark.parametrize("labels", ["ground_truth", "ground-truth"])
def test_shanghaitech_reads_the_official_layout(tmp_path, labels):
    split = tmp_path / "part_A_final" / "test_data"
    _jpeg(split / "images" / "IMG_1.jpg", 48, 64)
    _jpeg(split / "images" / "IMG_2.jpg", 40, 32, grayscale=True)
    _matlab_shanghaitech_mat(split / labels / "GT_IMG_1.mat", [[1, 1], [64, 48], [30.5, 20.2]])
    _matlab_shanghaitech_mat(split / labels / "GT_IMG_2.mat", [[10, 10]])
    dataset = ShanghaiTech(tmp_path, part="A", split="test")
    first, gray = dataset[0], dataset[1]
    assert first["image"].shape == (3, 48, 64) and first["image"].dtype == torch.float32
    assert 0 <= first["image"].min() and first["image"].max() <= 1
    assert first["count"] == 3 and abs(first["density"].sum() - 3) < 1e-3 and first["name"] == "IMG_1"
    assert first["density"].shape == (1, 48, 64)
    assert first["density"][0, 0, 0] > 0 and first["density"][0, 47, 63] > 0  # 1-based corners are in the image
    assert gray["image"].shape == (3, 40, 32) and torch.equal(gray["image"][0], gray["image"][2])


def test_qnrf_resizes_images_over_the_bound_with_their_points(tmp_path):
    _jpeg(tmp_path / "Train" / "img_0001.jpg", 60, 200)
    heads = np.array([[1.0, 1.0], [200.0, 60.0], [100.0, 30.0]])
    savemat(tmp_path / "Train" / "img_0001_ann.mat", {"annPoints": heads})
    sample = UCFQNRF(tmp_path, "train", max_size=100)[0]
    assert sample["image"].shape == (3, 30, 100)
    assert sample["count"] == 3 and abs(sample["density"].sum() - 3) < 1e-3
    peak = np.unravel_index(int(sample["density"][0, 10:20, 40:60].argmax()), (10, 20))
    assert (peak[0] + 10, peak[1] + 40) in {(14, 49), (14, 50), (15, 49), (15, 50)}  # the centre head moved with the image


def test_density_cache_is_reused_rebuilt_when_stale_and_never_read_half_written(tmp_path):
    annotation = tmp_path / "GT.mat"
    savemat(annotation, {"annPoints": np.array([[3.0, 4.0]])})
    cache = tmp_path / "cache" / "img.h5"
    calls = []

    def render(value):
        calls.append(value)
        return np.full((2, 2), value, np.float32)

    key = density_key(annotation, (2, 2), sigma=4.0)
    assert cached_density(cache, key, lambda: render(1.0))[0, 0] == 1.0
    assert cached_density(cache, key, lambda: render(2.0))[0, 0] == 1.0 and calls == [1.0]
    assert cached_density(cache, density_key(annotation, (2, 2), sigma=8.0), lambda: render(3.0))[0, 0] == 3.0
    savemat(annotation, {"annPoints": np.array([[5.0, 4.0]])})  # annotation edited
    assert cached_density(cache, density_key(annotation, (2, 2), sigma=8.0), lambda: render(4.0))[0, 0] == 4.0
    cache.write_bytes(cache.read_bytes()[:100])  # truncated: a crash mid-write by some other tool
    key = density_key(annotation, (2, 2), sigma=8.0)
    assert cached_density(cache, key, lambda: render(5.0))[0, 0] == 5.0
    with h5py.File(cache) as handle:
        assert handle["density"][0, 0] == 5.0
    assert sorted(p.name for p in cache.parent.iterdir()) == ["img.h5"]  # no temporary file left behind


def test_datamodule_batches_crops_and_whole_images(tmp_path):
    synth_crowd(tmp_path, seed=0)
    data = CrowdDataModule(str(tmp_path / "ShanghaiTech"), "shb", batch_size=4, num_workers=0, crop_size=64, downsample=4)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    height, width = batch["image"].shape[2:]  # whole images (all smaller than the crop), padded to the batch's largest
    assert len(batch["image"]) == 4 and 40 <= height <= 56 and 52 <= width <= 72
    assert batch["density"].shape == (4, 1, height // 4, width // 4)
    assert torch.allclose(batch["density"].sum(dim=(1, 2, 3)), batch["count"].float(), atol=1e-3)
    whole = next(iter(data.val_dataloader()))
    own_height, own_width = whole["size"][0].tolist()
    assert whole["image"].shape == (1, 3, -(-own_height // 16) * 16, -(-own_width // 16) * 16)
    assert whole["density"].shape == (1, 1, whole["image"].shape[2] // 4, whole["image"].shape[3] // 4)
    assert whole["count"].item() == int(whole["count"].item())  # the annotated heads, not a crop's share
    assert len(list((tmp_path / "ShanghaiTech" / ".density_cache").glob("*.h5"))) > 0


# --- bad input -------------------------------------------------------------------------------------


def test_missing_root_names_path_layout_and_synth_command(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        ShanghaiTech(tmp_path / "nowhere", "A", "train")
    message = str(error.value)
    assert "nowhere" in message and "GT_IMG_n.mat" in message and "acda data synth crowd" in message
    with pytest.raises(FileNotFoundError, match="annPoints.*acda data synth crowd"):
        UCFQNRF(tmp_path, "test")


def test_bad_annotations_and_images_get_one_clear_message(tmp_path):
    split = tmp_path / "part_B_final" / "train_data"
    _jpeg(split / "images" / "IMG_1.jpg", 32, 32)
    _matlab_shanghaitech_mat(split / "ground_truth" / "GT_IMG_1.mat", [[5, 5], [40, 5], [5, -2], [16, 16]])
    _jpeg(split / "images" / "IMG_2.jpg", 32, 32)
    with pytest.raises(FileNotFoundError, match="IMG_2.jpg has no annotation.*GT_IMG_2.mat"):
        ShanghaiTech(tmp_path, "B", "train")
    savemat(split / "ground_truth" / "GT_IMG_2.mat", {"points": np.zeros((1, 2))})
    dataset = ShanghaiTech(tmp_path, "B", "train")
    with pytest.warns(UserWarning, match="GT_IMG_1.mat: 2 of 4 points lie outside"):
        assert dataset[0]["count"] == 2
    with pytest.raises(ValueError, match="GT_IMG_2.mat has no 'image_info' variable.*points"):
        dataset[1]
    (split / "images" / "IMG_2.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    _matlab_shanghaitech_mat(split / "ground_truth" / "GT_IMG_2.mat", [[5, 5]])
    with pytest.raises(ValueError, match="cannot read image .*IMG_2.jpg.*corrupt"):
        dataset[1]


# --- metrics, exactly reduced over processes --------------------------------------------------------

def test_counting_metrics_reduce_exactly_over_two_processes(tmp_path):
    error = PREDICTED - TRUE
    expected = [error.abs().mean().item(), error.square().mean().sqrt().item()]
    mae, rmse = CountMAE(), CountRMSE()
    mae.update(PREDICTED, TRUE)
    rmse.update(PREDICTED, TRUE)
    assert [mae.compute().item(), rmse.compute().item()] == pytest.approx(expected, rel=1e-6)
    torch.multiprocessing.spawn(run_rank, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == pytest.approx(expected, rel=1e-6)


# --- the model and the task ------------------------------------------------------------------------


@pytest.mark.parametrize("conv", ["acda", "conv"])
def test_counting_net_outputs_a_density_at_its_output_stride(conv):
    net = create_model("crowd_ad_resnet_s", conv=conv)
    x = torch.randn(1, 3, 2 * net.size_divisor, 3 * net.size_divisor)
    assert net(x).shape == (1, 1, x.shape[2] // net.output_stride, x.shape[3] // net.output_stride)
    odd = torch.randn(1, 3, net.size_divisor + 3, net.size_divisor - 1)  # padded inside, cropped back
    assert net(odd).shape == (1, 1, -(-odd.shape[2] // net.output_stride), -(-odd.shape[3] // net.output_stride))


def test_pretrained_trunk_loads_and_a_mismatch_is_named(tmp_path):
    source = create_model("crowd_ad_resnet_s", conv="acda")
    torch.save({"state_dict": {f"net.trunk.{k}": v for k, v in source.trunk.state_dict().items()}}, tmp_path / "cls.ckpt")
    target = create_model("crowd_ad_resnet_s", conv="acda")
    load_pretrained_trunk(target, tmp_path / "cls.ckpt")
    assert all(torch.equal(a, b) for a, b in zip(source.trunk.state_dict().values(), target.trunk.state_dict().values()))
    with pytest.raises(ValueError, match="does not match this trunk"):
        load_pretrained_trunk(create_model("crowd_ad_resnet_s", conv="conv"), tmp_path / "cls.ckpt")
    torch.save({"state_dict": {"net.fc.weight": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="no 'net.trunk.\\*' weights"):
        load_pretrained_trunk(target, tmp_path / "other.ckpt")


@pytest.fixture
def saved_figures(monkeypatch):
    """Every matplotlib figure saved during the test, by "<folder>/<file>" as saved (atomic temporaries resolved)."""
    from matplotlib.figure import Figure

    saved, savefig = {}, Figure.savefig

    def record(figure, path, *args, **kwargs):
        path = Path(path)
        name = path.name[1:].rsplit(".", 2)[0] if path.suffix == ".tmp" else path.name
        saved[f"{path.parent.name}/{name}"] = figure
        return savefig(figure, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return saved


def _overlaps(first, second) -> bool:
    return first.x0 < second.x1 and second.x0 < first.x1 and first.y0 < second.y1 and second.y0 < first.y1


CONFIG = Path(__file__).parents[1] / "tasks" / "crowd" / "sha_ad_resnet_s.yaml"
SMALL_RUN = [
    "--data.crop_size", "64", "--data.batch_size", "4", "--data.num_workers", "0",
    "--trainer.check_val_every_n_epoch", "1",
]  # fmt: skip


def test_fit_test_predict_report_and_scales_figure_through_the_cli(tmp_path, monkeypatch, acda_fit, saved_figures):
    synth_crowd(tmp_path / "data", seed=0)
    monkeypatch.chdir(tmp_path)  # the config reads data/ShanghaiTech; acda_fit writes reports/ and runs/ here
    record = acda_fit(CONFIG, *SMALL_RUN, budget={"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 2})
    assert Path("reports/crowd_sha_ad_resnet_s/figure.png").stat().st_size > 0
    (line,) = build_reports(Path("reports"), only="crowd")
    assert "crowd_sha_ad_resnet_s MAE" in line and "missing runs" in line

    # learning curves: the run's title clear of every panel title; val/mae, validated once, drawn as a marker
    (run_id,) = [path.name for path in Path("reports/crowd_sha_ad_resnet_s/runs").iterdir()]
    curves = saved_figures[f"{run_id}/learning_curves.png"]
    curves.draw_without_rendering()  # lay out as saved
    title = curves._suptitle.get_window_extent()
    panels = {axis.get_title(): axis for axis in curves.axes}
    assert not any(_overlaps(title, axis.title.get_window_extent()) for axis in panels.values())
    (single,) = panels["val/mae"].get_lines()
    assert len(single.get_xdata()) == 1 and single.get_marker() not in (None, "None", "", " ")
    # Fig. 8: the image in colour; true and predicted density on one colour scale, with its colour bar
    image_axis, true_axis, predicted_axis = saved_figures["crowd/predictions.png"].axes[:3]
    assert image_axis.get_images()[0].get_array().ndim == 3
    (true_map,), (predicted_map,) = true_axis.get_images(), predicted_axis.get_images()
    assert true_map.get_clim() == predicted_map.get_clim() and true_map.get_cmap().name != "gray"
    assert predicted_map.colorbar is not None and predicted_map.colorbar.vmax == predicted_map.get_clim()[1]
    report = Path("reports/crowd/report.md").read_text()
    assert f"{record['metrics']['test/mae']:.2f} / {record['metrics']['test/rmse']:.2f}" in report
    assert "57.88 / 91.27" in report and "crowd_qnrf_baseline" in report  # the paper beside ours; missing runs named

    checkpoint = next(Path("runs").rglob("*.ckpt"))  # one epoch: the best and the last hold the same weights
    model = CrowdCounting.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    data = CrowdDataModule("data/ShanghaiTech", "sha", num_workers=0, predict_root="data/ShanghaiTech/part_A_final/test_data/images")
    # The record's MAE and MSE (root mean squared error) are those of the whole-image counts over the test set.
    data.setup("test")
    with torch.no_grad():
        errors = torch.cat([model.predict_step(batch, 0)["count"] - batch["count"] for batch in data.test_dataloader()])
    assert len(errors) == 10  # every synthetic test image
    assert record["metrics"]["test/mae"] == pytest.approx(errors.abs().mean().item(), rel=1e-4)
    assert record["metrics"]["test/rmse"] == pytest.approx(errors.square().mean().sqrt().item(), rel=1e-4)
    data.setup("predict")
    batch = next(iter(data.predict_dataloader()))
    written = model.write_predictions(model.predict_step(batch, 0), batch, tmp_path / "predicted")
    assert {p.name for p in written} == {f"{batch['name'][0]}_density.npy", f"{batch['name'][0]}_overlay.png", "counts.csv"}
    assert (tmp_path / "predicted" / "counts.csv").read_text().startswith("name,predicted_count,true_count\n")

    image = "data/ShanghaiTech/part_A_final/test_data/images/IMG_1.jpg"
    assert main(["figures", "scales", "--ckpt", str(checkpoint), "--image", image, "--out", "fig7.png"]) == 0
    assert Path("fig7.png").stat().st_size > 0


def _test_split_of_sizes(root: Path, sizes: dict[str, tuple[int, int]]) -> None:
    """ShanghaiTech-A's test split replaced by images of the given (height, width), image i with i heads."""
    split = root / "ShanghaiTech" / "part_A_final" / "test_data"
    shutil.rmtree(split)
    for heads, (name, (height, width)) in enumerate(sizes.items(), start=1):
        _jpeg(split / "images" / f"{name}.jpg", height, width)
        _matlab_shanghaitech_mat(split / "ground_truth" / f"GT_{name}.mat", [[width / 2, height / 2]] * heads)


def _predict(out: str, checkpoint: Path, *overrides: str) -> dict[str, dict]:
    main(["predict", "-c", str(CONFIG), "--ckpt_path", str(checkpoint), "--predict_dir", out, "--trainer.enable_progress_bar",
          "false", "--trainer.default_root_dir", "runs", "--report.root", "reports", *overrides])  # fmt: skip
    with open(Path(out) / "counts.csv", newline="") as handle:
        return {row["name"]: row for row in csv.DictReader(handle)}


def _constant_density_checkpoint(checkpoint: Path, heads_per_pixel: float) -> Path:
    """``checkpoint`` with its last 1x1 conv set to output ``heads_per_pixel`` everywhere, padding included."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    weights = state["state_dict"]
    (bias,) = [key for key, value in weights.items() if key.startswith("net.decoder.") and key.endswith(".bias") and value.numel() == 1]
    weights[bias.replace(".bias", ".weight")].zero_()
    weights[bias].fill_(heads_per_pixel * state["hyper_parameters"]["density_scale"])
    path = checkpoint.with_name("constant.ckpt")
    torch.save(state, path)
    return path


# a 20x20 image at output stride 2 is 10x10 (padded to the stride 16 it would be 16x16); sizes round up
OWN_MAPS = {"IMG_1": ((20, 20), (10, 10)), "IMG_2": ((37, 53), (19, 27)), "IMG_3": ((48, 64), (24, 32))}
HEADS_PER_PIXEL = 0.01


def _fitted_on_odd_sizes(tmp_path, monkeypatch, acda_fit) -> tuple[dict, Path]:
    """A 1-step crowd run whose test split holds the OWN_MAPS images (image i with i heads): its record and checkpoint."""
    synth_crowd(tmp_path / "data", seed=0)
    _test_split_of_sizes(tmp_path / "data", {name: size for name, (size, _) in OWN_MAPS.items()})
    monkeypatch.chdir(tmp_path)
    record = acda_fit(CONFIG, *SMALL_RUN, budget={"max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 1})
    (checkpoint,) = Path("runs").rglob("best-*.ckpt")
    return record, checkpoint


def _expected_mae() -> float:
    """Test MAE of a net predicting HEADS_PER_PIXEL on each image's own map (image i holds i heads)."""
    return float(np.mean([abs(rows * cols * HEADS_PER_PIXEL - heads) for heads, (_, (rows, cols)) in enumerate(OWN_MAPS.values(), 1)]))


def test_counts_and_density_maps_cover_each_image_not_its_padding(tmp_path, monkeypatch, acda_fit, saved_figures):
    """Test and predict count on each image's own area: maps of size / output stride, counts their sums, never < 0."""
    record, checkpoint = _fitted_on_odd_sizes(tmp_path, monkeypatch, acda_fit)
    assert record["metrics"]["test/mae"] >= 0
    rows = _predict("fitted", checkpoint, "--data.eval_batch_size", "3")  # all three padded to 48x64 in one batch
    for name, (_, shape) in OWN_MAPS.items():
        density = np.load(f"fitted/{name}_density.npy")
        assert density.shape == shape and density.min() >= 0 and float(rows[name]["predicted_count"]) >= 0

    # a net that predicts the same density everywhere counts exactly its image's own map, whatever the batch's padding
    constant = _constant_density_checkpoint(checkpoint, HEADS_PER_PIXEL)
    rows = _predict("constant", constant, "--data.eval_batch_size", "3")
    for name, ((height, width), shape) in OWN_MAPS.items():
        density = np.load(f"constant/{name}_density.npy")
        assert density.shape == shape and np.allclose(density, HEADS_PER_PIXEL)
        assert float(rows[name]["predicted_count"]) == pytest.approx(float(density.sum()), abs=2e-3)
        overlay_image = saved_figures[f"constant/{name}_overlay.png"].axes[0].get_images()[0].get_array()
        assert overlay_image.shape == (height, width, 3)  # the image alone: no padding drawn as black bars
    main(["test", "-c", str(CONFIG), "--ckpt_path", str(constant), "--data.eval_batch_size", "2", "--report.root", "tested",
          "--trainer.default_root_dir", "runs", "--trainer.enable_progress_bar", "false"])  # fmt: skip
    (tested,) = [json.loads(path.read_text()) for path in Path("tested").glob("*/runs/*/metrics.json")]
    assert tested["metrics"]["test/mae"] == pytest.approx(_expected_mae(), rel=1e-5)


@pytest.mark.slow
def test_two_process_test_counts_on_each_image_as_one_process(tmp_path, monkeypatch, acda_fit):
    """`acda test` on 2 gloo ranks (disjoint, uneven shares of 3 images, 2 a batch) counts each image's own area."""
    _, checkpoint = _fitted_on_odd_sizes(tmp_path, monkeypatch, acda_fit)
    constant = _constant_density_checkpoint(checkpoint, HEADS_PER_PIXEL)
    command = [sys.executable, "-m", "acda_lightning.cli", "test", "-c", str(CONFIG), "--ckpt_path", str(constant),
               "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--data.eval_batch_size",
               "2", "--trainer.default_root_dir", "runs", "--report.root", "tested", "--data.num_workers", "0"]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (tested,) = [json.loads(path.read_text()) for path in Path("tested").glob("*/runs/*/metrics.json")]
    assert tested["metrics"]["test/mae"] == pytest.approx(_expected_mae(), rel=1e-5)


@pytest.mark.slow
def test_make_train_crowd_on_synthetic_data_learns(tmp_path, budget_config):
    """`make train-crowd` on the synthetic set: the test MAE is well below predicting the training mean count."""
    import subprocess

    main(["data", "synth", "crowd", "--out", str(tmp_path / "data")])
    repo = Path(__file__).parents[1]
    budget = budget_config(max_epochs=30)  # the run's own budget, so its record is the complete one studies read
    overrides = f"-c {budget} --model.lr 1e-3 --data.num_workers 0 --trainer.default_root_dir {tmp_path / 'runs'}"
    command = [
        "make", "-C", str(repo), "-o", ".venv/.installed", "train-crowd",  # this interpreter, not a fresh venv
        f"ACDA={sys.executable} -m acda_lightning.cli", f"DATA_DIR={tmp_path / 'data'}",
        f"REPORTS={tmp_path / 'reports'}", f"CROWD_ARGS={overrides}",
    ]  # fmt: skip
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(repo)})
    record = json.loads((tmp_path / "reports/crowd_sha_ad_resnet_s/metrics.json").read_text())
    train = ShanghaiTech(tmp_path / "data/ShanghaiTech", "A", "train", cache_dir=None)
    test = ShanghaiTech(tmp_path / "data/ShanghaiTech", "A", "test", cache_dir=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mean_count = np.mean([train.load(i)[1].shape[0] for i in range(len(train))])
        baseline_mae = np.mean([abs(test.load(i)[1].shape[0] - mean_count) for i in range(len(test))])
    print(f"test MAE {record['metrics']['test/mae']:.2f} vs {baseline_mae:.2f} predicting the training mean")
    assert record["metrics"]["test/mae"] < 0.5 * baseline_mae
