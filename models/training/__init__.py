"""Training and evaluation of Mise's models: nothing a server imports (the server part is ``models.audio``,
``models.net``, ``models.emotion`` and ``models.caller``).

Command lines, each ``python -m models.training.<name> --help``:
``train`` (the shipped weights: cross-validation, refit, calibration; ``mise train``), ``crossval`` (the speaker
cross-validation alone), ``evaluate`` (the test figures), ``recalibrate`` (the calibration refitted on a new
population; ``mise recalibrate``) and ``baseline_study`` (the baseline-gap tables). ``fit`` is one training run
and its recipe, shared by ``train`` and ``crossval``. Importing this package, ``data``, ``metrics`` or ``augment``
does not import torch.
"""
