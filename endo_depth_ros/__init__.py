"""endo_depth_ros: the ROS 2 node and its glue around ``endo_depth_model``.

The package is split over two directories on a typical install: the hand-written modules (from the
source tree or installed by CMake/pip) and the interfaces generated from ``msg/`` by rosidl
(``endo_depth_ros.msg``). ``extend_path`` lets a source checkout and the installed generated part
resolve as one package.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
