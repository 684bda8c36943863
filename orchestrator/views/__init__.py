"""What the command line and the web UI show: runs as text, workflows as tables and
Mermaid charts.

Above the engine; below the CLI and the web UI.
"""
