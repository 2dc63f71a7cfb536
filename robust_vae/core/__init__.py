"""The bottom layer: errors, devices, paths and registries that every other layer may use."""
