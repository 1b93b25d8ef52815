"""Run one compat_connector_scenarios scenario with mysql-connector's C extension.

Reads {"scenario", "connect", "params"} pickled on stdin, writes the scenario's result pickled
to stdout. `_mysql_connector` is imported before anything else loads OpenSSL: see
compat_support.run_cext for why.
"""

import _mysql_connector  # noqa: F401, I001 - must be the first import (bundled OpenSSL)

import pickle
import sys

import mysql.connector

import compat_connector_scenarios


def main() -> None:
    spec = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - from our own parent
    assert mysql.connector.HAVE_CEXT, "mysql-connector C extension did not load"
    scenario = compat_connector_scenarios.SCENARIOS[spec["scenario"]]
    result = scenario(spec["connect"], **spec["params"])
    sys.stdout.buffer.write(pickle.dumps(result))


if __name__ == "__main__":
    main()
