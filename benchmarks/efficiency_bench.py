"""VST vs the same-shape text model: prefill, decode, KV cache, memory (see docs/runners.md).

    python benchmarks/efficiency_bench.py --out runs/eff-cpu --threads 1         # 4K..32K chars
    python benchmarks/efficiency_bench.py --out runs/eff-gpu --device cuda --dtype bfloat16 \
        --flavour small --lengths 4096 --lengths 16384 --lengths 65536 --lengths 131072

The flags are `eval.efficiency.EfficiencyConfig`'s (the same as `vst eval efficiency`);
the table and plots land in --out.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import typer

    from eval.efficiency import EfficiencyConfig, report
    from jobs.config_cli import config_command

    typer.run(config_command(EfficiencyConfig, report))


if __name__ == "__main__":
    main()
