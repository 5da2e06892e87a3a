"""``python3 -m edgeclip_tools``: the model tools' command line (``cli.py``)."""

from .cli import main

main()
