"""``python -m minconv.experiments NAME [options]``: one of the paper's experiments."""
import sys

from . import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
