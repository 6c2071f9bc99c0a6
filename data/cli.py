"""Commands of the data package (plain argparse; the `vst` console script may wrap them).

    python -m data.cli demo --out DIR            build the demo corpus
    python -m data.cli read PATH [--skips F]     count documents, write the skip log
    python -m data.cli consolidate ROOT          write manifest.json from complete parts
    python -m data.cli verify ROOT [--part ID]   recompute checksums (exit 1 on corruption)
    python -m data.cli info ROOT                 store metadata and totals
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from data.demo import build_demo_corpus

    print(build_demo_corpus(args.out, args.n_docs, args.max_chars, args.seed))
    return 0


def _read(args: argparse.Namespace) -> int:
    from data.corpus import SkipLog, read_corpus

    skips = SkipLog()
    docs = chars = 0
    for doc in read_corpus(args.path, text_field=args.text_field, skips=skips):
        docs += 1
        chars += len(doc.text)
    print(json.dumps({"documents": docs, "characters": chars, "skipped": len(skips.skipped),
                      "repaired": len(skips.repaired)}))
    if args.skips:
        skips.write_jsonl(args.skips)
    return 0


def _consolidate(args: argparse.Namespace) -> int:
    from data.store import consolidate

    manifest = consolidate(args.root, verify=args.verify)
    print(json.dumps({"totals": manifest["totals"], "incomplete": manifest["incomplete"]}))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from data.store import StoreCorruptError, verify_part, verify_store

    try:
        if args.part is not None:
            verify_part(args.root, int(args.part) if args.part.isdigit() else args.part)
        else:
            verify_store(args.root)
    except StoreCorruptError as err:
        print(f"CORRUPT: {err}", file=sys.stderr)
        return 1
    print("ok")
    return 0


def _info(args: argparse.Namespace) -> int:
    from data.store import Store

    store = Store(args.root)
    print(json.dumps({"meta": store.meta.to_json(), "totals": store.manifest["totals"],
                      "parts": len(store.part_names)}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="build the demo corpus")
    demo.add_argument("--out", required=True, type=Path)
    demo.add_argument("--n-docs", type=int, default=64)
    demo.add_argument("--max-chars", type=int, default=20_000)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)

    read = commands.add_parser("read", help="stream a corpus, count documents and skips")
    read.add_argument("path", type=Path)
    read.add_argument("--text-field", default="text")
    read.add_argument("--skips", type=Path, help="write the skip log here (JSONL)")
    read.set_defaults(run=_read)

    cons = commands.add_parser("consolidate", help="write manifest.json")
    cons.add_argument("root", type=Path)
    cons.add_argument("--verify", action="store_true", help="verify each part first")
    cons.set_defaults(run=_consolidate)

    verify = commands.add_parser("verify", help="recompute checksums")
    verify.add_argument("root", type=Path)
    verify.add_argument("--part", help="one part id (e.g. 7 or part-00007)")
    verify.set_defaults(run=_verify)

    info = commands.add_parser("info", help="store metadata and totals")
    info.add_argument("root", type=Path)
    info.set_defaults(run=_info)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
