"""Headless commands (``python main.py COMMAND``): the same core jobs as the GUI, for scripts."""
