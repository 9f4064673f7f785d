"""The standard-library corpus: a fixed list of modules, read as the import system finds
them, concatenated in sorted order with separators, and identified by its sha256."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys
from pathlib import Path

import pytest

from gometal import text


@pytest.fixture(scope="module")
def corpus() -> text.StdlibCorpus:
    return text.stdlib_corpus()


def test_the_module_list_is_fixed_sorted_and_forty_long():
    modules = text.STDLIB_CORPUS_MODULES
    assert len(modules) == 40 == len(set(modules))
    assert list(modules) == sorted(modules)


def test_the_corpus_is_each_modules_source_in_order_with_separators(corpus):
    pieces = []
    for name in sorted(text.STDLIB_CORPUS_MODULES):
        source_file = inspect.getsourcefile(importlib.import_module(name))
        source = Path(source_file).read_bytes().decode("utf-8")
        pieces.append(f"# ---- module {name} ----\n{source}")
    expected = "".join(pieces)
    assert corpus.text == expected
    assert corpus.sha256 == hashlib.sha256(expected.encode("utf-8")).hexdigest()
    assert corpus.modules == tuple(sorted(text.STDLIB_CORPUS_MODULES))
    assert corpus.python_version == "{}.{}.{}".format(*sys.version_info[:3])
    assert text.stdlib_corpus().sha256 == corpus.sha256  # the same text every call


def test_the_corpus_is_a_few_megabytes_of_python(corpus):
    assert 1_500_000 < len(corpus.text.encode("utf-8")) < 8_000_000
    assert corpus.text.count("# ---- module ") == 40
    assert corpus.text.count("def ") > 2000


def test_the_corpus_round_trips_through_the_built_in_tokenizers(corpus):
    for tokenizer in (text.ByteTokenizer(), text.CharTokenizer.from_text(corpus.text)):
        assert tokenizer.decode(tokenizer.encode(corpus.text)) == corpus.text


def test_a_missing_module_is_named(tmp_path):
    (tmp_path / "alpha.py").write_text("A = 1\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("B = 2")  # no final newline: one is added
    small = text.stdlib_corpus(["pkg", "alpha"], stdlib=tmp_path)
    assert small.text == "# ---- module alpha ----\nA = 1\n# ---- module pkg ----\nB = 2\n"
    with pytest.raises(FileNotFoundError, match=r"module 'beta' has no source file under"):
        text.stdlib_corpus(["alpha", "beta"], stdlib=tmp_path)
    with pytest.raises(ValueError, match=r"non-empty sequence of module names, got 'alpha'"):
        text.stdlib_corpus("alpha", stdlib=tmp_path)
