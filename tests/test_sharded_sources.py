"""Domains from one sharded dataset: a glob of .parquet / .jsonl / .jsonl.gz / .jsonl.zst
shards and a filter on a (dotted) source field, read streaming and in parallel.

The fixtures are generated here: a small multi-source dataset whose every record carries
its source in ``meta.set`` (as SlimPajama's ``meta.redpajama_set_name`` and the Pile's
``meta.pile_set_name``), written as shards in each format. The expected documents of a
domain are taken from the generator's own list, never from the reader.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest

from chameleon_assets.core.registry import RegistryError, iter_documents, parse_registry, source_fingerprint

SOURCES = ("ArXiv", "Book", "Web")
FORMATS = ("parquet", "jsonl", "jsonl.gz", "jsonl.zst")


def make_records(n: int, seed: int = 0) -> list[dict]:
    """``n`` records cycling through SOURCES in a shuffled order, each with nested ``meta``."""
    rng = random.Random(seed)
    words = "river mill grain theorem proof lemma chapter novel forum recipe oven flour".split()
    out = []
    for i in range(n):
        source = SOURCES[rng.randrange(len(SOURCES))]
        text = f"{source} document {i}: " + " ".join(rng.choice(words) for _ in range(rng.randint(5, 40)))
        out.append({"text": text, "meta": {"set": source, "year": 2000 + i % 3, "clean": i % 2 == 0}})
    return out


def write_shard(path: Path, records: list[dict]) -> Path:
    """Write ``records`` in the format ``path``'s name ends with."""
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name
    if name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        # Several row groups per file, so one file is several units.
        pq.write_table(pa.Table.from_pylist(records), path, row_group_size=7)
        return path
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    if name.endswith(".gz"):
        data = gzip.compress(data)
    elif name.endswith(".zst"):
        import pyarrow as pa

        data = pa.Codec("zstd").compress(data, asbytes=True)
    path.write_bytes(data)
    return path


def write_dataset(root: Path, fmt: str, shards: int = 3, per_shard: int = 20, seed: int = 0) -> list[dict]:
    """``shards`` files ``root/train-<i>.<fmt>``; returns every record in shard order."""
    records = make_records(shards * per_shard, seed)
    for i in range(shards):
        write_shard(root / f"train-{i:02d}.{fmt}", records[i * per_shard:(i + 1) * per_shard])
    return records


def spec_for(root: Path, fmt: str, where: dict | None = None, **extra):  # noqa: ANN201
    entry = {"name": "d", "source": str(root / f"*.{fmt}"), **extra}
    if where is not None:
        entry["where"] = where
    (spec,) = parse_registry({"domains": [entry]})
    return spec


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_glob_of_shards_splits_into_one_domain_per_value_of_a_dotted_field(tmp_path: Path, fmt: str) -> None:
    records = write_dataset(tmp_path, fmt)
    for source in SOURCES:
        spec = spec_for(tmp_path, fmt, {"meta.set": source})
        assert spec.kind == "glob"
        assert list(iter_documents(spec)) == [r["text"] for r in records if r["meta"]["set"] == source]
    whole = spec_for(tmp_path, fmt)
    assert list(iter_documents(whole)) == [r["text"] for r in records]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl.zst"])
def test_a_filter_takes_a_list_of_values_numbers_and_booleans_and_combines_fields(tmp_path: Path, fmt: str) -> None:
    records = write_dataset(tmp_path, fmt)
    spec = spec_for(tmp_path, fmt, {"meta.set": ["ArXiv", "Web"], "meta.year": 2001, "meta.clean": True})
    expected = [r["text"] for r in records
                if r["meta"]["set"] in ("ArXiv", "Web") and r["meta"]["year"] == 2001 and r["meta"]["clean"]]
    assert expected  # the fixture holds such records
    assert list(iter_documents(spec)) == expected
    # YAML's 1 is not JSON's true: a boolean field does not equal the number 1.
    with pytest.raises(RegistryError, match="field 'where': no record"):
        list(iter_documents(spec_for(tmp_path, fmt, {"meta.clean": 1})))


def test_a_single_compressed_file_and_a_flat_column_named_with_a_dot_are_sources_too(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = make_records(30)
    write_shard(tmp_path / "one.jsonl.zst", records)
    (spec,) = parse_registry({"domains": [{"name": "z", "source": str(tmp_path / "one.jsonl.zst"),
                                           "where": {"meta.set": "Book"}}]})
    assert spec.kind == "jsonl"
    assert list(iter_documents(spec)) == [r["text"] for r in records if r["meta"]["set"] == "Book"]
    flat = [{"text": r["text"], "meta.set": r["meta"]["set"]} for r in records]
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "flat.parquet")
    (spec,) = parse_registry({"domains": [{"name": "f", "source": str(tmp_path / "flat.parquet"),
                                           "where": {"meta.set": "Web"}}]})
    assert list(iter_documents(spec)) == [r["text"] for r in records if r["meta"]["set"] == "Web"]


def test_max_documents_counts_across_shards(tmp_path: Path) -> None:
    records = write_dataset(tmp_path, "jsonl.gz")
    spec = spec_for(tmp_path, "jsonl.gz", {"meta.set": "ArXiv"}, max_documents=9)
    assert list(iter_documents(spec)) == [r["text"] for r in records if r["meta"]["set"] == "ArXiv"][:9]


# --- One-line errors -------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_a_field_the_records_lack_is_an_error_naming_domain_file_and_field(tmp_path: Path, fmt: str) -> None:
    write_dataset(tmp_path, fmt)
    with pytest.raises(RegistryError) as err:
        list(iter_documents(spec_for(tmp_path, fmt, {"meta.sett": "ArXiv"})))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("domain 'd': ") and "train-00" in message and "field 'where'" in message
    assert ("'sett'" in message) if fmt == "parquet" else ("'meta.sett'" in message)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_value_no_record_holds_is_an_error_listing_the_values_seen(tmp_path: Path, fmt: str) -> None:
    write_dataset(tmp_path, fmt)
    with pytest.raises(RegistryError) as err:
        list(iter_documents(spec_for(tmp_path, fmt, {"meta.set": "Arxiv"})))
    message = str(err.value)
    assert "\n" not in message
    assert "domain 'd': field 'where': no record of 60 in 3 files" in message
    assert "meta.set = 'Arxiv'" in message and "'ArXiv'" in message


def test_a_parquet_shard_that_is_not_parquet_is_named_in_one_line(tmp_path: Path) -> None:
    write_dataset(tmp_path, "parquet")
    (tmp_path / "train-09.parquet").write_text("this is not a parquet file\n")
    with pytest.raises(RegistryError) as err:
        list(iter_documents(spec_for(tmp_path, "parquet", {"meta.set": "Web"})))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"domain 'd': file {tmp_path / 'train-09.parquet'}: not a readable Parquet file (")


@pytest.mark.parametrize("fmt", ["jsonl.zst", "jsonl.gz"])
def test_a_corrupt_or_truncated_compressed_shard_is_named_in_one_line(tmp_path: Path, fmt: str) -> None:
    write_dataset(tmp_path, fmt, per_shard=400)
    bad = tmp_path / f"train-01.{fmt}"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.raises(RegistryError) as err:
        list(iter_documents(spec_for(tmp_path, fmt)))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"domain 'd': file {bad}: corrupt or truncated {fmt.split('.')[1].replace('gz', 'gzip')}")
    (tmp_path / f"train-01.{fmt}").write_bytes(b"\x00garbage" * 100)
    kind = {"jsonl.gz": "gzip", "jsonl.zst": "zstd"}[fmt]
    with pytest.raises(RegistryError, match=rf"train-01\.{fmt}: not a {kind} file \(it starts with b'\\x00garb"):
        list(iter_documents(spec_for(tmp_path, fmt)))


def test_bad_globs_and_filters_are_refused_when_the_registry_loads(tmp_path: Path) -> None:
    write_dataset(tmp_path / "ds", "jsonl")
    (tmp_path / "ds" / "README.md").write_text("about the data")
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "a.txt").write_text("text")
    shards = str(tmp_path / "ds" / "*.jsonl")
    cases = [
        ({"source": str(tmp_path / "ds" / "*.parquet")}, "field 'source': pattern .*\\*.parquet matches no file"),
        ({"source": str(tmp_path / "ds" / "*")},
         "field 'source': .*README.md \\(matched by \\*\\) is not a supported shard"),
        ({"source": str(tmp_path / "txt"), "where": {"a": "b"}},
         "field 'where': a filter applies to .jsonl and .parquet"),
        ({"source": shards, "where": "meta.set=ArXiv"}, "field 'where': expected a mapping"),
        ({"source": shards, "where": {"meta..set": "x"}}, "field 'where': 'meta..set' is not"),
        ({"source": shards, "where": {"meta.set": []}}, "field 'where': meta.set: expected"),
        ({"source": shards, "where": {"meta.set": {"a": 1}}}, "field 'where': meta.set: expected"),
    ]
    for entry, message in cases:
        with pytest.raises(RegistryError, match=f"domain 'x': {message}"):
            parse_registry({"domains": [{"name": "x", **entry}]})


# --- Fingerprints ----------------------------------------------------------------------------

def test_a_filter_joins_the_fingerprint_only_when_there_is_one(tmp_path: Path) -> None:
    """An entry without ``where`` keeps the fingerprint formula it always had (so no existing
    domain's data version moves); the filter and the glob's files are part of it."""
    import hashlib

    write_dataset(tmp_path, "jsonl", shards=2)
    plain = spec_for(tmp_path, "jsonl")
    h = hashlib.sha256()
    for name in ("train-00.jsonl", "train-01.jsonl"):
        h.update(name.encode() + b"\0" + hashlib.sha256((tmp_path / name).read_bytes()).hexdigest().encode() + b"\0")
    h.update(b"|glob|text|None|train")
    assert source_fingerprint(plain) == h.hexdigest()
    arxiv, web = (source_fingerprint(spec_for(tmp_path, "jsonl", {"meta.set": s})) for s in ("ArXiv", "Web"))
    assert len({source_fingerprint(plain), arxiv, web}) == 3
    write_shard(tmp_path / "train-02.jsonl", make_records(5, seed=9))
    assert source_fingerprint(spec_for(tmp_path, "jsonl", {"meta.set": "ArXiv"})) != arxiv


def test_files_whose_size_and_mtime_are_unchanged_are_not_read_again(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from chameleon_assets.core import fingerprint
    from chameleon_assets.core.fingerprint import FingerprintCache

    write_dataset(tmp_path / "ds", "parquet", shards=4)
    hashed: list[str] = []
    real = fingerprint.sha256_file
    monkeypatch.setattr(fingerprint, "sha256_file", lambda f: hashed.append(Path(f).name) or real(f))
    cache = FingerprintCache(tmp_path / "cache.json")
    spec = spec_for(tmp_path / "ds", "parquet", {"meta.set": "Book"})
    first = source_fingerprint(spec, cache)
    cache.save()
    assert sorted(hashed) == [f"train-{i:02d}.parquet" for i in range(4)]
    hashed.clear()
    again = FingerprintCache(tmp_path / "cache.json")
    assert source_fingerprint(spec, again) == first and hashed == []
    write_shard(tmp_path / "ds" / "train-02.parquet", make_records(9, seed=4))
    assert source_fingerprint(spec, again) != first and hashed == ["train-02.parquet"]


# --- Streaming, parallel tokenising ------------------------------------------------------------

def _independent_shards(texts: list[str], tok, val_fraction: float, seed: int, domain: str):  # noqa: ANN001, ANN202
    """train/val token arrays worked out without core.corpus's packer: every document
    encoded alone, the seeded permutation, concatenation with <|endoftext|>."""
    from chameleon_assets.core.corpus import domain_seed

    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    perm = np.random.default_rng(domain_seed(seed, domain)).permutation(len(texts))
    n_val = min(max(int(round(val_fraction * len(texts))), 1), len(texts) - 1)

    def join(order):  # noqa: ANN001, ANN202
        return np.asarray([t for i in order for t in ids[i] + [tok.eos_token_id]], dtype=np.uint16)

    return join(perm[n_val:]), join(perm[:n_val])


@pytest.mark.parametrize("fmt", ["parquet", "jsonl.zst"])
def test_shards_are_the_same_for_one_worker_and_several_and_match_an_independent_packing(
        tmp_path: Path, fmt: str) -> None:
    from chameleon_assets.core.corpus import build_shards
    from chameleon_assets.core.tokenizer import load_tokenizer

    tok = load_tokenizer("bpe-8k")
    records = write_dataset(tmp_path / "ds", fmt, shards=4, per_shard=25)
    spec = spec_for(tmp_path / "ds", fmt, {"meta.set": ["ArXiv", "Book"]})
    texts = [r["text"] for r in records if r["meta"]["set"] in ("ArXiv", "Book")]
    one, report_one = build_shards(spec, tok, tmp_path / "one", 0.1, 3, "v", workers=1)
    three, report_three = build_shards(spec, tok, tmp_path / "three", 0.1, 3, "v", workers=3)
    assert report_three.workers == 3 and report_three.units == report_one.units >= 4
    assert report_one.scan.matched == report_three.scan.matched == len(texts)
    train, val = _independent_shards(texts, tok, 0.1, 3, "d")
    for shards in (one, three):
        assert np.array_equal(np.asarray(shards.train()), train) and np.array_equal(np.asarray(shards.val()), val)
        assert shards.train_documents + shards.val_documents == len(texts)
        assert shards.text_bytes + shards.val_text_bytes == sum(len(t.encode()) for t in texts)
    assert not (tmp_path / "three" / ".parts").exists()
    assert report_three.preview == texts[0][:300]


def test_max_documents_stops_the_workers_at_the_first_n_documents(tmp_path: Path) -> None:
    from chameleon_assets.core.corpus import build_shards
    from chameleon_assets.core.tokenizer import load_tokenizer

    tok = load_tokenizer("bpe-8k")
    records = write_dataset(tmp_path / "ds", "jsonl", shards=6, per_shard=10)
    spec = spec_for(tmp_path / "ds", "jsonl", max_documents=23)
    shards, report = build_shards(spec, tok, tmp_path / "out", 0.2, 0, "v", workers=2)
    train, val = _independent_shards([r["text"] for r in records][:23], tok, 0.2, 0, "d")
    assert np.array_equal(np.asarray(shards.train()), train) and np.array_equal(np.asarray(shards.val()), val)
    assert report.units < 6 or report.scan.records >= 23


def test_a_worker_s_error_reaches_the_caller_in_one_line(tmp_path: Path) -> None:
    from chameleon_assets.core.corpus import build_shards
    from chameleon_assets.core.tokenizer import load_tokenizer

    write_dataset(tmp_path / "ds", "jsonl.zst", shards=3)
    (tmp_path / "ds" / "train-01.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd garbage" * 50)
    spec = spec_for(tmp_path / "ds", "jsonl.zst")
    with pytest.raises(RegistryError, match=r"^domain 'd': file .*train-01\.jsonl\.zst: corrupt or truncated zstd"):
        build_shards(spec, load_tokenizer("bpe-8k"), tmp_path / "out", 0.1, 0, "v", workers=2)
    assert not (tmp_path / "out").exists()


def test_reading_streams_a_source_and_memory_does_not_grow_with_it(tmp_path: Path) -> None:
    """Sources of about 2.7 and 5.4 MB of text, as .jsonl.zst and .parquet: reading every
    document peaks at one read buffer (1 MB) of Python allocation, numpy's included, and
    reading or tokenising them into shards peaks no higher for the source twice the size."""
    import tracemalloc

    from chameleon_assets.core.corpus import build_shards
    from chameleon_assets.core.tokenizer import load_tokenizer

    rng = random.Random(1)
    line = " ".join(f"word{rng.randrange(5000)}" for _ in range(2000))  # ~18 kB per document
    tok = load_tokenizer("bpe-8k")
    peaks: dict[tuple[str, int], tuple[float, float]] = {}
    for n in (150, 300):
        records = [{"text": f"{i} {line}", "meta": {"set": "Web"}} for i in range(n)]
        text_mb = sum(len(r["text"]) for r in records) / 1e6
        write_shard(tmp_path / f"z{n}" / "big.jsonl.zst", records)
        write_shard(tmp_path / f"p{n}" / "big.parquet", records)
        for fmt, folder in (("jsonl.zst", f"z{n}"), ("parquet", f"p{n}")):
            spec = spec_for(tmp_path / folder, fmt, {"meta.set": "Web"})
            tracemalloc.start()
            count = sum(1 for _ in iter_documents(spec))
            read_peak = tracemalloc.get_traced_memory()[1] / 1e6
            tracemalloc.reset_peak()
            build_shards(spec, tok, tmp_path / f"out-{folder}", 0.1, 0, "v", workers=1)
            build_peak = tracemalloc.get_traced_memory()[1] / 1e6
            tracemalloc.stop()
            assert count == n
            assert read_peak < 1.5 < text_mb, (fmt, read_peak, text_mb)
            peaks[(fmt, n)] = (read_peak, build_peak)
    for fmt in ("jsonl.zst", "parquet"):
        (read_small, small), (read_large, large) = peaks[(fmt, 150)], peaks[(fmt, 300)]
        assert read_large < read_small + 0.2 and large < 1.2 * small + 1.0, (fmt, peaks)


# --- conf/examples ------------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[1] / "conf" / "examples"
# The source labels each dataset's records carry, as published with it.
SLIMPAJAMA_SETS = ["RedPajamaCommonCrawl", "RedPajamaC4", "RedPajamaGithub", "RedPajamaBook", "RedPajamaArXiv",
                   "RedPajamaWikipedia", "RedPajamaStackExchange"]
PILE_SETS = ["Pile-CC", "PubMed Central", "OpenWebText2", "ArXiv", "Github", "FreeLaw", "StackExchange",
             "USPTO Backgrounds", "PubMed Abstracts", "Gutenberg (PG-19)", "Wikipedia (en)", "DM Mathematics",
             "Ubuntu IRC", "EuroParl", "HackerNews", "PhilPapers", "NIH ExPorter", "Enron Emails"]


def _stand_in(root: Path, shard: str, field: str, labels: list[str]) -> dict[str, list[str]]:
    """A shard at ``root/shard`` whose records carry ``labels`` in ``meta.<field>``; {label: texts}."""
    records = [{"text": f"{label} text {i}", "meta": {field: label}} for i in range(3) for label in labels]
    write_shard(root / shard, records)
    return {label: [r["text"] for r in records if r["meta"][field] == label] for label in labels}


@pytest.mark.parametrize(("example", "shards"), [
    ("slimpajama.yaml", [("data/slimpajama/train/chunk1/example_train_0.jsonl.zst", "redpajama_set_name",
                          SLIMPAJAMA_SETS),
                         ("data/slimpajama/train/chunk2/example_train_9.jsonl.zst", "redpajama_set_name",
                          SLIMPAJAMA_SETS),
                         ("data/pile/train/00.jsonl.zst", "pile_set_name", PILE_SETS)]),
    ("slimpajama-6b-parquet.yaml", [("data/slimpajama-6b/data/train-00000-of-00048.parquet", "redpajama_set_name",
                                     SLIMPAJAMA_SETS)]),
    ("pile.yaml", [("data/pile/train/00.jsonl.zst", "pile_set_name", PILE_SETS),
                   ("data/pile/train/01.jsonl.zst", "pile_set_name", PILE_SETS)]),
])
def test_each_example_registry_reads_one_domain_per_published_source_label(tmp_path: Path, example: str,
                                                                           shards: list) -> None:
    """Stand-in shards laid out as each download leaves them, holding every published label:
    every domain of the example reads exactly its label's records, and every label of a
    pretraining dataset is some domain."""
    import yaml

    from chameleon_assets.core.registry import load_registry

    by_label: dict[str, list[str]] = {}
    for shard, field, labels in shards:
        for label, texts in _stand_in(tmp_path, shard, field, labels).items():
            by_label.setdefault(label, []).extend(texts)
    specs = load_registry(EXAMPLES / example, base=tmp_path, group=None)
    entries = yaml.safe_load((EXAMPLES / example).read_text())
    assert [s.name for s in specs] == [e["name"] for key in ("domains", "finetune_domains")
                                       for e in entries.get(key) or []]
    for spec in specs:
        ((_, (label,)),) = spec.where
        assert list(iter_documents(spec)) == by_label[label], spec.name
    pretrain_labels = {s.where[0][1][0] for s in specs if s.group == "pretrain"}
    assert pretrain_labels == set(shards[0][2])


def test_the_bundled_default_corpus_registry_names_the_default_domains() -> None:
    import yaml

    bundled = yaml.safe_load((EXAMPLES / "default-sharded.yaml").read_text())
    default = yaml.safe_load((EXAMPLES.parent / "domains.yaml").read_text())
    for key in ("domains", "finetune_domains"):
        assert [e["name"] for e in bundled[key]] == [e["name"] for e in default[key]]
        assert all(e["where"] == {"meta.domain": e["name"]} for e in bundled[key])
