import sys


def main(argv=None) -> int:
    print("The studio window is not built yet; use the `fourd` command line.", file=sys.stderr)
    return 2
