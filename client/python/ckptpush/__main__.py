"""`python3 -m ckptpush restore ...`: the Python package's command line (restore only; the
control socket commands are the C client's)."""

import sys

from .restore import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] != "restore":
        print("usage: python3 -m ckptpush restore --repo ID [--revision R] [--endpoint URL] "
              "[--token-path FILE] DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(args[1:]))
