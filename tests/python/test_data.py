"""llmds.data.locate and open_text, the gzipped copies of the traces inside the package, and the
Debian package descriptions that stand in for a judged text collection."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pytest

from llmds import ir
from llmds.data import BUNDLED_DIR, locate, open_text
from llmds.engine import load_stories260k
from llmds.traces import load_azure_trace, load_mooncake_trace, parse_mooncake_trace


def test_locate_prefers_the_data_folder_then_the_package(shared_data, tmp_path):
    assert locate("traces/azure_llm_2023_conv.csv", shared_data) == shared_data / "traces/azure_llm_2023_conv.csv"
    assert locate("traces/azure_llm_2023_conv.csv", tmp_path) == BUNDLED_DIR / "traces/azure_llm_2023_conv.csv.gz"
    assert locate("models/stories260K.bin", tmp_path) == BUNDLED_DIR / "models/stories260K.bin"


def test_locate_names_every_place_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        locate("ann/no-such-set", tmp_path)
    message = str(e.value)
    assert str(tmp_path / "ann/no-such-set") in message
    assert str(BUNDLED_DIR / "ann/no-such-set.gz") in message
    assert "/usr/share/datasets/no-such-set" in message


def test_the_bundled_files_are_the_data_folders_files(shared_data):
    for name in ("models/stories260K.bin", "models/tok512.bin"):
        assert (BUNDLED_DIR / name).read_bytes() == (shared_data / name).read_bytes()
    for name in ("traces/mooncake_fast25_conversation_trace.jsonl", "traces/azure_llm_2023_conv.csv",
                 "traces/azure_llm_2023_code.csv"):
        assert gzip.decompress((BUNDLED_DIR / f"{name}.gz").read_bytes()) == (shared_data / name).read_bytes()
    assert "CC-BY-4.0" in (BUNDLED_DIR / "README.md").read_text()
    assert (BUNDLED_DIR / "LICENSE-Apache-2.0").exists() and (BUNDLED_DIR / "LICENSE-MIT-tinyllamas").exists()


def test_open_text_reads_plain_and_gzipped_files_alike(tmp_path):
    text = "a,b\r\n1,2\n"
    (tmp_path / "x.csv").write_bytes(text.encode())
    (tmp_path / "x.csv.gz").write_bytes(gzip.compress(text.encode()))
    for name in ("x.csv", "x.csv.gz"):
        with open_text(tmp_path / name) as f:
            assert f.read() == text


def test_trace_readers_take_the_gzipped_copies(shared_data):
    plain = load_azure_trace(shared_data / "traces/azure_llm_2023_conv.csv")
    packed = load_azure_trace(BUNDLED_DIR / "traces/azure_llm_2023_conv.csv.gz")
    assert len(plain) == len(packed) == 19_366
    assert plain.duration_s == packed.duration_s
    mooncake = load_mooncake_trace(BUNDLED_DIR / "traces/mooncake_fast25_conversation_trace.jsonl.gz")
    assert len(mooncake) == 12_031 and mooncake.total_input_tokens == 144_793_823


def test_parse_mooncake_trace_names_a_malformed_line():
    good = '{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]}\n'
    assert len(parse_mooncake_trace(good * 3)) == 3
    with pytest.raises(ValueError, match="2"):
        parse_mooncake_trace(good + "{not json}\n")


def test_load_stories260k_falls_back_to_the_package_copy_only_when_no_folder_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMDS_DATA_DIR", str(tmp_path))
    engine = load_stories260k()
    assert engine.config["parameters"] == 260_032
    with pytest.raises(FileNotFoundError, match="stories260K.bin"):
        load_stories260k(tmp_path)


STANZAS = """Package: alpha
Version: 1
Description: first summary
 a longer line
 .
 after a blank

Package: beta
Description: second summary

Package: alpha
Description: a later version of alpha

Package: nodescription
Version: 2
"""


def test_debian_stanzas_become_documents():
    packages = ir._debian_stanzas(STANZAS.splitlines(keepends=True))
    assert packages == {"alpha": "alpha: first summary\na longer line\n\nafter a blank", "beta": "beta: second summary"}


def test_load_debian_packages_falls_back_to_the_status_file(tmp_path, monkeypatch):
    def no_apt(*args, **kwargs):
        raise FileNotFoundError("apt-cache")

    monkeypatch.setattr(subprocess, "Popen", no_apt)
    status = tmp_path / "status"
    status.write_text(STANZAS)
    collection, names = ir.load_debian_packages(status)
    assert names == ["alpha", "beta"]
    assert collection.documents == {0: "alpha: first summary\na longer line\n\nafter a blank", 1: "beta: second summary"}
    assert collection.queries == {} and collection.qrels == {}
    with pytest.raises(FileNotFoundError, match="no Debian package descriptions"):
        ir.load_debian_packages(tmp_path / "absent")


def test_a_failing_apt_cache_is_not_half_read(tmp_path, monkeypatch):
    real_popen = subprocess.Popen

    def failing_apt(args, **kwargs):  # lists one package, then fails
        return real_popen(["sh", "-c", "printf 'Package: partial\\nDescription: cut off\\n\\n'; exit 3"], **kwargs)

    monkeypatch.setattr(subprocess, "Popen", failing_apt)
    status = tmp_path / "status"
    status.write_text(STANZAS)
    _, names = ir.load_debian_packages(status)
    assert names == ["alpha", "beta"]


def test_load_debian_packages_reads_the_archive():
    if not Path("/var/lib/dpkg/status").exists():
        pytest.skip("not a Debian system")
    collection, names = ir.load_debian_packages()
    assert len(collection.documents) == len(names) > 100
    assert names == sorted(names)
    assert collection.documents[names.index("dpkg")].startswith("dpkg: ")
