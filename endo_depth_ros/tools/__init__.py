"""The ``endo-depth`` ROS subcommands around the node: ``bag`` (record / play / convert / info), ``demo``,
``soak`` and ``loop`` (closed_loop). Each module registers its subcommand in ``endo_depth_ros.cli``."""
