"""Compiles the Triton ACDA kernels for CUDA targets without a GPU and prints each one's resources.

`python tests/triton_compile_check.py` (TRITON_INTERPRET unset): Triton lowers all four kernels for
sm_80 and sm_90 with its bundled ptxas, at the module's tile sizes, for every input dtype, and
prints registers and stack (register spills) per kernel; tests/test_triton_kernel.py runs it.
Catches what the interpreter cannot: GPU-only type, layout and shape errors, and spills.
"""

import os
import subprocess
import sys
from pathlib import Path

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from acda_lightning.nn.kernels import triton_acda

CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
# input dtype, accumulator, dot operands, dot precision, offsets (as triton_acda._settings chooses them)
DTYPES = [("fp32", tl.float32, tl.float32, "ieee", tl.int32), ("fp32", tl.float32, tl.float32, "tf32", tl.int32),
          ("bf16", tl.float32, tl.bfloat16, "ieee", tl.int32), ("fp16", tl.float32, tl.float16, "ieee", tl.int64),
          ("fp64", tl.float64, tl.float64, "ieee", tl.int32)]


def signature(kernel, pointer_types: dict, constexprs: dict) -> dict:
    def kind(name):
        if name in constexprs:
            return "constexpr"
        return "*" + pointer_types.get(name, "fp32") if name.endswith("_ptr") else "i32"

    return {name: kind(name) for name in kernel.arg_names}


def resources(compiled, scratch: Path) -> dict:
    scratch.write_bytes(compiled.asm["cubin"])
    out = subprocess.run([str(CUOBJDUMP), "--dump-resource-usage", str(scratch)], capture_output=True, text=True)
    fields = next(line for line in out.stdout.splitlines() if "REG:" in line).split()
    usage = dict(field.split(":", 1) for field in fields if ":" in field)
    return {"registers": int(usage["REG"]), "stack": int(usage["STACK"]), "shared": compiled.metadata.shared}


def compile_kernel(kernel, pointer_types, constexprs, blocks, target):
    source = ASTSource(kernel, signature(kernel, pointer_types, constexprs), constexprs)
    options = {"num_warps": blocks["warps"], **({"num_stages": blocks["stages"]} if "stages" in blocks else {})}
    return triton.compile(source, target=target, options=options)


def main() -> int:
    assert os.environ.get("TRITON_INTERPRET", "0") != "1", "compiles for CUDA: run with TRITON_INTERPRET unset"
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"acda_triton_{os.getpid()}.cubin"
    for arch in (80, 90):
        target = GPUTarget("cuda", arch, 32)
        for x_type, accumulate, operand, precision, index in DTYPES:
            acc_type = "fp64" if accumulate == tl.float64 else "fp32"
            for kernel_size in (3, 7):
                backward = dict(KSIZE=kernel_size, ACC=accumulate, INDEX=index)
                # Table 6's 6 atoms, padded to 8
                dots = dict(backward, ATOMS=8, TAP_BLOCK=triton_acda.TAP_BLOCK, OPERAND=operand, DOT=operand,
                            PRECISION=precision)
                line = [f"sm_{arch} {x_type:4} {precision:4} {index} k={kernel_size}"]
                gemm_type = x_type if x_type in ("bf16", "fp16") else acc_type  # D, z and gz, as the kernels take them
                forward_types = {"x_ptr": x_type, "d_ptr": gemm_type, "coef_ptr": x_type, "bias_ptr": x_type,
                                 "y_ptr": x_type}
                forward = dict(dots, HAS_BIAS=True)
                for name, kernel, blocks, types, constexprs in [
                    *((f"forward[{i}]", triton_acda._acda_forward_kernel, blocks, forward_types, forward)
                      for i, blocks in enumerate(triton_acda.FORWARD_CONFIGS)),  # each config autotune may pick
                    ("responses", triton_acda._acda_responses_kernel, triton_acda.BACKWARD_BLOCKS,
                     {"x_ptr": x_type, "d_ptr": gemm_type, "z_ptr": gemm_type}, dots),
                    ("atom_grad", triton_acda._acda_atom_grad_kernel, triton_acda.BACKWARD_BLOCKS,
                     {"x_ptr": x_type, "gz_ptr": gemm_type, "gd_ptr": acc_type}, dots),
                    ("input_grad", triton_acda._acda_input_grad_kernel, triton_acda.INPUT_GRAD_BLOCKS,
                     {"gz_ptr": gemm_type, "d_ptr": gemm_type, "gx_ptr": x_type}, backward),
                ]:
                    # the widest blocks, as triton_acda._settings caps them at this index width
                    constexprs = dict(constexprs, BLOCK_P=blocks["pixels"],
                                      BLOCK_C=triton_acda._cap(blocks, "channels", index))
                    if "outputs" in blocks:
                        constexprs["BLOCK_O"] = triton_acda._cap(blocks, "outputs", index)
                    usage = resources(compile_kernel(kernel, types, constexprs, blocks, target), scratch)
                    line.append(f"{name} registers={usage['registers']} stack={usage['stack']} "
                                f"shared={usage['shared']}")
                print(" | ".join(line), flush=True)
    scratch.unlink(missing_ok=True)
    print("compiled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
