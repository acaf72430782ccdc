"""``python -m stage1_image_encoder ACTION ...`` = ``fer-pipeline stage1 ACTION ...``."""
import sys

from pipeline.cli import main

sys.exit(main(["stage1", *sys.argv[1:]]))
