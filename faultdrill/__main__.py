"""``python -m faultdrill``: the same as the ``faultdrill`` console script."""

from faultdrill.cli import main

main()
