"""`make gpu-check`: everything a GPU session should validate, in one command, under 8 minutes on one GPU.

    python -m acda_lightning.bench.gpu_check [--interpret] [--out DIR] [--sections NAME ...]

Each section runs in its own Python process (a crash, a hang or an out-of-memory in one leaves the
others' results), under a time limit that keeps the whole check inside its budget; it installs
nothing. The results go to ``DIR/<UTC timestamp>/report.md`` and ``results.json`` (DIR defaults to
./gpu-check); the exit code is 1 when a section fails or crashes, else 0. Timing targets (the issue's
"<= 0.5x cuDNN" goals) are reported as met or missed but fail nothing: they are measurements.

``--interpret`` runs the same sections on the CPU under Triton's interpreter (CUDA hidden) at tiny
shapes: it checks the script itself, not a GPU, and the default test run calls it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
# Seconds each section may take on a GPU (the sum stays under 8 minutes); the interpreter gets the same.
SECTION_LIMITS = {
    "environment": 30,
    "pytest_gpu": 120,
    "numerics": 60,
    "compile_and_graphs": 60,
    "performance": 110,
    "table7_step": 45,
    "ddp": 50,
}
TOTAL_LIMIT = 470
# The interpreter's run is no timing: its limits only stop a hang, on a CPU that may be shared.
INTERPRETED_LIMIT_FACTOR = 6
# Relative error (max |got - want| / max |want|) each setting's Triton kernel must stay within, output and
# gradients, against the reference in float64 on the same rounded operands.
NUMERIC_LIMITS = {
    "fp32 highest": (1e-4, 1e-3),
    "fp32 high (TF32)": (5e-3, 1e-2),
    "fp16": (5e-3, 1e-2),
    "bf16": (2e-2, 5e-2),
}


class Check:
    """Collects a section's results: named checks (pass/fail), informational targets and free-form details."""

    def __init__(self, interpret: bool):
        self.interpret = interpret
        self.checks: list[dict] = []
        self.details: dict = {}
        self.skipped = ""

    def check(self, name: str, passed: bool, **values) -> None:
        self.checks.append({"name": name, "pass": bool(passed), **values})

    def target(self, name: str, value: float, limit: float) -> None:
        """A goal measured, never a failure: met when value <= limit."""
        self.checks.append({"name": name, "target": True, "value": value, "limit": limit, "met": value <= limit})


def device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------------------------- sections


def environment(check: Check) -> None:
    import torch
    import triton

    from ..nn.kernels import triton_acda

    info = {"python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
            "cuda": torch.version.cuda, "hip": torch.version.hip, "cudnn": torch.backends.cudnn.version(),
            "interpreter": triton_acda._interpreted(), "gpus": []}
    for index in range(torch.cuda.device_count()):
        properties = torch.cuda.get_device_properties(index)
        info["gpus"].append({"name": properties.name, "capability": f"{properties.major}.{properties.minor}",
                             "memory_gib": round(properties.total_memory / 2**30, 1)})
    try:
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        info["driver"] = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        info["driver"] = None
    check.details.update(info)
    check.check("triton runs here", triton_acda.available(device()), device=str(device()))


def pytest_gpu(check: Check) -> None:
    tests = REPOSITORY / "tests"
    if not tests.is_dir():
        check.skipped = f"no tests/ next to the package ({REPOSITORY})"
        return
    # Under the interpreter every gpu test skips: its two kernel files keep the collection quick.
    paths = [tests / "test_triton_kernel.py", tests / "test_dispatch.py"] if check.interpret else [tests]
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *map(str, paths)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPOSITORY)
    lines = result.stdout.strip().splitlines()
    check.details.update({"command": " ".join(command[1:]), "summary": lines[-1] if lines else "",
                          "failures": [line for line in lines if line.startswith(("FAILED", "ERROR"))][:20]})
    check.check("pytest -m gpu", result.returncode in (0, 5), exit_code=result.returncode)


def _operands(torch, kernel_size, stride, dilation, use_bases, batch, channels, out_channels, size, device):
    from ..nn import ACDAConv2d

    bases = ACDAConv2d(1, 1, kernel_size).bases.to(device) if use_bases else None
    num_bases = kernel_size**2 if bases is None else bases.shape[0]
    padding = dilation * (kernel_size - 1) // 2
    out = (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    x = torch.randn(batch, channels, size, size, device=device)
    alpha = torch.randn(batch, 3, num_bases, out, out, device=device)
    coefficients = torch.randn(out_channels, channels, 3, device=device) / (3 * channels) ** 0.5
    bias = torch.randn(out_channels, device=device)
    cotangent = torch.randn(batch, out_channels, out, out, device=device)
    return [x, alpha, coefficients, bias], bases, (stride, padding, dilation, kernel_size), cotangent


def reference_op(x, alpha, bases, coefficients, bias, stride, padding, dilation, kernel_size):
    """The kernels' signature (alpha and bases, or alpha holding the k*k atom entries) over ``acda_reference``."""
    import torch

    from ..nn import acda_reference

    batch, num_atoms = alpha.shape[:2]
    if bases is None:
        atoms = alpha.reshape(batch, num_atoms, kernel_size, kernel_size, *alpha.shape[-2:])
    else:
        atoms = torch.einsum("bmkhw,kuv->bmuvhw", alpha, bases)
    return acda_reference(x, atoms, coefficients, bias, stride, padding, dilation)


def _outputs_and_grads(torch, run, leaves, bases, geometry, cotangent):
    leaves = [t.detach().requires_grad_() for t in leaves]
    output = run(leaves[0], leaves[1], bases, leaves[2], leaves[3], *geometry)
    return [output, *torch.autograd.grad((output.to(cotangent.dtype) * cotangent).sum(), leaves)]


def _relative_error(got, want) -> float:
    return ((got.double() - want.double()).abs().max() / want.double().abs().max()).item()


def numerics(check: Check) -> None:
    import torch

    from ..nn.kernels import acda_basis, resolve_impl, triton_acda

    dev = device()
    cases = [(3, 1, 1, True)] if check.interpret else [(3, 1, 1, True), (5, 2, 1, True), (7, 1, 2, False)]
    # The float64 reference goes one output pixel at a time: 16x16 keeps it to seconds on a GPU.
    shape = dict(batch=1, channels=4, out_channels=3, size=6) if check.interpret else \
        dict(batch=2, channels=48, out_channels=40, size=16)
    dtypes = {"fp32 highest": torch.float32, "fp32 high (TF32)": torch.float32, "fp16": torch.float16,
              "bf16": torch.bfloat16}
    rows = []
    for setting, dtype in dtypes.items():
        tf32 = setting.startswith("fp32 high ")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        for kernel_size, stride, dilation, use_bases in cases:
            torch.manual_seed(kernel_size)
            leaves, bases, geometry, cotangent = _operands(torch, kernel_size, stride, dilation, use_bases,
                                                           device=dev, **shape)
            rounded = [t.to(dtype) for t in leaves]
            exact = [t.double() for t in rounded]
            exact_bases = None if bases is None else bases.double()
            want = _outputs_and_grads(torch, reference_op, exact, exact_bases, geometry,
                                      cotangent.double())
            row = {"setting": setting, "kernel_size": kernel_size, "stride": stride, "dilation": dilation}
            for name, run in (("triton", triton_acda.acda_triton), ("basis", acda_basis)):
                got = _outputs_and_grads(torch, run, rounded, bases, geometry, cotangent)
                row[name] = {"output": _relative_error(got[0], want[0]),
                             "grads": max(_relative_error(g, w) for g, w in zip(got[1:], want[1:]))}
            output_limit, grad_limit = NUMERIC_LIMITS[setting]
            row["limits"] = {"output": output_limit, "grads": grad_limit}
            rows.append(row)
            check.check(f"triton {setting} k={kernel_size} s={stride} d={dilation}",
                        row["triton"]["output"] <= output_limit and row["triton"]["grads"] <= grad_limit,
                        **row["triton"])
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    check.details["rows"] = rows
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check.details["auto_picks"] = {
            str(dtype).removeprefix("torch."): resolve_impl("auto", torch.zeros(1, 4, 8, 8, device=dev, dtype=dtype), 3)
            for dtype in (torch.float32, torch.float16, torch.bfloat16)
        }
    check.details["auto_warnings"] = [str(w.message) for w in caught]
    large_image_offsets(check, torch, dev)
    determinism(check, torch, dev)


def large_image_offsets(check: Check, torch, dev) -> None:
    """One image past 2^31 elements (64-bit offsets) against crops of it small enough for 32-bit offsets:
    the last output rows, where 32-bit offsets would wrap. Under the interpreter the limit is lowered instead."""
    import torch.nn.functional as F

    from ..nn.kernels import triton_acda

    kernel_size, rows = 3, 4
    if check.interpret:
        channels, height, width, dtype = 4, 8, 8, torch.float32
        triton_acda.INT32_OFFSETS = channels * height * width // 2
    else:
        channels, height, width, dtype = 520, 2048, 2048, torch.bfloat16
    torch.manual_seed(0)
    x = torch.randn(1, channels, height, width, device=dev, dtype=dtype)
    alpha = torch.randn(1, 2, kernel_size**2, height, width, device=dev, dtype=dtype)
    coefficients = torch.randn(8, channels, 2, device=dev, dtype=dtype) / channels**0.5
    padding = kernel_size // 2
    with torch.no_grad():
        full = triton_acda.acda_triton(x, alpha, None, coefficients, None, 1, padding, 1, kernel_size)
        xpad = F.pad(x, (padding,) * 4)
        del x
        limit = triton_acda.INT32_OFFSETS
        triton_acda.INT32_OFFSETS = 2**31 - 1
        last = triton_acda.acda_triton(xpad[:, :, -(rows + kernel_size - 1):].contiguous(), alpha[..., -rows:, :],
                                       None, coefficients, None, 1, 0, 1, kernel_size)
        triton_acda.INT32_OFFSETS = limit
    error = _relative_error(full[..., -rows:, :], last)
    check.details["large_image"] = {"shape": [1, channels, height, width], "dtype": str(dtype),
                                    "elements": channels * height * width, "wide": xpad[0].numel() > limit}
    check.check("64-bit offsets: the last output rows equal a 32-bit crop's", error <= 1e-2, error=error)


def determinism(check: Check, torch, dev) -> None:
    from ..nn import ACDAConv2d
    from ..nn.kernels import resolve_impl

    layer = ACDAConv2d(8, 8, 3, impl="basis").to(dev)
    x = torch.randn(2, 8, 12, 12, device=dev, requires_grad=True)

    def gradients():
        (grad,) = torch.autograd.grad(layer(x).square().sum(), x)
        return grad

    torch.use_deterministic_algorithms(True)
    try:
        check.check("basis is bitwise reproducible under use_deterministic_algorithms",
                    torch.equal(gradients(), gradients()))
        check.check("auto picks basis under determinism", resolve_impl("auto", x, 3) == "basis")
        if dev.type == "cuda":
            try:
                resolve_impl("triton", x, 3)
                refused = False
            except RuntimeError:
                refused = True
            check.check("explicit triton under determinism is an error", refused)
    finally:
        torch.use_deterministic_algorithms(False)
    layer.impl = "triton"
    check.details["triton_run_to_run_grad_difference"] = (gradients() - gradients()).abs().max().item()


def compile_and_graphs(check: Check) -> None:
    import torch

    from ..nn import ACDAConv2d

    dev = device()
    layer = ACDAConv2d(8, 8, 3, impl="triton").to(dev)
    for module in layer.atom_generator:  # random atoms: the generator's last layer starts at zero
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, std=0.2)
    size = 6 if check.interpret else 32
    x = torch.randn(2, 8, size, size, device=dev, requires_grad=True)

    def output_and_grad(module):
        output = module(x)
        return output, torch.autograd.grad(output.square().sum(), x)[0]

    expected = output_and_grad(layer)
    # Inductor on CPU costs about a minute: the interpreter run checks the op's graph capture with aot_eager.
    backend = "aot_eager" if check.interpret else "inductor"
    compiled = output_and_grad(torch.compile(layer, backend=backend, fullgraph=False))
    error = max(_relative_error(got, want) for got, want in zip(compiled, expected))
    check.check(f"torch.compile ({backend}) fwd+bwd equals eager", error <= 1e-4, error=error)
    if dev.type != "cuda":
        check.details["cuda_graphs"] = "skipped: needs CUDA"
        return
    static_x = x.detach().clone().requires_grad_()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm-up outside the capture: compilation and the self-check happen here
            layer.zero_grad(set_to_none=True)
            layer(static_x).square().sum().backward()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    static_x.grad = None
    with torch.cuda.graph(graph):
        static_output = layer(static_x)
        static_output.square().sum().backward()
    graph.replay()
    torch.cuda.synchronize()
    error = max(_relative_error(static_output, expected[0]), _relative_error(static_x.grad, expected[1]))
    check.check("CUDA graph replay of fwd+bwd equals eager", error <= 1e-4, error=error)


def performance(check: Check) -> None:
    import torch
    from torch import nn

    from ..nn import ACDAConv2d
    from .measure import interleaved_times, peak_memory
    from ..paper import TABLE6_SETTING

    dev = device()
    if check.interpret:
        channels, size, kernel_sizes, batches, warmup, repeats = 4, 6, [3], [1, 2], 0, 1
        dtype = torch.float32
    else:
        channels, size, kernel_sizes, batches, warmup, repeats = (
            TABLE6_SETTING["channels"], TABLE6_SETTING["size"], [3, 5, 7], [1, 8, 32], 2, 5)
        dtype = torch.bfloat16
    rows = []
    for kernel_size in kernel_sizes:
        layers = {"conv": nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)}
        for impl in ("basis", "triton"):
            layers[impl] = ACDAConv2d(channels, channels, kernel_size, num_atoms=TABLE6_SETTING["num_atoms"], impl=impl)
        layers = {name: layer.to(dev, dtype) for name, layer in layers.items()}
        for batch in batches:
            x = torch.randn(batch, channels, size, size, device=dev, dtype=dtype, requires_grad=True)
            for mode in ("forward", "forward_backward"):
                runs = {name: _step(torch, layer, x, mode) for name, layer in layers.items()}
                times = interleaved_times(runs, dev, warmup, repeats)
                row = {"kernel_size": kernel_size, "batch": batch, "mode": mode, "dtype": str(dtype)}
                for name, seconds in times.items():
                    median = sorted(seconds)[len(seconds) // 2]
                    row[name] = {"ms": 1e3 * median, "peak_mb": peak_memory(runs[name], dev) / 2**20}
                for name in ("basis", "triton"):
                    row[name]["vs_conv"] = row[name]["ms"] / row["conv"]["ms"]
                rows.append(row)
                if not check.interpret and mode == "forward_backward" and batch == 32 and kernel_size in (3, 7):
                    check.target(f"triton/conv fwd+bwd bf16 k={kernel_size} B=32", row["triton"]["vs_conv"],
                                 0.5 if kernel_size == 7 else 1.0)
    check.details["rows"] = rows
    check.check("every layer ran", bool(rows))


def _step(torch, layer, x, mode):
    def run():
        output = layer(x)
        if mode == "forward_backward":
            output.backward(torch.ones_like(output))

    return run


def table7_step(check: Check) -> None:
    from ..paper import TABLE7_BATCH_PER_GPU
    from . import train

    dev = device()
    size, batch, warmup, repeats = (32, 2, 0, 1) if check.interpret else (224, TABLE7_BATCH_PER_GPU, 1, 3)
    result = train.table7(size, batch, dev, warmup, repeats)
    seconds = {row["model"].split("conv=")[1]: row["seconds_per_step"]["median"] for row in result["rows"]}
    check.details.update({"size": size, "batch": batch, "rows": result["rows"]})
    check.check("both models stepped", set(seconds) == {"conv", "acda"})
    if dev.type == "cuda":
        check.target("Ad-ResNet-s step acda/conv", seconds["acda"] / seconds["conv"], 0.87)


def ddp(check: Check) -> None:
    import torch

    count = torch.cuda.device_count()
    if count < 2:
        check.skipped = f"needs 2 GPUs, found {count}"
        return
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "acda_lightning.cli", "fit", "-c", str(REPOSITORY / "tasks/toy/acda.yaml"),
                   "--trainer.accelerator", "gpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
                   "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
                   "--trainer.default_root_dir", scratch, "--report.root", scratch]
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPOSITORY)
        records = list(Path(scratch).glob("*/runs/*/metrics.json"))
    check.details.update({"exit_code": result.returncode, "stderr_tail": result.stderr[-2000:]})
    check.check("2-rank NCCL DDP toy fit", result.returncode == 0 and len(records) == 1)


SECTIONS = {function.__name__: function for function in
            (environment, pytest_gpu, numerics, compile_and_graphs, performance, table7_step, ddp)}
assert set(SECTIONS) == set(SECTION_LIMITS)


# ------------------------------------------------------------------------------------------ orchestration


def run_section(name: str, interpret: bool, result_path: Path) -> int:
    """The child process: one section, its result as JSON at result_path."""
    check = Check(interpret)
    started = time.perf_counter()
    try:
        SECTIONS[name](check)
        status = "skipped" if check.skipped else ("ok" if all(c.get("pass", True) for c in check.checks) else "failed")
        error = ""
    except Exception:  # reported, with the traceback, as the section's failure
        status, error = "failed", traceback.format_exc()
    result = {"section": name, "status": status, "seconds": round(time.perf_counter() - started, 2),
              "skipped": check.skipped, "checks": check.checks, "details": check.details, "error": error}
    result_path.write_text(json.dumps(result, indent=1, default=str))
    return 0


def spawn_section(name: str, interpret: bool, limit: float, scratch: Path) -> dict:
    result_path = scratch / f"{name}.json"
    environment = dict(os.environ, CUBLAS_WORKSPACE_CONFIG=":4096:8", PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")])))
    if interpret:
        environment.update(TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, "-m", "acda_lightning.bench.gpu_check", "--section", name, "--result", str(result_path)]
    started = time.perf_counter()
    try:
        process = subprocess.run(command + (["--interpret"] if interpret else []), env=environment,
                                 capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired as expired:
        return {"section": name, "status": "timeout", "seconds": round(time.perf_counter() - started, 2),
                "error": f"over its {limit:.0f} s limit\n{(expired.stderr or b'')[-2000:]!r}"}
    if process.returncode != 0 or not result_path.exists():
        return {"section": name, "status": "crashed", "seconds": round(time.perf_counter() - started, 2),
                "error": f"exit code {process.returncode}\n{process.stderr[-3000:]}"}
    return json.loads(result_path.read_text())


def markdown(results: dict) -> str:
    lines = [f"# GPU check {results['timestamp']} ({'interpreter, tiny shapes' if results['interpret'] else 'GPU'})",
             "", "| section | status | seconds |", "|---|---|---|"]
    lines += [f"| {r['section']} | {r['status']} | {r.get('seconds', '')} |" for r in results["sections"]]
    for section in results["sections"]:
        lines += ["", f"## {section['section']}: {section['status']}"]
        if section.get("skipped"):
            lines.append(f"Skipped: {section['skipped']}")
        for item in section.get("checks", []):
            values = ", ".join(f"{k}={_short(v)}" for k, v in item.items() if k not in ("name", "pass", "target"))
            if item.get("target"):
                lines.append(f"- target {'met' if item['met'] else 'MISSED'}: {item['name']} ({values})")
            else:
                lines.append(f"- {'pass' if item['pass'] else 'FAIL'}: {item['name']}" + (f" ({values})" if values else ""))
        rows = section.get("details", {}).get("rows")
        if section["section"] == "performance" and rows:
            lines += ["", "| k | B | mode | conv ms | basis ms (x conv) | triton ms (x conv) | peak MB conv/basis/triton |",
                      "|---|---|---|---|---|---|---|"]
            lines += [f"| {r['kernel_size']} | {r['batch']} | {r['mode']} | {r['conv']['ms']:.3f} | "
                      f"{r['basis']['ms']:.3f} ({r['basis']['vs_conv']:.2f}) | "
                      f"{r['triton']['ms']:.3f} ({r['triton']['vs_conv']:.2f}) | "
                      f"{r['conv']['peak_mb']:.0f}/{r['basis']['peak_mb']:.0f}/{r['triton']['peak_mb']:.0f} |"
                      for r in rows]
        other = {k: v for k, v in section.get("details", {}).items() if k != "rows" or section["section"] != "performance"}
        if other:
            lines += ["", "```", json.dumps(other, indent=1, default=str)[:6000], "```"]
        if section.get("error"):
            lines += ["", "```", section["error"][-3000:], "```"]
    return "\n".join(lines) + "\n"


def _short(value):
    return f"{value:.3g}" if isinstance(value, float) else value


def run_all(out: Path, interpret: bool, names: list[str], jobs: int) -> tuple[Path, dict]:
    timestamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder = out / timestamp
    folder.mkdir(parents=True, exist_ok=False)
    factor = INTERPRETED_LIMIT_FACTOR if interpret else 1
    deadline = time.monotonic() + TOTAL_LIMIT * factor
    with tempfile.TemporaryDirectory() as scratch:
        def one(name):
            limit = max(5.0, min(SECTION_LIMITS[name] * factor, deadline - time.monotonic()))
            return spawn_section(name, interpret, limit, Path(scratch))

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            sections = list(pool.map(one, names))
    results = {"timestamp": timestamp, "interpret": interpret, "sections": sections}
    for name, text in (("results.json", json.dumps(results, indent=1, default=str)), ("report.md", markdown(results))):
        partial = folder / f".{name}.tmp"
        partial.write_text(text)
        partial.replace(folder / name)
    return folder, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--interpret", action="store_true",
                        help="CPU only, Triton's interpreter, tiny shapes: checks this script, not a GPU")
    parser.add_argument("--out", type=Path, default=Path("gpu-check"), help="results go to OUT/<timestamp>/")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--jobs", type=int, help="sections run at once (default: 1 on a GPU, 2 interpreted)")
    parser.add_argument("--section", choices=list(SECTIONS), help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.section:
        return run_section(args.section, args.interpret, args.result)
    # Timings need the GPU to themselves; interpreted sections only check the plumbing.
    jobs = args.jobs or (2 if args.interpret else 1)
    folder, results = run_all(args.out, args.interpret, args.sections, jobs)
    for section in results["sections"]:
        print(f"{section['section']:20s} {section['status']:8s} {section.get('seconds', '')}")
    print(f"report: {folder / 'report.md'}")
    return 0 if all(s["status"] in ("ok", "skipped") for s in results["sections"]) else 1


if __name__ == "__main__":
    sys.exit(main())
