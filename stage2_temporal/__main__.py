"""``python -m stage2_temporal ACTION ...`` = ``fer-pipeline stage2 ACTION ...``."""
import sys

from fer_pipeline.cliutil import stage_main
from stage2_temporal.main import register

sys.exit(stage_main("python -m stage2_temporal", register))
