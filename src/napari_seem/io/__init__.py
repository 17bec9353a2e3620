"""Reading and writing napari-seem annotation sessions, and the plugin's sample data."""
