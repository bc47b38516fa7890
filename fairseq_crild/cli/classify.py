"""``crild-classify``: the same as ``python scripts/classify.py`` (see there for its options)."""

import sys

from fairseq_crild.cli._from_scripts import script_main

main = script_main("classify")

if __name__ == "__main__":
    sys.exit(main())
