"""`make gpu-check ARGS=--interpret`: every section of the GPU check runs on CPU under Triton's interpreter
at tiny shapes and writes its report, so the script a GPU session runs cannot rot."""

import json

from acda_lightning.bench import gpu_check


def test_gpu_check_interpreted_runs_every_section(tmp_path, capsys):
    assert gpu_check.main(["--interpret", "--out", str(tmp_path)]) == 0
    (folder,) = tmp_path.iterdir()
    results = json.loads((folder / "results.json").read_text())
    statuses = {section["section"]: section["status"] for section in results["sections"]}
    assert statuses == {**{name: "ok" for name in gpu_check.SECTIONS}, "ddp": "skipped"}, results
    numerics = next(section for section in results["sections"] if section["section"] == "numerics")
    checked = [check["name"] for check in numerics["checks"]]
    assert {"triton fp32 highest k=3 s=1 d=1", "triton bf16 k=3 s=1 d=1"} <= set(checked)
    assert any(name.startswith("64-bit offsets") for name in checked)
    assert numerics["details"]["large_image"]["wide"]
    report = (folder / "report.md").read_text()
    for name in gpu_check.SECTIONS:
        assert f"## {name}: " in report
    assert "| 3 | 2 | forward_backward |" in report  # the performance table
    assert f"report: {folder / 'report.md'}" in capsys.readouterr().out
