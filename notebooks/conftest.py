"""nbval set-up: importing adlib here, before nbval starts the kernels, writes the reference CPU
numerics (adlib.numerics) into the environment the kernels inherit, so the checked notebooks run
under the same numerics as `adlib reproduce`."""

import adlib  # noqa: F401  (side effect: adlib.numerics.apply_env)
