"""One rank of a distributed training job: the program ``torchrun`` starts.

    python -m torch.distributed.run --standalone --nproc_per_node N \\
        -m chameleon_assets.core.ddp_worker <job folder>

``defs.launch`` writes the job folder (``job.json`` and the start weights in ``init/``)
and starts this command through Dagster Pipes. Every rank loads the same start weights
and the same sampler, joins the process group (NCCL on CUDA, gloo on the CPU) and runs
``train_causal_lm``, which wraps the model in DistributedDataParallel. Rank 0 alone writes
checkpoints, the trained weights (``out/``) and ``result.json``, and talks to Dagster: its
progress lines go to the run's event log and its training figures are reported as the
materialisation's metadata. Outside a Pipes session (run by hand) it prints instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from pathlib import Path


def _device(spec: str):  # noqa: ANN202 (torch.device)
    import torch

    from chameleon_assets.core.model import resolve_device

    device = resolve_device(spec)
    if device.type == "cuda":  # one GPU per rank
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    return device


def _pipes():  # noqa: ANN202 (a context manager yielding a PipesContext or None)
    """Rank 0's Pipes session, when Dagster started this job; otherwise nothing."""
    if os.environ.get("RANK", "0") != "0" or "DAGSTER_PIPES_CONTEXT" not in os.environ:
        return contextlib.nullcontext(None)
    from dagster_pipes import open_dagster_pipes

    return open_dagster_pipes()


def run(job_dir: Path) -> None:
    """Train the job in ``job_dir`` as this rank (see the module docstring)."""
    import torch
    import torch.distributed as dist

    from chameleon_assets.core.artifacts import atomic_dir, read_json, write_json
    from chameleon_assets.core.corpus import CorpusShards
    from chameleon_assets.core.model import load_model
    from chameleon_assets.core.online import trainable
    from chameleon_assets.core.train import TrainConfig, WeightedDomainSampler, train_causal_lm

    job = read_json(job_dir / "job.json")
    rank = int(os.environ.get("RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", 1)))
    device = _device(job["device"])
    if device.type == "cpu":  # share the cores among this node's ranks
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        with _pipes() as pipes:
            log = pipes.log.info if pipes is not None else (lambda m: print(m, flush=True))
            model = load_model(job_dir / "init")
            shards = {d: CorpusShards(**s) for d, s in job["shards"].items()}
            train = {d: s.train() for d, s in shards.items()}
            mixing = None
            if job.get("online"):  # every rank follows the same online mixture (core.train)
                from chameleon_assets.core.methods import online_mixing

                mixing = online_mixing(job["online"]["method"], job["online"]["params"], job["weights"], train,
                                       job["seq_len"])
            sampler = WeightedDomainSampler(trainable(train, mixing), job["weights"], job["seq_len"], job["seed"])
            checkpoints = Path(job["checkpoint_dir"]) if job.get("checkpoint_dir") else None
            result = train_causal_lm(model, sampler, TrainConfig(**job["train"]), device, checkpoint_dir=checkpoints,
                                     run_key=job["run_key"], progress=False, desc=job["desc"],
                                     log=log if rank == 0 else None, mixing=mixing)
            if rank == 0:
                with atomic_dir(job_dir / "out") as tmp:
                    model.save_pretrained(tmp)
                    write_json(tmp / "result.json", dataclasses.asdict(result))
                if pipes is not None:
                    pipes.report_asset_materialization(metadata=training_metadata(result.extra, result.tokens_per_s))
    finally:
        dist.destroy_process_group()


def training_metadata(extra: dict, tokens_per_s: float) -> dict:
    """What a training step reports about how it ran: processes, device, precision, loss,
    steady-state speed and MFU with the peak's source, and the first step and warm-up
    (compilation included) timed apart."""
    metadata = {
        "training_processes": int(extra.get("world_size", 1)),
        "training_device": str(extra.get("device", "")),
        "training_precision": str(extra.get("precision", "")),
        "training_loss": str(extra.get("loss", "")),
        "tokens_per_s": round(float(tokens_per_s)),
        "train_flops_per_token": float(extra.get("flops_per_token", 0.0)),
    }
    if extra.get("mfu") is not None:
        metadata["mfu"] = round(float(extra["mfu"]), 4)
        metadata["peak_flops"] = float(extra["peak_flops"])
        metadata["peak_source"] = str(extra["peak_source"])
    for key in ("steady_steps", "warmup_steps"):
        if key in extra:
            metadata[key] = int(extra[key])
    for key in ("first_step_s", "warmup_s", "steady_s"):
        if key in extra:
            metadata[key] = round(float(extra[key]), 3)
    return metadata


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m chameleon_assets.core.ddp_worker <job folder>")
    run(Path(sys.argv[1]))
