"""Agent (tool-use) templates, parsing and data helpers."""
