import sys

from fer_pipeline.app.cli import main

sys.exit(main())
