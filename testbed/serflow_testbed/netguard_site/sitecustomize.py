"""Installs serflow's connection guard at interpreter start (``serflow_testbed.netguard``).

On ``PYTHONPATH`` only in processes that the tests and the demos start; a no-op unless
``SERFLOW_NETGUARD_LOG`` is set.
"""

import os
import sys

if os.environ.get("SERFLOW_NETGUARD_LOG"):
    try:
        from serflow_testbed import netguard
    except ImportError:  # an interpreter without the test bed installed: load it from here
        sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
        from serflow_testbed import netguard
    netguard.install_from_env()
