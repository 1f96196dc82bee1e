"""ptft_helpers: the code behind the ptft notebook series on pre-training and fine-tuning.

One module per concern: ``settings`` (fast mode, paths), ``data``, ``models``,
``devices``, ``training``, ``checkpoints``, ``experiments``, ``plots``, ``widgets``,
``envcheck`` and ``cli``.
"""

__version__ = "0.1.0"
