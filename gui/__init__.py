"""The Qt desktop application: thin wiring over ``core``. Importing it needs PySide6."""
