"""Run one training job in the step's process, or as DDP ranks under torchrun via Dagster Pipes.

The proxy, base and finetuned models all train through ``train``. With the profile's
``training.launcher: inprocess`` and one process (the default) it calls
``core.train.train_causal_lm`` here. With ``launcher: torchrun`` or ``nproc_per_node > 1``
it writes the job (start weights, sampler inputs, recipe) to a folder beside the run's
checkpoints and starts

    python -m torch.distributed.run --standalone --nproc_per_node N -m chameleon_assets.core.ddp_worker <folder>

through ``PipesSubprocessClient``. Rank 0's progress lines reach the run's event log and
its figures (processes, tokens/s, MFU) the materialisation's metadata, as an in-process
run's do; the trained weights are loaded back into ``model`` and the caller saves and
logs them exactly as before. Checkpoints live where an in-process run keeps them, so a
run resumes under either launcher.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from chameleon_assets.core.corpus import CorpusShards
from chameleon_assets.core.ddp_worker import training_metadata
from chameleon_assets.settings import Profile, TrainConfig


# The Dagster concurrency pool of every step that trains a model. Limit it per instance
# (``dagster instance concurrency set gpu 1``) so that concurrent runs (``chameleon run
# --parallel N``, UI backfills) do not train on one device at the same time.
GPU_POOL = "gpu"


@dataclass
class TrainJob:
    """One training run's inputs, independent of how many processes run it."""

    shards: dict[str, CorpusShards]  # the training domains (their train tokens are sampled)
    weights: dict[str, float]  # sampling weight per domain
    seq_len: int
    seed: int  # the sampler's seed (the start weights are already in the model)
    train: TrainConfig
    checkpoint_dir: Path | None
    run_key: str  # a checkpoint is resumed only under the same key
    desc: str  # how progress lines name the run
    # A mixture that changes during training: {"method": <online method>, "params": {...}}
    # (core.methods.online_mixing); None: the weights hold throughout.
    online: dict | None = None

    def mixing(self):  # noqa: ANN201 - a core.online.OnlineMixing or None
        """The online mixture the sampler follows (it may reserve training tokens to measure on:
        the sampler gets ``core.online.trainable``)."""
        if not self.online:
            return None
        from chameleon_assets.core.methods import online_mixing

        return online_mixing(self.online["method"], self.online["params"], self.weights,
                             {d: s.train() for d, s in self.shards.items()}, self.seq_len)


def torchrun_command(nproc: int, job_dir: Path) -> list[str]:
    """``torchrun --standalone --nproc_per_node N -m chameleon_assets.core.ddp_worker <job_dir>``
    (as ``python -m torch.distributed.run``, so the venv's torch is the one used)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "chameleon_assets.core.ddp_worker", str(job_dir)]


def train(context: dg.AssetExecutionContext | dg.OpExecutionContext, profile: Profile, model, job: TrainJob):  # noqa: ANN001, ANN201
    """Train ``model`` in place on ``job`` as the profile's ``training`` section says; return
    the ``TrainResult``. Adds how it ran (processes, tokens/s, MFU) to the output's metadata."""
    from chameleon_assets.core.model import resolve_device
    from chameleon_assets.core.online import trainable
    from chameleon_assets.core.train import WeightedDomainSampler, train_causal_lm

    context.add_output_metadata(device_assignment())
    if profile.training.distributed:
        result = _torchrun(context, profile, model, job)
    else:
        mixing = job.mixing()
        sampler = WeightedDomainSampler(trainable({d: s.train() for d, s in job.shards.items()}, mixing),
                                        job.weights, job.seq_len, job.seed)
        result = train_causal_lm(model, sampler, job.train, resolve_device(profile.device),
                                 checkpoint_dir=job.checkpoint_dir, run_key=job.run_key, desc=job.desc,
                                 log=context.log.info, mixing=mixing)
        context.add_output_metadata(training_metadata(result.extra, result.tokens_per_s))
    return result


def device_assignment() -> dict[str, str]:
    """Which device this step was given: ``chameleon run --parallel N`` hands each of its
    processes a slot and, on a machine with GPUs, its own GPU (``CUDA_VISIBLE_DEVICES``,
    under which the step's ``cuda:0`` is that GPU); empty outside such a process."""
    import os

    return {name: os.environ[var] for name, var in (("device_slot", "CHAMELEON_DEVICE_SLOT"),
                                                     ("cuda_visible_devices", "CUDA_VISIBLE_DEVICES"))
            if var in os.environ}


def mlflow_metrics(result) -> dict[str, float]:  # noqa: ANN001 (a TrainResult)
    """How a training run used its device, for MLflow: MFU against the peak, and the first
    step and warm-up timed apart from the steady-state tokens/s."""
    extra = result.extra
    metrics = {k: float(extra[k]) for k in ("mfu", "peak_flops", "first_step_s", "warmup_s")
               if extra.get(k) is not None}
    return metrics


def mlflow_tags(result) -> dict[str, str]:  # noqa: ANN001 (a TrainResult)
    """How a training run ran, as MLflow tags: processes, precision, loss, and the peak's source."""
    extra = result.extra
    tags = {"training_processes": str(extra.get("world_size", 1)),
            "training_precision": str(extra.get("precision", "")),
            "training_loss": str(extra.get("loss", ""))}
    if extra.get("peak_source"):
        tags["peak_source"] = str(extra["peak_source"])
    return tags


def _torchrun(context, profile: Profile, model, job: TrainJob):  # noqa: ANN001, ANN202
    import tempfile

    from chameleon_assets import paths
    from chameleon_assets.core.artifacts import read_json, remove_tree, write_json
    from chameleon_assets.core.model import load_model
    from chameleon_assets.core.train import TrainResult

    nproc = profile.training.nproc_per_node
    parent = job.checkpoint_dir.parent if job.checkpoint_dir is not None else paths.artifacts_dir() / "checkpoints"
    parent.mkdir(parents=True, exist_ok=True)
    job_dir = Path(tempfile.mkdtemp(prefix=".launch-", dir=parent))
    try:
        model.save_pretrained(job_dir / "init")
        write_json(job_dir / "job.json", {
            "shards": {d: dataclasses.asdict(s) for d, s in job.shards.items()},
            "weights": job.weights, "seq_len": job.seq_len, "seed": job.seed,
            "train": dataclasses.asdict(job.train),
            "checkpoint_dir": str(job.checkpoint_dir) if job.checkpoint_dir is not None else None,
            "run_key": job.run_key, "desc": job.desc, "device": profile.device, "online": job.online,
        })
        context.log.info(f"{job.desc}: {nproc} DDP processes under torchrun (job {job_dir})")
        invocation = dg.PipesSubprocessClient().run(
            command=torchrun_command(nproc, job_dir), context=context,
            extras={"job": str(job_dir), "nproc_per_node": nproc},
            env={"TOKENIZERS_PARALLELISM": "false"},
        )
        reported = invocation.get_materialize_result().metadata or {}
        context.add_output_metadata(dict(reported))
        out = job_dir / "out"
        if not (out / "result.json").exists():
            raise RuntimeError(f"{job.desc}: torchrun finished but rank 0 wrote no result in {out}")
        model.load_state_dict(load_model(out).state_dict())
        result = TrainResult(**read_json(out / "result.json"))
    finally:
        remove_tree(job_dir)
    model.eval()
    return result
