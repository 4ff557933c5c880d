"""pytest fixtures for tests/bitbake; the helpers live in bbharness.py."""

from bbharness import bblib, meta_virt, recorder  # noqa: F401  (fixtures registered by import)
