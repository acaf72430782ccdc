"""``python -m stage0_preprocess ACTION ...`` = ``fer-pipeline stage0 ACTION ...``."""
import sys

from fer_pipeline.cliutil import stage_main
from stage0_preprocess.main import register

sys.exit(stage_main("python -m stage0_preprocess", register))
