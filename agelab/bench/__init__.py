"""Benchmarks: ``python -m agelab.bench <subcommand> ...`` (see agelab/bench/__main__.py)."""

from __future__ import annotations

import argparse


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each option's default, except where the help already says what None means."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)
