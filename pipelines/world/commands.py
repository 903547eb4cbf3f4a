"""`fourd world ...`: the procedural world from the command line (examples, datasets, classifier, previews).

Kept free of torch at import so that `fourd --help` stays fast; each action imports what it needs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    world = sub.add_parser("world", help="the procedural 4D world: examples, datasets, attribute classifier")
    actions = world.add_subparsers(dest="world_command", metavar="ACTION", required=True)
    ex = actions.add_parser("examples", help="render the example inputs into assets/examples")
    ex.add_argument("--out", type=Path, help="folder to write into (default: the bundled assets/examples)")
    build = actions.add_parser("build", help="render a cached dataset (missing shards only)")
    build.add_argument("layout", choices=("image", "multiview", "video", "matrix", "voxels"))
    build.add_argument("--split", default="train", choices=("train", "validation", "test"))
    build.add_argument("--size", type=int, default=1000)
    build.add_argument("--resolution", type=int, default=64)
    build.add_argument("--views", type=int, default=4)
    build.add_argument("--frames", type=int, default=4)
    build.add_argument("--workers", type=int, default=None)
    build.add_argument("--cache-dir", type=Path, default=None)
    clf = actions.add_parser("train-classifier", help="train the attribute classifier and save it")
    clf.add_argument("--out", type=Path, help="checkpoint folder (default: the bundled assets/checkpoints)")
    clf.add_argument("--train-size", type=int, default=4000)
    clf.add_argument("--test-size", type=int, default=600)
    clf.add_argument("--epochs", type=int, default=24)
    clf.add_argument("--lr", type=float, default=3e-3)
    clf.add_argument("--workers", type=int, default=None)
    clf.add_argument("--cache-dir", type=Path, default=None)
    sheet = actions.add_parser("sheet", help="save a contact sheet PNG of samples (rows: seeds, columns: times)")
    sheet.add_argument("out", type=Path)
    sheet.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    sheet.add_argument("--frames", type=int, default=6)
    sheet.add_argument("--resolution", type=int, default=96)


def run(args: argparse.Namespace) -> int:
    if args.world_command == "examples":
        from pipelines.world.examples import write_examples

        for entry in write_examples(args.out):
            print(f"{entry['file']:<28} {entry['caption']}")
        return 0
    if args.world_command == "build":
        import time

        from pipelines.world.datasets import WorldDataset

        data = WorldDataset(args.layout, args.split, args.size, resolution=args.resolution, views=args.views,
                            frames=args.frames, cache_dir=args.cache_dir)
        start = time.perf_counter()
        rendered = data.build(args.workers)
        print(f"{rendered} shard(s) rendered in {time.perf_counter() - start:.1f} s into {data.cache_dir}")
        return 0
    if args.world_command == "train-classifier":
        from pipelines.world.classifier import train_classifier

        record = train_classifier(args.out, train_size=args.train_size, test_size=args.test_size,
                                  epochs=args.epochs, lr=args.lr, cache_dir=args.cache_dir,
                                  workers=args.workers)
        print(record["test_accuracy"])
        return 0
    if args.world_command == "sheet":
        from pipelines.world.preview import contact_sheet

        contact_sheet(args.out, args.seeds, frames=args.frames, resolution=args.resolution)
        print(f"wrote {args.out}")
        return 0
    raise ValueError(f"unknown world action {args.world_command!r}")
