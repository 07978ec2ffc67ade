"""Depthwise ACDA in a ConvNeXt-style block: parameters and accuracy beside the depthwise 7x7 conv.

A shape-recognition set from the synthetic classification images (disc, square, bar, ring, each in
a random one of ``colours`` hues on noise, so the class is the shape, not the colour), a small
ConvNeXt-style net (stride-2 stem, blocks of depthwise 7x7 -> BatchNorm -> 1x1 x4 -> GELU -> 1x1 with
a residual, global pooling, linear), trained twice with the same data, seeds and recipe: once with
``nn.Conv2d(C, C, 7, groups=C)`` as the blocks' spatial mixer, once with ``ACDAConv2d(C, C, 7, groups=C)``.

    python -m acda_lightning.studies.depthwise [--out reports/depthwise]   # or `make study-depthwise`

writes ``metrics.json`` and ``report.md`` to ``--out``; the classification study report (``acda report``)
includes the table when ``reports/depthwise/metrics.json`` exists.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ..data.classification import synthetic_image
from ..nn import ACDAConv2d

SHAPES = 4  # synthetic_image draws shape label % 4
MIXERS = ("conv", "acda")


class ConvNeXtStyleBlock(nn.Module):
    def __init__(self, channels: int, mixer: str, kernel_size: int = 7):
        super().__init__()
        if mixer == "acda":
            self.mixer = ACDAConv2d(channels, channels, kernel_size, groups=channels)
        else:
            self.mixer = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.norm = nn.BatchNorm2d(channels)
        self.expand = nn.Conv2d(channels, 4 * channels, 1)
        self.activation = nn.GELU()
        self.project = nn.Conv2d(4 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.activation(self.expand(self.norm(self.mixer(x)))))


def convnext_style_net(mixer: str, channels: int = 32, blocks: int = 2, num_classes: int = SHAPES) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, channels, 2, stride=2),
        nn.BatchNorm2d(channels),
        *[ConvNeXtStyleBlock(channels, mixer) for _ in range(blocks)],
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, num_classes),
    )


def shape_images(count: int, colours: int, size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images (N, 3, size, size) in [0, 1] and their shape labels (N,)."""
    shapes = rng.integers(0, SHAPES, count)
    hues = rng.integers(0, colours, count)
    images = [synthetic_image(int(s + SHAPES * h), SHAPES * colours, size, rng) for s, h in zip(shapes, hues)]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return x, torch.from_numpy(shapes).long()


def _accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


def depthwise_study(
    train_images: int = 800,
    test_images: int = 400,
    epochs: int = 15,
    seeds: tuple[int, ...] = (0, 1),
    channels: int = 32,
    colours: int = 8,
    size: int = 32,
    batch_size: int = 32,
    lr: float = 2e-3,
) -> dict:
    """Train the net with each mixer for each seed; returns parameters, test accuracy per seed and
    their mean, and training seconds per mixer (the same data for both)."""
    rng = np.random.default_rng(0)
    x_train, y_train = shape_images(train_images, colours, size, rng)
    x_test, y_test = shape_images(test_images, colours, size, rng)
    result = {"setting": dict(train_images=train_images, test_images=test_images, epochs=epochs, seeds=list(seeds),
                              channels=channels, colours=colours, size=size, batch_size=batch_size, lr=lr)}  # fmt: skip
    for mixer in MIXERS:
        accuracies, seconds = [], 0.0
        for seed in seeds:
            torch.manual_seed(seed)
            net = convnext_style_net(mixer, channels)
            optimizer = torch.optim.AdamW(net.parameters(), lr=lr)
            started = time.perf_counter()
            for _ in range(epochs):
                net.train()
                for batch in torch.randperm(train_images).split(batch_size):
                    loss = nn.functional.cross_entropy(net(x_train[batch]), y_train[batch])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
            seconds += time.perf_counter() - started
            accuracies.append(_accuracy(net, x_test, y_test))
        mixer_parameters = sum(p.numel() for b in net if isinstance(b, ConvNeXtStyleBlock) for p in b.mixer.parameters())
        result[mixer] = {
            "parameters": sum(p.numel() for p in net.parameters()),
            "mixer_parameters": mixer_parameters,
            "accuracy": accuracies,
            "mean_accuracy": float(np.mean(accuracies)),
            "train_seconds": seconds / len(seeds),
        }
    return result


def markdown(result: dict) -> str:
    setting = result["setting"]
    lines = [
        f"Shape recognition ({SHAPES} shapes x {setting['colours']} random hues, {setting['size']}px; "
        f"{setting['train_images']} train / {setting['test_images']} test images), ConvNeXt-style net, "
        f"{setting['channels']} channels, {setting['epochs']} epochs AdamW lr {setting['lr']}, seeds {setting['seeds']}.",
        "",
        "| spatial mixer | parameters (net) | parameters (mixers) | test accuracy per seed | mean | train s / run |",
        "|---|---|---|---|---|---|",
    ]
    names = {"conv": "depthwise 7x7 nn.Conv2d", "acda": "depthwise 7x7 ACDA"}
    for mixer in MIXERS:
        row = result[mixer]
        per_seed = ", ".join(f"{100 * a:.1f}%" for a in row["accuracy"])
        lines.append(
            f"| {names[mixer]} | {row['parameters']:,} | {row['mixer_parameters']:,} | {per_seed} "
            f"| {100 * row['mean_accuracy']:.1f}% | {row['train_seconds']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import argparse
    from pathlib import Path

    from ..utils import write_json, write_text

    parser = argparse.ArgumentParser(prog="python -m acda_lightning.studies.depthwise", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("reports/depthwise"), help="folder for metrics.json and report.md")
    parser.add_argument("--train-images", type=int, default=800)
    parser.add_argument("--test-images", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    args = parser.parse_args(argv)
    result = depthwise_study(
        args.train_images, args.test_images, args.epochs, tuple(args.seeds), channels=args.channels, size=args.size
    )
    write_json(args.out / "metrics.json", result)
    write_text(args.out / "report.md", "# Depthwise ACDA vs depthwise conv\n\n" + markdown(result) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
