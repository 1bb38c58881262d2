"""The domain registry: every bad entry is refused with an error naming domain and field."""

import json
from pathlib import Path

import pytest
import yaml

from chameleon_assets.core.registry import RegistryError, iter_documents, load_registry, parse_registry


@pytest.fixture
def src(tmp_path: Path) -> Path:
    f = tmp_path / "docs.jsonl"
    f.write_text(json.dumps({"text": "hello"}) + "\n" + json.dumps({"text": "world"}) + "\n")
    return f


def test_valid_entries_of_every_source_kind_load(tmp_path: Path, src: Path) -> None:
    txt = tmp_path / "txts"
    txt.mkdir()
    (txt / "b.txt").write_text("second")
    (txt / "a.txt").write_text("first")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["p1", "p2", "p3"]}), tmp_path / "t.parquet")
    import datasets

    datasets.Dataset.from_dict({"text": ["h1", "h2"]}).save_to_disk(str(tmp_path / "hf"))
    specs = parse_registry(
        {"domains": [
            {"name": "j", "source": str(src)},
            {"name": "t", "source": str(txt)},
            {"name": "p", "source": str(tmp_path / "t.parquet"), "text_field": "body", "max_documents": 2},
            {"name": "h", "source": str(tmp_path / "hf")},
        ]}
    )
    assert [s.kind for s in specs] == ["jsonl", "txt_dir", "parquet", "hf_disk"]
    assert [list(iter_documents(s)) for s in specs] == [["hello", "world"], ["first", "second"], ["p1", "p2"], ["h1", "h2"]]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "Bad Name", "source": "SRC"}, "field 'name'"),
        ({"name": "-x", "source": "SRC"}, "field 'name'"),
        ({"name": "ok"}, "domain 'ok': field 'source': required"),
        ({"name": "ok", "source": "/no/such/file.jsonl"}, "domain 'ok': field 'source': /no/such/file.jsonl does not exist"),
        ({"name": "ok", "source": "SRC", "max_documents": 0}, "domain 'ok': field 'max_documents'"),
        ({"name": "ok", "source": "SRC", "text_field": ""}, "domain 'ok': field 'text_field'"),
        ({"name": "ok", "source": "SRC", "colour": "red"}, "domain 'ok': unknown field(s) ['colour']"),
    ],
)
def test_bad_entry_names_domain_and_field(src: Path, entry: dict, message: str) -> None:
    entry = {k: (str(src) if v == "SRC" else v) for k, v in entry.items()}
    with pytest.raises(RegistryError) as err:
        parse_registry({"domains": [entry]})
    assert message in str(err.value)


def test_duplicate_names_are_refused(src: Path) -> None:
    with pytest.raises(RegistryError, match="domain 'a': field 'name': duplicate"):
        parse_registry({"domains": [{"name": "a", "source": str(src)}, {"name": "a", "source": str(src)}]})


def test_unsupported_file_type_and_empty_folder_are_refused(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b\n")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match="domain 'c': field 'source': x.csv is not a supported source"):
        parse_registry({"domains": [{"name": "c", "source": str(tmp_path / "x.csv")}]})
    with pytest.raises(RegistryError, match="domain 'e': field 'source': folder .* holds no .txt"):
        parse_registry({"domains": [{"name": "e", "source": str(tmp_path / "empty")}]})


def test_missing_text_field_in_data_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"body": "no"}) + "\n")
    (spec,) = parse_registry({"domains": [{"name": "d", "source": str(f)}]})
    with pytest.raises(RegistryError, match=r"domain 'd': file .*d.jsonl line 2: field 'text_field': no 'text' key"):
        list(iter_documents(spec))


def test_relative_sources_resolve_against_base_and_file_errors_name_the_file(tmp_path: Path, src: Path) -> None:
    reg = tmp_path / "domains.yaml"
    reg.write_text("domains:\n  - {name: rel, source: docs.jsonl}\n")
    (spec,) = load_registry(reg, base=tmp_path)
    assert spec.source == src
    reg.write_text("domains: [oops")
    with pytest.raises(RegistryError, match="domains.yaml: not valid YAML"):
        load_registry(reg)
    with pytest.raises(RegistryError, match="registry file not found"):
        load_registry(tmp_path / "missing.yaml")


def test_finetune_domains_are_a_second_group_with_the_same_format(tmp_path: Path) -> None:
    src = tmp_path / "d.jsonl"
    src.write_text('{"text": "hello"}\n')
    data = {"domains": [{"name": "a", "source": str(src)}],
            "finetune_domains": [{"name": "med", "source": str(src), "max_documents": 3}]}
    specs = parse_registry(data)
    assert [(s.name, s.group) for s in specs] == [("a", "pretrain"), ("med", "finetune")]
    assert specs[1].max_documents == 3
    reg = tmp_path / "domains.yaml"
    reg.write_text(yaml.safe_dump(data))
    assert [s.name for s in load_registry(reg)] == ["a"]  # the pretraining group by default
    assert [s.name for s in load_registry(reg, group="finetune")] == ["med"]
    assert len(load_registry(reg, group=None)) == 2


def test_finetune_entries_are_validated_and_names_are_unique_across_groups(tmp_path: Path) -> None:
    src = tmp_path / "d.jsonl"
    src.write_text('{"text": "hello"}\n')
    with pytest.raises(RegistryError, match=r"domain 'a' \(finetune_domains\): field 'name': duplicate domain name "
                                            r"\(already under 'domains:'"):
        parse_registry({"domains": [{"name": "a", "source": str(src)}],
                        "finetune_domains": [{"name": "a", "source": str(src)}]})
    with pytest.raises(RegistryError, match=r"domain 'm' \(finetune_domains\): field 'source': .* does not exist"):
        parse_registry({"domains": [], "finetune_domains": [{"name": "m", "source": str(tmp_path / "nope.jsonl")}]})
    with pytest.raises(RegistryError, match=r"finetune_domains\[0\]: field 'name'"):
        parse_registry({"domains": [], "finetune_domains": [{"name": "Bad Name", "source": str(src)}]})
    with pytest.raises(RegistryError, match="'finetune_domains:' must be a list"):
        parse_registry({"domains": [], "finetune_domains": {"name": "m"}})
    with pytest.raises(RegistryError, match=r"unknown top-level key\(s\) \['finetuning'\]"):
        parse_registry({"domains": [], "finetuning": []})
