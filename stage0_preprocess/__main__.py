"""``python -m stage0_preprocess ACTION ...`` = ``fer-pipeline stage0 ACTION ...``."""
import sys

from pipeline.cli import main

sys.exit(main(["stage0", *sys.argv[1:]]))
