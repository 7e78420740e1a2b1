"""`python -m jaxfuse ...`: the same command line as the `jaxfuse` console script."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
