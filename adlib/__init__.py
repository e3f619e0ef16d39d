"""adlib: a reproducible companion to GLASS, POUTA, ADL and ADTR (industrial visual anomaly detection).

The library logs through :mod:`logging` (logger names start with ``adlib``) and never prints.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
