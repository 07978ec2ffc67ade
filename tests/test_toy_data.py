import numpy as np
import pytest

from acda_lightning.data import ToyPatternDataModule, make_pattern_canvas


def test_canvas_is_seeded_and_has_every_centre():
    canvas, target = make_pattern_canvas(3)
    again, _ = make_pattern_canvas(3)
    assert np.array_equal(canvas, again)
    assert canvas.shape == target.shape == (120, 120)
    assert target.sum() == 25 and set(np.unique(target)) == {0.0, 1.0}
    assert not np.array_equal(canvas, make_pattern_canvas(4)[0])


def test_glyphs_lie_inside_the_training_map_and_do_not_touch():
    _, target = make_pattern_canvas(0, shapes=("plus", "ring", "cross"))
    rows, cols = np.nonzero(target[20:, 20:])
    assert rows.min() >= 3 and cols.min() >= 3 and rows.max() <= 96 and cols.max() <= 96
    centres = np.stack([rows, cols], 1)
    distances = np.abs(centres[:, None] - centres[None]).max(-1) + np.eye(len(centres), dtype=int) * 99
    assert distances.min() >= 8


def test_datamodule_views_are_the_shifted_canvas():
    module = ToyPatternDataModule(seed=5)
    module.setup("fit")
    sample = module.test_sample
    image, shifted = sample["image"][0], sample["shifted_image"][0]
    assert image.shape == (100, 100)
    assert np.array_equal(shifted[20:, 20:], image[:80, :80])  # content moved down-right by 20
    assert sample["shifted_target"].sum() <= 25 and sample["target"].sum() == 25
    assert not np.array_equal(sample["heldout_image"], image)
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (1, 1, 100, 100) and len(module.train_dataloader()) == 100


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(scales=(4,)), "odd"),
        (dict(num_patterns=400), "cannot place 400"),
        (dict(shapes=("star",)), "unknown glyph shape"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_pattern_canvas(0, **kwargs)


def test_shift_must_fit_the_map():
    with pytest.raises(ValueError, match="shift"):
        ToyPatternDataModule(size=30, shift=30)
