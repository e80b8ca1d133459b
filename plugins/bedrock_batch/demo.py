"""Runs the call-center DAG end-to-end on the embedded local stack.

Not wired up yet: the DAG and its operators are still being built.
"""

from __future__ import annotations

import sys


def main() -> int:
    print("make demo is not available yet: the call-center DAG is still being built. Run `make test`.")
    return 1


if __name__ == "__main__":
    sys.exit(main())
