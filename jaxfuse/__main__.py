"""`python -m jaxfuse ...`: the same command line as the `jaxfuse` console script."""
from .cli import console_main

if __name__ == "__main__":
    console_main()
