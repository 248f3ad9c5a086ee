"""python -m vkclient WORKFLOW.json [options]: see vkclient.cli."""
from .cli import run

run()
