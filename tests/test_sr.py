"""RealSR reading in both official layouts, paired crops, tiled inference, bad input, and what a user runs."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from acda_lightning.cli import main
from acda_lightning.data import RealSR, RealSRDataModule, augment, paired_random_crop
from acda_lightning.data.images import quantize, write_png
from acda_lightning.data.realsr import PairedPatches
from acda_lightning.models import create_model
from acda_lightning.studies import build_reports
from acda_lightning.tasks import SuperResolution
from acda_lightning.tasks.sr import receptive_radius, tiled_forward

from helpers import assert_drawn_png, read_png


def _write_realsr(root: Path, version: str, scale: int, hr_size: int = 24, count: int = 2) -> None:
    """Fixture pairs in the official layout. v3: LR = the HR's s x s block means (genuinely small);
    v1: LR = 1 - HR at HR size (a pixelwise partner, so any misaligned crop shows)."""
    for camera in ("Canon", "Nikon"):
        for split in ("Train", "Test"):
            for index in range(count):
                hr = quantize(torch.rand(3, hr_size, hr_size))
                lr = F.avg_pool2d(hr[None], scale)[0] if version == "v3" else 1 - hr
                folder = root / camera / split / str(scale)
                write_png(folder / f"{camera}_{index:03d}_HR.png", hr)
                write_png(folder / f"{camera}_{index:03d}_LR{scale}.png", lr)


@pytest.mark.parametrize("version", ["v1", "v3"])
def test_reader_and_paired_crops_line_up_in_both_layouts(tmp_path, version):
    scale = 3
    _write_realsr(tmp_path, version, scale)
    dataset = RealSR(tmp_path, scale=scale, split="train", version=version)
    assert len(dataset) == 4 and dataset[0]["name"] == "Canon_000"
    sample = dataset[0]
    assert sample["hr"].shape == (3, 24, 24)
    assert sample["lr"].shape == ((3, 8, 8) if version == "v3" else (3, 24, 24))
    crop_scale = scale if version == "v3" else 1
    patches = PairedPatches(12, crop_scale)
    for _ in range(10):  # random crops and flips/rotations, all applied identically to LR and HR
        patch = patches(sample)
        hr, lr = patch["hr"], patch["lr"]
        assert hr.shape == (3, 12, 12) and lr.shape == (3, 12 // crop_scale, 12 // crop_scale)
        partner = F.avg_pool2d(hr[None], scale)[0] if version == "v3" else 1 - hr
        assert (partner - lr).abs().max() <= 0.5 / 255 + 1e-6


def test_augment_draws_once_for_all_images():
    image = torch.arange(2 * 5 * 4, dtype=torch.float32).view(2, 5, 4)
    for _ in range(10):
        first, second = augment([image, image.clone()])
        assert torch.equal(first, second)


def test_paired_crop_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match=r"img_007.*not 4x"):
        paired_random_crop(torch.zeros(3, 40, 40), torch.zeros(3, 12, 12), 16, scale=4, name="img_007")


def test_bad_input_is_one_clear_error_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="acda data synth sr"):
        RealSR(tmp_path / "nowhere", scale=2)
    _write_realsr(tmp_path, "v3", 2)
    folder = tmp_path / "Canon" / "Train" / "2"
    # an LR of the wrong size for the scale
    write_png(folder / "Canon_000_LR2.png", torch.zeros(3, 10, 12))
    with pytest.raises(ValueError, match=r"Canon_000_HR\.png.*must be 2x its LR"):
        RealSR(tmp_path, scale=2)[0]
    # stored at HR size, read as v3 (the version is wrong)
    with pytest.raises(ValueError, match="check --data.version"):
        RealSR(tmp_path, scale=2, version="v1")[1]
    # an unreadable PNG
    (folder / "Canon_001_LR2.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read image .*Canon_001_LR2\.png"):
        RealSR(tmp_path, scale=2)[1]
    # a missing partner
    (folder / "Canon_001_LR2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"Canon_001_HR\.png has no partner .*Canon_001_LR2\.png"):
        RealSR(tmp_path, scale=2)


@pytest.mark.parametrize("version", ["v1", "v3"])
def test_tiled_inference_equals_whole_image(version):
    net = create_model("sr_net", scale=2, version=version, width=8, blocks=1).eval()
    with torch.no_grad():
        for parameter in net.tail[-1].parameters():  # a trained-looking output, not the zero-initialised one
            parameter.normal_(0, 0.1)
        image = torch.rand(1, 3, 40, 30)
        whole = net(image)
        # receptive radius 1 + down * (1 + 2 * blocks + 1) + 1 = 10 px, + 2 px of bicubic for v3 (down = 2)
        tiled = tiled_forward(net, image, tile=36, overlap=12, upscale=net.upscale, align=net.down)
        assert (tiled - whole).abs().max() < 1e-4
        seams = tiled_forward(net, image, tile=12, overlap=2, upscale=net.upscale, align=net.down)
        assert (seams - whole).abs().max() > 1e-3  # too little overlap shows: the check above can fail


@pytest.mark.parametrize("version, scale", [("v3", 4), ("v1", 3)])
def test_tiling_is_on_by_default_and_its_overlap_covers_the_receptive_field(version, scale, tmp_path, monkeypatch, capsys):
    """Every SR config tiles images over 512 LR px (memory stays bounded); the default overlap comes from the net,
    and small tiles with it reproduce whole-image inference of a trained-looking ACDA net to fp32 rounding."""
    with pytest.raises(SystemExit):
        main(["predict", "-c", f"tasks/sr/realsr_{version}_x{scale}.yaml", "--print_config"])
    printed = capsys.readouterr().out
    assert "tile: 512" in printed and "tile_overlap: null" in printed
    module = SuperResolution(net_kwargs={"version": version, "width": 8, "blocks": 2}, scale=scale).eval()
    net = module.net
    with torch.no_grad():
        for parameter in net.tail[-1].parameters():
            parameter.normal_(0, 0.1)
        for norm in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            norm.running_mean.normal_(0, 1)  # per-pixel statistics that are not the identity
            norm.running_var.uniform_(0.5, 2)
        overlap = math.ceil(receptive_radius(net) / net.down) * net.down
        step = 12 * net.down
        tile = 2 * overlap + step  # a small tile: the image is cut into 4 x 4 of them
        image = torch.rand(1, 3, tile + step, tile + step - net.down)
        whole = net(image)
        tiled = tiled_forward(net, image, tile, overlap, net.upscale, net.down)
        assert (tiled - whole).abs().max() < 1e-5
        half = tiled_forward(net, image, tile, overlap // 2 // net.down * net.down, net.upscale, net.down)
        assert (half - whole).abs().max() > 1e-4, "half the overlap shows seams: the radius is not a loose bound"
        module.hparams.tile = tile  # restore() tiles with its default overlap: the 8-bit image of the whole one
        restored = module.restore(image)
        assert ((restored != quantize(whole)).float().mean() < 1e-3) and (restored - quantize(whole)).abs().max() < 1.5 / 255


def test_sr_network_sizes_and_residual_start():
    for version, scale, shape in (("v3", 3, (1, 3, 39, 33)), ("v1", 4, (1, 3, 13, 11))):
        net = create_model("sr_net", scale=scale, version=version, width=8, blocks=1)
        assert net(torch.rand(1, 3, 13, 11)).shape == shape
    acda = sum(p.numel() for p in create_model("sr_net", conv="acda").parameters())
    conv = sum(p.numel() for p in create_model("sr_net", conv="conv").parameters())
    assert acda != conv  # the baseline really swaps the layers
    image = torch.rand(1, 3, 10, 10)  # zero-initialised last conv: training starts from bicubic
    start = create_model("sr_net", scale=2, width=8, blocks=1)(image)
    assert torch.allclose(start, F.interpolate(image, scale_factor=2, mode="bicubic", align_corners=False))


@pytest.fixture(scope="module")
def synthetic_data(synthetic_workdir):
    return synthetic_workdir("sr") / "data"


def test_synthetic_set_is_in_the_official_layout(synthetic_data):
    for version, lr_size in (("v3", 18), ("v1", 72)):
        test = RealSR(synthetic_data / f"RealSR_{version}", scale=4, split="test", version=version)
        assert len(test) == 4 and test[0]["lr"].shape[-1] == lr_size and test[0]["hr"].shape[-1] == 72
        assert len(RealSR(synthetic_data / f"RealSR_{version}", scale=3, split="train", version=version)) == 10


def test_predictions_are_written_with_a_side_by_side(synthetic_data, tmp_path):
    module = SuperResolution(net_kwargs={"version": "v3", "width": 8, "blocks": 1}, scale=4, tile=16, tile_overlap=4)
    data = RealSRDataModule(root=str(synthetic_data / "RealSR_v3"), scale=4, num_workers=0)
    data.setup("predict")
    batch = next(iter(data.predict_dataloader()))
    outputs = module.predict_step(batch, 0)
    paths = module.write_predictions(outputs, batch, tmp_path)
    assert [p.name for p in paths] == ["Canon_001_SR.png", "Canon_001_compare.png"]
    # The untrained net is bicubic upsampling (zero-initialised last conv): the SR file holds exactly that, in 8 bits.
    bicubic = F.interpolate(batch["lr"][:1], scale_factor=4, mode="bicubic", align_corners=False)[0].clamp(0, 1)
    written = read_png(paths[0]).permute(2, 0, 1).float()
    assert written.shape == (3, 72, 72) and (written - bicubic * 255).abs().max() <= 1  # rounding (tiles: float noise)
    assert_drawn_png(paths[1])


TINY = ["--data.init_args.train_repeat", "1", "--data.init_args.num_workers", "0"]  # one short epoch, no workers


def test_study_puts_ours_beside_table_4_and_lists_missing_runs(synthetic_data, tmp_path, monkeypatch, acda_fit):
    configs = {name: Path(f"tasks/sr/{name}.yaml").resolve() for name in ("realsr_v3_x4", "realsr_v3_x4_conv")}
    monkeypatch.chdir(synthetic_data.parent)  # the configs read data/RealSR_v3
    records = {}
    for name, config in configs.items():
        conv = "conv" if name.endswith("conv") else "acda"
        net = json.dumps({"version": "v3", "conv": conv, "width": 8, "blocks": 1})
        records[name] = acda_fit(config, *TINY, "--model.init_args.net_kwargs", net, budget={"max_epochs": 1})
    run = records["realsr_v3_x4"]
    assert {"test/psnr", "test/ssim", "test/bicubic_psnr", "test/bicubic_ssim"} <= set(run["metrics"])
    assert_drawn_png(tmp_path / "reports/realsr_v3_x4/figure.png")
    (line,) = build_reports(tmp_path / "reports", only="sr")
    assert "2 of 8 runs" in line, "the study expects the runs tasks/sr/*.yaml define, no more"
    metrics = json.loads((tmp_path / "reports/sr/metrics.json").read_text())
    assert metrics["realsr_v3_x4/psnr"] == run["metrics"]["test/psnr"]
    assert metrics["realsr_v3_x4/psnr_minus_conv"] == pytest.approx(
        run["metrics"]["test/psnr"] - metrics["realsr_v3_x4_conv/psnr"]
    )
    report = (tmp_path / "reports/sr/report.md").read_text()
    assert "29.28 / 0.836" in report and f"{run['metrics']['test/psnr']:.2f}" in report
    assert "Missing runs" in report and "realsr_v1_x2" in report and "realsr_v1_x2 |" not in report
    assert "realsr_v1_x2_conv" not in report and "realsr_v3_x3_conv" not in report  # no such configs


@pytest.mark.slow
def test_train_sr_learns_and_beats_bicubic(synthetic_data, tmp_path, monkeypatch, acda_fit):
    """`make train-sr SCALE=4 VERSION=v3` as shipped, ACDA and its conv baseline: both beat bicubic."""
    configs = {name: Path(f"tasks/sr/{name}.yaml").resolve() for name in ("realsr_v3_x4", "realsr_v3_x4_conv")}
    monkeypatch.chdir(synthetic_data.parent)  # the configs read data/RealSR_v3
    for config in configs.values():
        acda_fit(config)
    for name in ("realsr_v3_x4", "realsr_v3_x4_conv"):
        test = json.loads((tmp_path / f"reports/{name}/metrics.json").read_text())["metrics"]
        print(name, test)
        assert test["test/psnr"] > test["test/bicubic_psnr"] + 0.3
