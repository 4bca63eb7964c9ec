"""The notebooks `tracin notebooks` executes, shipped inside the package as `tracin.notebooks` (setup.cfg)."""
