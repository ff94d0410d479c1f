"""Networks amsr's zoo does not include, written as a user would from the authors' public code (outside
``amsr/``), for the plug-and-play study (``scripts/user_network_study.py``, issue #16)."""
