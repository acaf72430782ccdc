"""``python -m stage1_image_encoder ACTION ...`` = ``fer-pipeline stage1 ACTION ...``."""
import sys

from fer_pipeline.cliutil import stage_main
from stage1_image_encoder.main import register

sys.exit(stage_main("python -m stage1_image_encoder", register))
