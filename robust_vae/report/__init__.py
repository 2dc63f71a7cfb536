"""Rendering results: tables (CSV, LaTeX, Markdown) and figures. Imports nothing above data."""
