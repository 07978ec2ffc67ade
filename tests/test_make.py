"""The Makefile's training targets as `make -n` expands them: every one takes its overrides variable, gives the
data root the same way, and asks only for configs that exist."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
OVERRIDE = "--trainer.max_epochs=7"
# target -> the variables a user sets (its overrides variable carries OVERRIDE)
TARGETS = {
    "train-crowd": {"CROWD_ARGS": OVERRIDE},
    "train-sr": {"SR_ARGS": OVERRIDE},
    "train-classification": {"CLS_ARGS": OVERRIDE},
    "train-cls": {"CLS_ARGS": OVERRIDE},  # the same target under its earlier name
    "train-denoise": {"DENOISE_ARGS": OVERRIDE},
    "train": {"TASK": "crowd", "CONFIG": "sha_baseline", "ARGS": OVERRIDE},
}

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _fits(target: str, **variables: str) -> list[str]:
    """The `acda fit` command lines `make -n target` would run (the virtualenv step disabled)."""
    settings = [f"{key}={value}" for key, value in {"INSTALLED": "", **variables}.items()]
    result = subprocess.run(["make", "-n", target, *settings], cwd=ROOT, capture_output=True, text=True, check=True)
    return [line for line in result.stdout.replace("\\\n", " ").splitlines() for line in line.split("&&") if " fit " in line]


def test_every_training_target_is_listed_here():
    declared = set(re.findall(r"^(train(?:-[\w-]+)?):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    assert declared == set(TARGETS), "a new train target needs its *_ARGS variable and a row in TARGETS"


@pytest.mark.parametrize("target", TARGETS)
def test_train_targets_take_overrides_and_name_existing_configs(target):
    fits = _fits(target, **TARGETS[target])
    assert fits, f"make {target} runs no acda fit"
    for line in fits:
        assert OVERRIDE in line, f"make {target} drops its overrides: {line}"
        assert "--data.init_args." not in line, f"make {target}: use --data.root as the other targets do: {line}"
        config = re.search(r"-c (\S+\.yaml)", line).group(1)
        assert (ROOT / config).is_file(), f"make {target} asks for {config}, which does not exist"


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("version", ["v1", "v3"])
def test_train_sr_runs_the_configs_of_its_scale_and_version(version, scale):
    configs = [re.search(r"-c (\S+\.yaml)", line).group(1) for line in _fits("train-sr", SCALE=str(scale), VERSION=version)]
    expected = sorted(f"tasks/sr/{p.name}" for p in (ROOT / "tasks/sr").glob(f"realsr_{version}_x{scale}*.yaml"))
    assert sorted(configs) == expected and all(f"--data.root data/RealSR_{version}" in line
                                               for line in _fits("train-sr", SCALE=str(scale), VERSION=version))


def test_make_train_without_a_config_says_how():
    result = subprocess.run(["make", "train", "INSTALLED=", "TASK=crowd"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "make train TASK=" in result.stdout + result.stderr
