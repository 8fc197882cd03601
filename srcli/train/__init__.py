"""Training registered architectures on HR image folders (``srcli train``).

* ``srcli.train.data``: HR folders -> (HR, LR) pairs made with the evaluation's MATLAB bicubic,
  cached, and a sampler of aligned random crops with flips and 90° rotations;
* ``srcli.train.loop``: the trainer (L1, Adam, warm-up + cosine / multistep, EMA, bf16 on GPU,
  validation with the evaluation protocol, atomic checkpoints, exact resume, JSON log);
* ``srcli.train.export``: deploy-form safetensors with provenance metadata.

Importing this package does not import torch; its modules do.
"""
