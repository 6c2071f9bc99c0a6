"""`python -m jobs.convert ...`: the command line of `jobs.convert.cli` (see its --help)."""

from jobs.convert.cli import main

main()
