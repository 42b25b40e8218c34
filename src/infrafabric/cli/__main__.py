"""``python -m infrafabric.cli``: the same as ``ifctl``."""

from infrafabric.cli import main

main()
