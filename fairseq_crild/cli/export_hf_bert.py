"""``crild-export-hf-bert``: the same as ``python scripts/export_hf_bert.py``
(see there for its options)."""

import sys

from fairseq_crild.cli._from_scripts import script_main

main = script_main("export_hf_bert")

if __name__ == "__main__":
    sys.exit(main())
