"""HNSW under churn: llmds and hnswlib after rounds of deletes and slot-reusing adds, on Fashion-MNIST.

Both libraries build an index of the first --n training images (M = 16, ef_construction = 100, the
same level seed), then run --rounds rounds; each marks a random --fraction of the live vectors
deleted and adds as many unseen training images with replace_deleted, so they take the deleted
slots. Reported: recall@10 of both against numpy brute force over the final live vectors, at each
ef of --efs, beside a fresh llmds build of those same vectors; and the mean time of a replacing add
against a plain one (llmds, single adds from Python). A slot-reusing index that only relinks the
new vector keeps the old in-links of the slot, which then lead to wherever the new vector lies;
the comparison shows what that costs.

    pip install hnswlib
    python -m llmds.benchmarks.hnsw_churn                    # 20,000 vectors, 4 rounds of 12.5%
    python -m llmds.benchmarks.hnsw_churn --n 5000 --queries 200
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llmds.data import locate, read_idx_images
from llmds.evaluation import exact_top_k, overlap_recall
from llmds.hnsw import HNSW
from llmds.report import cpu_model

M = 16
EF_CONSTRUCTION = 100
K = 10


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Runs the churn comparison, prints it as Markdown and returns the recalls by name."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000, help="live vectors (default 20,000)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--fraction", type=float, default=0.125, help="share of the live vectors replaced per round")
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--efs", default="16,64")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", type=Path, default=None,
                        help="Fashion-MNIST folder (default: llmds.data.locate('ann/fashion-mnist'))")
    args = parser.parse_args(argv)
    try:
        import hnswlib
    except ImportError:
        raise SystemExit("hnswlib is not installed: pip install hnswlib") from None

    folder = args.data or locate("ann/fashion-mnist")
    images = read_idx_images(folder / "train-images-idx3-ubyte.gz").astype(np.float32)
    queries = read_idx_images(folder / "t10k-images-idx3-ubyte.gz")[: args.queries].astype(np.float32)
    per_round = int(args.n * args.fraction)
    if args.n + args.rounds * per_round > len(images):
        raise SystemExit(f"--n + rounds x replaced must stay within the {len(images):,} training images")
    efs = [int(x) for x in args.efs.split(",")]
    rng = np.random.default_rng(args.seed)

    ours = HNSW(images.shape[1], M=M, ef_construction=EF_CONSTRUCTION, seed=args.seed)
    ours.add_batch(images[: args.n], np.arange(args.n))
    peer = hnswlib.Index(space="l2", dim=images.shape[1])
    peer.init_index(max_elements=args.n, M=M, ef_construction=EF_CONSTRUCTION, random_seed=args.seed,
                    allow_replace_deleted=True)
    peer.set_num_threads(1)
    peer.add_items(images[: args.n], np.arange(args.n))

    live = np.arange(args.n)  # live[p]: the image (and id) in position p
    next_image = args.n
    replace_seconds = 0.0
    for _ in range(args.rounds):
        victims = rng.choice(args.n, per_round, replace=False)
        for p in victims:
            ours.mark_deleted(int(live[p]))
            peer.mark_deleted(int(live[p]))
        for p in victims:
            vector = images[next_image]
            start = time.perf_counter()
            ours.add(vector, next_image, replace_deleted=True)
            replace_seconds += time.perf_counter() - start
            peer.add_items(vector[None, :], [next_image], replace_deleted=True)
            live[p] = next_image
            next_image += 1
    fresh = HNSW(images.shape[1], M=M, ef_construction=EF_CONSTRUCTION, seed=args.seed)
    fresh.add_batch(images[live], live)

    truth = live[exact_top_k(images[live], queries, K)]
    results: dict[str, float] = {}
    print(f"# HNSW under churn: Fashion-MNIST, {args.n:,} live vectors, {args.rounds} rounds replacing "
          f"{per_round:,} each ({args.rounds * per_round / args.n:.0%} in all)\n")
    print(f"M={M}, ef_construction={EF_CONSTRUCTION}, seed {args.seed}; recall@{K} over {len(queries):,} queries "
          f"against numpy brute force of the final live vectors; {cpu_model()}\n")
    print("| ef | llmds after churn | hnswlib after churn | llmds fresh build |")
    print("|---:|---:|---:|---:|")
    for ef in efs:
        peer.set_ef(ef)
        ours_recall = overlap_recall([[i for i, _ in ours.search(q, K, ef=ef)] for q in queries], truth)
        peer_recall = overlap_recall(peer.knn_query(queries, k=K)[0], truth)
        fresh_recall = overlap_recall([[i for i, _ in fresh.search(q, K, ef=ef)] for q in queries], truth)
        results.update({f"llmds@{ef}": ours_recall, f"hnswlib@{ef}": peer_recall, f"fresh@{ef}": fresh_recall})
        print(f"| {ef} | {ours_recall:.4f} | {peer_recall:.4f} | {fresh_recall:.4f} |")
    # Plain adds for comparison, into the fresh index once its recall is measured.
    extra = images[next_image: next_image + 500]
    start = time.perf_counter()
    for i, vector in enumerate(extra):
        fresh.add(vector, next_image + i)
    plain_seconds = (time.perf_counter() - start) / max(len(extra), 1)
    per_replace = replace_seconds / (args.rounds * per_round)
    print(f"\nllmds add with replace_deleted: {per_replace * 1e3:.2f} ms each; a plain add into an index "
          f"of the same size: {plain_seconds * 1e3:.2f} ms")
    return results


if __name__ == "__main__":
    main()
