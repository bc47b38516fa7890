"""``crild-predict``: the same as ``python scripts/predict_glue.py`` (see there for its options)."""

import sys

from fairseq_crild.cli._from_scripts import script_main

main = script_main("predict_glue")

if __name__ == "__main__":
    sys.exit(main())
