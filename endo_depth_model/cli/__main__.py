"""``python -m endo_depth_model.cli``: the ``endo-depth`` command without the ROS subcommands."""

import sys

from endo_depth_model.cli import main

sys.exit(main())
