"""Commands of the two data layers, mounted by the `vst` entry point (jobs/cli.py).

    vst corpus build --out DIR            the 65 MB local corpus (data.corpus.build)
    vst corpus demo --out DIR             the small demo corpus
    vst corpus read PATH [--skips F]      count documents, write the skip log
    vst corpus instructions PATH --out F  an instruction set with checkable answers (vst sft)
    vst store consolidate ROOT            write manifest.json from complete parts
    vst store verify ROOT [--part ID]     recompute checksums (exit 1 on corruption)
    vst store info ROOT                   store metadata and totals

Heavy imports (pyarrow, zarr) stay inside the commands so that `vst --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from data.corpus.build import corpus_build_command

corpus_app = typer.Typer(name="corpus", no_args_is_help=True,
                         help="Corpora in The Pile's format: build, demo, read, instructions.")
store_app = typer.Typer(name="store", no_args_is_help=True,
                        help="Visual-token stores: consolidate, verify, info.")
corpus_app.command("build")(corpus_build_command)


@corpus_app.command("demo")
def demo_corpus_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (created).")],
    n_docs: Annotated[int, typer.Option(help="Documents to write.")] = 64,
    max_chars: Annotated[int, typer.Option(help="Most characters a document.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Seed of the module order.")] = 0,
) -> None:
    """Build the demo corpus (The Pile's format) from the standard library's pydoc."""
    from data.corpus.demo import build_demo_corpus

    typer.echo(build_demo_corpus(out, n_docs, max_chars, seed))


@corpus_app.command("read")
def read_command(
    path: Annotated[Path, typer.Argument(exists=True, help="Corpus file or directory.")],
    text_field: Annotated[str, typer.Option(help="Field holding the text.")] = "text",
    skips: Annotated[Optional[Path], typer.Option(
        "--skips", help="Write the skip log here (JSONL).")] = None,
    oversized: Annotated[Literal["split", "drop"], typer.Option(
        help="A document over max_chars: 'split' into parts or 'drop' it.")] = "split",
) -> None:
    """Stream a corpus; print counts of documents, characters, skips, repairs and splits."""
    from data.corpus import SkipLog, read_corpus

    log = SkipLog()
    docs = chars = 0
    for doc in read_corpus(path, text_field=text_field, skips=log, oversized=oversized):
        docs += 1
        chars += len(doc.text)
    typer.echo(json.dumps({"documents": docs, "characters": chars, "skipped": len(log.skipped),
                           "repaired": len(log.repaired), "split": len(log.split)}))
    if skips:
        log.write_jsonl(skips)


@corpus_app.command("instructions")
def instructions_command(
    path: Annotated[Path, typer.Argument(exists=True, help="Corpus file or directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Instruction file to write (JSONL).")],
    context_chars: Annotated[int, typer.Option(
        help="Characters of document given as each sample's context.")] = 1500,
    seed: Annotated[int, typer.Option(help="Seed of the passages and questions.")] = 0,
) -> None:
    """Generate instruction samples with checkable answers from a corpus, for `vst sft`.

    One sample per document and family (data.corpus.instruct_gen: a planted key's value,
    the sentence after a quoted one, the section that mentions a term).
    """
    from collections import Counter

    from data.corpus import read_corpus
    from data.corpus.instruct_gen import generate
    from data.corpus.instructions import write_instructions
    from data.errors import BadInput

    samples = generate(read_corpus(path), context_chars=(context_chars,), seed=seed)
    if not samples:
        raise BadInput(f"no document of {path} gives an instruction sample",
                       hint=f"documents need about {context_chars // 2}+ characters; "
                            "lower --context-chars")
    families = dict(Counter(s.family for s in samples))
    typer.echo(f"{len(samples)} samples {families} -> {write_instructions(samples, out)}")


@store_app.command("consolidate")
def consolidate_command(
    root: Annotated[Path, typer.Argument(help="Store root.")],
    verify: Annotated[bool, typer.Option("--verify", help="Verify each part first.")] = False,
) -> None:
    """Write manifest.json from the complete parts."""
    from data.store import consolidate

    manifest = consolidate(root, verify=verify)
    typer.echo(json.dumps({"totals": manifest["totals"], "incomplete": manifest["incomplete"]}))


@store_app.command("verify")
def verify_command(
    root: Annotated[Path, typer.Argument(help="Store root.")],
    part: Annotated[Optional[str], typer.Option(
        help="One part id (e.g. 7 or part-00007).")] = None,
) -> None:
    """Recompute checksums; exit 1 on corruption."""
    from data.store import StoreCorruptError, read_store_meta, verify_part, verify_store

    read_store_meta(root)  # not a store at all: the user's mistake (status 2), not corruption
    try:
        if part is not None:
            verify_part(root, int(part) if part.isdigit() else part)
        else:
            verify_store(root)
    except StoreCorruptError as err:
        typer.echo(f"CORRUPT: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo("ok")


@store_app.command("info")
def info_command(root: Annotated[Path, typer.Argument(help="Store root.")]) -> None:
    """Store metadata and totals."""
    from data.store import Store

    store = Store(root)
    typer.echo(json.dumps({"meta": store.meta.to_json(), "totals": store.manifest["totals"],
                           "parts": len(store.part_names)}, indent=1))
