"""The simulated robot for the closed loop: a simulated endoscope (``sim_endoscope``) and an example
stand-off controller (``standoff_controller``), both ROS nodes installed as executables of their own."""
