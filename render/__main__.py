"""`python -m render SOURCE --out DIR`: see render.cli.render."""

from render.cli import main

main()
