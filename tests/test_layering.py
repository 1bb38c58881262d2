"""The science (``chameleon_assets.core``) stands on its own: it imports nothing of the
application, and it trains, embeds and benchmarks where Dagster, MLflow, lm-eval and
pydantic are not installed (a bare GPU machine with torch and transformers)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "chameleon_assets" / "core"
APPLICATION = ("chameleon_assets.settings", "chameleon_assets.defs", "chameleon_assets.runner", "chameleon_assets.cli",
               "chameleon_assets.ui", "chameleon_assets.definitions")
ABSENT_ON_A_BARE_GPU_MACHINE = ("dagster", "dagster_pipes", "dagster_webserver", "mlflow", "lm_eval", "pydantic",
                                "pydantic_core")


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, at any depth (function bodies and TYPE_CHECKING blocks too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def test_core_imports_nothing_of_the_application_nor_its_schema_library() -> None:
    """Not even lazily: the settings types live in core (``core.schema``) and the
    application composes them. (Dagster Pipes and lm-eval are imported lazily where a
    Pipes session or an evaluation needs them; the subprocess test below shows the rest
    of core does without them.)"""
    offending = [f"{path.relative_to(REPO)}:{line}: {name}"
                 for path in sorted(CORE.rglob("*.py")) for line, name in _imports(path)
                 if name.startswith(APPLICATION) or name.split(".")[0] in ("pydantic", "pydantic_core")]
    assert offending == []


def test_the_scan_sees_a_function_local_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from chameleon_assets.settings import Profile\n")
    assert (2, "chameleon_assets.settings") in _imports(module)


# Run first in the subprocess: the absent packages cannot be imported, and look uninstalled
# to libraries that probe for them (importlib.util.find_spec returns None).
_HIDE = "import sys\nfor _name in {names!r}:\n    sys.modules[_name] = None\n"


def _run_without_the_application_stack(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "bare.py"
    script.write_text(_HIDE.format(names=ABSENT_ON_A_BARE_GPU_MACHINE) + code)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=600)


def test_every_core_module_imports_and_a_model_trains_without_the_application_stack(tmp_path: Path) -> None:
    modules = sorted(".".join(p.relative_to(REPO).with_suffix("").parts) for p in CORE.rglob("*.py"))
    code = f"""
import importlib
for name in {modules!r}:
    importlib.import_module(name)
import numpy as np, torch
from chameleon_assets.core.methods import registered
from chameleon_assets.core.model import ModelConfig, build_model
from chameleon_assets.core.train import TrainConfig, WeightedDomainSampler, train_causal_lm
assert {{"chameleon_pretrain", "regmix", "doremi"}} <= set(registered())
model = build_model(ModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, context_length=8),
                    50, 0, 0)
sampler = WeightedDomainSampler({{"a": np.arange(500) % 50}}, {{"a": 1.0}}, 8, 0)
result = train_causal_lm(model, sampler, TrainConfig(tokens=2 * 8 * 3, batch_size=2, warmup_steps=1),
                         torch.device("cpu"), progress=False)
print("trained", result.steps)
"""
    proc = _run_without_the_application_stack(code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trained 3" in proc.stdout


def test_the_settings_are_hidden_in_that_subprocess(tmp_path: Path) -> None:
    """The positive control: the application itself does not import there."""
    proc = _run_without_the_application_stack("import chameleon_assets.settings\n", tmp_path)
    assert proc.returncode != 0 and "pydantic" in proc.stderr


def test_the_gpu_benchmark_runs_its_cpu_smoke_mode_without_the_application_stack(tmp_path: Path) -> None:
    """``bench/bench_gpu.py --cpu-smoke``: every loop on a tiny model, results with the
    device, library versions and the measured peak. On the CPU the loops' numbers are not
    speeds worth keeping, but their agreements are exact facts: ours with the auto loss is
    the chunked loss here (same trajectory), the embedder equals the reference routine in
    float32, each loss equals the float32 full-logit reference."""
    out = tmp_path / "gpu.json"
    code = (f"import runpy\nsys.argv = ['bench_gpu.py', '--cpu-smoke', '--out', {str(out)!r}]\n"
            f"runpy.run_path({str(REPO / 'bench' / 'bench_gpu.py')!r}, run_name='__main__')\n")
    proc = _run_without_the_application_stack(code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads(out.read_text())["runs"]["cpu-smoke"]
    env, results = run["environment"], run["results"]
    assert env["device_type"] == "cpu" and env["torch"] and env["transformers"]
    assert env["peak_flops"] > 0 and env["peak_source"].startswith("measured: float32 matmul")
    assert set(results) == {"ours", "ours-eager", "ours-chunked", "hf-trainer", "reference", "proxy", "losses",
                            "embedder"}
    for loop in ("ours", "ours-eager", "ours-chunked", "hf-trainer", "reference", "proxy"):
        assert results[loop]["tokens_per_s"] > 0 and 0 < results[loop]["mfu"] < 1, loop
    assert results["ours"]["loss"] == "chunked" and results["ours"]["vocab_rows"] == 320  # 300 padded to 64s
    assert results["ours"]["final_loss"] == results["ours-chunked"]["final_loss"]
    assert 0.5 < results["ours"]["reported_to_outside"] < 2.0
    for name in ("chunked", "full"):
        assert results["losses"][name]["loss_abs_diff"] < 1e-5
        assert results["losses"][name]["grad_hidden_rel_diff"] < 1e-5
    assert results["embedder"]["float32"]["max_abs_diff"] < 1e-5
    assert results["embedder"]["bfloat16"]["min_cosine"] > 0.999
    assert {"ours_to_hf-trainer", "ours_to_reference", "ours_reported_to_outside"} <= set(run["summary"])
