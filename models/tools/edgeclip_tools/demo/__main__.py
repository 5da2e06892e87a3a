"""``python3 -m edgeclip_tools.demo``: the demo bundle's command line."""

from .core import main

main()
