"""edgeclip's model tools (Python; nothing here is needed at run time).

Run as modules from ``models/tools`` (or anywhere with ``PYTHONPATH=models/tools``, or after
``pip install -e models/tools``):

    python3 -m edgeclip_tools export|quantize|distill|check ...   # real CLIPs -> bundles
    python3 -m edgeclip_tools.demo all --seed 0                    # the demo bundle, models/demo/
    python3 -m edgeclip_tools.export_fixtures                      # tests/data/models/*
    python3 -m edgeclip_tools.gpu_variant BUNDLE                   # add the fp16 GPU variant

Shared helpers: ``clip_common`` (CLIP constants, preprocessing, fingerprint), ``bundle_tools``
(ONNX export, quantization, bundle.toml / safetensors writing, onnxruntime and edgeclip runs),
``nets`` (the conv block, the plain conv stack and the learning-rate schedule that the demo and
``distill`` share). ``demo`` builds the demo bundle on top of them; nothing outside ``demo``
imports from it.
"""
