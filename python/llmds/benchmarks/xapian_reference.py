"""Reproduce the reference BM25 table of the shared data's ``ir/README.md`` with Xapian and llmds.ir.

Indexing and search as the README describes: title + abstract (llmds.ir's document texts)
through a Xapian TermGenerator with the English Snowball stemmer (STEM_SOME) and Lucene's 33
English stop words (default stopper strategy, STOP_STEMMED); queries through a QueryParser with
the same stemmer and stopper and OR as the default operator; BM25Weight(k1, k2=0, k3=1, b,
min_normlen=0.5); the first 1000 documents of each query, in Xapian's order (ties by ascending
doc id), are scored by llmds.ir.evaluate (MAP, nDCG@10, P@10, R@100 over the judged queries).

Two details the README leaves implicit, found by reproducing its figures (every other
combination tried misses at least one of the 27 figures):

* the query text (title + ``.W``, see llmds.ir) is lowercased before parsing. Under STEM_SOME the
  QueryParser leaves capitalised words unstemmed, which matters for CISI's mixed-case queries;
* it is parsed with flags 0, not FLAG_DEFAULT: no love/hate (Cranfield's ``-dash`` would become
  NOT dash), no boolean operators, no quoted phrases (CISI quotes some). Hyphenated words still
  become phrase queries, as Xapian does regardless of flags.

Xapian's Python bindings come from Debian (``apt-get install python3-xapian``) and so run under
/usr/bin/python3, which need not have the compiled llmds package: llmds/ir.py is pure Python
and is loaded here by file path::

    /usr/bin/python3 python/llmds/benchmarks/xapian_reference.py    # data from $LLMDS_DATA_DIR or ../shared/data
    /usr/bin/python3 python/llmds/benchmarks/xapian_reference.py --root /work/shared/data/ir

Exits 1 if a figure differs from the README's table (rounded to 3 decimals).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

try:
    import xapian
except ImportError as error:  # pragma: no cover - a benchmark prerequisite
    raise SystemExit("this script needs Xapian's Python bindings: apt-get install python3-xapian") from error

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # python/llmds, or the installed llmds

# Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET (33 words).
LUCENE_STOP_WORDS = (
    "a an and are as at be but by for if in into is it no not of on or such "
    "that the their then there these they this to was will with"
).split()

# No QueryParser features (see the module docstring): plain words, OR-ed.
QUERY_PARSER_FLAGS = 0

# (label, k1, b) rows of the README's table.
PARAMS = (("Xapian default k1=1, b=0.5", 1.0, 0.5), ("k1=1.2, b=0.75", 1.2, 0.75), ("k1=0.9, b=0.4", 0.9, 0.4))

# The README's figures: collection -> row label -> (MAP, nDCG@10, P@10, R@100); graded nDCG@10.
REFERENCE = {
    "cranfield": {
        PARAMS[0][0]: (0.285, 0.367, 0.228, 0.719),
        PARAMS[1][0]: (0.294, 0.373, 0.229, 0.724),
        PARAMS[2][0]: (0.281, 0.363, 0.222, 0.714),
    },
    "cisi": {
        PARAMS[0][0]: (0.208, 0.369, 0.337, 0.424),
        PARAMS[1][0]: (0.215, 0.373, 0.343, 0.437),
        PARAMS[2][0]: (0.205, 0.363, 0.329, 0.422),
    },
}
REFERENCE_GRADED_NDCG = {PARAMS[0][0]: 0.351, PARAMS[1][0]: 0.356, PARAMS[2][0]: 0.347}
METRICS = ("MAP", "nDCG@10", "P@10", "R@100")


def load_ir_module() -> ModuleType:
    """llmds/ir.py by file path, so that neither llmds/__init__ nor llmds._core is needed."""
    path = PACKAGE_DIR / "ir.py"
    spec = importlib.util.spec_from_file_location("llmds_ir", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while building the class
    spec.loader.exec_module(module)
    return module


def default_root() -> Path:
    # As llmds.data.data_dir (not imported: see load_ir_module): $LLMDS_DATA_DIR, else ../shared/data
    # beside the working directory, the project root.
    configured = os.environ.get("LLMDS_DATA_DIR")
    return (Path(configured) if configured else Path.cwd().parent / "shared" / "data") / "ir"


def build_index(documents: dict[int, str], stemmer: xapian.Stem, stopper: xapian.Stopper) -> xapian.Database:
    """An in-memory index whose Xapian docid is the collection's doc id."""
    db = xapian.WritableDatabase("", xapian.DB_BACKEND_INMEMORY)
    generator = xapian.TermGenerator()
    generator.set_stemmer(stemmer)
    generator.set_stemming_strategy(xapian.TermGenerator.STEM_SOME)
    generator.set_stopper(stopper)
    for doc_id in sorted(documents):
        document = xapian.Document()
        generator.set_document(document)
        generator.index_text(documents[doc_id])
        db.replace_document(doc_id, document)
    return db


def search_all(
    db: xapian.Database,
    queries: dict[int, str],
    stemmer: xapian.Stem,
    stopper: xapian.Stopper,
    k1: float,
    b: float,
    depth: int,
) -> dict[int, list[int]]:
    parser = xapian.QueryParser()
    parser.set_database(db)
    parser.set_stemmer(stemmer)
    parser.set_stemming_strategy(xapian.QueryParser.STEM_SOME)
    parser.set_stopper(stopper)
    parser.set_default_op(xapian.Query.OP_OR)
    enquire = xapian.Enquire(db)
    enquire.set_weighting_scheme(xapian.BM25Weight(k1, 0, 1, b, 0.5))
    runs: dict[int, list[int]] = {}
    for query_id, text in queries.items():
        enquire.set_query(parser.parse_query(text.lower(), QUERY_PARSER_FLAGS))
        runs[query_id] = [match.docid for match in enquire.get_mset(0, depth)]
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--root", type=Path, default=None, help="the ir/ data folder")
    parser.add_argument("--depth", type=int, default=1000)
    args = parser.parse_args(argv)
    ir = load_ir_module()
    root = args.root or default_root()

    stemmer = xapian.Stem("english")
    stopper = xapian.SimpleStopper()
    for word in LUCENE_STOP_WORDS:
        stopper.add(word)

    print(f"Xapian {xapian.version_string()}, Python {sys.version.split()[0]}, data {root}")
    header = f"| {'collection':<22} | {'BM25 params':<26} | " + " | ".join(f"{m:>7}" for m in METRICS) + " |"
    print(header)
    print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|")
    mismatches: list[str] = []
    graded_line: list[str] = []

    for name in ("cranfield", "cisi"):
        collection = ir.load_collection(name, root)
        graded = ir.load_collection("cranfield-graded", root) if name == "cranfield" else None
        db = build_index(collection.documents, stemmer, stopper)
        for label, k1, b in PARAMS:
            runs = search_all(db, collection.queries, stemmer, stopper, k1, b, args.depth)
            scores = ir.evaluate(runs, collection.qrels, depth=args.depth)
            shown = "cranfield (binary rel)" if name == "cranfield" else name
            print(f"| {shown:<22} | {label:<26} | " + " | ".join(f"{scores[m]:7.3f}" for m in METRICS) + " |")
            for metric, expected in zip(METRICS, REFERENCE[name][label]):
                if round(scores[metric], 3) != expected:
                    mismatches.append(f"{name} {label} {metric}: {scores[metric]:.4f} vs {expected:.3f}")
            if graded is not None:
                graded_ndcg = ir.evaluate(runs, graded.qrels, depth=args.depth)["nDCG@10"]
                graded_line.append(f"{graded_ndcg:.3f}")
                if round(graded_ndcg, 3) != REFERENCE_GRADED_NDCG[label]:
                    mismatches.append(
                        f"cranfield graded {label} nDCG@10: {graded_ndcg:.4f} vs {REFERENCE_GRADED_NDCG[label]:.3f}"
                    )
    print()
    print(f"Cranfield nDCG@10 with graded gain 5-code: {' / '.join(graded_line)} (same rows)")
    if mismatches:
        print("\nDIFFERS from the README:\n  " + "\n  ".join(mismatches))
        return 1
    print("\nAll figures match the README's reference table.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
