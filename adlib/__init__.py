"""adlib: a reproducible companion to GLASS, POUTA, ADL and ADTR (industrial visual anomaly detection).

Importing it pins the CPU numerics (:mod:`adlib.numerics`). The library logs through :mod:`logging` (logger names start with ``adlib``) and never prints.
"""

import logging

from . import numerics as _numerics

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
# Before torch, numpy, MKL or oneDNN load: the reference CPU numerics (adlib.numerics; ADLIB_NUMERICS=native opts out).
_numerics.apply_env()
