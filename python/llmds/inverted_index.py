"""Lexical search: a compressed inverted index scored with BM25 as Lucene scores it."""

from llmds._core import ENGLISH_STOP_WORDS as ENGLISH_STOP_WORDS
from llmds._core import InvertedIndex as InvertedIndex
from llmds._core import porter_stem as porter_stem

__all__ = ["ENGLISH_STOP_WORDS", "InvertedIndex", "porter_stem"]
