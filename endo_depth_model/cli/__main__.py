"""``python -m endo_depth_model.cli``: the ``endo-depth`` command without the ROS subcommands."""

import sys

from endo_depth_model.cli import main

if __name__ == "__main__":  # importing the module (pkgutil.walk_packages) runs nothing
    sys.exit(main())
