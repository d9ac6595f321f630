"""The `mpinet` console script. It sits outside the mpinet_hub package because importing that package registers
the encoders with timm, which loads torch and timm (seconds): `mpinet --version` answers from the installed
package's metadata without them; every other command runs `mpinet_hub.cli.main`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:
        try:
            print(f"mpinet-hub {version('mpinet-hub')}")
            return 0
        except PackageNotFoundError:  # run from a checkout that was never installed: the package says it
            pass
    from mpinet_hub.cli import main as run_command

    return run_command(args)


if __name__ == "__main__":
    raise SystemExit(main())
