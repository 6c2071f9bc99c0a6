"""Convert a corpus into a visual-token store with Ray: read -> render -> encode -> write.

Laptop (no RAY_ADDRESS: starts a private local Ray on 127.0.0.1 and stops it at the end):

    python -m jobs.convert --corpus corpus.jsonl.zst --out runs/store --codec mini

Cluster (the job server sets RAY_ADDRESS for the job, and `ray.init()` follows it):

    RAY_AUTH_MODE=disabled ray start --head --node-ip-address=127.0.0.1 --disable-usage-stats
    RAY_ADDRESS=http://127.0.0.1:8265 RAY_AUTH_MODE=disabled ray job submit --working-dir . -- \\
        python -m jobs.convert --corpus /abs/corpus --out /abs/store --codec mini \\
        --render-preset mini --num-actors 4 --gpus-per-actor 1

With `ray job submit`, give `--corpus` and `--out` as absolute paths on storage every node
sees: the job runs inside an unpacked copy of the working dir.

Modules:

    config.py    ConvertConfig (every flag, default and help) and PartResult
    pipeline.py  one part without Ray: read a corpus shard, render, encode, write, record
    driver.py    the Ray side: actors, plan/lock/resume, scheduling; run_conversion
    report.py    progress lines, summary.json, skips.jsonl
    cli.py       the command line derived from ConvertConfig (`vst convert`)

Python: `jobs.convert.driver.run_conversion(corpus, out, codec="mini", ...) -> summary`.

Work split (this is what makes the job resumable and idempotent): corpus shard i
(`read_corpus(shard_index=i, num_shards=--num-parts)`: whole files, or slices of big ones, so
a part never reads the whole corpus) becomes store part i, written with
`data.store.StoreWriter`, which renames it into place only when complete. A part is done
when its store part verifies and the job's record `_convert/part-NNNNN.json` exists (written
last). Bad documents become entries of `skips.jsonl`; `summary.json` has the totals.
"""
