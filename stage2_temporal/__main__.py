"""``python -m stage2_temporal ACTION ...`` = ``fer-pipeline stage2 ACTION ...``."""
import sys

from pipeline.cli import main

sys.exit(main(["stage2", *sys.argv[1:]]))
