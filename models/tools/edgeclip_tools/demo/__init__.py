"""The demo bundle (``models/demo/``): synthetic scenes, a small CLIP teacher, a distilled
student, export, evaluation and the model card. ``python3 -m edgeclip_tools.demo --help``."""
